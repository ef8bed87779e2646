#include "delivery/rate_limiter.h"

#include <algorithm>

namespace switchboard {

RateLimiter::RateLimiter(int count, long window_ms) : count_(count), window_ms_(window_ms) {}

bool
RateLimiter::TryAcquire(int64_t now_ms)
{
	if (now_ms < penalty_until_ms_)
		return false;
	if (unlimited())
		return true;
	// A grant at t occupies the window until t + window_ms (exclusive).
	while (!granted_.empty() && granted_.front() + window_ms_ <= now_ms)
		granted_.pop_front();
	if (granted_.size() >= static_cast<size_t>(count_))
		return false;
	// Keep the ring sorted even if the caller's clock steps back: recording the later
	// time only makes the limit stricter, never looser.
	granted_.push_back(granted_.empty() ? now_ms : std::max(now_ms, granted_.back()));
	return true;
}

int64_t
RateLimiter::NextAvailableMs(int64_t now_ms) const
{
	int64_t next = now_ms;
	// The ring never holds more than count_ grants, so it is full only at exactly count_;
	// then the oldest one leaving the window frees the next slot.
	if (!unlimited() && granted_.size() >= static_cast<size_t>(count_))
		next = std::max(next, granted_.front() + window_ms_);
	return std::max(next, penalty_until_ms_);
}

void
RateLimiter::Penalize(int64_t until_ms)
{
	penalty_until_ms_ = std::max(penalty_until_ms_, until_ms);
}

} // namespace switchboard
