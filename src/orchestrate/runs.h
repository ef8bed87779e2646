// Runs (SPEC §7): a captured change of a route with steps becomes a run, and the worker executes
// its steps in position order, one step at a time, committing each step's outcome before the
// next one starts. enrich, notify and deliver steps make their request with no transaction
// open; the attempt is counted durably first, so a crash repeats at most the step in flight.
//
// Per key, runs execute one after another in commit order (only the oldest unfinished run of
// a key is ever due); runs of different keys interleave. A transient failure retries that step
// alone (backoff, Retry-After, the step's max_attempts); a permanent one, or the last attempt,
// leaves the run failed at that step (dead_letters, runs), and retry(id) resumes it there.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <random>

#include "delivery/dispatcher.h"

namespace switchboard {

// True when the runs round has anything to look at: some route has steps, or runs are
// unfinished (their steps deleted since). Asked inside an open transaction (the push round's),
// so that a database whose routes have no steps pays no transaction of its own for runs.
bool RunsWanted();

// Milliseconds until a run is due (0: now; a change of a route with steps waits to become a
// run), -1 when none is: when a worker that makes room for other databases wants to be started
// again. Inside a transaction.
long MsUntilNextRun();

class RunExecutor {
public:
	RunExecutor(Dispatcher *dispatcher, std::mt19937_64 *rng) : dispatcher_(dispatcher), rng_(rng) {}

	// Adopts pending changes of routes with steps as runs, then executes one step of each due
	// run. Opens and commits its own transactions (none may be open). Returns how long the
	// worker may sleep: 0 when there is more to do at once.
	long Round(const std::function<bool()> &should_stop);

private:
	size_t Adopt();
	// Not adopted nor run for ms: WorkerRouteHolds (pg/route_budget.h), shared with the push path.
	void HoldBack(const std::string &route, int64_t ms = 10 * 1000);
	int64_t stuck_run_ = 0;       // a run the previous worker ended in (TakeRunInStepSql), until failed
	bool stuck_by_crash_ = false; // ... or was killed in, crash after crash (TakeRunCrashedInStepSql)
	bool started_ = false;        // the first round of this worker is behind
	int64_t last_prune_ms_ = 0;   // finished runs are pruned once a minute

	Dispatcher *dispatcher_;
	std::mt19937_64 *rng_;
};

} // namespace switchboard
