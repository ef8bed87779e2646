// When to retry a failed delivery and when to give up on it.
//
// Plain C++ (no postgres.h): the worker and the unit tests share it.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "http/retry_after.h" // ParseRetryAfter: what BackoffMs is given

namespace switchboard {

// Exponential backoff: 500 ms for the first retry, doubling, never above 5 minutes.
constexpr long kBackoffBaseMs = 500;
constexpr long kBackoffCapMs = 5L * 60 * 1000;
// A remote may ask for a long pause, but a typo (or a hostile server) must not park a
// change for days: Retry-After is honoured up to one hour.
constexpr long kRetryAfterCapMs = 60L * 60 * 1000;

// Upper bound of the jittered delay before retry number `attempt` (1 = first retry).
long BackoffCeilingMs(int attempt);

// Delay before retry number `attempt` (1 = first retry): uniform in [0, BackoffCeilingMs]
// ("full jitter", so that changes failing together do not retry together), but never
// less than retry_after_ms when that is >= 0 (capped at kRetryAfterCapMs).
long BackoffMs(int attempt, long retry_after_ms, std::mt19937_64 &rng);

// `attempts` is how many deliveries were tried so far, the failed one included.
// A max_attempts below 1 is treated as 1: a change is always tried once.
bool ShouldDeadLetter(int attempts, int max_attempts);

} // namespace switchboard
