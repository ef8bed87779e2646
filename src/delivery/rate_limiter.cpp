#include "delivery/rate_limiter.h"

#include <algorithm>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

RateLimiter::RateLimiter(int count, long window_ms) : count_(count), window_ms_(window_ms) {}

void
RateLimiter::Expire(int64_t now_ms)
{
	slots_.erase(std::remove_if(slots_.begin(), slots_.end(), [now_ms](const Slot &s) { return s.free_at <= now_ms; }),
	             slots_.end());
}

uint64_t
RateLimiter::Acquire(int64_t now_ms, long max_hold_ms)
{
	if (now_ms < penalty_until_ms_)
		return 0;
	const uint64_t ticket = next_ticket_++;
	if (unlimited())
		return ticket;
	Expire(now_ms);
	if (slots_.size() >= static_cast<size_t>(count_))
		return 0;
	const long hold = std::max(max_hold_ms, 0L);
	slots_.push_back(Slot{ticket, now_ms + hold + window_ms_ + (hold > 0 ? guard_ms() : 0), hold > 0});
	return ticket;
}

bool
RateLimiter::TryAcquire(int64_t now_ms)
{
	return Acquire(now_ms, 0) != 0;
}

void
RateLimiter::Complete(uint64_t ticket, int64_t now_ms)
{
	for (auto &slot : slots_)
		if (slot.ticket == ticket && slot.open) {
			slot.open = false;
			// Never later than the hold bound it had: a stale report cannot extend it.
			slot.free_at = std::min(slot.free_at, now_ms + window_ms_ + guard_ms());
			return;
		}
}

int64_t
RateLimiter::NextAvailableMs(int64_t now_ms) const
{
	int64_t next = now_ms;
	if (!unlimited()) {
		size_t busy = 0;
		int64_t earliest = INT64_MAX;
		for (const auto &slot : slots_)
			if (slot.free_at > now_ms) {
				busy++;
				earliest = std::min(earliest, slot.free_at);
			}
		if (busy >= static_cast<size_t>(count_))
			next = std::max(next, earliest);
	}
	return std::max(next, penalty_until_ms_);
}

int
RateLimiter::in_flight() const
{
	return static_cast<int>(std::count_if(slots_.begin(), slots_.end(), [](const Slot &s) { return s.open; }));
}

void
RateLimiter::Penalize(int64_t until_ms)
{
	penalty_until_ms_ = std::max(penalty_until_ms_, until_ms);
}

} // namespace switchboard
