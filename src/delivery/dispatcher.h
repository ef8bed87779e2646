// Dispatcher: turns translated changes into HTTP calls and calls into per-change outcomes.
// Per endpoint it enforces max_concurrency, rate_limit and a circuit breaker; it fetches and
// caches tokens for kinds that use them (refreshing once when one expires); it never blocks
// longer than it is allowed to, so the worker can stop promptly. What differs between kinds
// it asks the endpoint's Connector (connectors/connector.h), never the kind's name.
//
// Plain C++ (no postgres.h): unit-tested against HTTP servers on 127.0.0.1.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "connectors/connector.h"
#include "delivery/circuit_breaker.h"
#include "delivery/rate_limiter.h"
#include "http/http_client.h"
#include "http/redact.h" // RedactedExcerpt, for callers that build errors from answers

namespace switchboard {

// The changes of one route to send in this round: at most one change per key, in queue order.
struct RouteBatch {
	Endpoint endpoint; // secret resolved
	Route route;
	std::vector<Change> changes;
	// > 0: bounds each request of this batch instead of the endpoint's timeout (an
	// orchestration step's options.timeout_ms); token requests keep the endpoint's.
	long timeout_ms = 0;
};

// What became of one change.
struct Delivery {
	int64_t change_id = 0;
	std::string route;
	std::string key;
	Outcome outcome = Outcome::Retry; // Delivered | Retry | Dead | Skipped
	// false: nothing was sent for it (breaker open, rate limit wait past the deadline,
	// shutdown); the worker then does not count an attempt. Always false for Skipped.
	bool attempted = false;
	std::string remote_id;    // Delivered, when the remote returned one
	std::string error;        // Retry/Dead/Skipped: why
	long http_status = 0;     // of the call that carried it; 0 when no answer
	long retry_after_ms = -1; // earliest sensible retry (Retry-After, breaker), -1 when none
	double latency_ms = 0;
};

// Something the worker must do to a route's row (a webhook answered 410 Gone).
struct RouteAction {
	std::string route;
	std::string reason; // "webhook endpoint answered 410 Gone at https://host/…" (path masked)
};

// For the endpoint_status view.
struct EndpointStatus {
	std::string endpoint;
	std::string state;              // ok | backing_off | open
	int64_t next_attempt_at_ms = 0; // 0 when not backing off
	uint64_t requests = 0;          // HTTP requests sent since the worker started
	uint64_t errors = 0;            // of those, failed (transport, 4xx/5xx at call level)
	std::string last_error;
	int64_t last_error_at_ms = 0;
};

struct DispatchOptions {
	long timeout_ms = 30000; // per request, unless the endpoint's options.timeout_ms says otherwise
	long max_wait_ms = 5000; // longest time Deliver waits on rate limits before deferring the rest
	// per endpoint, unless options.max_concurrency or the connector (DefaultConcurrency:
	// webhook 16) says otherwise
	int default_concurrency = 4;
};

// Where limiters shared by several processes live (endpoint option rate_limit_group: the
// workers of several databases calling one remote account). Run calls fn with *limiter loaded
// with the group's state (built by the caller for the endpoint's rate_limit) and stores it back
// after, atomically for every process; false when the group cannot be kept (no room), and fn
// then ran on the caller's own limiter alone.
class RateLimitStore {
public:
	virtual ~RateLimitStore() = default;
	virtual bool Run(const std::string &group, RateLimiter *limiter, const std::function<void()> &fn) = 0;
};

// What a worker hands over to the next worker of its database about an endpoint, so that one
// that exits (to make room, or stopped) and is started again mid-window still honours the
// endpoint's rate_limit and circuit breaker: the grants whose window still runs (those in
// flight counted as completed at the hand-over), a 429's pause, and the breaker.
struct SavedEndpoint {
	std::string base_url; // Save: the endpoint's; a state saved for another remote is not restored
	int64_t penalty_until_ms = INT64_MIN;
	std::vector<RateLimiter::Slot> slots; // none for an endpoint with rate_limit_group
	CircuitBreaker::Snapshot breaker{};
	std::string breaker_error;
};

class EndpointStateStore {
public:
	virtual ~EndpointStateStore() = default;
	// false when nothing was saved for the endpoint, or for another base_url (another remote).
	virtual bool Load(const std::string &endpoint, const std::string &base_url, SavedEndpoint *out) = 0;
	virtual void Save(const std::string &endpoint, const SavedEndpoint &state) = 0;
};

// An endpoint's limiter: its own, or with rate_limit_group one shared through a RateLimitStore.
class EndpointLimiter {
public:
	EndpointLimiter() : local_(0, 0) {}
	EndpointLimiter(int count, long window_ms, std::string group, RateLimitStore *store)
	    : local_(count, window_ms), group_(std::move(group)), store_(group_.empty() ? nullptr : store)
	{
	}
	uint64_t Acquire(int64_t now_ms, long max_hold_ms);
	void Complete(uint64_t ticket, int64_t now_ms);
	int64_t NextAvailableMs(int64_t now_ms) const;
	// When to look again: NextAvailableMs, but with a group whose slots are held by requests
	// in flight (other processes' too, whose answers free them at times nobody here knows),
	// no later than kSharedPollMs from now.
	int64_t NextCheckMs(int64_t now_ms) const;
	static constexpr int64_t kSharedPollMs = 50;
	int in_flight() const;
	void Penalize(int64_t until_ms);
	const std::string &group() const { return group_; }
	// The endpoint's own limiter's state (nothing with a group, whose state is shared anyway):
	// slots still busy at now_ms, those in flight completed at now_ms.
	void Save(int64_t now_ms, SavedEndpoint *out) const;
	void Restore(const SavedEndpoint &saved);

private:
	void Shared(const std::function<void()> &fn) const;
	mutable RateLimiter local_; // with a group: a copy of the shared state during a call
	std::string group_;
	RateLimitStore *store_ = nullptr;
};

class Dispatcher {
public:
	using Clock = std::function<int64_t()>; // unix ms; injectable for tests
	// client must outlive the dispatcher, and nothing else may have transfers in flight on it
	// during Deliver (Deliver collects every finished transfer it polls).
	explicit Dispatcher(HttpClient *client, Clock clock = nullptr);
	~Dispatcher(); // out of line: EndpointState is complete only in dispatcher.cpp
	Dispatcher(const Dispatcher &) = delete;
	Dispatcher &operator=(const Dispatcher &) = delete;

	// Sends every batch and returns exactly one Delivery per input change (any order).
	// should_stop is consulted at least every 100 ms; once it returns true, Deliver returns at
	// once: calls not yet sent and calls in flight (abandoned, their transfers cancelled) come
	// back as Retry with attempted = false. route_actions receives routes to disable.
	// A call the remote refused whole (CallResult::split) is sent again in halves, down to
	// single changes, within the round as far as its limits allow.
	std::vector<Delivery> Deliver(const std::vector<RouteBatch> &batches, const DispatchOptions &options,
	                              const std::function<bool()> &should_stop, std::vector<RouteAction> *route_actions);

	std::vector<EndpointStatus> EndpointStatuses() const;

	// Shared limiters for endpoints with rate_limit_group (not owned; nullptr: each endpoint
	// keeps its own). Set before the first call.
	void SetRateLimitStore(RateLimitStore *store) { rate_limit_store_ = store; }
	// Where endpoint states are handed over between the workers of a database (not owned;
	// nullptr: none). An endpoint's state is loaded from it when first used; SaveEndpointStates
	// stores them all (the worker calls it before exiting).
	void SetEndpointStateStore(EndpointStateStore *store) { endpoint_state_store_ = store; }
	void SaveEndpointStates() const;

	// Drops cached state of an endpoint (token, breaker, limiter) after its row changed.
	void ForgetEndpoint(const std::string &name);

	// Earliest time (unix ms) at which this endpoint may be called again; 0 when now.
	int64_t EndpointReadyAt(const std::string &name) const;

	// One request outside a delivery round (a pull page), under the same per-endpoint rules as
	// Deliver: circuit breaker, rate limit (waited for at most max_wait_ms), token (fetched and
	// cached as in Deliver; when the connector says it expired, e.g. Salesforce 401
	// INVALID_SESSION_ID, a new one is fetched and the request rebuilt and sent once more).
	// Requests the connector names a limit for (Connector::ExtraLimitFor: HubSpot searches,
	// 4 per second) also pass that limit. build makes the request from the current Auth
	// (bearer, instance_url, signed_at_ms = now); it may be called more than once, and what it
	// throws propagates.
	// timeout_ms bounds the request unless options.timeout_ms says otherwise.
	//
	// Returns the answer, or status 0 with transport_error saying why nothing usable came back:
	// "endpoint <name> is backing off: <last error>", "rate limited: ...", "<kind> token:
	// ...", "not sent: the worker is stopping", a transport error. No text carries a secret.
	// should_stop is consulted at least every 100 ms; once it is true Fetch returns at once and
	// a request in flight is abandoned (its answer, a read, is dropped by a later Poll: Fetch
	// tags have the top bit set and are never taken for Deliver's). As with Deliver, nothing
	// else may have transfers in flight on the client meanwhile.
	HttpResponse Fetch(const Endpoint &endpoint, const std::function<HttpRequest(const Auth &)> &build, long timeout_ms,
	                   long max_wait_ms, const std::function<bool()> &should_stop);

	// text with the endpoint's credentials (secret, Salesforce client_secret, the cached
	// token) replaced by "****": for error texts built from what Fetch returned.
	std::string RedactSecrets(const Endpoint &endpoint, std::string text) const;

private:
	struct EndpointState;
	HttpClient *client_;
	Clock clock_;
	RateLimitStore *rate_limit_store_ = nullptr;
	EndpointStateStore *endpoint_state_store_ = nullptr;
	std::map<std::string, std::unique_ptr<EndpointState>> endpoints_;
	uint64_t fetch_serial_ = 0; // makes every Fetch's HttpClient tag unique
	uint64_t round_serial_ = 0; // Deliver's tags carry it (31 bits), so rounds never mix answers
	EndpointState &StateFor(const Endpoint &endpoint);
	friend struct EndpointSession;
	friend struct DispatchRound;
	friend struct FetchCall;
};

} // namespace switchboard
