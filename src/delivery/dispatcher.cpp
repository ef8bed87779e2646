// Dispatcher: one round of delivery. Every batch becomes calls up front (so skipped deletes
// are known at once); the calls then wait in a per-endpoint queue and are submitted as the
// endpoint's concurrency, rate limit and circuit breaker allow, while the HttpClient is polled
// in short slices so should_stop is honoured promptly.
#include "delivery/dispatcher.h"
#include "http/json_limits.h"
#include "http/redact.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <exception>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// A daily quota (HubSpot DAILY, OpenAI insufficient_quota) does not come back within any
// backoff: pause the endpoint at least this long instead of probing it every few seconds.
const long kStopEndpointPauseMs = 60L * 60 * 1000;
// should_stop must be consulted at least this often.
const int kMaxPollWaitMs = 100;

int64_t
SystemUnixMs()
{
	return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
	    .count();
}

long
MsUntil(int64_t when, int64_t now)
{
	return when > now ? static_cast<long>(when - now) : 0;
}

// A positive integer option, or fallback when absent (options are validated at write time,
// but a hand-edited row must not make the worker divide by zero or spin).
long
PositiveOption(const Json &options, const char *name, long fallback)
{
	if (!options.is_object())
		return fallback;
	auto it = options.find(name);
	if (it == options.end() || !it->is_number())
		return fallback;
	double value = it->get<double>();
	if (!(value >= 1) || value > 1e9)
		return fallback;
	return static_cast<long>(value);
}

std::string
StringOption(const Json &options, const char *name)
{
	if (!options.is_object())
		return std::string();
	auto it = options.find(name);
	if (it == options.end() || !it->is_string())
		return std::string();
	return it->get<std::string>();
}

std::string
RateLimitText(const Json &options)
{
	return StringOption(options, "rate_limit");
}

// Why a change got no call (SkippedChanges): the connector only leaves out deletes.
std::string
SkipReason(const Route &route, const Change &change)
{
	if (change.op != Op::Delete)
		return "not sent: the connector built no request for this change";
	if (route.on_delete != "delete")
		return "delete not sent: on_delete is ignore";
	return "delete not sent: remote id of this key is unknown";
}

std::string
ReplaceAll(std::string text, const std::string &needle, const std::string &replacement)
{
	if (needle.empty())
		return text;
	for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + replacement.size()))
		text.replace(pos, needle.size(), replacement);
	return text;
}

// Error texts quote remote answers, and a remote may echo what it was sent: never let a
// credential reach a status view or a log line through them.
std::string
MaskSecrets(const Endpoint &endpoint, const std::vector<std::string> &tokens, std::string text)
{
	// Most results carry no error text: nothing to mask, and no parse of the secret per record
	// (that was a fifth of the worker's CPU in batched delivery).
	if (text.empty())
		return text;
	std::vector<std::string> secrets = tokens;
	secrets.push_back(endpoint.secret);
	Json parsed = TryParseRemoteJson(endpoint.secret);
	if (parsed.is_object() && parsed.contains("client_secret") && parsed["client_secret"].is_string()) {
		std::string client_secret = parsed["client_secret"].get<std::string>();
		secrets.push_back(client_secret);
		secrets.push_back(UrlEncode(client_secret));
	}
	// Longest first, so a secret containing another is masked whole.
	std::sort(secrets.begin(), secrets.end(),
	          [](const std::string &a, const std::string &b) { return a.size() > b.size(); });
	for (const auto &s : secrets)
		text = ReplaceAll(std::move(text), s, "****");
	// And what is not known to be ours: foreign tokens, passwords, URL paths.
	return RedactText(text);
}

} // namespace

// What the dispatcher remembers about an endpoint across Deliver calls.
struct Dispatcher::EndpointState {
	std::string name;
	std::string rate_limit; // option text the limiter was built from
	std::string rate_limit_group;
	std::string base_url; // as last used (SaveEndpointStates)
	EndpointLimiter limiter;
	// A remote limit on some requests (Connector::ExtraLimitFor, e.g. HubSpot searches),
	// built from the description it was last asked for.
	RateLimiter extra_limiter{0, 0};
	std::string extra_limit;
	CircuitBreaker breaker;
	std::string breaker_error; // error of the latest endpoint failure, quoted while backing off
	// Token (Connector::UsesToken), valid only for the base_url and secret it was fetched with.
	bool has_token = false;
	AuthToken token;
	std::string token_for;
	uint64_t requests = 0;
	uint64_t errors = 0;
	std::string last_error;
	int64_t last_error_at_ms = 0;
};

// What Deliver (DispatchRound) and Fetch (FetchCall) do alike for one endpoint: credentials
// kept out of error texts, error notes, the token, and the counters, breaker and limiter after
// an answer. Written once so that a pull page and a delivery are judged by the same rules.
struct EndpointSession {
	const Endpoint *endpoint = nullptr;
	Dispatcher::EndpointState *state = nullptr;
	const Connector *connector = nullptr; // nullptr: unknown kind
	std::vector<std::string> tokens;      // every token used meanwhile, for redaction

	bool UsesToken() const { return connector != nullptr && connector->UsesToken(); }

	std::string Redact(std::string text) const
	{
		std::vector<std::string> all = tokens;
		if (state->has_token)
			all.push_back(state->token.access_token);
		return MaskSecrets(*endpoint, all, std::move(text));
	}

	void NoteError(const std::string &error, int64_t now)
	{
		state->last_error = error;
		state->last_error_at_ms = now;
	}

	std::string BackingOffMessage(bool with_failures) const
	{
		std::string text = "endpoint " + endpoint->name + " is backing off";
		if (with_failures)
			text += " after " + std::to_string(state->breaker.consecutive_failures()) + " failures";
		if (!state->breaker_error.empty())
			text += ": " + state->breaker_error;
		return text;
	}

	// Look before asking: AllowRequest hands out the single probe of an open breaker, which
	// must go to a request that is really sent.
	bool BreakerRefuses(int64_t now) const
	{
		return state->breaker.state() != CircuitBreaker::State::Ok && now < state->breaker.next_attempt_at_ms();
	}

	// Credentials for a request built now: the token for kinds that use one (empty until it
	// is fetched), else the secret. signed_at_ms 0: "not sent yet" (webhooks fall back to the
	// capture time, and are rebuilt at send time).
	Auth CurrentAuth(int64_t now) const
	{
		Auth auth;
		if (UsesToken()) {
			if (state->has_token) {
				auth.bearer = state->token.access_token;
				auth.instance_url = state->token.instance_url;
			}
		} else {
			auth.bearer = endpoint->secret;
		}
		auth.signed_at_ms = now;
		return auth;
	}

	// The token request; false with *error (unredacted) when the secret cannot make one.
	bool TokenRequest(HttpRequest *request, std::string *error) const
	{
		try {
			*request = connector->BuildTokenRequest(*endpoint);
			return true;
		} catch (const std::exception &ex) {
			*error = ex.what();
			return false;
		}
	}

	// Takes the token from its answer; false with *error (unredacted) when none came.
	bool TakeToken(const HttpResponse &response, const std::string &allowed_hosts, std::string *error)
	{
		if (response.status == 0 || response.status >= 400)
			state->errors++;
		try {
			state->token = connector->ParseTokenResponse(response, allowed_hosts);
			state->has_token = true;
			tokens.push_back(state->token.access_token);
			return true;
		} catch (const std::exception &ex) {
			*error = ex.what();
			return false;
		}
	}

	// No token could be had: the breaker counts it (whatever the cause, sending on without a
	// token is pointless). Returns the error text, redacted.
	std::string TokenFailed(const std::string &message, int64_t now, int64_t sent_at)
	{
		std::string error = endpoint->kind + " token: " + Redact(message);
		state->breaker.OnFailure(now, -1, sent_at);
		state->breaker_error = error;
		NoteError(error, now);
		return error;
	}

	// The token was refused as expired: the next request fetches a new one.
	void DropToken()
	{
		if (state->has_token)
			tokens.push_back(state->token.access_token); // its echoes must stay masked
		state->has_token = false;
		state->token = AuthToken();
	}

	// The limiter for the connector's extra limit on this request; nullptr when none applies.
	RateLimiter *ExtraLimiter(const HttpRequest &request)
	{
		if (connector == nullptr)
			return nullptr;
		RequestLimit limit = connector->ExtraLimitFor(request);
		if (limit.count <= 0)
			return nullptr;
		if (limit.description != state->extra_limit) {
			state->extra_limiter = RateLimiter(limit.count, limit.window_ms);
			state->extra_limit = limit.description;
		}
		return &state->extra_limiter;
	}

	// Counters, breaker and limiter after an answer. error: its text (redacted), "" when the
	// answer carried none. Returns true when the answer only asked for a pause (429 with
	// Retry-After): the limiter then holds the endpoint back and the breaker is not escalated
	// (it would stall for minutes a live endpoint that said when to come back).
	bool Account(long status, const AnswerClass &answer, long retry_after_ms, const std::string &error, int64_t now,
	             int64_t sent_at)
	{
		if (status == 0 || status >= 400) {
			state->errors++;
			NoteError(error.empty() ? "HTTP " + std::to_string(status) : error, now);
		}
		CircuitBreaker &breaker = state->breaker;
		const bool throttled = !answer.stop_endpoint && status == 429 && retry_after_ms >= 0;
		if (answer.stop_endpoint) {
			breaker.OnFailure(now, std::max(retry_after_ms, kStopEndpointPauseMs), sent_at);
			state->breaker_error = error;
		} else if (throttled) {
			state->limiter.Penalize(now + std::min(retry_after_ms, CircuitBreaker::kRetryAfterCapMs));
			breaker.OnSuccess(now);
		} else if (answer.endpoint_failure) {
			breaker.OnFailure(now, retry_after_ms, sent_at);
			state->breaker_error = error;
		} else {
			breaker.OnSuccess(now);
		}
		return throttled;
	}
};

void
EndpointLimiter::Shared(const std::function<void()> &fn) const
{
	if (store_ == nullptr || !store_->Run(group_, &local_, fn))
		fn();
}

uint64_t
EndpointLimiter::Acquire(int64_t now_ms, long max_hold_ms)
{
	uint64_t ticket = 0;
	Shared([&] { ticket = local_.Acquire(now_ms, max_hold_ms); });
	return ticket;
}

void
EndpointLimiter::Complete(uint64_t ticket, int64_t now_ms)
{
	Shared([&] { local_.Complete(ticket, now_ms); });
}

int64_t
EndpointLimiter::NextAvailableMs(int64_t now_ms) const
{
	int64_t next = now_ms;
	Shared([&] { next = local_.NextAvailableMs(now_ms); });
	return next;
}

int64_t
EndpointLimiter::NextCheckMs(int64_t now_ms) const
{
	int64_t next = now_ms;
	int open = 0;
	Shared([&] {
		next = local_.NextAvailableMs(now_ms);
		open = local_.in_flight();
	});
	if (store_ != nullptr && next > now_ms + kSharedPollMs && open > 0)
		next = now_ms + kSharedPollMs;
	return next;
}

int
EndpointLimiter::in_flight() const
{
	int count = 0;
	Shared([&] { count = local_.in_flight(); });
	return count;
}

void
EndpointLimiter::Penalize(int64_t until_ms)
{
	Shared([&] { local_.Penalize(until_ms); });
}

void
EndpointLimiter::Save(int64_t now_ms, SavedEndpoint *out) const
{
	out->slots.clear();
	out->penalty_until_ms = INT64_MIN;
	if (store_ != nullptr)
		return;
	RateLimiter::State state = local_.Export();
	out->penalty_until_ms = state.penalty_until_ms;
	const int64_t completed_by = now_ms + local_.window_ms() + local_.guard_ms();
	for (size_t i = 0; i < state.slot_count; i++) {
		RateLimiter::Slot slot = state.slots[i];
		if (slot.free_at <= now_ms)
			continue;
		if (slot.open) {
			// Abandoned at the hand-over: it arrived by now, so its window ends as if it
			// completed now (never later than the bound it had).
			slot.open = false;
			slot.free_at = std::min(slot.free_at, completed_by);
		}
		out->slots.push_back(slot);
	}
}

void
EndpointLimiter::Restore(const SavedEndpoint &saved)
{
	if (store_ != nullptr)
		return;
	RateLimiter::State mine = local_.Export();
	std::vector<RateLimiter::Slot> slots = saved.slots;
	for (auto &slot : slots)
		slot.ticket = 0; // closed: no Complete() of this worker refers to them
	local_.Import(RateLimiter::State{std::max(mine.penalty_until_ms, saved.penalty_until_ms), mine.next_ticket,
	                                 slots.size(), slots.data()});
}

Dispatcher::Dispatcher(HttpClient *client, Clock clock) : client_(client), clock_(std::move(clock))
{
	if (!clock_)
		clock_ = SystemUnixMs;
}

Dispatcher::~Dispatcher() = default;

Dispatcher::EndpointState &
Dispatcher::StateFor(const Endpoint &endpoint)
{
	auto &slot = endpoints_[endpoint.name];
	bool fresh = !slot;
	if (fresh) {
		slot = std::make_unique<EndpointState>();
		slot->name = endpoint.name;
	}
	EndpointState &state = *slot;
	state.base_url = endpoint.base_url;
	// The worker calls ForgetEndpoint when a row changes, but a changed rate limit or
	// credential must never be applied with stale state even if that call was missed.
	std::string rate_limit = RateLimitText(endpoint.options);
	std::string group = StringOption(endpoint.options, "rate_limit_group");
	if (rate_limit != state.rate_limit || group != state.rate_limit_group) {
		int count = 0;
		long window_ms = 0;
		if (!ParseRateLimit(rate_limit, &count, &window_ms)) {
			count = 0;
			window_ms = 0;
		}
		state.limiter = EndpointLimiter(count, window_ms, group, rate_limit_store_);
		state.rate_limit = rate_limit;
		state.rate_limit_group = group;
	}
	// First use in this process: take over what the previous worker left (same remote only).
	SavedEndpoint saved;
	if (fresh && endpoint_state_store_ != nullptr &&
	    endpoint_state_store_->Load(endpoint.name, endpoint.base_url, &saved)) {
		state.limiter.Restore(saved);
		state.breaker.Restore(saved.breaker);
		state.breaker_error = saved.breaker_error;
	}
	std::string token_for = endpoint.base_url + '\n' + endpoint.secret;
	if (token_for != state.token_for) {
		state.has_token = false;
		state.token = AuthToken();
		state.token_for = token_for;
	}
	return state;
}

std::vector<EndpointStatus>
Dispatcher::EndpointStatuses() const
{
	std::vector<EndpointStatus> statuses;
	for (const auto &entry : endpoints_) {
		const EndpointState &state = *entry.second;
		EndpointStatus status;
		status.endpoint = entry.first;
		status.state = CircuitStateName(state.breaker.state());
		status.next_attempt_at_ms = state.breaker.state() == CircuitBreaker::State::Ok
		                                ? 0
		                                : state.breaker.next_attempt_at_ms();
		status.requests = state.requests;
		status.errors = state.errors;
		status.last_error = state.last_error;
		status.last_error_at_ms = state.last_error_at_ms;
		statuses.push_back(std::move(status));
	}
	return statuses;
}

void
Dispatcher::SaveEndpointStates() const
{
	if (endpoint_state_store_ == nullptr)
		return;
	int64_t now = clock_();
	for (const auto &entry : endpoints_) {
		const EndpointState &state = *entry.second;
		SavedEndpoint saved;
		saved.base_url = state.base_url;
		state.limiter.Save(now, &saved);
		saved.breaker = state.breaker.snapshot();
		saved.breaker_error = state.breaker_error;
		endpoint_state_store_->Save(entry.first, saved);
	}
}

void
Dispatcher::ForgetEndpoint(const std::string &name)
{
	endpoints_.erase(name);
}

int64_t
Dispatcher::EndpointReadyAt(const std::string &name) const
{
	auto it = endpoints_.find(name);
	if (it == endpoints_.end())
		return 0;
	const EndpointState &state = *it->second;
	int64_t now = clock_();
	int64_t ready = 0;
	if (state.breaker.state() != CircuitBreaker::State::Ok && state.breaker.next_attempt_at_ms() > now)
		ready = state.breaker.next_attempt_at_ms();
	int64_t limiter_next = state.limiter.NextCheckMs(now);
	if (limiter_next > now)
		ready = std::max(ready, limiter_next);
	return ready;
}

// The state of one Deliver call. Jobs are addressed by index (the HttpClient tag), so the
// jobs vector may grow while requests are in flight.
struct DispatchRound {
	struct Job {
		size_t batch = 0;
		size_t endpoint = 0; // index into endpoints
		Call call;
		bool token_request = false;
		bool resent = false;         // already resent once after INVALID_SESSION_ID
		int64_t sent_at = 0;         // clock ms of the latest submit (breaker rounds)
		uint64_t limiter_ticket = 0; // its rate-limit slot, released on its answer
		uint64_t transfer = 0;       // HttpClient transfer id while in flight, 0 otherwise
		// A half of a call the remote refused whole (CallResult::split): its changes were
		// sent once already, so deferring it (not stopping) costs them the attempt.
		std::string refused_whole;
	};

	enum class Token { NotNeeded, Ready, Missing, Fetching, Failed };

	// An endpoint's part of the round; the session (endpoint, state, connector) is shared
	// with Fetch.
	struct EndpointRound : EndpointSession {
		std::deque<size_t> queue; // jobs not yet submitted, in order
		int in_flight = 0;
		int max_concurrency = 1;
		long timeout_ms = 30000;
		// Connector::RebuildAtSend (signatures with the send time, the current token): calls
		// are rebuilt right before submitting (body and ids unchanged).
		bool rebuild_at_send = false;
		Token token = Token::NotNeeded;
		std::string token_error;
		// The token endpoint itself failed (5xx, 429, transport): the changes' own requests
		// were never sent, so they wait without losing an attempt.
		bool token_fault_is_endpoint = false;
		long token_status = 0;          // HTTP status of the failed token answer
		bool refreshed = false;         // the one token refresh of this round is used
		int64_t limiter_wait_until = 0; // waiting for a rate-limit slot until then (clock ms)
	};

	Dispatcher &dispatcher;
	const std::vector<RouteBatch> &batches;
	const DispatchOptions &options;
	std::vector<RouteAction> *route_actions;

	std::vector<std::vector<std::optional<Delivery>>> results; // [batch][change]
	std::vector<Job> jobs;
	std::vector<EndpointRound> endpoints;
	std::map<std::string, size_t> endpoint_index;
	std::map<std::string, std::string> disabled_routes; // route -> why
	int in_flight = 0;
	bool stopping = false;
	// HttpClient tags: this round's serial in the high half, the job index in the low half,
	// so that an answer of an earlier round (or of a Fetch: top bit set) is never taken for ours.
	static constexpr uint64_t kRoundTagMask = ~uint64_t(0xffffffff);
	uint64_t round_tag = 0;
	// Rate-limit waits end here (clock ms); the steady deadline guards against a clock that
	// does not advance (tests inject one), so Deliver can never wait forever.
	int64_t wait_deadline_ms = 0;
	std::chrono::steady_clock::time_point wait_deadline_steady;

	DispatchRound(Dispatcher &dispatcher_, const std::vector<RouteBatch> &batches_, const DispatchOptions &options_,
	              std::vector<RouteAction> *route_actions_)
	    : dispatcher(dispatcher_), batches(batches_), options(options_), route_actions(route_actions_)
	{
		dispatcher.round_serial_ = (dispatcher.round_serial_ + 1) & 0x7fffffff;
		round_tag = dispatcher.round_serial_ << 32;
	}

	uint64_t RoundTag(size_t job_index) const { return round_tag | static_cast<uint64_t>(job_index); }

	int64_t Now() const { return dispatcher.clock_(); }

	// ---- outcomes ---------------------------------------------------------------------

	void Record(size_t batch, size_t change, Delivery delivery)
	{
		std::optional<Delivery> &slot = results[batch][change];
		if (slot)
			return; // the first outcome stands: exactly one Delivery per change
		const RouteBatch &b = batches[batch];
		delivery.change_id = b.changes[change].id;
		delivery.route = b.route.name;
		delivery.key = b.changes[change].key;
		slot = std::move(delivery);
	}

	// Nothing was sent for these changes: the worker retries them without counting an attempt.
	void Defer(size_t job_index, const std::string &error, long retry_after_ms)
	{
		const Job &job = jobs[job_index];
		// A split half left for the next round was attempted (inside the refused call); not
		// counting it could let a tight rate limit resend the refused call forever.
		const bool attempted = !job.refused_whole.empty() && !stopping;
		for (size_t change : job.call.changes) {
			Delivery delivery;
			delivery.outcome = Outcome::Retry;
			delivery.attempted = attempted;
			delivery.error = attempted ? error + " (sent before in a request refused whole: " + job.refused_whole + ")"
			                           : error;
			delivery.retry_after_ms = retry_after_ms;
			Record(job.batch, change, std::move(delivery));
		}
	}

	void DeferQueue(EndpointRound &e, const std::string &error, long retry_after_ms)
	{
		while (!e.queue.empty()) {
			Defer(e.queue.front(), error, retry_after_ms);
			e.queue.pop_front();
		}
	}

	// The change counts as attempted although no answer about it came back (token failure,
	// a request that cannot be built): such faults do not heal by waiting alone.
	void Fail(size_t job_index, const std::string &error, long http_status)
	{
		const Job &job = jobs[job_index];
		for (size_t change : job.call.changes) {
			Delivery delivery;
			delivery.outcome = Outcome::Retry;
			delivery.attempted = true;
			delivery.error = error;
			delivery.http_status = http_status;
			Record(job.batch, change, std::move(delivery));
		}
	}

	// ---- planning ---------------------------------------------------------------------

	// Only Plan adds endpoints: references into `endpoints` stay valid afterwards.
	EndpointRound &EndpointFor(const Endpoint &endpoint)
	{
		auto found = endpoint_index.find(endpoint.name);
		if (found != endpoint_index.end())
			return endpoints[found->second];
		endpoint_index[endpoint.name] = endpoints.size();
		endpoints.emplace_back();
		EndpointRound &e = endpoints.back();
		e.endpoint = &endpoint;
		e.state = &dispatcher.StateFor(endpoint);
		e.connector = FindConnector(endpoint.kind); // nullptr: reported per batch by Plan
		long fallback_concurrency = options.default_concurrency;
		if (e.connector != nullptr && e.connector->DefaultConcurrency() > 0)
			fallback_concurrency = e.connector->DefaultConcurrency();
		e.max_concurrency = static_cast<int>(
		    std::min(PositiveOption(endpoint.options, "max_concurrency", fallback_concurrency), 1000L));
		if (e.max_concurrency < 1)
			e.max_concurrency = 1;
		e.timeout_ms = PositiveOption(endpoint.options, "timeout_ms", options.timeout_ms);
		e.rebuild_at_send = e.connector != nullptr && e.connector->RebuildAtSend();
		if (e.UsesToken())
			e.token = e.state->has_token ? Token::Ready : Token::Missing;
		return e;
	}

	void Plan()
	{
		results.resize(batches.size());
		for (size_t b = 0; b < batches.size(); ++b) {
			const RouteBatch &batch = batches[b];
			results[b].resize(batch.changes.size());
			if (batch.changes.empty())
				continue;
			EndpointFor(batch.endpoint);
			// Batches of one endpoint share its round state (queue, concurrency, token).
			const size_t endpoint = endpoint_index[batch.endpoint.name];
			EndpointRound &e = endpoints[endpoint];
			std::vector<Call> calls;
			std::string error;
			if (!e.connector) {
				error = "cannot build request: unknown endpoint kind \"" + Snippet(batch.endpoint.kind, 60) + "\"";
			} else {
				try {
					// signed_at_ms 0: calls signed at send time get their signature when submitted.
					Auth auth = e.CurrentAuth(0);
					calls = e.connector->BuildCalls(batch.endpoint, batch.route, batch.changes, auth);
				} catch (const std::exception &ex) {
					error = "cannot build request: " + e.Redact(ex.what());
				}
			}
			if (!error.empty()) {
				e.NoteError(error, Now());
				for (size_t c = 0; c < batch.changes.size(); ++c) {
					Delivery delivery;
					delivery.outcome = Outcome::Retry;
					delivery.attempted = true;
					delivery.error = error;
					Record(b, c, std::move(delivery));
				}
				continue;
			}
			for (size_t c : SkippedChanges(batch.changes, calls)) {
				Delivery delivery;
				delivery.outcome = Outcome::Skipped;
				delivery.error = SkipReason(batch.route, batch.changes[c]);
				Record(b, c, std::move(delivery));
			}
			for (auto &call : calls) {
				if (call.changes.empty())
					continue;
				Job job;
				job.batch = b;
				job.endpoint = endpoint;
				job.call = std::move(call);
				jobs.push_back(std::move(job));
				e.queue.push_back(jobs.size() - 1);
			}
		}
	}

	// ---- sending ----------------------------------------------------------------------

	// Rebuilds a job's call for the current auth from exactly the changes it carries. The
	// connector builds deterministically from the changes, so body and ids stay the same.
	void Rebuild(EndpointRound &e, Job &job, int64_t now)
	{
		const RouteBatch &batch = batches[job.batch];
		std::vector<Change> subset;
		subset.reserve(job.call.changes.size());
		for (size_t change : job.call.changes)
			subset.push_back(batch.changes[change]);
		std::vector<Call> calls = e.connector->BuildCalls(batch.endpoint, batch.route, subset, e.CurrentAuth(now));
		if (calls.size() != 1 || calls[0].changes.size() != subset.size())
			throw std::logic_error("connector split a call differently when rebuilding it");
		std::vector<size_t> mapped;
		mapped.reserve(subset.size());
		for (size_t index : calls[0].changes)
			mapped.push_back(job.call.changes.at(index));
		job.call.request = std::move(calls[0].request);
		job.call.changes = std::move(mapped);
	}

	void SubmitJob(EndpointRound &e, size_t job_index)
	{
		jobs[job_index].sent_at = Now();
		const Job &job = jobs[job_index];
		const long batch_timeout = job.token_request ? 0 : batches[job.batch].timeout_ms;
		jobs[job_index].transfer = dispatcher.client_->Submit(job.call.request,
		                                                      batch_timeout > 0 ? batch_timeout : e.timeout_ms,
		                                                      RoundTag(job_index));
		e.in_flight++;
		in_flight++;
		e.state->requests++;
	}

	void SubmitToken(EndpointRound &e, int64_t now)
	{
		HttpRequest request;
		std::string error;
		if (!e.TokenRequest(&request, &error)) {
			TokenFailed(e, error, 0, now, now, false);
			return;
		}
		Job job;
		job.endpoint = static_cast<size_t>(&e - endpoints.data());
		job.token_request = true;
		job.call.request = std::move(request);
		jobs.push_back(std::move(job));
		e.token = Token::Fetching;
		SubmitJob(e, jobs.size() - 1);
	}

	// endpoint_fault: the token endpoint failed (not our credentials or request).
	void TokenFailed(EndpointRound &e, const std::string &message, long http_status, int64_t now, int64_t sent_at,
	                 bool endpoint_fault)
	{
		e.token = Token::Failed;
		e.token_fault_is_endpoint = endpoint_fault;
		e.token_status = http_status;
		e.token_error = e.TokenFailed(message, now, sent_at);
		while (!e.queue.empty()) {
			FailForToken(e, e.queue.front(), now);
			e.queue.pop_front();
		}
	}

	// A change whose request could not be sent for want of a token. Only a failure of the
	// change's own request costs an attempt: a token endpoint outage defers it (else a long
	// login outage dead-letters the backlog); rejected credentials do count, as they do not
	// heal by waiting.
	void FailForToken(EndpointRound &e, size_t job_index, int64_t now)
	{
		if (e.token_fault_is_endpoint) {
			const CircuitBreaker &breaker = e.state->breaker;
			long wait = breaker.state() == CircuitBreaker::State::Ok ? -1 : MsUntil(breaker.next_attempt_at_ms(), now);
			Defer(job_index, e.token_error, wait);
		} else {
			Fail(job_index, e.token_error, e.token_status);
		}
	}

	bool WaitBudgetLeft(int64_t until) const
	{
		return until <= wait_deadline_ms && std::chrono::steady_clock::now() < wait_deadline_steady;
	}

	// Submits what this endpoint may send now; defers what it may not send in this round.
	void Pump(EndpointRound &e, int64_t now)
	{
		e.limiter_wait_until = 0;
		if (stopping) {
			DeferQueue(e, "not sent: the worker is stopping", -1);
			return;
		}
		CircuitBreaker &breaker = e.state->breaker;
		while (!e.queue.empty()) {
			size_t job_index = e.queue.front();
			const std::string &route = batches[jobs[job_index].batch].route.name;
			auto disabled = disabled_routes.find(route);
			if (disabled != disabled_routes.end()) {
				Defer(job_index, "not sent: route " + route + " is being disabled: " + disabled->second, -1);
				e.queue.pop_front();
				continue;
			}
			if (e.token == Token::Failed) {
				FailForToken(e, job_index, now);
				e.queue.pop_front();
				continue;
			}
			if (e.token == Token::Fetching || e.in_flight >= e.max_concurrency)
				return;
			if (e.BreakerRefuses(now)) {
				// Answers still in flight may close the breaker again (a success resets it).
				if (e.in_flight > 0)
					return;
				DeferQueue(e, e.BackingOffMessage(true), MsUntil(breaker.next_attempt_at_ms(), now));
				return;
			}
			if (e.token == Token::Missing) {
				SubmitToken(e, now);
				continue; // Fetching now (or Failed, which empties the queue)
			}
			EndpointLimiter &limiter = e.state->limiter;
			int64_t next = limiter.NextCheckMs(now);
			if (next > now) {
				if (WaitBudgetLeft(next)) {
					e.limiter_wait_until = next;
					return;
				}
				// Slots held by requests in flight free when they are answered.
				if (e.in_flight > 0 && limiter.in_flight() > 0)
					return;
				std::string limit = e.state->rate_limit.empty() ? std::string("a Retry-After pause")
				                                                : "rate limit " + e.state->rate_limit;
				DeferQueue(e, "not sent: " + limit + " of endpoint " + e.endpoint->name + " holds requests back",
				           MsUntil(next, now));
				return;
			}
			if (!breaker.AllowRequest(now)) {
				if (e.in_flight > 0)
					return;
				DeferQueue(e, e.BackingOffMessage(true), MsUntil(breaker.next_attempt_at_ms(), now));
				return;
			}
			jobs[job_index].limiter_ticket = limiter.Acquire(now, e.timeout_ms);
			if (jobs[job_index].limiter_ticket == 0) {
				// Only with rate_limit_group: another process took the slot since the look
				// above. Look again shortly (within the wait budget), as for a full limiter.
				if (WaitBudgetLeft(now + EndpointLimiter::kSharedPollMs)) {
					e.limiter_wait_until = now + EndpointLimiter::kSharedPollMs;
					return;
				}
				DeferQueue(e,
				           "not sent: rate limit " + e.state->rate_limit + " of endpoint " + e.endpoint->name +
				               " (group " + limiter.group() + ") holds requests back",
				           EndpointLimiter::kSharedPollMs);
				return;
			}
			e.queue.pop_front();
			if (e.rebuild_at_send) {
				try {
					Rebuild(e, jobs[job_index], now);
				} catch (const std::exception &ex) {
					std::string error = "cannot build request: " + e.Redact(ex.what());
					e.NoteError(error, now);
					Fail(job_index, error, 0);
					continue;
				}
			}
			SubmitJob(e, job_index);
		}
	}

	// ---- answers ----------------------------------------------------------------------

	void OnTokenAnswer(EndpointRound &e, const HttpResponse &response, int64_t now, int64_t sent_at)
	{
		std::string error;
		if (e.TakeToken(response, dispatcher.client_->AllowedHosts(), &error))
			e.token = Token::Ready;
		else
			TokenFailed(e, error, response.status, now, sent_at, IsOutageStatus(response.status));
	}

	void OnAnswer(uint64_t tag, HttpResponse response)
	{
		if ((tag & kRoundTagMask) != round_tag || (tag & ~kRoundTagMask) >= jobs.size())
			return; // not ours (an earlier round's or a Fetch's abandoned transfer)
		const size_t job_index = static_cast<size_t>(tag & ~kRoundTagMask);
		if (jobs[job_index].transfer == 0)
			return; // abandoned
		jobs[job_index].transfer = 0;
		const int64_t now = Now();
		EndpointRound &e = endpoints[jobs[job_index].endpoint];
		e.in_flight--;
		in_flight--;
		if (jobs[job_index].token_request) {
			OnTokenAnswer(e, response, now, jobs[job_index].sent_at);
			return;
		}
		Job &job = jobs[job_index];
		e.state->limiter.Complete(job.limiter_ticket, now);
		job.limiter_ticket = 0;
		const RouteBatch &batch = batches[job.batch];

		CallResult result;
		try {
			result = e.connector->ParseResult(job.call, batch.changes, response);
		} catch (const std::exception &ex) {
			// Repeating the call is safe (upserts, stable event ids); guessing an outcome is not.
			result = UniformResult(job.call, Outcome::Retry, std::string("cannot read the response: ") + ex.what());
		}
		if (result.http_status == 0)
			result.http_status = response.status;
		if (result.results.size() != job.call.changes.size()) {
			ChangeResult missing;
			missing.outcome = Outcome::Retry;
			missing.error = "the connector returned no result for this change";
			result.results.resize(job.call.changes.size(), missing);
		}
		result.error = e.Redact(result.error);
		for (auto &one : result.results)
			one.error = e.Redact(one.error);

		std::string call_error = result.error;
		if (call_error.empty())
			for (const auto &one : result.results)
				if (!one.error.empty() && one.outcome != Outcome::Delivered) {
					call_error = one.error;
					break;
				}
		// Per-record rejections are not endpoint failures: only call-level ones move the breaker.
		AnswerClass answer;
		answer.endpoint_failure = result.endpoint_failure;
		answer.stop_endpoint = result.stop_endpoint;
		const bool throttled = e.Account(response.status, answer, result.retry_after_ms, call_error, now, job.sent_at);
		const CircuitBreaker &breaker = e.state->breaker;

		if (result.refresh_auth && !job.resent && !stopping) {
			// The token expired: fetch one new token per round, then send the same changes
			// once more (rebuilt with it, ahead of the rest of the queue).
			if (!e.refreshed) {
				e.refreshed = true;
				e.DropToken();
				if (e.token != Token::Fetching && e.token != Token::Failed)
					e.token = Token::Missing;
			}
			job.resent = true;
			e.queue.push_front(job_index);
			return;
		}

		if (result.split && job.call.changes.size() > 1 && !stopping && Split(e, job_index, call_error, now))
			return; // job (a reference into jobs) is stale now

		if (result.disable_route && !disabled_routes.count(batch.route.name)) {
			// Shown in route_status and the log: a webhook URL often carries its token.
			std::string answered = result.http_status == 410 ? std::string("410 Gone")
			                                                 : "HTTP " + std::to_string(result.http_status);
			std::string reason = e.endpoint->kind + " endpoint answered " + answered + " at " +
			                     MaskUrl(job.call.request.url);
			disabled_routes[batch.route.name] = reason;
			if (route_actions)
				route_actions->push_back(RouteAction{batch.route.name, reason});
		}

		// A change retried because the endpoint failed should not come back before the
		// breaker lets requests through again.
		long breaker_wait = -1;
		if ((result.endpoint_failure || result.stop_endpoint) && !throttled &&
		    breaker.state() != CircuitBreaker::State::Ok)
			breaker_wait = MsUntil(breaker.next_attempt_at_ms(), now);
		for (size_t p = 0; p < job.call.changes.size(); ++p) {
			const ChangeResult &one = result.results[p];
			Delivery delivery;
			delivery.outcome = one.outcome;
			delivery.attempted = true;
			delivery.remote_id = one.remote_id;
			delivery.error = one.error.empty() && one.outcome != Outcome::Delivered ? result.error : one.error;
			delivery.http_status = result.http_status;
			delivery.latency_ms = response.elapsed_ms;
			delivery.retry_after_ms = one.retry_after_ms >= 0 ? one.retry_after_ms : result.retry_after_ms;
			if (one.outcome == Outcome::Retry && breaker_wait >= 0)
				delivery.retry_after_ms = std::max(delivery.retry_after_ms, breaker_wait);
			Record(job.batch, job.call.changes[p], std::move(delivery));
		}
	}

	// The remote refused a whole call for something some of its changes carry: each half
	// becomes a call of its own, sent next (in this round, limits permitting), until the
	// culprits are alone; the rest are delivered. A bad change among n costs about 2 log2 n
	// more requests. false (nothing changed) when the connector cannot build the halves.
	bool Split(EndpointRound &e, size_t job_index, const std::string &error, int64_t now)
	{
		const size_t batch_index = jobs[job_index].batch;
		const size_t endpoint_index_of_job = jobs[job_index].endpoint;
		const std::vector<size_t> changes = jobs[job_index].call.changes;
		const RouteBatch &batch = batches[batch_index];
		const size_t half = changes.size() / 2;
		std::vector<Job> parts;
		for (int h = 0; h < 2; ++h) {
			std::vector<size_t> part(changes.begin() + (h == 0 ? 0 : half),
			                         h == 0 ? changes.begin() + half : changes.end());
			std::vector<Change> subset;
			for (size_t change : part)
				subset.push_back(batch.changes[change]);
			std::vector<Call> calls;
			try {
				calls = e.connector->BuildCalls(batch.endpoint, batch.route, subset, e.CurrentAuth(now));
			} catch (const std::exception &) {
				return false;
			}
			size_t covered = 0;
			for (auto &call : calls) {
				if (call.changes.empty())
					continue;
				for (size_t &change : call.changes)
					change = part.at(change);
				covered += call.changes.size();
				Job job;
				job.batch = batch_index;
				job.endpoint = endpoint_index_of_job;
				job.call = std::move(call);
				job.refused_whole = error.empty() ? "HTTP error" : error;
				parts.push_back(std::move(job));
			}
			if (covered != part.size())
				return false; // a change would be left without a call
		}
		// Ahead of the queue, first half first.
		for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
			jobs.push_back(std::move(*it));
			e.queue.push_front(jobs.size() - 1);
		}
		return true;
	}

	// The worker is stopping: requests in flight are given up at once (a slow remote must not
	// hold up a shutdown or a DROP DATABASE waiting for this process). Their changes are sent
	// again later without losing an attempt; upserts and stable event ids make that safe.
	void Abandon()
	{
		const int64_t now = Now();
		for (size_t job_index = 0; job_index < jobs.size(); ++job_index) {
			Job &job = jobs[job_index];
			if (job.transfer == 0)
				continue;
			dispatcher.client_->Cancel(job.transfer);
			job.transfer = 0;
			EndpointRound &e = endpoints[job.endpoint];
			e.in_flight--;
			in_flight--;
			if (job.limiter_ticket != 0)
				e.state->limiter.Complete(job.limiter_ticket, now);
			job.limiter_ticket = 0;
			if (job.token_request) {
				e.token = Token::Missing;
				continue;
			}
			Defer(job_index, "abandoned: the worker is stopping", -1);
		}
	}

	// ---- the loop ---------------------------------------------------------------------

	void Run(const std::function<bool()> &should_stop)
	{
		wait_deadline_ms = Now() + std::max(options.max_wait_ms, 0L);
		wait_deadline_steady = std::chrono::steady_clock::now() +
		                       std::chrono::milliseconds(std::max(options.max_wait_ms, 0L));
		Plan();
		for (;;) {
			if (!stopping && should_stop && should_stop()) {
				stopping = true;
				Abandon();
			}
			int64_t now = Now();
			bool queued = false;
			int wait_ms = kMaxPollWaitMs;
			for (auto &e : endpoints) {
				Pump(e, now);
				if (e.queue.empty())
					continue;
				queued = true;
				if (e.limiter_wait_until > now)
					wait_ms = static_cast<int>(std::min<int64_t>(wait_ms, e.limiter_wait_until - now));
			}
			if (in_flight == 0 && !queued)
				break;
			if (in_flight == 0 && std::all_of(endpoints.begin(), endpoints.end(), [](const EndpointRound &e) {
				    return e.queue.empty() || e.limiter_wait_until == 0;
			    })) {
				// Nothing to wait for would ever move these queues: never spin.
				for (auto &e : endpoints)
					DeferQueue(e, "not sent: nothing could be sent in this round", -1);
				break;
			}
			for (auto &done : dispatcher.client_->Poll(std::max(wait_ms, 1)))
				OnAnswer(done.first, std::move(done.second));
		}
	}

	std::vector<Delivery> Collect()
	{
		std::vector<Delivery> out;
		for (size_t b = 0; b < results.size(); ++b) {
			for (size_t c = 0; c < results[b].size(); ++c) {
				if (!results[b][c]) {
					// Unreachable by design; a change must never vanish from the round.
					Delivery delivery;
					delivery.outcome = Outcome::Retry;
					delivery.error = "not sent";
					Record(b, c, std::move(delivery));
				}
				out.push_back(std::move(*results[b][c]));
			}
		}
		return out;
	}
};

std::vector<Delivery>
Dispatcher::Deliver(const std::vector<RouteBatch> &batches, const DispatchOptions &options,
                    const std::function<bool()> &should_stop, std::vector<RouteAction> *route_actions)
{
	DispatchRound round(*this, batches, options, route_actions);
	round.Run(should_stop);
	return round.Collect();
}

// ---- Fetch: one request outside a delivery round ------------------------------------------

namespace {

std::string
DescribeAnswer(const HttpResponse &response)
{
	if (response.status == 0)
		return "transport error: " + Snippet(response.transport_error);
	std::string text = "HTTP " + std::to_string(response.status);
	if (!response.body.empty())
		text += ": " + Snippet(response.body);
	return text;
}

HttpResponse
NoAnswer(const std::string &why)
{
	HttpResponse response;
	response.transport_error = why;
	return response;
}

} // namespace

struct FetchCall {
	Dispatcher &dispatcher;
	const std::function<HttpRequest(const Auth &)> &build;
	const std::function<bool()> &should_stop;
	EndpointSession session;
	long timeout_ms = 30000;
	// Limiter waits end here (clock ms); the steady deadline guards against an injected clock
	// that does not advance, as in Deliver.
	int64_t wait_deadline_ms = 0;
	std::chrono::steady_clock::time_point wait_deadline_steady;

	FetchCall(Dispatcher &dispatcher_, const Endpoint &endpoint, const std::function<HttpRequest(const Auth &)> &build_,
	          const std::function<bool()> &should_stop_)
	    : dispatcher(dispatcher_), build(build_), should_stop(should_stop_)
	{
		session.endpoint = &endpoint;
		session.state = &dispatcher_.StateFor(endpoint);
		session.connector = FindConnector(endpoint.kind);
	}

	int64_t Now() const { return dispatcher.clock_(); }
	bool Stopping() const { return should_stop && should_stop(); }
	Dispatcher::EndpointState &state() { return *session.state; }

	// Submits one request and waits for its answer; false when the worker is stopping first
	// (the transfer is abandoned: its unique tag makes sure nobody mistakes its answer).
	bool Exchange(const HttpRequest &request, HttpResponse *response)
	{
		const uint64_t tag = (uint64_t(1) << 63) | ++dispatcher.fetch_serial_;
		const uint64_t transfer = dispatcher.client_->Submit(request, timeout_ms, tag);
		state().requests++;
		for (;;) {
			for (auto &done : dispatcher.client_->Poll(kMaxPollWaitMs))
				if (done.first == tag) {
					*response = std::move(done.second);
					return true;
				}
			if (Stopping()) {
				dispatcher.client_->Cancel(transfer);
				return false;
			}
		}
	}

	// The cached token, or a new one. false with *failure set when none could be had.
	bool EnsureToken(HttpResponse *failure)
	{
		if (state().has_token)
			return true;
		HttpRequest request;
		std::string error;
		if (!session.TokenRequest(&request, &error)) {
			*failure = NoAnswer(session.TokenFailed(error, Now(), -1));
			return false;
		}
		HttpResponse response;
		const int64_t sent_at = Now();
		if (!Exchange(request, &response)) {
			*failure = NoAnswer("abandoned: the worker is stopping");
			return false;
		}
		if (session.TakeToken(response, dispatcher.client_->AllowedHosts(), &error))
			return true;
		*failure = NoAnswer(session.TokenFailed(error, Now(), sent_at));
		return false;
	}

	// Waits until the endpoint's limiter (and the connector's extra limiter, when it has one
	// for this request) has a slot; *now is then the time to take it at. false with *failure
	// set when the wait would outlast max_wait_ms or the worker is stopping.
	bool WaitForSlot(RateLimiter *extra, int64_t *now, HttpResponse *failure)
	{
		for (;;) {
			if (Stopping()) {
				*failure = NoAnswer("not sent: the worker is stopping");
				return false;
			}
			*now = Now();
			const int64_t endpoint_next = state().limiter.NextCheckMs(*now);
			const int64_t extra_next = extra != nullptr ? extra->NextAvailableMs(*now) : *now;
			const int64_t next = std::max(endpoint_next, extra_next);
			if (next <= *now)
				return true;
			if (next > wait_deadline_ms || std::chrono::steady_clock::now() >= wait_deadline_steady) {
				std::string limit;
				if (endpoint_next > *now)
					limit = state().rate_limit.empty() ? std::string("a Retry-After pause")
					                                   : "rate limit " + state().rate_limit;
				else
					limit = state().extra_limit;
				*failure = NoAnswer("rate limited: " + limit + " of endpoint " + session.endpoint->name +
				                    " holds requests back for " + std::to_string(next - *now) + " ms");
				return false;
			}
			std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(next - *now, kMaxPollWaitMs)));
		}
	}

	HttpResponse Run(long default_timeout_ms, long max_wait_ms)
	{
		const Endpoint &endpoint = *session.endpoint;
		if (session.connector == nullptr)
			return NoAnswer("not sent: unknown endpoint kind \"" + Snippet(endpoint.kind, 60) + "\"");
		timeout_ms = PositiveOption(endpoint.options, "timeout_ms",
		                            default_timeout_ms > 0 ? default_timeout_ms : 30000);
		wait_deadline_ms = Now() + std::max(max_wait_ms, 0L);
		wait_deadline_steady = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(max_wait_ms, 0L));
		if (Stopping())
			return NoAnswer("not sent: the worker is stopping");
		bool refreshed = false;
		for (;;) {
			if (session.BreakerRefuses(Now()))
				return NoAnswer(session.BackingOffMessage(false));
			HttpResponse failure;
			if (session.UsesToken() && !EnsureToken(&failure))
				return failure;
			// Built once to learn the URL (which limits apply to it), and again after a wait,
			// so that signed_at_ms is the send time.
			int64_t built_at = Now();
			HttpRequest request = build(session.CurrentAuth(built_at));
			RateLimiter *extra = session.ExtraLimiter(request);
			int64_t now = built_at;
			if (!WaitForSlot(extra, &now, &failure))
				return failure;
			if (!state().breaker.AllowRequest(now))
				return NoAnswer(session.BackingOffMessage(false));
			const int64_t sent_at = now;
			const uint64_t ticket = state().limiter.Acquire(now, timeout_ms);
			if (ticket == 0)
				continue; // rate_limit_group: another process took the slot meanwhile; wait again
			const uint64_t extra_ticket = extra != nullptr ? extra->Acquire(now, timeout_ms) : 0;
			if (now != built_at)
				request = build(session.CurrentAuth(now));

			HttpResponse response;
			if (!Exchange(request, &response))
				return NoAnswer("abandoned: the worker is stopping"); // its slots expire after timeout_ms
			now = Now();
			state().limiter.Complete(ticket, now);
			if (extra_ticket != 0)
				extra->Complete(extra_ticket, now);
			// The same judgement as for a delivery: the connector classifies the answer.
			const AnswerClass answer = session.connector->ClassifyAnswer(response);
			const bool failed = response.status == 0 || response.status >= 400;
			session.Account(response.status, answer, RetryAfterMs(response),
			                failed ? session.Redact(DescribeAnswer(response)) : std::string(), now, sent_at);
			if (answer.token_expired && session.UsesToken() && !refreshed) {
				// The cached token expired: one new token, one more try with it.
				refreshed = true;
				session.DropToken();
				continue;
			}
			if (response.status == 0)
				response.transport_error = session.Redact(response.transport_error);
			return response;
		}
	}
};

HttpResponse
Dispatcher::Fetch(const Endpoint &endpoint, const std::function<HttpRequest(const Auth &)> &build, long timeout_ms,
                  long max_wait_ms, const std::function<bool()> &should_stop)
{
	FetchCall call(*this, endpoint, build, should_stop);
	return call.Run(timeout_ms, max_wait_ms);
}

std::string
Dispatcher::RedactSecrets(const Endpoint &endpoint, std::string text) const
{
	std::vector<std::string> tokens;
	auto it = endpoints_.find(endpoint.name);
	if (it != endpoints_.end() && it->second->has_token)
		tokens.push_back(it->second->token.access_token);
	return MaskSecrets(endpoint, tokens, std::move(text));
}

} // namespace switchboard
