#include "delivery/rate_limiter.h"

#include <algorithm>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

RateLimiter::RateLimiter(int count, long window_ms) : count_(count), window_ms_(window_ms) {}

void
RateLimiter::Expire(int64_t now_ms)
{
	// Dropping passed windows keeps slots_ bounded by count_, so its size is the number of
	// busy slots when Acquire compares it.
	slots_.erase(std::remove_if(slots_.begin(), slots_.end(), [now_ms](const Slot &s) { return s.free_at <= now_ms; }),
	             slots_.end());
}

uint64_t
RateLimiter::Acquire(int64_t now_ms, long max_hold_ms)
{
	// A penalty (429) holds back even an unlimited endpoint: the remote asked us to wait.
	if (now_ms < penalty_until_ms_)
		return 0;
	// Tickets start at 1, since 0 means refused. An unlimited endpoint still gets one, so the
	// caller's Complete() is the same either way (it finds no slot and does nothing).
	const uint64_t ticket = next_ticket_++;
	if (unlimited())
		return ticket;
	Expire(now_ms);
	if (slots_.size() >= static_cast<size_t>(count_))
		return 0;
	// free_at starts as the bound for a completion that is never reported; Complete() pulls
	// it in. With no hold (TryAcquire) the grant is the completion, and the slot is not open.
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
	// Only open slots: a second report of the same ticket changes nothing.
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
		// Counted rather than expired, as this is const: a slot whose free_at passed is free.
		size_t busy = 0;
		int64_t earliest = INT64_MAX;
		for (const auto &slot : slots_)
			if (slot.free_at > now_ms) {
				busy++;
				earliest = std::min(earliest, slot.free_at);
			}
		// Full: the first slot to free decides (grant order is not free order, since
		// completions pull free_at in).
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

RateLimiter::State
RateLimiter::Export() const
{
	exported_.assign(slots_.begin(), slots_.end());
	return State{penalty_until_ms_, next_ticket_, exported_.size(), exported_.data()};
}

void
RateLimiter::Import(const State &state)
{
	penalty_until_ms_ = state.penalty_until_ms;
	next_ticket_ = std::max<uint64_t>(state.next_ticket, 1);
	slots_.assign(state.slots, state.slots + state.slot_count);
	// A limit lowered since the state was stored: the oldest grants beyond it go.
	while (!unlimited() && slots_.size() > static_cast<size_t>(count_))
		slots_.pop_front();
}

void
RateLimiter::Penalize(int64_t until_ms)
{
	penalty_until_ms_ = std::max(penalty_until_ms_, until_ms);
}

} // namespace switchboard
