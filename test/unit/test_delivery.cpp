// Unit tests for the delivery policy: retry backoff, Retry-After, rate limit, circuit breaker.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>

#include "delivery/circuit_breaker.h"
#include "delivery/dispatcher.h"
#include "delivery/rate_limiter.h"
#include "delivery/retry_policy.h"

namespace switchboard {
namespace {

// ---------------------------------------------------------------------------------------
// BackoffMs

TEST(RetryPolicy, CeilingDoublesFrom500msUpTo5Minutes)
{
	EXPECT_EQ(BackoffCeilingMs(1), 500);
	EXPECT_EQ(BackoffCeilingMs(2), 1000);
	EXPECT_EQ(BackoffCeilingMs(3), 2000);
	EXPECT_EQ(BackoffCeilingMs(10), 256000);
	EXPECT_EQ(BackoffCeilingMs(11), 300000); // 512 s would pass the cap
	EXPECT_EQ(BackoffCeilingMs(1000), 300000);
	EXPECT_EQ(BackoffCeilingMs(2147483647), 300000);
	// Nonsense attempts behave like the first retry rather than overflowing.
	EXPECT_EQ(BackoffCeilingMs(0), 500);
	EXPECT_EQ(BackoffCeilingMs(-5), 500);
}

TEST(RetryPolicy, FullJitterStaysWithinBoundsAndSpreads)
{
	std::mt19937_64 rng(42);
	for (int attempt = 1; attempt <= 15; attempt++) {
		long ceiling = BackoffCeilingMs(attempt);
		long lowest = ceiling, highest = 0;
		double sum = 0;
		const int samples = 4000;
		for (int i = 0; i < samples; i++) {
			long delay = BackoffMs(attempt, -1, rng);
			ASSERT_GE(delay, 0);
			ASSERT_LE(delay, ceiling);
			lowest = std::min(lowest, delay);
			highest = std::max(highest, delay);
			sum += delay;
		}
		// Full jitter: the whole range is used, and the mean sits near the middle.
		EXPECT_LT(lowest, ceiling / 10) << "attempt " << attempt;
		EXPECT_GT(highest, ceiling * 9 / 10) << "attempt " << attempt;
		EXPECT_NEAR(sum / samples, ceiling / 2.0, ceiling * 0.05) << "attempt " << attempt;
	}
}

TEST(RetryPolicy, SameSeedSameDelays)
{
	std::mt19937_64 a(7), b(7);
	for (int i = 1; i < 50; i++)
		EXPECT_EQ(BackoffMs(i, -1, a), BackoffMs(i, -1, b));
}

TEST(RetryPolicy, RetryAfterIsAFloor)
{
	std::mt19937_64 rng(1);
	for (int i = 0; i < 1000; i++) {
		// Above the jitter ceiling: exactly Retry-After.
		EXPECT_EQ(BackoffMs(1, 5000, rng), 5000);
		// Beyond the 5 minute backoff cap, still honoured.
		EXPECT_EQ(BackoffMs(20, 1800 * 1000L, rng), 1800 * 1000L);
		// Below the jitter: never less than it, never more than the ceiling.
		long delay = BackoffMs(10, 1000, rng);
		EXPECT_GE(delay, 1000);
		EXPECT_LE(delay, BackoffCeilingMs(10));
		// Retry-After: 0 means "now is fine", so the jitter alone decides.
		delay = BackoffMs(3, 0, rng);
		EXPECT_GE(delay, 0);
		EXPECT_LE(delay, 2000);
	}
}

TEST(RetryPolicy, RetryAfterCappedAtOneHour)
{
	std::mt19937_64 rng(3);
	EXPECT_EQ(BackoffMs(1, 7200 * 1000L, rng), kRetryAfterCapMs);
	EXPECT_EQ(BackoffMs(1, 3600 * 1000L, rng), 3600 * 1000L);
	EXPECT_EQ(BackoffMs(1, 9000000000000L, rng), kRetryAfterCapMs);
}

// ---------------------------------------------------------------------------------------
// ParseRetryAfter

constexpr int64_t kNow = 784111777000; // Sun, 06 Nov 1994 08:49:37 GMT

TEST(RetryAfter, DeltaSeconds)
{
	EXPECT_EQ(ParseRetryAfter(Headers{{"retry-after", "120"}}, kNow), 120000);
	EXPECT_EQ(ParseRetryAfter(Headers{{"retry-after", "0"}}, kNow), 0);
	EXPECT_EQ(ParseRetryAfter(Headers{{"retry-after", "  7 "}}, kNow), 7000);
	EXPECT_EQ(ParseRetryAfter(Headers{{"Retry-After", "3"}}, kNow), 3000); // name case-insensitive
	// Absurd values saturate instead of overflowing; BackoffMs caps them.
	long huge = ParseRetryAfter(Headers{{"retry-after", "99999999999999999999999999"}}, kNow);
	EXPECT_GT(huge, kRetryAfterCapMs);
}

TEST(RetryAfter, AbsentOrInvalid)
{
	EXPECT_EQ(ParseRetryAfter(Headers{}, kNow), -1);
	EXPECT_EQ(ParseRetryAfter(Headers{{"content-type", "text/plain"}}, kNow), -1);
	for (const char *bad :
	     {"", "  ", "-5", "1.5", "soon", "12abc", "Sun, 06 Nov 1994", "Sun, 32 Nov 1994 08:49:37 GMT",
	      "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 PST",
	      "Thu, 29 Feb 2023 00:00:00 GMT", "Sun, 06 Nov 1994 8:49:37 GMT"}) {
		EXPECT_EQ(ParseRetryAfter(Headers{{"retry-after", bad}}, kNow), -1) << '"' << bad << '"';
	}
}

TEST(RetryAfter, HttpDateForms)
{
	// The three forms RFC 9110 requires a recipient to accept, all for the same instant.
	EXPECT_EQ(ParseRetryAfterValue("Sun, 06 Nov 1994 08:50:37 GMT", kNow), 60000);
	EXPECT_EQ(ParseRetryAfterValue("Sunday, 06-Nov-94 08:50:37 GMT", kNow), 60000);
	EXPECT_EQ(ParseRetryAfterValue("Sun Nov  6 08:50:37 1994", kNow), 60000);
	// Via the header list.
	EXPECT_EQ(ParseRetryAfter(Headers{{"x-other", "1"}, {"retry-after", "Sun, 06 Nov 1994 09:49:37 GMT"}}, kNow),
	          3600000);
}

TEST(RetryAfter, HttpDateArithmetic)
{
	// Leap day, end of century, epoch: checked against the values of an independent timegm.
	EXPECT_EQ(ParseRetryAfterValue("Thu, 29 Feb 2024 00:00:00 GMT", 0), 1709164800000L);
	EXPECT_EQ(ParseRetryAfterValue("Fri, 31 Dec 2100 23:59:59 GMT", 0), 4133980799000L);
	EXPECT_EQ(ParseRetryAfterValue("Thu, 01 Jan 1970 00:00:01 GMT", 0), 1000);
	// Two-digit RFC 850 years below 70 belong to this century.
	EXPECT_EQ(ParseRetryAfterValue("Thursday, 29-Feb-24 00:00:00 GMT", 0), 1709164800000L);
}

TEST(RetryAfter, DateInThePastMeansNow)
{
	EXPECT_EQ(ParseRetryAfterValue("Sun, 06 Nov 1994 08:49:36 GMT", kNow), 0);
	EXPECT_EQ(ParseRetryAfterValue("Sun, 06 Nov 1994 08:49:37 GMT", kNow), 0);
	EXPECT_EQ(ParseRetryAfterValue("Thu, 01 Jan 1970 00:00:00 GMT", kNow), 0);
}

// ---------------------------------------------------------------------------------------
// ShouldDeadLetter

TEST(RetryPolicy, DeadLetterAfterMaxAttempts)
{
	EXPECT_FALSE(ShouldDeadLetter(1, 12));
	EXPECT_FALSE(ShouldDeadLetter(11, 12));
	EXPECT_TRUE(ShouldDeadLetter(12, 12));
	EXPECT_TRUE(ShouldDeadLetter(13, 12));
	EXPECT_TRUE(ShouldDeadLetter(1, 1));
	// A change is always tried once, whatever the setting says.
	EXPECT_FALSE(ShouldDeadLetter(0, 0));
	EXPECT_TRUE(ShouldDeadLetter(1, 0));
	EXPECT_TRUE(ShouldDeadLetter(1, -3));
}

// ---------------------------------------------------------------------------------------
// RateLimiter

TEST(RateLimiter, HundredPerTenSecondsIsExact)
{
	RateLimiter limiter(100, 10000);
	const int64_t t0 = 1000000;
	// Spread the burst over the first 990 ms: request i at t0 + 10 * i.
	for (int i = 0; i < 100; i++) {
		EXPECT_EQ(limiter.NextAvailableMs(t0 + 10 * i), t0 + 10 * i);
		ASSERT_TRUE(limiter.TryAcquire(t0 + 10 * i)) << i;
	}
	// The 101st waits until the first grant leaves the window, to the millisecond.
	EXPECT_FALSE(limiter.TryAcquire(t0 + 1000));
	EXPECT_EQ(limiter.NextAvailableMs(t0 + 1000), t0 + 10000);
	EXPECT_FALSE(limiter.TryAcquire(t0 + 9999));
	EXPECT_EQ(limiter.NextAvailableMs(t0 + 9999), t0 + 10000);
	EXPECT_TRUE(limiter.TryAcquire(t0 + 10000));
	// Exactly one slot freed: the next one frees when grant #2 (t0 + 10) ages out.
	EXPECT_FALSE(limiter.TryAcquire(t0 + 10000));
	EXPECT_EQ(limiter.NextAvailableMs(t0 + 10000), t0 + 10010);
	EXPECT_TRUE(limiter.TryAcquire(t0 + 10010));
}

TEST(RateLimiter, NeverMoreThanNInAnyWindow)
{
	// Greedy acquisition at every millisecond; then check every window of the trace.
	const int count = 7;
	const long window = 50;
	RateLimiter limiter(count, window);
	std::vector<int64_t> grants;
	for (int64_t t = 0; t < 1000; t++) {
		if (limiter.TryAcquire(t))
			grants.push_back(t);
		else
			EXPECT_GT(limiter.NextAvailableMs(t), t);
	}
	for (size_t i = 0; i < grants.size(); i++) {
		int in_window = 0;
		for (size_t j = i; j < grants.size() && grants[j] < grants[i] + window; j++)
			in_window++;
		EXPECT_LE(in_window, count);
	}
	// And the limiter does not under-deliver: a full burst every window.
	EXPECT_EQ(grants.size(), static_cast<size_t>(count) * (1000 / window));
}

TEST(RateLimiter, Unlimited)
{
	RateLimiter zero(0, 10000);
	RateLimiter negative(-1, 10000);
	RateLimiter no_window(5, 0);
	for (int i = 0; i < 10000; i++) {
		ASSERT_TRUE(zero.TryAcquire(5));
		ASSERT_TRUE(negative.TryAcquire(5));
		ASSERT_TRUE(no_window.TryAcquire(5));
	}
	EXPECT_EQ(zero.NextAvailableMs(5), 5);
	EXPECT_TRUE(zero.unlimited());
}

// A store like the worker's shared memory one (worker/shared_limits.cpp), in process.
class MemoryStore : public RateLimitStore {
public:
	bool Run(const std::string &group, RateLimiter *limiter, const std::function<void()> &fn) override
	{
		auto &saved = groups_[group];
		if (saved.has_value)
			limiter->Import(RateLimiter::State{saved.penalty, saved.ticket, saved.slots.size(), saved.slots.data()});
		fn();
		RateLimiter::State out = limiter->Export();
		saved = Saved{true, out.penalty_until_ms, out.next_ticket, {out.slots, out.slots + out.slot_count}};
		return true;
	}

private:
	struct Saved {
		bool has_value = false;
		int64_t penalty = 0;
		uint64_t ticket = 1;
		std::vector<RateLimiter::Slot> slots;
	};
	std::map<std::string, Saved> groups_;
};

TEST(EndpointLimiter, AGroupSharesOneLimitAndItsPenalty)
{
	MemoryStore store;
	EndpointLimiter a(3, 1000, "acct", &store), b(3, 1000, "acct", &store), alone(3, 1000, "", &store);
	uint64_t t1 = a.Acquire(0, 0), t2 = b.Acquire(0, 0), t3 = a.Acquire(0, 0);
	EXPECT_NE(t1, 0u);
	EXPECT_NE(t2, t1); // tickets come from the group, never reused
	EXPECT_NE(t3, 0u);
	EXPECT_EQ(b.Acquire(10, 0), 0u) << "the group's three slots are taken, whoever took them";
	EXPECT_EQ(a.NextAvailableMs(10), 1000);
	EXPECT_NE(alone.Acquire(10, 0), 0u) << "an endpoint without the group keeps its own limit";
	EXPECT_NE(b.Acquire(1000, 0), 0u);
	// A request held open by one database holds its slot for the other too.
	EndpointLimiter c(1, 100, "one", &store), d(1, 100, "one", &store);
	uint64_t open = c.Acquire(0, 5000);
	EXPECT_EQ(d.in_flight(), 1);
	EXPECT_EQ(d.Acquire(2000, 5000), 0u);
	c.Complete(open, 2000);
	EXPECT_EQ(d.in_flight(), 0);
	EXPECT_NE(d.Acquire(2000 + 100 + 5, 5000), 0u); // window + guard (5 ms) after the answer
	// A 429 seen by one holds back the other.
	a.Penalize(50000);
	EXPECT_EQ(b.Acquire(3000, 0), 0u);
	EXPECT_EQ(b.NextAvailableMs(3000), 50000);
}

TEST(RateLimiter, PenaltyHoldsEverythingBack)
{
	RateLimiter limiter(100, 10000);
	EXPECT_TRUE(limiter.TryAcquire(0));
	limiter.Penalize(30000); // a 429 with Retry-After: 30
	EXPECT_FALSE(limiter.TryAcquire(1));
	EXPECT_FALSE(limiter.TryAcquire(29999));
	EXPECT_EQ(limiter.NextAvailableMs(1), 30000);
	// A shorter penalty does not cut the running one short.
	limiter.Penalize(5000);
	EXPECT_EQ(limiter.NextAvailableMs(1), 30000);
	EXPECT_TRUE(limiter.TryAcquire(30000));
	EXPECT_EQ(limiter.NextAvailableMs(30001), 30001);

	// Penalties apply to unlimited endpoints too.
	RateLimiter unlimited(0, 0);
	unlimited.Penalize(100);
	EXPECT_FALSE(unlimited.TryAcquire(99));
	EXPECT_EQ(unlimited.NextAvailableMs(50), 100);
	EXPECT_TRUE(unlimited.TryAcquire(100));
}

TEST(RateLimiter, PenaltyAndFullWindowTakeTheLater)
{
	RateLimiter limiter(2, 1000);
	EXPECT_TRUE(limiter.TryAcquire(0));
	EXPECT_TRUE(limiter.TryAcquire(0));
	limiter.Penalize(500);
	EXPECT_EQ(limiter.NextAvailableMs(10), 1000);
	limiter.Penalize(1500);
	EXPECT_EQ(limiter.NextAvailableMs(10), 1500);
}

TEST(RateLimiter, ASlotIsHeldUntilAWindowAfterCompletion)
{
	// Arrival jitter at the remote: a request's slot is reusable only a full window after
	// its answer came back, so the remote never sees more than count in any window.
	RateLimiter limiter(2, 1000);
	uint64_t a = limiter.Acquire(0, 30000);
	uint64_t b = limiter.Acquire(0, 30000);
	ASSERT_NE(a, 0u);
	ASSERT_NE(b, 0u);
	EXPECT_EQ(limiter.in_flight(), 2);
	EXPECT_EQ(limiter.Acquire(5000, 30000), 0u); // both still in flight
	limiter.Complete(a, 200);
	// One window after the answer, plus the guard (1% of the window, at least 5 ms).
	EXPECT_EQ(limiter.guard_ms(), 10);
	EXPECT_EQ(limiter.NextAvailableMs(300), 1210);
	EXPECT_EQ(limiter.Acquire(1209, 30000), 0u);
	EXPECT_NE(limiter.Acquire(1210, 30000), 0u);
	EXPECT_EQ(limiter.in_flight(), 2);
	limiter.Complete(999999, 1300); // unknown ticket: ignored
	EXPECT_EQ(limiter.in_flight(), 2);
}

TEST(RateLimiter, AnUnreportedRequestFreesItsSlotAfterItsHold)
{
	RateLimiter limiter(1, 1000);
	ASSERT_NE(limiter.Acquire(0, 5000), 0u);
	EXPECT_EQ(limiter.NextAvailableMs(10), 6010);
	EXPECT_NE(limiter.Acquire(6010, 5000), 0u);
}

// ---------------------------------------------------------------------------------------
// CircuitBreaker

using State = CircuitBreaker::State;

TEST(CircuitBreaker, StateNames)
{
	EXPECT_STREQ(CircuitStateName(State::Ok), "ok");
	EXPECT_STREQ(CircuitStateName(State::BackingOff), "backing_off");
	EXPECT_STREQ(CircuitStateName(State::Open), "open");
}

TEST(CircuitBreaker, StartsOk)
{
	CircuitBreaker breaker;
	EXPECT_EQ(breaker.state(), State::Ok);
	EXPECT_EQ(breaker.consecutive_failures(), 0);
	EXPECT_TRUE(breaker.AllowRequest(0));
	EXPECT_TRUE(breaker.AllowRequest(0));
}

TEST(CircuitBreaker, OneFailureBacksOff)
{
	CircuitBreaker breaker;
	breaker.OnFailure(1000, -1);
	EXPECT_EQ(breaker.state(), State::BackingOff);
	EXPECT_EQ(breaker.consecutive_failures(), 1);
	EXPECT_EQ(breaker.next_attempt_at_ms(), 2000);
	EXPECT_FALSE(breaker.AllowRequest(1999));
	// Backing off is not a probe: once the pause is over, requests flow.
	EXPECT_TRUE(breaker.AllowRequest(2000));
	EXPECT_TRUE(breaker.AllowRequest(2000));
	EXPECT_EQ(breaker.state(), State::BackingOff);
}

// Failures of successive rounds: each request sent after the previous failure arrived.
void
FailRounds(CircuitBreaker &breaker, int n, int64_t start, int64_t step)
{
	for (int i = 0; i < n; i++)
		breaker.OnFailure(start + i * step, -1, start + i * step);
}

TEST(CircuitBreaker, BackoffGrowsThenOpensAtFive)
{
	CircuitBreaker breaker;
	// Rounds 30 s apart: the outage is long enough for the uncapped series.
	const long pauses[] = {1000, 2000, 4000, 8000};
	for (int i = 0; i < 4; i++) {
		const int64_t now = i * 30000;
		breaker.OnFailure(now, -1, now);
		EXPECT_EQ(breaker.state(), State::BackingOff) << i;
		EXPECT_EQ(breaker.next_attempt_at_ms(), now + pauses[i]);
		EXPECT_TRUE(breaker.AllowRequest(now + pauses[i]));
	}
	breaker.OnFailure(120000, -1, 120000);
	EXPECT_EQ(breaker.state(), State::Open);
	EXPECT_EQ(breaker.consecutive_failures(), 5);
	EXPECT_EQ(breaker.next_attempt_at_ms(), 120000 + 30000);
}

TEST(CircuitBreaker, ConcurrentFailuresAreOneStep)
{
	// Four requests sent together at 0 fail at 100..130: one round, one step.
	CircuitBreaker breaker;
	for (int i = 0; i < 4; i++)
		breaker.OnFailure(100 + i * 10, -1, 0);
	EXPECT_EQ(breaker.consecutive_failures(), 1);
	EXPECT_EQ(breaker.state(), State::BackingOff);
	EXPECT_EQ(breaker.next_attempt_at_ms(), 1100);
	// The next round, sent after the pause, is a new step.
	breaker.OnFailure(1200, -1, 1100);
	EXPECT_EQ(breaker.consecutive_failures(), 2);
}

TEST(CircuitBreaker, PauseIsProportionateToTheOutage)
{
	// Five quick rounds (0.5 s apart) open the breaker, but for a third of how long the
	// endpoint has been failing (at least 1 s), not 30 s.
	CircuitBreaker breaker;
	FailRounds(breaker, 5, 0, 500);
	EXPECT_EQ(breaker.state(), State::Open);
	EXPECT_EQ(breaker.next_attempt_at_ms(), 2000 + 1000);
	EXPECT_EQ(CircuitBreaker::ProportionatePauseMs(1, 0), 1000);
	EXPECT_EQ(CircuitBreaker::ProportionatePauseMs(7, 10L * 60 * 1000), 120000);
	EXPECT_EQ(CircuitBreaker::ProportionatePauseMs(9, 10L * 60 * 1000), 200000);
	EXPECT_EQ(CircuitBreaker::ProportionatePauseMs(9, 45000), 15000);
	EXPECT_EQ(CircuitBreaker::ProportionatePauseMs(9, 60L * 60 * 1000), 300000);
}

TEST(CircuitBreaker, ABurstOfTwentyFailuresCostsSecondsAfterItsLastFailure)
{
	// 20 x 503 as the worker met them: four rounds of 4 requests in flight together, then one
	// request per round, each sent as soon as the breaker allows and answered 100 ms later.
	// Whatever the probe interval is when the 20th fails, the endpoint stays unprobed that
	// long after it has recovered: it must stay short, and so must the burst itself.
	CircuitBreaker breaker;
	int64_t sent = 0, last_failure = 0;
	for (int failures = 0; failures < 20;) {
		const int together = failures < 16 ? 4 : 1;
		for (int i = 0; i < together; i++, failures++) {
			last_failure = sent + 100 + i;
			breaker.OnFailure(last_failure, -1, sent);
		}
		sent = breaker.next_attempt_at_ms();
		ASSERT_TRUE(breaker.AllowRequest(sent));
	}
	EXPECT_LE(sent - last_failure, 4000) << "the first request after the burst waits too long";
	EXPECT_LE(last_failure, 15000) << "the breaker stretched the burst";
}

TEST(CircuitBreaker, OpenAllowsOneProbeAfterTheInterval)
{
	CircuitBreaker breaker;
	FailRounds(breaker, 5, 0, 60000);
	ASSERT_EQ(breaker.state(), State::Open);
	const int64_t at = breaker.next_attempt_at_ms();
	EXPECT_EQ(at, 240000 + 30000);
	EXPECT_FALSE(breaker.AllowRequest(at - 1));
	EXPECT_TRUE(breaker.AllowRequest(at)); // the probe
	EXPECT_FALSE(breaker.AllowRequest(at));
	EXPECT_FALSE(breaker.AllowRequest(at + 15000));
	EXPECT_EQ(breaker.state(), State::Open);
}

TEST(CircuitBreaker, FailedProbesGrowTheIntervalUpToFiveMinutes)
{
	CircuitBreaker breaker;
	// Rounds 10 minutes apart: the outage is long enough for the uncapped series.
	FailRounds(breaker, 5, 0, 600000);
	const long intervals[] = {60000, 120000, 240000, 300000, 300000, 300000};
	for (long interval : intervals) {
		int64_t now = breaker.next_attempt_at_ms();
		ASSERT_TRUE(breaker.AllowRequest(now));
		breaker.OnFailure(now + 100, -1, now);
		EXPECT_EQ(breaker.state(), State::Open);
		EXPECT_EQ(breaker.next_attempt_at_ms(), now + 100 + interval);
	}
	EXPECT_EQ(breaker.consecutive_failures(), 11);
}

TEST(CircuitBreaker, UnreportedProbeIsReplacedAfterAnInterval)
{
	CircuitBreaker breaker;
	FailRounds(breaker, 5, 0, 60000);
	const int64_t at = breaker.next_attempt_at_ms();
	ASSERT_TRUE(breaker.AllowRequest(at));
	EXPECT_FALSE(breaker.AllowRequest(at + 29999));
	EXPECT_TRUE(breaker.AllowRequest(at + 30000));
}

TEST(CircuitBreaker, SuccessResets)
{
	CircuitBreaker breaker;
	FailRounds(breaker, 7, 0, 10000);
	ASSERT_EQ(breaker.state(), State::Open);
	ASSERT_TRUE(breaker.AllowRequest(breaker.next_attempt_at_ms()));
	breaker.OnSuccess(200000);
	EXPECT_EQ(breaker.state(), State::Ok);
	EXPECT_EQ(breaker.consecutive_failures(), 0);
	EXPECT_TRUE(breaker.AllowRequest(200000));
	// Counting starts over: the next failure only backs off, for the shortest pause.
	breaker.OnFailure(300000, -1);
	EXPECT_EQ(breaker.state(), State::BackingOff);
	EXPECT_EQ(breaker.next_attempt_at_ms(), 301000);
}

TEST(CircuitBreaker, SuccessBetweenFailuresKeepsItClosed)
{
	CircuitBreaker breaker;
	for (int i = 0; i < 20; i++) {
		breaker.OnFailure(i * 10000, -1);
		breaker.OnSuccess(i * 10000 + 1);
	}
	EXPECT_EQ(breaker.state(), State::Ok);
}

TEST(CircuitBreaker, RetryAfterExtendsThePause)
{
	CircuitBreaker breaker;
	breaker.OnFailure(0, 45000);
	EXPECT_EQ(breaker.state(), State::BackingOff);
	EXPECT_EQ(breaker.next_attempt_at_ms(), 45000);
	// Shorter than the breaker's own pause: the breaker's wins.
	CircuitBreaker other;
	other.OnFailure(0, 10);
	EXPECT_EQ(other.next_attempt_at_ms(), 1000);
	// Capped at an hour.
	CircuitBreaker capped;
	capped.OnFailure(0, 24L * 3600 * 1000);
	EXPECT_EQ(capped.next_attempt_at_ms(), 3600L * 1000);
}

TEST(CircuitBreaker, LateFailuresNeverShortenThePause)
{
	CircuitBreaker breaker;
	breaker.OnFailure(0, 60000);
	// A request sent before the pause fails a moment later, without Retry-After.
	breaker.OnFailure(10, -1);
	EXPECT_EQ(breaker.next_attempt_at_ms(), 60000);
}

} // namespace
} // namespace switchboard
