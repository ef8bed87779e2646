// A time limit on user-written SQL the worker runs (a step's run_if, input, mappings, writeback):
// a pg_sleep or a lock wait in a step must not stall every other run of the database.
#pragma once

#include <cstdint>
#include <string>

#include "pg/prelude.h"

namespace switchboard {

// While it lives, statements are cancelled after ms milliseconds with Postgres' own "canceling
// statement due to statement timeout" (STATEMENT_TIMEOUT, as statement_timeout does for a
// client), which reaches the caller as a PgError like any other. The cancel is repeated every
// 100 ms, so code that catches it (an EXCEPTION WHEN OTHERS block in a loop) is cancelled
// again; SQL still running kGraceMs after the limit ends the worker (FATAL, which no handler
// catches), and run (when not 0) is left in shared memory for the next worker, which fails it
// instead of running it again (TakeRunInStepSql). On destruction the timers stop, and a cancel
// they requested that nothing has seen yet is withdrawn, so it cannot cancel whatever the worker
// runs next. ms <= 0: no limit.
class StatementTimeLimit {
public:
	static constexpr long kGraceMs = 5000;
	// sql: the text run under the limit, which names it in the page a crash leaves (the same
	// SQL of the same run found there by two crashes in a row condemns the run).
	StatementTimeLimit(long ms, int64_t run, const std::string &sql = std::string());
	~StatementTimeLimit();
	StatementTimeLimit(const StatementTimeLimit &) = delete;
	StatementTimeLimit &operator=(const StatementTimeLimit &) = delete;

private:
	bool armed_ = false;
	int64_t run_ = 0;
	uint64_t what_ = 0;
};

// True for the error a StatementTimeLimit's cancel raises ("canceling statement due to statement
// timeout"; the worker has no statement_timeout of its own), not for a cancel by a DBA.
bool CancelledByTimeLimit(int sqlerrcode, const std::string &message);

// A run whose step SQL the previous worker ended in, to fail before any step SQL runs again:
// - ended past its time limit (FATAL): shared memory said so (TakeRunInStepSql);
// - killed outright in it (a crash of any process restarts them all, and shared memory with
//   them): asked once when a worker starts (first), the run whose step SQL was running then,
//   once that happened kCrashesInStepSql times in a row without that run's step SQL returning
//   in between. A step that crashes the server (a C function's segfault, the OOM killer) would
//   otherwise crash it again after every restart.
// Asked every round: the answer stays until StuckRunSettled(run), called once the transaction
// that fails the run (or finds it gone) has committed, also in a later worker if this one stops
// before (kept in the page file; without it, in shared memory for a worker stopped).
constexpr uint64_t kCrashesInStepSql = 2;
struct StuckRun {
	int64_t run = 0;
	bool by_crash = false;
};
StuckRun TakeStuckRun(bool first);
void StuckRunSettled(int64_t run);

// For the worker's SIGTERM handler (signal context): inside a time limit, ends the worker at
// its next interrupt check (FATAL, as die() would), since step SQL may run for up to its limit
// and a stop must not wait for it; what the round did is rolled back, nothing of it was sent,
// and the run's step runs again in the next worker. False (nothing done) outside one.
bool StopStepSql();

// True once SQL under a StatementTimeLimit went on kGraceMs past it: the worker is ending (FATAL).
bool TimeLimitGraceExpired();

} // namespace switchboard
