#include "pg/time_limit.h"

#include <csignal>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker/shmem.h"

extern "C" {
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
}

namespace switchboard {

namespace {

volatile sig_atomic_t grace_expired = false; // the worker is ending (GraceExpired)

// USER_TIMEOUT handler (signal context): ends the worker at its next interrupt check, as
// pg_terminate_backend would; a FATAL is not caught by any EXCEPTION block.
void
GraceExpired()
{
	grace_expired = true;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

volatile sig_atomic_t recancelled = false; // CancelAgain fired since the limit was armed

// USER_TIMEOUT handler (signal context), every 100 ms past the limit: the cancel again, for
// code that caught the first one (STATEMENT_TIMEOUT's own repeat mode would clear the
// indicator that makes the first cancel say "statement timeout").
void
CancelAgain()
{
	recancelled = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

TimeoutId grace_timeout = MAX_TIMEOUTS; // registered on first use
TimeoutId recancel_timeout = MAX_TIMEOUTS;

// The run in step SQL, also in a page of a file mapped MAP_SHARED: the page cache outlives the
// process, so a worker killed outright (SIGKILL, a segfault: the postmaster then restarts every
// process and shared memory with them) still leaves it for the next worker. One per database.
struct StepSqlPage {
	uint64_t in_sql;  // the run whose step SQL is running now (0: none)
	uint64_t suspect; // the run that was in step SQL at the last crash
	uint64_t crashes; // how many crashes in a row found suspect there
};
StepSqlPage *page = nullptr;
bool page_tried = false;

StepSqlPage *
Page()
{
	if (page_tried)
		return page;
	page_tried = true;
	// In the data directory (the worker's working directory), next to what Postgres keeps.
	(void) mkdir("switchboard", S_IRWXU);
	const std::string path = "switchboard/step_sql." + std::to_string(MyDatabaseId);
	const int fd = open(path.c_str(), O_RDWR | O_CREAT, S_IRUSR | S_IWUSR);
	if (fd < 0)
		return nullptr;
	if (ftruncate(fd, sizeof(StepSqlPage)) == 0) {
		void *at = mmap(nullptr, sizeof(StepSqlPage), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (at != MAP_FAILED)
			page = static_cast<StepSqlPage *>(at);
	}
	close(fd);
	return page;
}

void
MarkInSql(uint64_t run)
{
	if (StepSqlPage *p = Page())
		__atomic_store_n(&p->in_sql, run, __ATOMIC_RELAXED);
}

volatile sig_atomic_t in_step_sql = false;         // a limit is armed
volatile sig_atomic_t stopped_in_step_sql = false; // StopStepSql ended the worker in it
int64_t marked_run = 0;                            // the run left in shared memory, if any

// At exit: a worker stopped in step SQL (SIGTERM) did not get stuck in it, so the next worker
// runs that step again instead of failing the run.
void
ForgetStoppedRun(int, Datum)
{
	if (stopped_in_step_sql && !grace_expired && marked_run != 0) {
		SetRunInStepSql(MyDatabaseId, 0);
		MarkInSql(0);
	}
}

} // namespace

StatementTimeLimit::StatementTimeLimit(long ms, int64_t run)
{
	// The worker runs no client statements, so STATEMENT_TIMEOUT is otherwise unused here.
	if (ms <= 0 || get_timeout_active(STATEMENT_TIMEOUT))
		return;
	if (grace_timeout == MAX_TIMEOUTS) {
		grace_timeout = RegisterTimeout(USER_TIMEOUT, GraceExpired);
		recancel_timeout = RegisterTimeout(USER_TIMEOUT, CancelAgain);
		before_shmem_exit(ForgetStoppedRun, 0);
	}
	const TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	recancelled = false;
	enable_timeout_at(STATEMENT_TIMEOUT, deadline);
	enable_timeout_every(recancel_timeout, TimestampTzPlusMilliseconds(deadline, 100), 100);
	enable_timeout_at(grace_timeout, TimestampTzPlusMilliseconds(deadline, kGraceMs));
	armed_ = true;
	run_ = run;
	if (run_ != 0) {
		SetRunInStepSql(MyDatabaseId, run_);
		MarkInSql(static_cast<uint64_t>(run_));
	}
	marked_run = run_;
	in_step_sql = true;
}

StatementTimeLimit::~StatementTimeLimit()
{
	if (!armed_)
		return;
	in_step_sql = false;
	disable_timeout(grace_timeout, false);
	disable_timeout(recancel_timeout, false);
	disable_timeout(STATEMENT_TIMEOUT, false);
	// Expired just as the SQL returned: the worker still ends at its next interrupt check, so
	// the mark stays for the next worker.
	if (run_ != 0 && !grace_expired) {
		SetRunInStepSql(MyDatabaseId, 0);
		MarkInSql(0);
		marked_run = 0;
	}
	// Fired after the last CHECK_FOR_INTERRUPTS of the limited code: its cancel is stale. Only
	// ours is withdrawn (the indicator says the timer fired); a real cancel stays pending.
	if (get_timeout_indicator(STATEMENT_TIMEOUT, true) || recancelled)
		QueryCancelPending = false;
	recancelled = false;
	// Stopped as the SQL returned, before it checked for interrupts: the worker ends here, still
	// in phase 1 (nothing sent), not at whatever check comes next (FATAL exits, it unwinds nothing).
	if (stopped_in_step_sql)
		CHECK_FOR_INTERRUPTS();
}

bool
CancelledByTimeLimit(int sqlerrcode, const std::string &message)
{
	return sqlerrcode == ERRCODE_QUERY_CANCELED && message.find("statement timeout") != std::string::npos;
}

int64_t
TakeRunCrashedInStepSql(bool ended_in_step_sql)
{
	StepSqlPage *p = Page();
	if (p == nullptr)
		return 0;
	const uint64_t run = p->in_sql;
	p->in_sql = 0;
	// Ended by FATAL (past the grace): shared memory said so, and the caller fails that run.
	if (run == 0 || ended_in_step_sql)
		return 0;
	// Killed outright in it: the crash may have been another process's, so only the second
	// crash in a row with this run in its step SQL condemns it.
	if (p->suspect == run)
		p->crashes++;
	else {
		p->suspect = run;
		p->crashes = 1;
	}
	if (p->crashes < kCrashesInStepSql)
		return 0;
	p->suspect = 0;
	p->crashes = 0;
	return static_cast<int64_t>(run);
}

bool
TimeLimitGraceExpired()
{
	return grace_expired;
}

bool
StopStepSql()
{
	if (!in_step_sql)
		return false;
	stopped_in_step_sql = true;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
	return true;
}

} // namespace switchboard
