// HTTP client for the delivery worker: one libcurl multi handle kept for the worker's
// life, so connections (and TLS sessions) to an endpoint are reused across batches, and
// many requests are in flight at once without threads.
//
// Plain C++ (no postgres.h). Nothing here throws out of a libcurl callback, and nothing
// calls back into the caller: results are collected by Poll, between which the worker
// checks for interrupts. libcurl allocates with malloc, never palloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "http/http_types.h"

namespace switchboard {

struct HttpClientOptions {
	long max_total_connections = 256; // across all hosts; transfers beyond it queue inside libcurl
	// Per host, 0 = no cap of its own: the dispatcher bounds each endpoint (max_concurrency), and
	// a lower cap here would queue its requests inside libcurl, where their timeout runs (an
	// openai endpoint with max_concurrency 64 had only 16 requests at the model).
	long max_host_connections = 0;
	size_t max_response_bytes = 8 * 1024 * 1024;
	long connect_timeout_ms = 10 * 1000;
	std::string user_agent = "switchboard";
	// switchboard.allowed_hosts (config/host_policy.h), enforced on every request: the URL's
	// host before anything is sent, and each address it resolves to just before connecting
	// (link-local and metadata addresses only when listed as an IP or CIDR entry). Empty:
	// any host, except those addresses.
	std::string allowed_hosts;
	// When set, asked at every request instead of allowed_hosts, so that a reloaded setting
	// applies to the next request. Called on the caller's thread, inside Submit.
	std::function<std::string()> current_allowed_hosts;
	// CURLOPT_RESOLVE entries ("host:port:address"): tests stand them in for DNS.
	std::vector<std::string> resolve;
};

// curl_global_init, once per process. Call it at worker start, before any thread could
// exist; later calls are no-ops returning the first result. On failure *error (when given)
// says why, and no HttpClient can be used.
bool HttpGlobalInit(std::string *error = nullptr);

class HttpClient {
public:
	// Throws std::runtime_error when libcurl cannot be initialised.
	explicit HttpClient(HttpClientOptions options = HttpClientOptions());
	~HttpClient();
	HttpClient(HttpClient &&) noexcept;
	HttpClient &operator=(HttpClient &&) noexcept;
	// A moved-from client may only be destroyed or assigned to.
	HttpClient(const HttpClient &) = delete;
	HttpClient &operator=(const HttpClient &) = delete;

	// Starts a transfer and returns its id (unique for this client). Methods GET, POST, PUT,
	// PATCH, DELETE (any other token is sent as is); the body is sent when not empty, and
	// always for POST/PUT/PATCH. timeout_ms bounds the whole transfer (<= 0: 30 s).
	// A request that cannot even be started (bad header, out of handles, a host the policy
	// refuses) is not an exception: it completes at the next Poll with status 0 and the
	// reason. Redirects are never followed: a 3xx is the answer.
	// Only std::bad_alloc can escape.
	uint64_t Submit(const HttpRequest &request, long timeout_ms, uint64_t tag);

	// Drives transfers for at most wait_ms (negative: 0) and returns every transfer that
	// finished, paired with the tag given to Submit. Returns as soon as something finished,
	// when Wakeup was called, or when wait_ms has passed (an empty vector then).
	std::vector<std::pair<uint64_t, HttpResponse>> Poll(int wait_ms);

	// Abandons a transfer Submit started (its id): it is stopped, its connection closed, and
	// Poll never returns it. false when the id is unknown or already returned by Poll.
	bool Cancel(uint64_t id);
	// The host policy now in force (options.current_allowed_hosts, else allowed_hosts).
	std::string AllowedHosts() const;

	// Transfers submitted whose results Poll has not returned yet.
	size_t InFlight() const;

	// Makes a Poll in progress (or the next one) return early. Safe from another thread;
	// not async-signal-safe.
	void Wakeup();

private:
	struct State;
	std::unique_ptr<State> state_;
};

} // namespace switchboard
