// The per-database worker: claim in a short transaction, deliver with none open, record in
// another. Woken at commit by capturing transactions, with a safety poll (switchboard.naptime)
// for retries that come due. SIGTERM stops it between steps (an HTTP wait is at most 100 ms).
#include <algorithm>
#include <map>
#include <set>

#include "delivery/dispatcher.h"
#include "pg/boundary.h"
#include "settings.h"
#include "connectors/pull.h"
#include "orchestrate/runs.h"
#include "pg/time_limit.h"
#include "translate/route_def.h"
#include "store/inbound_apply.h"
#include "store/pull_store.h"
#include "store/queue_store.h"
#include "worker/shared_limits.h"
#include "worker/shmem.h"

extern "C" {
#include "commands/dbcommands.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/procsignal.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
}

namespace switchboard {

namespace {

volatile sig_atomic_t stop_requested = false;
bool has_extension = true;
// Set while a transaction commits (CommitTransaction, from its pre-commit callback to its
// commit or abort), and whether the stop set ProcDiePending meanwhile (see OnSigterm).
volatile sig_atomic_t committing = false;
volatile sig_atomic_t die_set_for_commit = false;

// SIGTERM stops the worker between steps (stop_requested), not by die(): the round's results
// must still be recorded. Only a commit is different: a durable one (CommitDurably) waits in
// SyncRepWaitForLSN for a synchronous standby, which may never come, and that wait ends only
// on ProcDiePending. So a SIGTERM during a commit also sets ProcDiePending: the wait ends (the
// transaction stays committed locally, as on any backend), and once the commit returned the
// flag is cleared again (OnXactEvent) so the worker stops the usual way. Step SQL too
// (StopStepSql): it may run for up to switchboard.route_sql_timeout, and phase 1 of a runs round
// sends nothing before it commits, so ending there loses nothing.
void
SetDiePendingForCommit()
{
	die_set_for_commit = true;
	ProcDiePending = true;
	InterruptPending = true;
}

void
OnSigterm(SIGNAL_ARGS)
{
	int save_errno = errno;
	stop_requested = true;
	if (committing)
		SetDiePendingForCommit();
	else
		(void) StopStepSql();
	SetLatch(MyLatch);
	errno = save_errno;
}

void
OnXactEvent(XactEvent event, void *)
{
	switch (event) {
	case XACT_EVENT_PRE_COMMIT:
	case XACT_EVENT_PARALLEL_PRE_COMMIT:
		committing = true;
		// Stopped before the commit began: a durable commit must not begin waiting either.
		if (stop_requested)
			SetDiePendingForCommit();
		break;
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
		committing = false;
		if (die_set_for_commit) {
			die_set_for_commit = false;
			ProcDiePending = false;
		}
		break;
	default:
		break;
	}
}

// Asked at least every 100 ms by the dispatcher while requests are in flight or held back by a
// rate limit: those waits are on curl, not on the latch, so WL_EXIT_ON_PM_DEATH cannot serve
// them. A dead postmaster ends the process at once, as that flag does for latch waits (what was
// sent but not recorded is in flight, and delivered again after the restart); SIGTERM stops the
// round at once (requests in flight are abandoned), whose results are then recorded. It also
// absorbs a ProcSignalBarrier: DROP DATABASE (of any database) waits until every backend has,
// and a round with a slow remote would otherwise reach CHECK_FOR_INTERRUPTS only at its end.
bool
ShouldStop()
{
	if (!PostmasterIsAlive())
		proc_exit(1);
	if (ProcSignalBarrierPending) {
		try {
			Guarded([] { ProcessProcSignalBarrier(); });
		} catch (const std::exception &e) {
			// The barrier stays pending and is tried again at the next call or interrupt check.
			Report(LOG, std::string("switchboard worker: absorbing a barrier failed: ") + e.what());
		}
	}
	return stop_requested;
}

void
OnExit(int, Datum arg)
{
	ReleaseWorkerSlot(DatumGetObjectId(arg), has_extension, NowMs());
}

constexpr int kClaimLimit = 2000;

// switchboard.allowed_hosts is read at every request, so a reload applies to the next one.
HttpClientOptions
WorkerHttpOptions()
{
	HttpClientOptions options;
	options.current_allowed_hosts = [] { return std::string(setting_allowed_hosts ? setting_allowed_hosts : ""); };
	return options;
}

// The worker's transactions commit asynchronously (see switchboard_worker_main); this one
// waits for its WAL flush like any other.
void
CommitDurably()
{
	Guarded([] {
		(void) set_config_option("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
		                         false);
	});
}

class DeliveryLoop {
public:
	DeliveryLoop()
	    : client_(WorkerHttpOptions()), dispatcher_(&client_), rng_(std::random_device{}()), runs_(&dispatcher_, &rng_)
	{
		dispatcher_.SetRateLimitStore(SharedRateLimitStore()); // rate_limit_group
		dispatcher_.SetEndpointStateStore(SharedEndpointStateStore());
	}

	// Before the process exits: the next worker of this database starts where this one left
	// off (rate limits, circuit breakers), whether this one made room, went idle or was stopped.
	void HandOver() { dispatcher_.SaveEndpointStates(); }

	void Run()
	{
		{
			WorkerTransaction tx;
			has_extension = ExtensionExists();
			if (!has_extension) {
				tx.Commit();
				return;
			}
			if (!SchemaPredatesOwners() && RecognizeCopy())
				Report(LOG, "switchboard: this database is a copy of another; its routes are disabled until "
				            "a DBA enables them");
			RecoverInFlight();
			const char *database = nullptr;
			Guarded([&] { database = get_database_name(MyDatabaseId); });
			SetRateLimitDatabase(database ? database : "");
			tx.Commit();
		}
		int failures = 0;
		bool idle = false; // the last round found nothing to do at once
		while (!stop_requested) {
			if (ConfigReloadPending) {
				ConfigReloadPending = false;
				Guarded([] { ProcessConfigFile(PGC_SIGHUP); });
				last_prune_ms_ = 0; // a changed retention applies now, not in a minute
			}
			if (ShouldMakeRoom(MyDatabaseId, idle || !setting_enabled, NowMs())) {
				MakeRoomForOthers(idle);
				return;
			}
			long wait_ms = setting_naptime_ms;
			if (setting_enabled != wants_wakes_) {
				wants_wakes_ = setting_enabled;
				SetWorkerWantsWakes(MyDatabaseId, wants_wakes_);
			}
			if (!setting_enabled && !ExtensionCheckDue()) {
				// Paused: commits still set the latch, but there is nothing to do for them.
				Sleep(setting_naptime_ms);
				continue;
			}
			try {
				// Read before the round's snapshot: every commit counted so far is visible to it.
				commits_seen_ = CommitsCounted(MyDatabaseId);
				wait_ms = Round();
				idle = wait_ms > 0;
				if (!idle)
					idle_since_ = 0;
				else if (idle_since_ == 0)
					idle_since_ = NowMs();
				failures = 0;
			} catch (const std::exception &e) {
				failures++;
				// The extension may have been dropped under us: then exit, quietly.
				if (!ExtensionStillExists())
					return;
				ReportFailure(e.what(), failures);
				wait_ms = static_cast<long>(std::min<int64_t>(int64_t{setting_naptime_ms} * failures, 10000));
			}
			if (!has_extension)
				return;
			// Asked to make room but not yet (its minimum stay): sleep until then at most.
			int64_t room_in = -1;
			if (wait_ms > 0 && !stop_requested && !ShouldMakeRoom(MyDatabaseId, true, NowMs(), &room_in))
				Sleep(room_in < 0 ? wait_ms : std::min<long>(wait_ms, std::max<int64_t>(room_in, 1)));
		}
	}

private:
	// switchboard.max_workers: more databases want a worker than may run, and the launcher
	// asked this one to make room. It says when it has work again (the next retry or pull due;
	// a commit wakes the launcher anyway) and exits; the launcher starts a worker again then.
	// Busy (not idle), it has more to do at once. Paused, it is started again on resume.
	void MakeRoomForOthers(bool idle)
	{
		constexpr int64_t kRevisitMs = 5 * 60 * 1000; // a safety net, like naptime
		int64_t now = NowMs();
		int64_t due_at = now;
		if (!setting_enabled) {
			due_at = now + kRevisitMs; // and at once when delivery resumes (MarkAllWanted)
		} else if (idle) {
			long next = -1;
			try {
				WorkerTransaction tx;
				// Runs waiting for a retry count too, or a backoff of seconds would last until
				// the revisit.
				for (long due : {MsUntilNextDue(), MsUntilNextPull(), runs_wanted_ ? MsUntilNextRun() : -1L})
					if (due >= 0)
						next = next < 0 ? due : std::min(next, due);
				tx.Commit();
			} catch (const std::exception &e) {
				Report(LOG, std::string("switchboard worker: ") + e.what());
				next = 0;
			}
			due_at = now + (next < 0 ? kRevisitMs : std::min<int64_t>(next, kRevisitMs));
		}
		MakeRoom(MyDatabaseId, commits_seen_, due_at);
		Activity("making room for other databases");
	}

	// One round: push what is due, then pull one page per due route. Returns how long to sleep.
	long Round()
	{
		long push_wait = PushRound();
		if (!has_extension || !setting_enabled || stop_requested || schema_outdated_)
			return push_wait;
		// Received webhook events: applied as soon as the receiver's commit wakes the worker.
		if (inbound_wanted_)
			push_wait = std::min(push_wait, InboundRound());
		if (stop_requested)
			return push_wait;
		// Routes with steps: their changes become runs (orchestrate/runs.h).
		if (runs_wanted_)
			push_wait = std::min(push_wait, runs_.Round(ShouldStop));
		if (stop_requested)
			return push_wait;
		long pull_wait = PullRound();
		return std::min(push_wait, pull_wait);
	}

	// Fetches one page for each due pulling route and applies it with its cursor.
	long PullRound()
	{
		std::vector<DuePull> due;
		std::vector<RouteAction> refused;
		long next_pull = -1;
		{
			WorkerTransaction tx;
			due = PullsDue(8, &refused);
			if (due.empty())
				next_pull = MsUntilNextPull();
			tx.Commit();
		}
		DisableRefused(refused);
		if (due.empty())
			return next_pull < 0 ? setting_naptime_ms : std::min<long>(next_pull, setting_naptime_ms);
		bool more = false;
		for (const DuePull &pull : due) {
			if (stop_requested)
				break;
			Activity("pulling " + pull.def.name);
			try {
				more = PullOnePage(pull) || more;
			} catch (const std::exception &e) {
				// This route's failure only (a request that cannot be built, a column gone, an
				// apply that keeps deadlocking): it backs off with the reason in pull_status,
				// and the other routes are pulled as usual (issue 10.5).
				NotePullFailure(pull, e.what());
			}
		}
		return more ? 0 : setting_naptime_ms;
	}

	// One page of one route: fetched with no transaction open, applied with its cursor. True
	// when more of it can be fetched at once.
	bool PullOnePage(const DuePull &pull)
	{
		bool more = false;
		{
			PullMark mark; // committed first: if this page kills the worker, the route backs off
			{
				WorkerTransaction tx;
				mark = MarkPullStarted(pull);
				CommitDurably(); // the crash-loop guard must survive the crash it guards against
				tx.Commit();
			}
			HttpResponse response = dispatcher_.Fetch(
			    pull.def.endpoint,
			    [&](const Auth &auth) {
				    return BuildPullRequest(pull.def.endpoint, pull.def.route, pull.fields, pull.phase, pull.cursor,
				                            auth);
			    },
			    setting_http_timeout_ms, 1000, ShouldStop);
			std::string error;
			PullPage page;
			if ((response.status >= 200 && response.status < 300) ||
			    PullQueryExpired(pull.def.endpoint, pull.cursor, response)) {
				try {
					page = ParsePullResponse(pull.def.endpoint, pull.def.route, pull.phase, pull.cursor, response);
				} catch (const std::exception &e) {
					error = e.what();
				}
			} else if (response.status == 0) {
				error = response.transport_error;
			} else {
				error = "HTTP " + std::to_string(response.status) + ": " + RedactedExcerpt(response.body, 300);
			}
			WorkerTransaction tx;
			if (error.empty()) {
				ApplyPullPage(pull, page, response.status, response.elapsed_ms);
				ClearPullMark(pull, mark);
				more = more || page.more || (pull.phase == PullPhase::Changes && pull.def.route.on_delete == "delete");
			} else {
				RecordPullError(pull, error, response.status, std::min<long>(pull.interval_ms, 30 * 1000));
			}
			tx.Commit();
		}
		return more;
	}

	// ---- Inbound events (SPEC §9, store/inbound_apply.h) --------------------------------------

	static constexpr int kInboundBatch = 1000; // events of one route per transaction
	static constexpr long kInboundBackoffMinMs = 1000, kInboundBackoffMaxMs = 60 * 1000;

	struct Backoff {
		int64_t until_ms = 0;
		long delay_ms = 0;
	};

	// Applies the pending events of every route that has some: per route, one transaction
	// (its oldest events, in id order) after the read-backs they need. Returns how long to sleep.
	long InboundRound()
	{
		int64_t now = NowMs();
		std::set<std::string> held;
		std::vector<int64_t> held_events;
		int64_t next_ms = -1;
		auto note_next = [&](int64_t until) { next_ms = next_ms < 0 ? until : std::min(next_ms, until); };
		for (const auto &b : inbound_route_backoff_)
			if (b.second.until_ms > now) {
				held.insert(b.first);
				note_next(b.second.until_ms);
			}
		for (const auto &b : inbound_event_backoff_)
			if (b.second.until_ms > now) {
				held_events.push_back(b.first);
				note_next(b.second.until_ms);
			}
		std::vector<InboundRoute> due;
		{
			WorkerTransaction tx;
			due = InboundDue(kInboundBatch, held, held_events);
			tx.Commit();
		}
		bool more = false;
		for (InboundRoute &route : due) {
			if (stop_requested)
				break;
			Activity("applying " + std::to_string(route.events.size()) + " inbound events of " + route.def.name);
			more = ApplyInboundRoute(route) || more;
		}
		if (more)
			return 0;
		if (next_ms < 0)
			return setting_naptime_ms;
		return std::clamp<long>(static_cast<long>(next_ms - NowMs()), 1, setting_naptime_ms);
	}

	void BackOffInbound(const std::string &route, const std::string &why)
	{
		Backoff &b = inbound_route_backoff_[route];
		b.delay_ms = b.delay_ms ? std::min(b.delay_ms * 2, kInboundBackoffMaxMs) : kInboundBackoffMinMs;
		b.until_ms = NowMs() + b.delay_ms;
		Report(LOG, "switchboard worker: inbound events of route \"" + route + "\" wait " + std::to_string(b.delay_ms) +
		                " ms: " + why);
	}

	void HoldInboundEvents(const std::vector<int64_t> &events)
	{
		for (int64_t id : events) {
			Backoff &b = inbound_event_backoff_[id];
			b.delay_ms = b.delay_ms ? std::min(b.delay_ms * 2, kInboundBackoffMaxMs) : kInboundBackoffMinMs;
			b.until_ms = NowMs() + b.delay_ms;
		}
	}

	// True when more events of the route are waiting at once.
	bool ApplyInboundRoute(const InboundRoute &route)
	{
		const RouteDef &def = route.def;
		inbound::Plan plan = inbound::PlanEvents(route.events, def.route.match_remote, route.known_keys);
		// HubSpot events name ids only: read the records back, at most 100 per request.
		std::vector<int64_t> unreadable;
		std::string unreadable_error;
		for (const auto &chunk : inbound::Chunks(plan.read_back, kReadBackLimit)) {
			std::vector<std::string> ids;
			for (const auto &item : chunk)
				ids.push_back(item.object_id);
			HttpResponse response;
			std::string error;
			try {
				response = dispatcher_.Fetch(
				    def.endpoint,
				    [&](const Auth &auth) {
					    return BuildReadBackRequest(def.endpoint, def.route, route.fields, ids, auth);
				    },
				    setting_http_timeout_ms, 1000, ShouldStop);
			} catch (const std::exception &e) {
				error = e.what(); // the request cannot be built (a kind that cannot read back)
			}
			long status = response.status;
			if (error.empty() && (status == 0 || status == 408 || status == 429 || status >= 500)) {
				// The remote's trouble, not the events': they stay pending, the route waits.
				BackOffInbound(def.name, status == 0 ? response.transport_error
				                                     : "read-back answered HTTP " + std::to_string(status));
				return false;
			}
			if (error.empty()) {
				try {
					inbound::AddReadBack(&plan, chunk, ParseReadBackResponse(def.endpoint, def.route, response),
					                     route.known_keys);
					continue;
				} catch (const std::exception &e) {
					error = dispatcher_.RedactSecrets(def.endpoint, e.what());
				}
			}
			unreadable_error = "read-back failed: " + error;
			for (const auto &item : chunk)
				unreadable.insert(unreadable.end(), item.events.begin(), item.events.end());
		}
		try {
			WorkerTransaction tx;
			std::vector<int64_t> pending = ApplyInbound(route, plan);
			std::vector<int64_t> unread = RecordInboundFailure(unreadable, unreadable_error);
			tx.Commit();
			pending.insert(pending.end(), unread.begin(), unread.end());
			// Settled events (applied or failed for good) need no backoff any more; those that
			// failed and stay pending wait longer each time.
			std::set<int64_t> still(pending.begin(), pending.end());
			for (const auto &e : route.events)
				if (!still.count(e.id))
					inbound_event_backoff_.erase(e.id);
			HoldInboundEvents(pending);
			inbound_route_backoff_.erase(def.name);
		} catch (const PgError &e) {
			if (TransientError(e.sqlerrcode) || e.sqlerrcode == ERRCODE_UNIQUE_VIOLATION) {
				BackOffInbound(def.name, e.what());
				return false;
			}
			NoteInboundFailure(route, e.what());
			return false;
		} catch (const std::exception &e) {
			NoteInboundFailure(route, e.what());
			return false;
		}
		return route.more;
	}

	// The route's events cannot be applied at all (a pull column gone, a translation that
	// throws): each counts an attempt, with the reason.
	void NoteInboundFailure(const InboundRoute &route, const std::string &error)
	{
		std::vector<int64_t> ids;
		for (const auto &e : route.events)
			ids.push_back(e.id);
		try {
			WorkerTransaction tx;
			ids = RecordInboundFailure(ids, "apply failed: " + error);
			tx.Commit();
		} catch (const std::exception &e) {
			Report(LOG, "switchboard worker: could not record an inbound failure of route \"" + route.def.name +
			                "\": " + e.what());
		}
		HoldInboundEvents(ids);
	}

	void NotePullFailure(const DuePull &pull, const std::string &error)
	{
		try {
			WorkerTransaction tx;
			RecordPullError(pull, "pull failed: " + error, 0, std::clamp<long>(pull.interval_ms, 1000, 30 * 1000));
			tx.Commit();
		} catch (const std::exception &e) {
			Report(LOG, "switchboard worker: could not record a pull failure of route \"" + pull.def.name +
			                "\": " + e.what());
		}
	}

	// Claims due changes, delivers them, records the results. Returns how long to sleep.
	long PushRound()
	{
		Activity("checking the queue");
		ClaimedBatch claimed;
		long next_due = -1;
		{
			WorkerTransaction tx;
			has_extension = ExtensionExists();
			if (!has_extension) {
				tx.Commit();
				return 0;
			}
			// A schema older than this library (a package upgrade not yet followed by ALTER
			// EXTENSION UPDATE) has none of the owners the worker acts as: wait for the update.
			bool outdated = SchemaPredatesOwners();
			if (outdated != schema_outdated_ && outdated)
				Report(LOG, "switchboard: the extension's schema in this database is older than the library; "
				            "nothing is delivered or pulled until ALTER EXTENSION switchboard UPDATE");
			schema_outdated_ = outdated;
			if (outdated) {
				runs_wanted_ = false;
				inbound_wanted_ = false;
				tx.Commit();
				Activity("waiting for ALTER EXTENSION switchboard UPDATE");
				return setting_naptime_ms;
			}
			// Whether the runs round has anything to look at (in this transaction, not one of its own).
			runs_wanted_ = RunsWanted();
			inbound_wanted_ = InboundWanted();
			// Once a minute, or as often as a short dead-letter retention needs.
			long prune_every_ms = 60 * 1000;
			if (setting_dead_letter_retention_s > 0)
				prune_every_ms = std::min<long>(prune_every_ms, std::max(1, setting_dead_letter_retention_s) * 1000L);
			if (NowMs() - last_prune_ms_ > prune_every_ms) {
				PruneHistory(setting_history_retention_s, setting_dead_letter_retention_s);
				PruneInbound(setting_inbound_retention_s, setting_dead_letter_retention_s);
				last_prune_ms_ = NowMs();
			}
			if (setting_enabled)
				claimed = ClaimDue(kClaimLimit);
			// The in-flight mark counts an attempt if the delivery kills the worker (or the
			// server): it must be on disk before the request is sent, or a change that crashes
			// the server would be claimed as new after every crash recovery.
			if (!claimed.changes.empty())
				CommitDurably();
			if (claimed.changes.empty())
				next_due = setting_enabled ? MsUntilNextDue() : -1;
			tx.Commit();
		}
		DisableRefused(claimed.refused);
		if (claimed.changes.empty()) {
			if (claimed.rows > 0)
				return 0; // rows were settled (filtered, superseded, dead): look again
			return next_due < 0 ? setting_naptime_ms : std::min<long>(next_due, setting_naptime_ms);
		}

		Activity("delivering " + std::to_string(claimed.changes.size()) + " changes");
		DispatchOptions options;
		options.timeout_ms = setting_http_timeout_ms;
		std::vector<RouteAction> actions;
		std::vector<Delivery> deliveries = dispatcher_.Deliver(claimed.batches, options, ShouldStop, &actions);

		Activity("recording " + std::to_string(deliveries.size()) + " results");
		try {
			WorkerTransaction tx;
			RecordResults(deliveries, dispatcher_.EndpointStatuses(), claimed, setting_max_attempts, rng_);
			tx.Commit();
		} catch (const std::exception &e) {
			// Nothing of the round was recorded (a cancel, a deadlock, a failing trigger): put its
			// changes back at once, or they would sit in flight until a restart and then overwrite
			// what was delivered after them. They are sent again (at least once).
			// Requeue first: logging can itself be interrupted (a second cancel), and the
			// changes must not stay in flight.
			std::string error = e.what();
			WorkerTransaction retry_tx;
			RequeueInFlight(claimed, setting_max_attempts);
			retry_tx.Commit();
			Report(LOG, "switchboard worker: recording a round failed, its changes are queued again: " + error);
			return setting_naptime_ms;
		}
		// Disabling a route drops its capture triggers (an exclusive lock on the application's
		// table): in a transaction of its own, after the results are safe.
		DisableRefused(actions, "");
		return 0;
	}

	// Routes the worker will not use (their definition fails the checks made when it is
	// written, or a webhook consumer answered 410) are disabled with the reason, in a
	// transaction of their own; detaching their triggers must not hold up the claim or the
	// record of anything else.
	void DisableRefused(const std::vector<RouteAction> &refused, const std::string &prefix = "refused by the worker: ")
	{
		if (refused.empty())
			return;
		std::vector<RouteAction> disable;
		for (const auto &r : refused)
			disable.push_back(RouteAction{r.route, prefix + r.reason});
		// Never fails the round: a route that cannot be disabled now (its table locked by a long
		// transaction) is refused again, and tried again, next round. Its changes are not claimed.
		try {
			WorkerTransaction tx;
			Guarded([] {
				(void) set_config_option("lock_timeout", "1s", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
				                         false);
			});
			DisableRoutes(disable);
			tx.Commit();
		} catch (const std::exception &e) {
			Report(LOG, std::string("switchboard: could not disable refused routes yet: ") + e.what());
			return;
		}
		for (const auto &r : disable)
			Report(LOG, "switchboard: route \"" + r.route + "\" disabled: " + r.reason);
	}

	bool ExtensionStillExists()
	{
		try {
			WorkerTransaction tx;
			has_extension = ExtensionExists();
			tx.Commit();
		} catch (const std::exception &) {
		}
		return has_extension;
	}

	// While paused, look for DROP EXTENSION every few seconds only.
	bool ExtensionCheckDue()
	{
		if (NowMs() - last_paused_check_ms_ < 5000)
			return false;
		last_paused_check_ms_ = NowMs();
		return true;
	}

	void ReportFailure(const std::string &error, int failures)
	{
		Report(LOG, "switchboard worker: " + error);
		// The same failure three times in a row: say so in route_status. No change is set
		// aside: failures that one route or one change causes are isolated where they happen
		// (route loads, translations, the record step), so this one is not theirs to pay for.
		if (failures % 3 != 0)
			return;
		try {
			WorkerTransaction tx;
			NoteRoundFailure(error);
			tx.Commit();
		} catch (const std::exception &e) {
			Report(LOG, std::string("switchboard worker: could not note the failure: ") + e.what());
		}
	}

	void Sleep(long wait_ms)
	{
		Activity("idle");
		SetWorkerSleeping(MyDatabaseId, true, idle_since_ != 0 ? idle_since_ : NowMs());
		Guarded([&] {
			pgstat_report_activity(STATE_IDLE, nullptr);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		});
		SetWorkerSleeping(MyDatabaseId, false);
	}

	void Activity(const std::string &what)
	{
		Guarded([&] { pgstat_report_activity(STATE_RUNNING, what.c_str()); });
	}

	HttpClient client_;
	Dispatcher dispatcher_;
	std::mt19937_64 rng_;
	RunExecutor runs_;
	bool runs_wanted_ = false;    // some route has steps, or runs are unfinished (RunsWanted)
	bool inbound_wanted_ = false; // received events wait to be applied (InboundWanted)
	int64_t last_prune_ms_ = 0;
	std::map<std::string, Backoff> inbound_route_backoff_; // routes whose read-back or apply failed transiently
	std::map<int64_t, Backoff> inbound_event_backoff_;     // events whose last try counted an attempt
	int64_t last_paused_check_ms_ = 0;
	bool wants_wakes_ = true;
	bool schema_outdated_ = false;
	uint64_t commits_seen_ = 0;
	int64_t idle_since_ = 0; // since when rounds found nothing to do (0: the last one did)
};

} // namespace

} // namespace switchboard

using namespace switchboard;

SB_BGWORKER_MAIN(switchboard_worker_main)
{
	Oid database = DatumGetObjectId(main_arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, OnSigterm);
	BackgroundWorkerUnblockSignals();
	if (!ClaimWorkerSlot(database, MyLatch))
		proc_exit(0); // another worker serves this database
	on_shmem_exit(OnExit, ObjectIdGetDatum(database));
	BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);
	RegisterXactCallback(OnXactEvent, nullptr);
	pgstat_report_appname("switchboard worker");
	// The worker's own statements resolve names in pg_catalog only (the temporary schema last),
	// whatever the database's settings say; route expressions get their own path (AsRole).
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	// The worker's transactions need not wait for their WAL flush (a fixed cost of every round
	// at a trickle of commits). A crash loses at most the last rounds' bookkeeping, never a
	// change: a delivery whose record is lost is delivered again (at least once, as always), a
	// pulled page is pulled again with the cursor that was lost with it. Only the marks that
	// guard against crash loops (a claim in flight, a pull started) commit durably.
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION);
	std::string error;
	if (!HttpGlobalInit(&error))
		Fail(ERRCODE_SYSTEM_ERROR, "switchboard: libcurl could not be initialised: " + error);
	DeliveryLoop loop;
	loop.Run();
	loop.HandOver();
	// Returning ends the process with proc_exit(0), once loop's destructor has run.
}
