#include "delivery/circuit_breaker.h"

#include <algorithm>
#include <climits>

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
}

void
CircuitBreaker::OnFailure(int64_t now_ms, long retry_after_ms)
{
	if (consecutive_failures_ < INT_MAX)
		consecutive_failures_++;
	pause_ms_ = PauseMs(consecutive_failures_);
	if (retry_after_ms >= 0)
		pause_ms_ = std::max(pause_ms_, std::min(retry_after_ms, kRetryAfterCapMs));
	state_ = consecutive_failures_ >= kOpenAfterFailures ? State::Open : State::BackingOff;
	// Failures of requests already in flight when the pause began never shorten it.
	next_attempt_at_ms_ = std::max(next_attempt_at_ms_, now_ms + pause_ms_);
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
