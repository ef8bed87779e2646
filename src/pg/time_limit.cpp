#include "pg/time_limit.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg/boundary.h"
#include "worker/shmem.h"

extern "C" {
#include "access/xlog.h"
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
// process and shared memory with them) still leaves it for the next worker. One per database,
// stamped with whose it is: a copy of the data directory (pg_basebackup copies the file, and a
// standby promoted, or a backup restored, has another timeline) ignores the marks it inherited.
struct StepSqlPage {
	uint64_t in_sql;             // the run whose step SQL is running now (0: none)
	uint64_t suspect;            // the run that was in step SQL at the last crash
	uint64_t crashes;            // how many crashes in a row found suspect there
	uint64_t system_id;          // GetSystemIdentifier() of the cluster that wrote the marks
	uint64_t timeline;           // its timeline then
	uint64_t database;           // and the database
	uint64_t condemned;          // a run found stuck whose failing is not committed yet (0: none)
	uint64_t condemned_by_crash; // 1: by crashes, 0: it ended past its time limit
	uint64_t in_sql_what;        // which of in_sql's SQL (a hash of its text)
	uint64_t suspect_what;       // which of suspect's SQL
};
StepSqlPage *page = nullptr;
bool page_tried = false;

// Said once per worker: without the page, a step that crashes the server runs again after
// every restart.
void
NoPage(const std::string &why)
{
	Report(LOG, "switchboard: " + why +
	                "; a step whose SQL crashes the server will be run again after every restart (no crash "
	                "guard)");
}

StepSqlPage *
Page()
{
	if (page_tried)
		return page;
	// Not in recovery: no step SQL runs there, and the timeline is not settled.
	if (RecoveryInProgress())
		return nullptr;
	page_tried = true;
	// In the data directory (the worker's working directory), next to what Postgres keeps.
	if (mkdir("switchboard", S_IRWXU) != 0 && errno != EEXIST) {
		NoPage(std::string("cannot create directory \"switchboard\" in the data directory: ") + strerror(errno));
		return nullptr;
	}
	const std::string name = "step_sql." + std::to_string(MyDatabaseId);
	const std::string path = "switchboard/" + name;
	// Not through a link (the directory neither), and only a plain file of ours: whoever could
	// plant one would have the worker write into another file.
	struct stat st;
	const int dir = open("switchboard", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0 || fstat(dir, &st) != 0 || st.st_uid != geteuid()) {
		NoPage(dir < 0 ? std::string("cannot open directory \"switchboard\" in the data directory: ") + strerror(errno)
		               : std::string("directory \"switchboard\" in the data directory is not the server user's"));
		if (dir >= 0)
			close(dir);
		return nullptr;
	}
	const int fd = openat(dir, name.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, S_IRUSR | S_IWUSR);
	const int open_errno = errno;
	close(dir);
	if (fd < 0) {
		NoPage("cannot open \"" + path + "\": " + strerror(open_errno));
		return nullptr;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1) {
		NoPage("\"" + path + "\" in the data directory is not a plain file of the server's user");
		close(fd);
		return nullptr;
	}
	if (st.st_size == static_cast<off_t>(sizeof(StepSqlPage)) || ftruncate(fd, sizeof(StepSqlPage)) == 0) {
		void *at = mmap(nullptr, sizeof(StepSqlPage), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (at != MAP_FAILED)
			page = static_cast<StepSqlPage *>(at);
	}
	close(fd);
	if (page == nullptr) {
		NoPage("cannot map \"" + path + "\": " + strerror(errno));
		return nullptr;
	}
	const uint64_t system_id = GetSystemIdentifier();
	const uint64_t timeline = GetWALInsertionTimeLine();
	if (page->system_id != system_id || page->timeline != timeline || page->database != MyDatabaseId) {
		// Another cluster's, database's or timeline's marks (or a new file): none of ours.
		*page = StepSqlPage{};
		page->system_id = system_id;
		page->timeline = timeline;
		page->database = MyDatabaseId;
	}
	return page;
}

void
MarkInSql(uint64_t run, uint64_t what = 0)
{
	if (StepSqlPage *p = Page()) {
		__atomic_store_n(&p->in_sql_what, what, __ATOMIC_RELAXED);
		__atomic_store_n(&p->in_sql, run, __ATOMIC_RELAXED);
	}
}

// Which SQL of a run: the same text is the same step's expression (FNV-1a, never 0).
uint64_t
SqlIdentity(const std::string &sql)
{
	uint64_t h = 14695981039346656037ULL;
	for (const unsigned char c : sql) {
		h ^= c;
		h *= 1099511628211ULL;
	}
	return h | 1;
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

StuckRun unsettled;     // found stuck by this worker, its failing not committed yet
bool exit_hook = false; // KeepUnsettledRun registered

// At exit, without the page: a run found stuck whose failing did not commit goes back to shared
// memory for the next worker (a worker stopped between the two would forget it). Registered
// before ForgetStoppedRun, so run after it.
void
KeepUnsettledRun(int, Datum)
{
	if (unsettled.run != 0 && !unsettled.by_crash && page == nullptr)
		SetRunInStepSql(MyDatabaseId, unsettled.run);
}

} // namespace

StatementTimeLimit::StatementTimeLimit(long ms, int64_t run, const std::string &sql)
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
	what_ = SqlIdentity(sql);
	if (run_ != 0) {
		SetRunInStepSql(MyDatabaseId, run_);
		MarkInSql(static_cast<uint64_t>(run_), what_);
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
		// The SQL the last crash found running returned (a value or an error): that crash was not
		// its doing, and the count starts again.
		if (StepSqlPage *p = Page();
		    p != nullptr && p->suspect == static_cast<uint64_t>(run_) && p->suspect_what == what_) {
			p->suspect = 0;
			p->suspect_what = 0;
			p->crashes = 0;
		}
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

StuckRun
TakeStuckRun(bool first)
{
	StepSqlPage *p = Page();
	if (!exit_hook) {
		exit_hook = true;
		before_shmem_exit(KeepUnsettledRun, 0);
	}
	// Ended by FATAL past the grace: shared memory said so. Kept in the page until the run's
	// failing commits: a worker stopped before that leaves it to the next.
	if (const int64_t taken = TakeRunInStepSql(MyDatabaseId)) {
		unsettled = {taken, false};
		if (p != nullptr) {
			p->condemned = static_cast<uint64_t>(taken);
			p->condemned_by_crash = 0;
		}
	}
	if (first && p != nullptr) {
		const uint64_t run = p->in_sql;
		const uint64_t what = p->in_sql_what;
		p->in_sql = 0;
		// Killed outright in it (shared memory did not say FATAL): the crash may have been another
		// process's, so only the second crash in a row with this run in the same SQL (a step's
		// run_if, input, mappings or writeback), which did not return in between, condemns it.
		if (run != 0 && !unsettled.run) {
			if (p->suspect == run && p->suspect_what == what)
				p->crashes++;
			else {
				p->suspect = run;
				p->suspect_what = what;
				p->crashes = 1;
			}
			if (p->crashes >= kCrashesInStepSql) {
				p->condemned = run;
				p->condemned_by_crash = 1;
				p->suspect = 0;
				p->suspect_what = 0;
				p->crashes = 0;
			}
		}
	}
	if (p != nullptr && p->condemned != 0)
		return {static_cast<int64_t>(p->condemned), p->condemned_by_crash != 0};
	return unsettled;
}

void
StuckRunSettled(int64_t run)
{
	if (StepSqlPage *p = Page(); p != nullptr && p->condemned == static_cast<uint64_t>(run)) {
		p->condemned = 0;
		p->condemned_by_crash = 0;
	}
	if (unsettled.run == run)
		unsettled = StuckRun{};
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
