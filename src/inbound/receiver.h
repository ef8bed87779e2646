// The HTTP side of the inbound receiver (SPEC §9): libmicrohttpd in external-poll mode, plus
// the server-free decisions (addresses, the URI a sender signed, what a request gets). The
// Postgres side (src/worker/receiver_main.cpp) drives it from the background worker's latch
// loop and does every database call between two Run() calls, never from inside one.
//
// Why libmicrohttpd: a well-kept HTTP/1.1 server (Debian libmicrohttpd-dev) with an
// external-poll mode (MHD_USE_EPOLL without MHD_USE_INTERNAL_POLLING_THREAD) and connection
// suspend/resume. With it no thread but the worker's main one ever exists: MHD does its work
// inside MHD_run(), called by the worker when its epoll descriptor is ready, so nothing can call
// Postgres from another thread; and a verified request is suspended until its events are
// committed, then resumed with its answer (acknowledged only when durable). cpp-httplib, the
// other choice, answers from its own thread pool.
//
// Plain C++ (no postgres.h): the decisions are unit-tested (test_inbound_receiver.cpp), the
// server by t/067_inbound_receiver.pl.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "inbound/verify.h"

namespace switchboard {
namespace inbound {

struct ListenAddress {
	std::string host; // an IPv4 or IPv6 literal, or "*" (every IPv4 address), or "localhost"
	int port = 0;
};

// switchboard.listen_addresses: a comma list of hosts, as PostgreSQL's own listen_addresses
// ("127.0.0.1", "::1" written "[::1]", "localhost", "*" for every IPv4 address), each on
// default_port (switchboard.listen_port) unless the entry names its own ("127.0.0.1:9000",
// "[::1]:9000"); empty: nothing listens. Throws std::invalid_argument naming the bad entry.
std::vector<ListenAddress> ParseListenAddresses(const std::string &text, int default_port);

// The full URI the sender called, as HubSpot signs it: scheme://Host-header + path?query. The
// Host header is what the sender put in its request (a reverse proxy must pass it on
// unchanged); without one, fallback_host (the listen address).
std::string RebuildUri(const std::string &scheme, const std::string &host_header, const std::string &fallback_host,
                       const std::string &path_and_query);

// The token of "/inbound/{token}" (32 letters or digits), or "" when the path is anything else.
std::string TokenOfPath(const std::string &path);

// What a token names, as the Postgres side found it.
struct RouteTarget {
	std::string route;
	Scheme scheme = Scheme::StandardWebhooks;
	std::string secret; // "" when the route has no inbound_secret: everything is refused
};

// What one request gets.
struct Outcome {
	int status = 200;          // 200 (stored, or a ping), 400, 401
	std::string error;         // for inbound_rejections.last_error (400, 401); never a secret
	std::vector<Event> events; // to store before answering (200 with events)
};

// Verify, then read the events (a WooCommerce ping: 200, nothing to store).
Outcome Decide(const RouteTarget &target, const Request &request, int64_t now_ms);

struct ReceiverOptions {
	std::vector<ListenAddress> addresses;
	bool tls = false;
	std::string certificate_pem, key_pem; // with tls
	unsigned max_connections = 256;
	unsigned timeout_s = 10;        // idle connections, and a whole request from its first byte
	size_t max_bytes = 1024 * 1024; // body limit: 413 beyond it
};

// A request whose body arrived completely, waiting (suspended) for its answer.
struct Received {
	uint64_t id = 0;
	std::string token;
	Request request; // uri rebuilt from the listen scheme and the Host header
};

class Receiver {
public:
	// Binds every address; throws std::runtime_error saying which failed and why.
	explicit Receiver(const ReceiverOptions &options);
	~Receiver();
	Receiver(const Receiver &) = delete;
	Receiver &operator=(const Receiver &) = delete;

	// One epoll descriptor per address, to wait on for readability.
	std::vector<int> PollFds() const;
	// How long until MHD needs Run() for its timeouts or a request deadline (-1: no limit).
	// Requests the last Run() read are not counted: take them (TakeReceived) before waiting.
	long TimeoutMs() const;
	// Does all pending I/O; new complete requests become available to TakeReceived().
	void Run();
	// The requests received since the last call (each suspended until Answer()).
	std::vector<Received> TakeReceived();
	// Resumes the request with this status and a short JSON body; Run() sends it.
	void Answer(uint64_t id, int status, const std::string &message);
	// Suspended requests (for tests and the activity line).
	size_t Waiting() const;

	struct Impl;

private:
	std::unique_ptr<Impl> impl_;
};

} // namespace inbound
} // namespace switchboard
