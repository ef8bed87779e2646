// Per-endpoint request rate limit: "at most N requests in any W ms window", as the remote
// counts them.
//
// Sliding window over the last N grants, so a burst of N is allowed and the N+1st waits. A
// token bucket would be cheaper but lets through up to 2N in a window straddling a refill,
// which is what trips a CRM's own limiter (and earns a 429 or a ban).
//
// The remote counts arrivals at its own clock, and arrival jitter compresses an exact window
// on our side (10 requests sent 1 s apart can arrive 0.9 s apart). So a request started with
// Acquire holds its slot until W ms after it *completed* (Complete): it arrived before it
// completed, and the request that reuses the slot is sent after that, so any two requests N
// apart arrive at least W apart, whatever the network does. Clocks tick in whole ms on both
// sides, and a remote that counts when it handles a request (not on arrival) sees a window
// shrink by that rounding, so completed slots also wait a guard of W/100 (5 ms to 1 s) more.
// A request whose completion is never reported holds the slot for max_hold_ms (its timeout)
// + W + guard.
//
// Plain C++ (no postgres.h); times are caller-supplied monotonic ms, so tests are exact.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <vector>

namespace switchboard {

class RateLimiter {
public:
	// count <= 0 or window_ms <= 0: unlimited (only Penalize holds requests back).
	RateLimiter(int count, long window_ms);

	// Takes a slot at now_ms for a request that completes at once (a grant at t occupies the
	// window until t + window_ms). false when no slot is free or a penalty runs.
	bool TryAcquire(int64_t now_ms);

	// Takes a slot for a request sent now; it is held until Complete(ticket) + window_ms, or
	// at most now_ms + max_hold_ms + window_ms. Returns 0 when refused, else a ticket.
	uint64_t Acquire(int64_t now_ms, long max_hold_ms);

	// The request of `ticket` completed at now_ms (unknown tickets are ignored).
	void Complete(uint64_t ticket, int64_t now_ms);

	// Earliest time >= now_ms at which a slot frees by time alone (now_ms when one is free).
	// Slots of requests still in flight free only after they complete, so this may lie far
	// ahead while answers are awaited; see in_flight().
	int64_t NextAvailableMs(int64_t now_ms) const;

	// Requests holding a slot whose completion was not reported yet.
	int in_flight() const;

	// After a 429: nothing is granted before until_ms. A shorter penalty never shortens
	// a longer one already running.
	void Penalize(int64_t until_ms);

	bool unlimited() const { return count_ <= 0 || window_ms_ <= 0; }
	int count() const { return count_; }
	long window_ms() const { return window_ms_; }
	// Extra wait after a completion-based slot's window (see above).
	long guard_ms() const { return std::min(std::max(window_ms_ / 100, 5L), 1000L); }

	struct Slot {
		uint64_t ticket;
		int64_t free_at; // the slot is free again from here on (exclusive bound of the window)
		bool open;       // completion not reported yet
	};
	// The whole state, for a limiter shared by processes (an endpoint's rate_limit_group):
	// loaded from shared memory before each call and stored back after it, under a lock.
	struct State {
		int64_t penalty_until_ms;
		uint64_t next_ticket;
		size_t slot_count;
		const Slot *slots;
	};
	State Export() const;
	void Import(const State &state);
	// A group's limit (rate_limit_group: the strictest of its members and its declaration)
	// replaces the endpoint's own for a call; slots beyond a lower count go at the next Import.
	void SetLimit(int count, long window_ms)
	{
		count_ = count;
		window_ms_ = window_ms;
	}

private:
	void Expire(int64_t now_ms);
	int count_;
	long window_ms_;
	int64_t penalty_until_ms_ = INT64_MIN;
	uint64_t next_ticket_ = 1;
	// Occupied slots, in grant order; never more than count_. A deque so that a generous
	// limit ("100000/1h") costs memory only when used.
	std::deque<Slot> slots_;
	mutable std::vector<Slot> exported_;
};

} // namespace switchboard
