#include "delivery/retry_policy.h"

#include <algorithm>

#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// 500 ms << 20 is already far above the cap; shifting further would only risk overflow.
constexpr int kMaxShift = 20;

} // namespace

long
BackoffCeilingMs(int attempt)
{
	int shift = std::min(std::max(attempt, 1) - 1, kMaxShift);
	return std::min(kBackoffBaseMs << shift, kBackoffCapMs);
}

long
BackoffMs(int attempt, long retry_after_ms, std::mt19937_64 &rng)
{
	std::uniform_int_distribution<long> jitter(0, BackoffCeilingMs(attempt));
	long delay = jitter(rng);
	if (retry_after_ms >= 0)
		delay = std::max(delay, std::min(retry_after_ms, kRetryAfterCapMs));
	return delay;
}

bool
ShouldDeadLetter(int attempts, int max_attempts)
{
	return attempts >= std::max(max_attempts, 1);
}

} // namespace switchboard
