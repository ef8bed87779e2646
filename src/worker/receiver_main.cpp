// The inbound webhook receiver (SPEC §9): one background worker for the cluster, started by the
// launcher on a primary when switchboard.listen_addresses is set, connected to
// switchboard.inbound_database and serving that database's routes.
//
// One thread. libmicrohttpd runs in external-poll mode (src/inbound/receiver.h says why): its
// epoll descriptors sit in this worker's WaitEventSet next to the latch, MHD_run() does the
// I/O, and every database call happens here between two MHD_run() calls. Each loop turn:
//   1. MHD reads requests; a complete one is suspended and handed over (TakeReceived);
//   2. each is looked up by its token (cached), verified and parsed (inbound::Decide);
//   3. the events of every accepted request of the turn are inserted in ONE transaction
//      (group commit), the refusals counted with them; the commit is durable (the session's
//      synchronous_commit, default on) before anyone is answered;
//   4. each request is resumed with its answer: 200 once committed, 503 when the commit
//      failed (the sender retries), 401/400 for refusals, 404 for unknown tokens.
// No single request can fail the others of its turn: what cannot be stored (invalid UTF-8, a
// \u0000 that jsonb refuses) is refused 400 before storage (inbound::Decide), and when the
// database still refuses the turn's one statement, each request is stored in a
// subtransaction of its own (StoreAccepted).
// A kill -9 between 1 and 3 answers nothing: the sender retries, and the redelivery is stored
// once (UNIQUE (route, event_id)).
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "inbound/receiver.h"
#include "settings.h"
#include "store/inbound_store.h"

#include "pg/boundary.h"
#include "store/queue_store.h" // WorkerTransaction
#include "worker/shmem.h"
#include "worker/wake.h"

#include <fstream>
#include <sstream>

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

using namespace switchboard;

namespace {

volatile sig_atomic_t stop_requested = false;

void
OnSigterm(SIGNAL_ARGS)
{
	int save_errno = errno;
	stop_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

int64_t
WallMs()
{
	return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
	    .count();
}

std::string
ReadFile(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	if (!in)
		throw std::runtime_error("cannot read " + path);
	std::ostringstream s;
	s << in.rdbuf();
	return s.str();
}

// The settings the listening sockets depend on: when one changes, the receiver exits and the
// launcher starts it again with the new ones.
std::string
ListenSettings()
{
	auto str = [](const char *v) { return std::string(v ? v : ""); };
	return str(setting_listen_addresses) + "|" + std::to_string(setting_listen_port) + "|" +
	       str(setting_listen_certificate) + "|" + str(setting_listen_key) + "|" + str(setting_inbound_database) + "|" +
	       std::to_string(setting_inbound_max_connections) + "|" + std::to_string(setting_inbound_timeout_s) + "|" +
	       std::to_string(setting_inbound_max_bytes);
}

inbound::ReceiverOptions
OptionsFromSettings()
{
	inbound::ReceiverOptions o;
	o.addresses = inbound::ParseListenAddresses(setting_listen_addresses ? setting_listen_addresses : "",
	                                            setting_listen_port);
	std::string cert = setting_listen_certificate ? setting_listen_certificate : "";
	std::string key = setting_listen_key ? setting_listen_key : "";
	if (cert.empty() != key.empty())
		throw std::runtime_error("switchboard.listen_certificate and switchboard.listen_key go together");
	if (!cert.empty()) {
		o.tls = true;
		o.certificate_pem = ReadFile(cert);
		o.key_pem = ReadFile(key);
	}
	o.max_connections = static_cast<unsigned>(setting_inbound_max_connections);
	o.timeout_s = static_cast<unsigned>(setting_inbound_timeout_s);
	o.max_bytes = static_cast<size_t>(setting_inbound_max_bytes);
	return o;
}

// Token -> route, reloaded every few seconds, and on a miss at most once a second (an unknown
// token cannot make the receiver query the database per request).
class Targets {
public:
	const inbound::RouteTarget *Find(const std::string &token, int64_t now)
	{
		if (now - loaded_ms_ > kRefreshMs)
			Load(now);
		auto it = targets_.find(token);
		if (it == targets_.end() && now - loaded_ms_ >= kMissReloadMs) {
			Load(now);
			it = targets_.find(token);
		}
		return it == targets_.end() ? nullptr : &it->second;
	}

	// The next Find reads the routes again (a store failed: the route may have been renamed).
	void Invalidate() { loaded_ms_ = -1000000; }

private:
	static constexpr int64_t kRefreshMs = 5000;
	static constexpr int64_t kMissReloadMs = 1000;

	void Load(int64_t now)
	{
		loaded_ms_ = now;
		try {
			WorkerTransaction tx;
			targets_ = LoadInboundTargets();
			tx.Commit();
		} catch (const std::exception &e) {
			Report(LOG, std::string("switchboard receiver: could not load the inbound routes: ") + e.what());
		}
	}

	std::map<std::string, inbound::RouteTarget> targets_;
	int64_t loaded_ms_ = -1000000;
};

class ReceiverLoop {
public:
	explicit ReceiverLoop(inbound::Receiver &receiver) : receiver_(receiver) {}

	void Run()
	{
		std::vector<int> fds = receiver_.PollFds();
		WaitEventSet *set = nullptr;
		int nevents = static_cast<int>(fds.size()) + 2;
		Guarded([&] {
			set = CreateWaitEventSet(TopMemoryContext, nevents);
			AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
			AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
		});
		for (int fd : fds)
			Guarded([&] { AddWaitEventToSet(set, WL_SOCKET_READABLE, fd, nullptr, nullptr); });
		std::string listening = ListenSettings();
		std::vector<WaitEvent> events(nevents);
		while (!stop_requested) {
			// Passes of MHD until one hands over no new request; the answers of the requests
			// served go out in the pass after. Never a pass after the last look at what came
			// in: a request it read (a connection accepted in one pass is read in the next)
			// would wait there for the wait's timeout (1 s), its socket event already consumed.
			for (;;) {
				receiver_.Run();
				std::vector<inbound::Received> got = receiver_.TakeReceived();
				if (got.empty())
					break;
				Serve(std::move(got));
			}
			long timeout = receiver_.TimeoutMs();
			if (timeout < 0 || timeout > 1000)
				timeout = 1000;
			Guarded([&] {
				(void) WaitEventSetWait(set, timeout, events.data(), nevents, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
			});
			if (ConfigReloadPending) {
				ConfigReloadPending = false;
				Guarded([] { ProcessConfigFile(PGC_SIGHUP); });
				if (ListenSettings() != listening) {
					Report(LOG, "switchboard receiver: listen settings changed; restarting");
					break;
				}
			}
		}
		Guarded([&] { FreeWaitEventSet(set); });
	}

private:
	struct Accepted {
		uint64_t id;
		InboundBatchItem item;
		int status = 200; // 400 or 503 when its events could not be stored
	};

	// Stores the events of every accepted request in the caller's transaction. All at once
	// first (group commit, one statement); when the database refuses that, each request on its
	// own in a subtransaction, so that one unstorable request fails only itself: 400 (counted as
	// a rejection) when the database refused its data, 503 (retried by its sender) otherwise.
	// Returns whether any was stored.
	bool StoreAccepted(std::vector<Accepted> &accepted, std::map<std::string, InboundRejection> &rejected)
	{
		if (accepted.empty())
			return false;
		std::string why;
		try {
			std::vector<InboundBatchItem> items;
			for (const Accepted &a : accepted)
				items.push_back(a.item);
			Subtransaction sub;
			StoreInbound(items, {});
			sub.Commit();
			return true;
		} catch (const PgError &e) {
			why = e.what();
		} catch (const nlohmann::json::exception &e) {
			why = e.what();
		}
		Report(LOG, "switchboard receiver: storing the events of " + std::to_string(accepted.size()) +
		                " requests together failed (" + why + "); storing each on its own");
		bool any = false;
		for (Accepted &a : accepted) {
			std::string error;
			try {
				Subtransaction sub;
				StoreInbound({a.item}, {});
				sub.Commit();
				any = true;
				continue;
			} catch (const PgError &e) {
				bool data = ERRCODE_TO_CATEGORY(e.sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
				            e.sqlerrcode == ERRCODE_CHECK_VIOLATION || e.sqlerrcode == ERRCODE_NOT_NULL_VIOLATION;
				a.status = data ? 400 : 503;
				error = e.what();
			} catch (const nlohmann::json::exception &e) {
				a.status = 400; // text nlohmann cannot write as JSON: invalid UTF-8
				error = e.what();
			}
			if (a.status == 400) {
				InboundRejection &j = rejected[a.item.route];
				j.count++;
				j.last_error = "the database refused the event: " + error;
			} else {
				Report(LOG, "switchboard receiver: could not store a request for route " + a.item.route + ": " + error);
				targets_.Invalidate(); // e.g. the route was renamed or deleted since they were read
			}
		}
		return any;
	}

	void Serve(std::vector<inbound::Received> received)
	{
		if (received.empty())
			return;
		int64_t now = WallMs();
		std::vector<Accepted> accepted;
		std::map<std::string, InboundRejection> rejected;
		std::vector<std::pair<uint64_t, inbound::Outcome>> refused;
		for (inbound::Received &r : received) {
			const inbound::RouteTarget *target = targets_.Find(r.token, now);
			if (target == nullptr) {
				receiver_.Answer(r.id, 404, "not found");
				continue;
			}
			inbound::Outcome outcome = inbound::Decide(*target, r.request, now);
			if (outcome.status != 200) {
				InboundRejection &j = rejected[target->route];
				j.count++;
				j.last_error = outcome.error;
				refused.emplace_back(r.id, std::move(outcome));
			} else if (outcome.events.empty()) {
				receiver_.Answer(r.id, 200, "ok"); // a ping: nothing to store
			} else {
				Accepted a{r.id, {target->route, target->scheme, std::move(outcome.events)}};
				accepted.push_back(std::move(a));
			}
		}
		bool stored = true;
		if (!accepted.empty() || !rejected.empty()) {
			pgstat_report_activity(STATE_RUNNING, "storing webhook events");
			try {
				WorkerTransaction tx;
				bool any = StoreAccepted(accepted, rejected);
				// The counts of refusals are not worth any event: on their own, and never fatal.
				if (!rejected.empty()) {
					try {
						Subtransaction sub;
						StoreInbound({}, rejected);
						sub.Commit();
					} catch (const PgError &e) {
						Report(LOG, std::string("switchboard receiver: could not count refused requests: ") + e.what());
					}
				}
				// The database's worker applies them as soon as they are visible.
				if (any)
					WakeWorkerAtCommit();
				tx.Commit();
			} catch (const std::exception &e) {
				stored = false;
				Report(LOG, std::string("switchboard receiver: could not store webhook events: ") + e.what());
			}
			pgstat_report_activity(STATE_IDLE, nullptr);
		}
		for (auto &r : refused)
			receiver_.Answer(r.first, r.second.status, r.second.status == 401 ? "signature refused" : "bad request");
		for (Accepted &a : accepted) {
			int status = stored ? a.status : 503;
			receiver_.Answer(a.id, status,
			                 status == 200   ? "stored"
			                 : status == 400 ? "bad request: the event cannot be stored"
			                                 : "not stored, try again");
		}
	}

	inbound::Receiver &receiver_;
	Targets targets_;
};

void
Serve()
{
	std::unique_ptr<inbound::Receiver> receiver;
	try {
		receiver = std::make_unique<inbound::Receiver>(OptionsFromSettings());
	} catch (const std::exception &e) {
		Report(WARNING, std::string("switchboard receiver: ") + e.what());
		// Not at once again: the launcher starts a new receiver once this one has exited.
		Guarded([] {
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10000, PG_WAIT_EXTENSION);
		});
		return;
	}
	Report(LOG, std::string("switchboard receiver: listening on ") + setting_listen_addresses + " for database " +
	                setting_inbound_database);
	ReceiverLoop loop(*receiver);
	loop.Run();
}

} // namespace

SB_BGWORKER_MAIN(switchboard_receiver_main)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, OnSigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(setting_inbound_database, nullptr, 0);
	pgstat_report_appname("switchboard receiver");
	// Its own statements resolve names in pg_catalog only. An answer 2xx promises the events
	// are durable: synchronous_commit off or local (set for the database or its owner with
	// ALTER ... SET, which the connection applied) would acknowledge before the WAL is flushed.
	// A remote_* level (a synchronous standby) is kept.
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	const char *sync = GetConfigOption("synchronous_commit", false, false);
	if (sync && (strcmp(sync, "off") == 0 || strcmp(sync, "local") == 0))
		SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
	Serve();
	// Returning ends the process with proc_exit(0), once Serve's objects are destroyed.
}
