#include "inbound/receiver.h"

#include <algorithm>
#include <netdb.h>
#include <strings.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <map>
#include <stdexcept>

#include <microhttpd.h>

#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {
namespace inbound {

namespace {

int64_t
SteadyMs()
{
	return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
	    .count();
}

std::string
Trim(const std::string &s)
{
	size_t b = s.find_first_not_of(" \t");
	if (b == std::string::npos)
		return "";
	size_t e = s.find_last_not_of(" \t");
	return s.substr(b, e - b + 1);
}

int
ParsePort(const std::string &text, const std::string &entry)
{
	if (text.empty() || text.size() > 5 || text.find_first_not_of("0123456789") != std::string::npos)
		throw std::invalid_argument("\"" + entry + "\": the port must be a number from 1 to 65535");
	int port = std::stoi(text);
	if (port < 1 || port > 65535)
		throw std::invalid_argument("\"" + entry + "\": the port must be a number from 1 to 65535");
	return port;
}

} // namespace

std::vector<ListenAddress>
ParseListenAddresses(const std::string &text, int default_port)
{
	std::vector<ListenAddress> out;
	if (Trim(text).empty())
		return out;
	size_t start = 0;
	while (start <= text.size()) {
		size_t comma = text.find(',', start);
		std::string entry = Trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
		start = comma == std::string::npos ? text.size() + 1 : comma + 1;
		if (entry.empty())
			throw std::invalid_argument("an empty entry in \"" + text + "\"");
		ListenAddress a;
		std::string port; // "" when the entry has none: default_port
		if (entry[0] == '[') {
			size_t close = entry.find(']');
			if (close == std::string::npos || (close + 1 < entry.size() && entry[close + 1] != ':'))
				throw std::invalid_argument("\"" + entry +
				                            "\": an IPv6 address is written [address] or [address]:port");
			a.host = entry.substr(1, close - 1);
			if (close + 1 < entry.size()) {
				port = entry.substr(close + 2);
				if (port.empty())
					throw std::invalid_argument("\"" + entry + "\": no port after the colon");
			}
		} else {
			size_t colon = entry.find(':');
			if (colon != std::string::npos && entry.find(':', colon + 1) != std::string::npos)
				throw std::invalid_argument("\"" + entry + "\": an IPv6 address is written [address]:port");
			a.host = entry.substr(0, colon);
			if (colon != std::string::npos) {
				port = entry.substr(colon + 1);
				if (port.empty())
					throw std::invalid_argument("\"" + entry + "\": no port after the colon");
			}
		}
		if (a.host.empty())
			throw std::invalid_argument("\"" + entry + "\": no host (use * for every address)");
		for (char c : a.host)
			if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '-' || c == '*'))
				throw std::invalid_argument("\"" + entry + "\": the host must be an address, a name or *");
		if (a.host.find('*') != std::string::npos && a.host != "*")
			throw std::invalid_argument("\"" + entry + "\": * stands alone (every address)");
		if (!port.empty())
			a.port = ParsePort(port, entry);
		else if (default_port >= 1 && default_port <= 65535)
			a.port = default_port;
		else
			throw std::invalid_argument("\"" + entry + "\": no port (give host:port, or set switchboard.listen_port)");
		out.push_back(a);
	}
	return out;
}

std::string
RebuildUri(const std::string &scheme, const std::string &host_header, const std::string &fallback_host,
           const std::string &path_and_query)
{
	std::string host = Trim(host_header);
	// A Host header with characters no host has is not trusted into the signed string.
	bool sane = !host.empty();
	for (char c : host)
		if (static_cast<unsigned char>(c) <= ' ' || c == '/' || c == '?' || c == '#' || c == '@')
			sane = false;
	return scheme + "://" + (sane ? host : fallback_host) + path_and_query;
}

std::string
TokenOfPath(const std::string &path)
{
	static const std::string prefix = "/inbound/";
	if (path.compare(0, prefix.size(), prefix) != 0 || path.size() != prefix.size() + 32)
		return "";
	std::string token = path.substr(prefix.size());
	for (char c : token)
		if (!std::isalnum(static_cast<unsigned char>(c)))
			return "";
	return token;
}

Outcome
Decide(const RouteTarget &target, const Request &request, int64_t now_ms)
{
	Outcome out;
	// WooCommerce's ping, sent unsigned when a webhook is saved: accepted, nothing stored.
	if (target.scheme == Scheme::WooCommerce && IsWooCommercePing(request.body)) {
		out.status = 200;
		return out;
	}
	if (target.secret.empty()) {
		out.status = 401;
		out.error = "the route has no inbound_secret: it receives nothing";
		return out;
	}
	Verdict v = Verify(target.scheme, target.secret, request, now_ms);
	if (!v.ok) {
		out.status = 401;
		out.error = v.error.empty() ? "signature refused" : v.error;
		return out;
	}
	// What cannot be stored is refused here, 400, before storage: stored with the other requests
	// of its turn, it would fail them all (one transaction), and the same again on each retry.
	// JSON is UTF-8, and the error texts below quote the body.
	if (!ValidUtf8(request.body)) {
		out.status = 400;
		out.error = "the body is not valid UTF-8";
		return out;
	}
	try {
		Parsed parsed = ParseEvents(target.scheme, request.headers, request.body);
		out.events = std::move(parsed.events);
	} catch (const std::exception &e) {
		out.status = 400;
		out.error = e.what();
		return out;
	}
	for (const Event &event : out.events) {
		std::string why = Unstorable(event);
		if (!why.empty()) {
			out.events.clear();
			out.status = 400;
			out.error = why;
			return out;
		}
	}
	out.status = 200;
	return out;
}

// ---- the server ----------------------------------------------------------------------------

namespace {

struct Listener;

// A refused request's body is read and dropped up to this many times inbound_max_bytes.
constexpr size_t kDropLimitFactor = 16;

// One request on a connection (MHD's con_cls): created when its URI arrives.
struct Conn {
	Listener *listener = nullptr;
	uint64_t id = 0;
	std::string raw_uri; // path?query as sent
	bool started = false;
	bool suspended = false;
	bool answered = false;
	int refused = 0;    // 404 or 413 decided, answered once the body (dropped) has ended
	size_t dropped = 0; // bytes of its body dropped
	int status = 0;
	std::string message;
	std::string body;
	int64_t started_ms = 0;
	struct MHD_Connection *connection = nullptr;
};

// One TCP connection (MHD's socket_context), for the whole-request deadline: MHD's connection
// timeout measures only silence, so a client trickling a byte a second would hold it for hours.
struct Socket {
	struct MHD_Connection *connection = nullptr;
	int fd = -1;
	int64_t request_start_ms = -1; // the first byte of the request under way; -1 between requests
	int64_t idle_since_ms = 0;     // the end of the previous request (or the accept)
	bool handed = false;           // received whole, waiting for its answer: no deadline
	bool cut = false;              // shut down; MHD closes it
};

struct Listener {
	Receiver::Impl *impl = nullptr;
	struct MHD_Daemon *daemon = nullptr;
	std::string scheme;        // http | https
	std::string fallback_host; // host:port of the listen address
};

} // namespace

struct Receiver::Impl {
	ReceiverOptions options;
	std::vector<std::unique_ptr<Listener>> listeners;
	uint64_t next_id = 1;
	std::map<uint64_t, Conn *> waiting; // suspended, by id
	std::vector<Received> received;
	std::map<struct MHD_Connection *, Socket> sockets;

	int64_t TimeoutMsOfRequests() const { return static_cast<int64_t>(options.timeout_s) * 1000; }
	// When the socket's request must have arrived whole: inbound_timeout after its first byte.
	// A request whose first byte was not seen (it arrived while MHD was reading) is held to
	// twice the limit from the end of the previous one, which still bounds it.
	int64_t Deadline(const Socket &s) const
	{
		return s.request_start_ms >= 0 ? s.request_start_ms + TimeoutMsOfRequests()
		                               : s.idle_since_ms + 2 * TimeoutMsOfRequests();
	}
	void NoteFirstBytes();
	bool CutLateRequests();
};

namespace {

// close: the request's body was not read (a refusal before or while it arrived), so the
// connection cannot carry another request; the client is told not to reuse it.
enum MHD_Result
Reply(struct MHD_Connection *connection, int status, const std::string &message, bool close = false)
{
	std::string body = Json{{"status", status}, {"message", message}}.dump() + "\n";
	struct MHD_Response *response = MHD_create_response_from_buffer(body.size(), const_cast<char *>(body.data()),
	                                                                MHD_RESPMEM_MUST_COPY);
	if (response == nullptr)
		return MHD_NO;
	MHD_add_response_header(response, "Content-Type", "application/json");
	if (close)
		MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
	enum MHD_Result queued = MHD_queue_response(connection, static_cast<unsigned>(status), response);
	MHD_destroy_response(response);
	return queued;
}

// MHD_OPTION_URI_LOG_CALLBACK: the raw path and query (the access handler sees the path only),
// which HubSpot signs. Its return value is the request's con_cls.
void *
OnUri(void *cls, const char *uri, struct MHD_Connection *connection)
{
	try {
		auto *listener = static_cast<Listener *>(cls);
		auto *conn = new Conn;
		conn->listener = listener;
		conn->raw_uri = uri ? uri : "";
		conn->connection = connection;
		conn->started_ms = SteadyMs();
		auto found = listener->impl->sockets.find(connection);
		if (found != listener->impl->sockets.end() && found->second.request_start_ms < 0)
			found->second.request_start_ms = conn->started_ms;
		return conn;
	} catch (...) {
		return nullptr;
	}
}

enum MHD_Result
CollectHeader(void *cls, enum MHD_ValueKind, const char *key, const char *value)
{
	auto *headers = static_cast<Headers *>(cls);
	try {
		headers->emplace_back(key ? key : "", value ? value : "");
	} catch (...) {
		return MHD_NO;
	}
	return MHD_YES;
}

// The access handler. No exception may leave it (MHD is C): everything is caught, and a
// failure closes the connection (MHD_NO), which a sender retries.
enum MHD_Result
OnRequest(void *cls, struct MHD_Connection *connection, const char *url, const char *method, const char *,
          const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	try {
		auto *listener = static_cast<Listener *>(cls);
		Receiver::Impl *impl = listener->impl;
		auto *conn = static_cast<Conn *>(*con_cls);
		if (conn == nullptr)
			return MHD_NO;
		if (!conn->started) {
			// The headers are in: refuse what can be refused before any body is read.
			conn->started = true;
			int status = 0;
			const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length");
			if (std::strcmp(method, "POST") != 0 || TokenOfPath(url ? url : "").empty())
				status = 404;
			else if (length != nullptr && std::strtoull(length, nullptr, 10) > impl->options.max_bytes)
				status = 413;
			if (status == 0)
				return MHD_YES;
			// A client waiting for "100 Continue", or sending no body, can be answered now. One
			// already sending its body is answered once it ended, the body dropped as it comes:
			// a connection closed under a client still sending is reset, and the reset loses
			// the answer.
			const char *expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Expect");
			const char *chunked = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Transfer-Encoding");
			bool body_coming = chunked != nullptr || (length != nullptr && std::strtoull(length, nullptr, 10) > 0);
			if (!body_coming || (expect != nullptr && strcasecmp(expect, "100-continue") == 0))
				return Reply(connection, status, status == 404 ? "not found" : "body too large", true);
			conn->refused = status;
			return MHD_YES;
		}
		if (conn->answered)
			return Reply(connection, conn->status, conn->message);
		if (*upload_data_size > 0) {
			// A slow sender is cut off once its request took longer than the timeout, however
			// steadily it trickles (MHD's own timeout only covers silence).
			if (SteadyMs() - conn->started_ms > static_cast<int64_t>(impl->options.timeout_s) * 1000)
				return MHD_NO;
			// Over the limit (a chunked body, without Content-Length): the rest is dropped as
			// above, and 413 answered once it ended (MHD queues no answer mid-upload).
			if (conn->refused == 0 && conn->body.size() + *upload_data_size > impl->options.max_bytes) {
				conn->refused = 413;
				std::string().swap(conn->body);
			}
			if (conn->refused != 0) {
				// Dropped, up to a bound: past it (or the timeout) the connection is just closed.
				conn->dropped += *upload_data_size;
				*upload_data_size = 0;
				return conn->dropped > kDropLimitFactor * impl->options.max_bytes ? MHD_NO : MHD_YES;
			}
			conn->body.append(upload_data, *upload_data_size);
			*upload_data_size = 0;
			return MHD_YES;
		}
		if (conn->refused != 0)
			return Reply(connection, conn->refused, conn->refused == 404 ? "not found" : "body too large", true);
		if (conn->suspended)
			return MHD_YES;
		// The whole body is in: hand it over and wait for the answer.
		Received r;
		r.id = impl->next_id++;
		r.token = TokenOfPath(url);
		r.request.method = method;
		MHD_get_connection_values(connection, MHD_HEADER_KIND, &CollectHeader, &r.request.headers);
		const char *host = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Host");
		// Behind a reverse proxy that ends TLS, the sender called https: the proxy says so in
		// X-Forwarded-Proto. Trusting it is safe: it only picks which URI the signature is checked
		// against, and a signature over one the sender did not call does not verify.
		const char *proto = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "X-Forwarded-Proto");
		std::string scheme = listener->scheme;
		if (proto != nullptr && (std::strcmp(proto, "https") == 0 || std::strcmp(proto, "http") == 0))
			scheme = proto;
		r.request.uri = RebuildUri(scheme, host ? host : "", listener->fallback_host, conn->raw_uri);
		r.request.body = std::move(conn->body);
		conn->body.clear();
		conn->id = r.id;
		impl->received.push_back(std::move(r));
		impl->waiting[conn->id] = conn;
		conn->suspended = true;
		auto socket = impl->sockets.find(connection);
		if (socket != impl->sockets.end())
			socket->second.handed = true;
		MHD_suspend_connection(connection);
		return MHD_YES;
	} catch (...) {
		return MHD_NO;
	}
}

void
OnCompleted(void *cls, struct MHD_Connection *connection, void **con_cls, enum MHD_RequestTerminationCode)
{
	auto *impl = static_cast<Receiver::Impl *>(cls);
	// The next request on the connection has its own deadline, from its first byte.
	auto socket = impl->sockets.find(connection);
	if (socket != impl->sockets.end()) {
		socket->second.handed = false;
		socket->second.request_start_ms = -1;
		socket->second.idle_since_ms = SteadyMs();
	}
	auto *conn = static_cast<Conn *>(*con_cls);
	if (conn == nullptr)
		return;
	if (conn->id != 0)
		impl->waiting.erase(conn->id);
	delete conn;
	*con_cls = nullptr;
}

// MHD_OPTION_NOTIFY_CONNECTION: a connection opened or closed.
void
OnConnection(void *cls, struct MHD_Connection *connection, void **, enum MHD_ConnectionNotificationCode code)
{
	auto *impl = static_cast<Receiver::Impl *>(cls);
	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		impl->sockets.erase(connection);
		return;
	}
	try {
		Socket s;
		s.connection = connection;
		const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
		s.fd = info != nullptr ? info->connect_fd : -1;
		s.idle_since_ms = SteadyMs(); // its first byte starts its first request's time
		impl->sockets[connection] = s;
	} catch (...) {
		// Untracked: MHD's idle timeout still applies to it.
	}
}

} // namespace

// Between requests, a byte waiting on the socket is the first of the next request: noted
// before MHD reads it (a peek, which consumes nothing).
void
Receiver::Impl::NoteFirstBytes()
{
	int64_t now = -1;
	for (auto &entry : sockets) {
		Socket &s = entry.second;
		if (s.request_start_ms >= 0 || s.handed || s.cut || s.fd < 0)
			continue;
		char byte;
		if (recv(s.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 1) {
			if (now < 0)
				now = SteadyMs();
			s.request_start_ms = now;
		}
	}
}

// Shuts down every connection whose request is past its deadline (MHD has no call to close
// one; it sees the shutdown as the client gone, and closes it). Returns whether any was.
bool
Receiver::Impl::CutLateRequests()
{
	if (sockets.empty())
		return false;
	int64_t now = SteadyMs();
	bool any = false;
	for (auto &entry : sockets) {
		Socket &s = entry.second;
		if (s.handed || s.cut || s.fd < 0 || now < Deadline(s))
			continue;
		(void) shutdown(s.fd, SHUT_RDWR);
		s.cut = true;
		any = true;
	}
	return any;
}

Receiver::Receiver(const ReceiverOptions &options) : impl_(new Impl)
{
	impl_->options = options;
	if (options.tls && !MHD_is_feature_supported(MHD_FEATURE_TLS))
		throw std::runtime_error("this libmicrohttpd was built without TLS");
	for (const ListenAddress &a : options.addresses) {
		auto listener = std::make_unique<Listener>();
		listener->impl = impl_.get();
		listener->scheme = options.tls ? "https" : "http";
		bool v6 = a.host.find(':') != std::string::npos;
		listener->fallback_host = (v6              ? "[" + a.host + "]"
		                           : a.host == "*" ? "localhost"
		                                           : a.host) +
		                          ":" + std::to_string(a.port);

		struct addrinfo hints;
		std::memset(&hints, 0, sizeof hints);
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		struct addrinfo *found = nullptr;
		std::string port = std::to_string(a.port);
		int rc = getaddrinfo(a.host == "*" ? nullptr : a.host.c_str(), port.c_str(), &hints, &found);
		if (rc != 0 || found == nullptr)
			throw std::runtime_error("listen address " + a.host + ":" + port + ": " + gai_strerror(rc));
		struct sockaddr_storage addr;
		std::memset(&addr, 0, sizeof addr);
		std::memcpy(&addr, found->ai_addr, found->ai_addrlen);
		bool is_v6 = found->ai_family == AF_INET6;
		freeaddrinfo(found);

		std::vector<struct MHD_OptionItem> opts;
		opts.push_back({MHD_OPTION_SOCK_ADDR, 0, &addr});
		opts.push_back({MHD_OPTION_CONNECTION_LIMIT, static_cast<intptr_t>(options.max_connections), nullptr});
		// One client (a slowloris trickling header bytes inside the idle timeout) may not hold
		// every connection; a quarter still leaves a TLS-ending proxy, one address for all
		// senders, room enough.
		opts.push_back({MHD_OPTION_PER_IP_CONNECTION_LIMIT,
		                static_cast<intptr_t>(std::max(8, static_cast<int>(options.max_connections) / 4)), nullptr});
		opts.push_back({MHD_OPTION_CONNECTION_TIMEOUT, static_cast<intptr_t>(options.timeout_s), nullptr});
		opts.push_back({MHD_OPTION_URI_LOG_CALLBACK, reinterpret_cast<intptr_t>(&OnUri), listener.get()});
		opts.push_back({MHD_OPTION_NOTIFY_COMPLETED, reinterpret_cast<intptr_t>(&OnCompleted), impl_.get()});
		opts.push_back({MHD_OPTION_NOTIFY_CONNECTION, reinterpret_cast<intptr_t>(&OnConnection), impl_.get()});
		if (options.tls) {
			opts.push_back({MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char *>(impl_->options.key_pem.c_str())});
			opts.push_back({MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char *>(impl_->options.certificate_pem.c_str())});
		}
		opts.push_back({MHD_OPTION_END, 0, nullptr});
		// No MHD_USE_INTERNAL_POLLING_THREAD and no thread pool: external polling, so MHD
		// creates no thread and does everything inside Run().
		unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
		if (is_v6)
			flags |= MHD_USE_IPv6;
		if (options.tls)
			flags |= MHD_USE_TLS;
		listener->daemon = MHD_start_daemon(flags, static_cast<uint16_t>(a.port), nullptr, nullptr, &OnRequest,
		                                    listener.get(), MHD_OPTION_ARRAY, opts.data(), MHD_OPTION_END);
		if (listener->daemon == nullptr)
			throw std::runtime_error("could not listen on " + listener->fallback_host + " (" +
			                         (errno ? std::strerror(errno) : "libmicrohttpd refused the options") + ")");
		impl_->listeners.push_back(std::move(listener));
	}
}

Receiver::~Receiver()
{
	// Suspended connections must be resumed before their daemon stops.
	for (auto &w : impl_->waiting) {
		w.second->answered = true;
		w.second->status = 503;
		w.second->message = "shutting down";
		MHD_resume_connection(w.second->connection);
	}
	for (auto &l : impl_->listeners) {
		MHD_run(l->daemon);
		MHD_stop_daemon(l->daemon);
	}
}

std::vector<int>
Receiver::PollFds() const
{
	std::vector<int> fds;
	for (auto &l : impl_->listeners) {
		const union MHD_DaemonInfo *info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_EPOLL_FD);
		if (info != nullptr)
			fds.push_back(info->epoll_fd);
	}
	return fds;
}

long
Receiver::TimeoutMs() const
{
	long best = -1;
	// The next whole-request deadline.
	if (!impl_->sockets.empty()) {
		int64_t now = SteadyMs();
		for (const auto &entry : impl_->sockets) {
			const Socket &s = entry.second;
			if (s.handed || s.cut || s.fd < 0)
				continue;
			long v = static_cast<long>(std::max<int64_t>(0, std::min<int64_t>(60000, impl_->Deadline(s) - now)));
			if (best < 0 || v < best)
				best = v;
		}
	}
	for (auto &l : impl_->listeners) {
		MHD_UNSIGNED_LONG_LONG ms = 0;
		if (MHD_get_timeout(l->daemon, &ms) == MHD_YES) {
			long v = ms > 60000 ? 60000 : static_cast<long>(ms);
			if (best < 0 || v < best)
				best = v;
		}
	}
	return best;
}

void
Receiver::Run()
{
	impl_->NoteFirstBytes();
	for (auto &l : impl_->listeners)
		MHD_run(l->daemon);
	if (impl_->CutLateRequests())
		for (auto &l : impl_->listeners)
			MHD_run(l->daemon); // closes them now
}

std::vector<Received>
Receiver::TakeReceived()
{
	std::vector<Received> out;
	out.swap(impl_->received);
	return out;
}

void
Receiver::Answer(uint64_t id, int status, const std::string &message)
{
	auto it = impl_->waiting.find(id);
	if (it == impl_->waiting.end())
		return;
	Conn *conn = it->second;
	conn->answered = true;
	conn->status = status;
	conn->message = message;
	impl_->waiting.erase(it);
	MHD_resume_connection(conn->connection);
}

size_t
Receiver::Waiting() const
{
	return impl_->waiting.size();
}

} // namespace inbound
} // namespace switchboard
