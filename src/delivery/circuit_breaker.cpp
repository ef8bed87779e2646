#include "delivery/circuit_breaker.h"

#include <algorithm>
#include <climits>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

long
CircuitBreaker::PauseMs(int failures)
{
	if (failures <= 0)
		return 0;
	// Shifts are bounded well below overflow; both series hit their caps long before.
	if (failures < kOpenAfterFailures)
		return kBackoffBaseMs << std::min(failures - 1, 20);
	return std::min(kOpenBaseMs << std::min(failures - kOpenAfterFailures, 20), kOpenCapMs);
}

long
CircuitBreaker::ProportionatePauseMs(int failures, int64_t failing_for_ms)
{
	// A pause is also how long a recovered endpoint may wait for its next probe: a third of
	// the outage so far keeps that wait a fraction of the outage (a burst of 20 failures
	// costs seconds, not a minute), while probes still thin out geometrically (x1.33): about
	// 14 requests in a 70 s outage, some 25 in its first hour.
	const int64_t share = failing_for_ms / kProportionDivisor;
	const long cap = static_cast<long>(std::min<int64_t>(std::max<int64_t>(share, kBackoffBaseMs), kOpenCapMs));
	return std::min(PauseMs(failures), cap);
}

bool
CircuitBreaker::AllowRequest(int64_t now_ms)
{
	switch (state_) {
	case State::Ok:
		return true;
	case State::BackingOff:
		return now_ms >= next_attempt_at_ms_;
	case State::Open:
		if (now_ms < next_attempt_at_ms_)
			return false;
		next_attempt_at_ms_ = now_ms + pause_ms_;
		return true;
	}
	return false;
}

void
CircuitBreaker::OnSuccess(int64_t /*now_ms*/)
{
	state_ = State::Ok;
	consecutive_failures_ = 0;
	next_attempt_at_ms_ = 0;
	pause_ms_ = 0;
	last_counted_failure_ms_ = INT64_MIN;
	failing_since_ms_ = 0;
}

void
CircuitBreaker::OnFailure(int64_t now_ms, long retry_after_ms, int64_t sent_at_ms)
{
	if (sent_at_ms < 0)
		sent_at_ms = now_ms;
	// Sent before the last counted failure arrived: same round, no new step.
	const bool counts = consecutive_failures_ == 0 || sent_at_ms > last_counted_failure_ms_;
	if (counts) {
		if (consecutive_failures_ == 0)
			failing_since_ms_ = now_ms;
		if (consecutive_failures_ < INT_MAX)
			consecutive_failures_++;
		last_counted_failure_ms_ = now_ms;
	}
	long pause = counts ? ProportionatePauseMs(consecutive_failures_, now_ms - failing_since_ms_) : 0;
	if (retry_after_ms >= 0)
		pause = std::max(pause, std::min(retry_after_ms, kRetryAfterCapMs));
	pause_ms_ = counts ? pause : std::max(pause_ms_, pause);
	state_ = consecutive_failures_ >= kOpenAfterFailures ? State::Open : State::BackingOff;
	// Failures of requests already in flight when the pause began never shorten it, and
	// (same round) do not lengthen it either unless they carry a longer Retry-After.
	next_attempt_at_ms_ = std::max(next_attempt_at_ms_, now_ms + pause);
}

const char *
CircuitStateName(CircuitBreaker::State state)
{
	switch (state) {
	case CircuitBreaker::State::Ok:
		return "ok";
	case CircuitBreaker::State::BackingOff:
		return "backing_off";
	case CircuitBreaker::State::Open:
		return "open";
	}
	return "unknown";
}

} // namespace switchboard
