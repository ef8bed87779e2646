// Per-endpoint circuit breaker: an endpoint that keeps failing is backed off as a whole
// instead of being hammered; its changes wait in the queue and nothing is dropped.
//
//   Ok          requests flow.
//   BackingOff  after 1..4 consecutive endpoint failures: nothing is sent before
//               next_attempt_at, then requests flow again.
//   Open        after 5 consecutive failures: after the open interval one probe request
//               is let through; its failure re-opens with a longer interval (30 s doubling,
//               up to 5 minutes), its success closes the breaker.
// Any success returns to Ok and resets the counters.
//
// Consecutive failures are counted per round, not per request: a failure counts only when
// its request was sent after the previous counted failure, so the 4 answers of 4 requests
// that were in flight together are one step, not four. And the pause stays proportionate:
// it never exceeds a third of how long the endpoint has been failing so far (at least 1 s),
// so an outage costs at most about a third more after it ends (a burst of seconds costs
// seconds), while a long one still backs off to 5 minutes.
// A 429 with Retry-After is not a failure (the endpoint answers; the limiter pauses it).
//
// Deterministic on purpose (no jitter): the worker shows next_attempt_at to the DBA, and
// per-change retries already carry the jitter. Plain C++; times are caller-supplied ms.
#pragma once

#include <cstdint>

namespace switchboard {

class CircuitBreaker {
public:
	enum class State { Ok, BackingOff, Open };

	static constexpr int kOpenAfterFailures = 5;
	static constexpr long kBackoffBaseMs = 1000;    // 1 s, 2 s, 4 s, 8 s while backing off
	static constexpr long kOpenBaseMs = 30L * 1000; // first open interval
	static constexpr long kOpenCapMs = 5L * 60 * 1000;
	static constexpr long kRetryAfterCapMs = 60L * 60 * 1000;
	// A pause is at most 1/kProportionDivisor of how long the endpoint has been failing.
	static constexpr int kProportionDivisor = 3;

	// True when a request may be sent now. In Open this grants a single probe once the
	// interval has passed, and re-arms the interval, so a probe whose outcome is never
	// reported cannot wedge the endpoint: another probe follows one interval later.
	bool AllowRequest(int64_t now_ms);

	// The endpoint answered (any answer that is not an endpoint failure, a 4xx included).
	void OnSuccess(int64_t now_ms);

	// Transport error, 5xx, 429 without Retry-After... retry_after_ms >= 0 (capped at one
	// hour) extends the pause when longer than the breaker's own. sent_at_ms is when the
	// failed request was sent (-1: now); a request sent before the last counted failure was
	// in flight with it and adds no step.
	void OnFailure(int64_t now_ms, long retry_after_ms, int64_t sent_at_ms = -1);

	// The whole state, to hand over to the next worker of the database (a worker that exits
	// to make room, or is stopped, must not start the next one with a closed breaker).
	struct Snapshot {
		State state;
		int64_t next_attempt_at_ms;
		int consecutive_failures;
		int64_t last_counted_failure_ms;
		int64_t failing_since_ms;
		long pause_ms;
	};
	Snapshot snapshot() const
	{
		return Snapshot{
		    state_, next_attempt_at_ms_, consecutive_failures_, last_counted_failure_ms_, failing_since_ms_, pause_ms_};
	}
	void Restore(const Snapshot &s)
	{
		state_ = s.state;
		next_attempt_at_ms_ = s.next_attempt_at_ms;
		consecutive_failures_ = s.consecutive_failures;
		last_counted_failure_ms_ = s.last_counted_failure_ms;
		failing_since_ms_ = s.failing_since_ms;
		pause_ms_ = s.pause_ms;
	}

	State state() const { return state_; }
	int64_t next_attempt_at_ms() const { return next_attempt_at_ms_; }
	int consecutive_failures() const { return consecutive_failures_; }

	// Pause the breaker imposes after `failures` consecutive failures (0 for none), before
	// the proportionality cap.
	static long PauseMs(int failures);

	// The same, capped at a third of how long the endpoint has been failing
	// (failing_for_ms / kProportionDivisor), at least kBackoffBaseMs.
	static long ProportionatePauseMs(int failures, int64_t failing_for_ms);

private:
	State state_ = State::Ok;
	int64_t next_attempt_at_ms_ = 0;
	int consecutive_failures_ = 0;
	int64_t last_counted_failure_ms_ = INT64_MIN; // when the latest counted failure arrived
	int64_t failing_since_ms_ = 0;                // first failure of the current streak
	// Pause currently in force; re-arming a probe in Open reuses it.
	long pause_ms_ = 0;
};

// "ok" | "backing_off" | "open", as shown in the endpoint status views.
const char *CircuitStateName(CircuitBreaker::State state);

} // namespace switchboard
