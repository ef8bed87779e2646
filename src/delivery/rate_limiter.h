// Per-endpoint request rate limit: "at most N requests in any W ms window".
//
// Exact sliding window: the timestamps of the last N grants are kept, so a burst of N is
// allowed and the N+1st waits until the first of them leaves the window. A token bucket
// would be cheaper but lets through up to 2N in a window straddling a refill, which is
// what trips a CRM's own limiter (and earns a 429 or a ban).
//
// Plain C++ (no postgres.h); times are caller-supplied monotonic ms, so tests are exact.
#pragma once

#include <cstdint>
#include <deque>

namespace switchboard {

class RateLimiter {
public:
	// count <= 0 or window_ms <= 0: unlimited (only Penalize holds requests back).
	RateLimiter(int count, long window_ms);

	// Takes a slot at now_ms when one is free and no penalty is running.
	bool TryAcquire(int64_t now_ms);

	// Earliest time >= now_ms at which TryAcquire could succeed (now_ms when it would now).
	int64_t NextAvailableMs(int64_t now_ms) const;

	// After a 429: nothing is granted before until_ms. A shorter penalty never shortens
	// a longer one already running.
	void Penalize(int64_t until_ms);

	bool unlimited() const { return count_ <= 0 || window_ms_ <= 0; }
	int count() const { return count_; }
	long window_ms() const { return window_ms_; }

private:
	int count_;
	long window_ms_;
	int64_t penalty_until_ms_ = INT64_MIN;
	// Grant times, oldest first; never more than count_ of them. A deque rather than a
	// fixed array so a generous limit ("100000/1h") costs memory only when used.
	std::deque<int64_t> granted_;
};

} // namespace switchboard
