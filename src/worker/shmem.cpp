#include "worker/shmem.h"

#include <algorithm>

#include "worker/shared_limits.h"

extern "C" {
#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "port/atomics.h"
#include "storage/spin.h"
#include "utils/timestamp.h"
}

namespace switchboard {

namespace {

struct WorkerSlot {
	Oid database;        // InvalidOid: free
	pid_t pid;           // running worker, 0 when none
	Latch *latch;        // its latch
	int64_t starting_at; // launcher asked for a worker at this time (0: not starting)
	int64_t idle_until;  // no extension here: do not start a worker before this time
	int64_t held_until;  // DROP/RENAME DATABASE in progress: keep away until then
	bool wants_wakes;    // set by the worker: false while paused, so commits do not wake it
	// CREATE EXTENSION commits counted, and the count when the running worker started: a
	// worker that found no extension leaves the database idle only if none committed since
	// (one that committed after its look would otherwise wait out the idle minute).
	uint64_t extension_wakes;
	uint64_t wakes_at_claim;
	// switchboard.max_workers (see PickDatabasesToStart). Capturing commits counted without a
	// lock; the count the last worker had seen when it began its last round: a difference is
	// a commit no worker looked at yet.
	pg_atomic_uint64 commits;
	uint64_t commits_seen;
	int64_t due_at;       // a worker is wanted from here on (0: at once; set when one yields)
	int64_t last_exit_ms; // when its last worker exited: the longest unserved go first
	int64_t claimed_at;   // when the running worker started
	bool sleeping;        // the running worker waits with nothing to do
	int64_t idle_since;   // since when its rounds found nothing to do (while sleeping)
	bool yield_asked;     // the launcher asked the running worker to make room
	// The run whose step SQL the worker is running (0: none), set and cleared around it: a
	// worker that ends inside it (cut off past the step's time limit) leaves it for the next.
	pg_atomic_uint64 run_in_step_sql;
};

struct SharedState {
	slock_t mutex;
	Latch *launcher_latch;
	WorkerSlot slots[kMaxDatabases];
};

SharedState *shared = nullptr;
shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

// How long a database without the extension is left alone before the launcher checks again
// (CREATE EXTENSION wakes the launcher at once, so this is only a safety net).
constexpr int64_t kNoExtensionRecheckMs = 60 * 1000;
constexpr int64_t kStartTimeoutMs = 30 * 1000;
// A busy worker asked to make room does so after this long; an idle one once it has run
// kMinStayMs (so that two databases taking turns cannot thrash, each starting a worker for
// every commit).
constexpr int64_t kYieldQuantumMs = 5 * 1000;
constexpr int64_t kMinStayMs = 500;

void
ClearSlot(WorkerSlot *slot, Oid database)
{
	memset(slot, 0, sizeof(WorkerSlot));
	pg_atomic_init_u64(&slot->commits, 0);
	pg_atomic_init_u64(&slot->run_in_step_sql, 0);
	slot->database = database;
}

void
ShmemRequest()
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(SharedState));
	RequestAddinShmemSpace(SharedLimitsSize());
}

void
ShmemStartup()
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	bool found = false;
	shared = static_cast<SharedState *>(ShmemInitStruct("switchboard", sizeof(SharedState), &found));
	if (!found) {
		memset(shared, 0, sizeof(SharedState));
		SpinLockInit(&shared->mutex);
		for (auto &slot : shared->slots)
			ClearSlot(&slot, InvalidOid);
	}
	bool limits_found = false;
	void *limits = ShmemInitStruct("switchboard rate limits", SharedLimitsSize(), &limits_found);
	SharedLimitsInit(limits, limits_found);
	LWLockRelease(AddinShmemInitLock);
}

// Callers hold the mutex.
WorkerSlot *
FindSlot(Oid database, bool create)
{
	WorkerSlot *free_slot = nullptr;
	for (auto &slot : shared->slots) {
		if (slot.database == database)
			return &slot;
		if (slot.database == InvalidOid && free_slot == nullptr)
			free_slot = &slot;
	}
	if (create && free_slot != nullptr) {
		ClearSlot(free_slot, database);
		return free_slot;
	}
	return nullptr;
}

} // namespace

int64_t
NowMs()
{
	return static_cast<int64_t>(GetCurrentTimestamp() / 1000) + 946684800000LL; // PG epoch -> unix
}

void
RequestSharedMemory()
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ShmemStartup;
}

// Called at every commit that captured something, so it takes no lock: the slot of this
// backend's database is looked up once, and a stale read only costs a spurious or a missed
// wake-up (the worker's safety poll covers the latter). Latches live in shared memory, so a
// latch pointer read here stays valid.
namespace {

// The slot of database, looked up under the mutex only when *cached is not it (nullptr: none).
WorkerSlot *
CachedSlot(WorkerSlot **cached, Oid database)
{
	if (shared == nullptr)
		return nullptr;
	if (*cached == nullptr || (*cached)->database != database) {
		SpinLockAcquire(&shared->mutex);
		*cached = FindSlot(database, false);
		SpinLockRelease(&shared->mutex);
	}
	return *cached;
}

} // namespace

void
SetWorkerLatch(Oid database)
{
	static WorkerSlot *cached = nullptr;
	if (CachedSlot(&cached, database) == nullptr)
		return;
	// Counted first, so that a worker about to make room (or the launcher) sees the commit.
	pg_atomic_fetch_add_u64(&cached->commits, 1);
	pg_read_barrier();
	Latch *latch = cached->latch;
	if (cached->database != database)
		return;
	if (cached->pid != 0 && cached->wants_wakes && latch != nullptr)
		SetLatch(latch);
	else if (cached->pid == 0 && (latch = shared->launcher_latch) != nullptr)
		SetLatch(latch); // no worker: the launcher starts one (switchboard.max_workers)
}

void
SetWorkerWantsWakes(Oid database, bool wants)
{
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, false);
	if (slot != nullptr && slot->pid == MyProcPid)
		slot->wants_wakes = wants;
	SpinLockRelease(&shared->mutex);
}

void
WakeLauncher(Oid database)
{
	if (shared == nullptr)
		return;
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, true);
	if (slot != nullptr) {
		slot->idle_until = 0;
		slot->extension_wakes++;
	}
	Latch *latch = shared->launcher_latch;
	SpinLockRelease(&shared->mutex);
	if (latch != nullptr)
		SetLatch(latch);
}

void
RegisterLauncherLatch(Latch *latch)
{
	SpinLockAcquire(&shared->mutex);
	shared->launcher_latch = latch;
	SpinLockRelease(&shared->mutex);
}

namespace {

// Callers hold the mutex. A worker runs or was asked for (and has not timed out).
bool
Occupied(const WorkerSlot &slot, int64_t now_ms)
{
	return slot.pid != 0 || (slot.starting_at != 0 && now_ms - slot.starting_at <= kStartTimeoutMs);
}

// Callers hold the mutex. Whether the database wants a worker now: never looked at, a worker
// gone for another reason than making room, a retry or pull come due, or a commit since.
bool
Wanted(WorkerSlot &slot, int64_t now_ms, bool commits_count)
{
	return slot.due_at <= now_ms || (commits_count && pg_atomic_read_u64(&slot.commits) != slot.commits_seen);
}

} // namespace

int
PickDatabasesToStart(const Oid *databases, int count, int max_workers, bool commits_count, int64_t now_ms, Oid *out)
{
	WorkerSlot *candidates[kMaxDatabases];
	int wanted = 0, running = 0, picked = 0;
	Latch *to_wake[kMaxDatabases];
	int wake_count = 0;
	SpinLockAcquire(&shared->mutex);
	for (const auto &slot : shared->slots)
		if (slot.database != InvalidOid && Occupied(slot, now_ms))
			running++;
	for (int i = 0; i < count; i++) {
		WorkerSlot *slot = FindSlot(databases[i], true);
		if (slot == nullptr || Occupied(*slot, now_ms) || slot->idle_until > now_ms || slot->held_until > now_ms ||
		    !Wanted(*slot, now_ms, commits_count))
			continue;
		// Insertion by last exit: the database whose worker left longest ago goes first, so
		// none starves however many there are.
		int at = wanted++;
		while (at > 0 && candidates[at - 1]->last_exit_ms > slot->last_exit_ms) {
			candidates[at] = candidates[at - 1];
			at--;
		}
		candidates[at] = slot;
	}
	for (; picked < wanted && running < max_workers; picked++, running++) {
		candidates[picked]->starting_at = now_ms;
		out[picked] = candidates[picked]->database;
	}
	// More databases want a worker than max_workers allows, or more run than it allows now
	// (lowered by a reload): ask running workers to make room. Idle ones first, the longest
	// idle first (they leave at once, or after their minimum stay), then busy ones that ran
	// longest (after their round, once they have had kYieldQuantumMs).
	int short_by = (wanted - picked) + std::max(0, running - max_workers);
	WorkerSlot *asked[kMaxDatabases];
	int askable = 0;
	for (auto &slot : shared->slots) {
		if (slot.database == InvalidOid || slot.pid == 0)
			continue;
		if (slot.yield_asked)
			short_by--;
		else
			asked[askable++] = &slot;
	}
	if (short_by > 0) {
		auto rank = [now_ms](const WorkerSlot *slot) {
			if (!slot->sleeping)
				return 2;
			return now_ms - slot->claimed_at >= kMinStayMs ? 0 : 1;
		};
		std::sort(asked, asked + askable, [&](const WorkerSlot *a, const WorkerSlot *b) {
			int ra = rank(a), rb = rank(b);
			if (ra != rb)
				return ra < rb;
			if (ra == 0 && a->idle_since != b->idle_since)
				return a->idle_since < b->idle_since;
			return a->claimed_at < b->claimed_at;
		});
		for (int i = 0; i < askable && short_by > 0; i++, short_by--) {
			asked[i]->yield_asked = true;
			if (asked[i]->latch != nullptr)
				to_wake[wake_count++] = asked[i]->latch;
		}
	}
	SpinLockRelease(&shared->mutex);
	for (int i = 0; i < wake_count; i++)
		SetLatch(to_wake[i]);
	return picked;
}

void
MarkAllWanted()
{
	SpinLockAcquire(&shared->mutex);
	for (auto &slot : shared->slots)
		slot.due_at = 0;
	SpinLockRelease(&shared->mutex);
}

void
SetRunInStepSql(Oid database, int64_t run)
{
	static WorkerSlot *cached = nullptr;
	if (CachedSlot(&cached, database) != nullptr)
		pg_atomic_write_u64(&cached->run_in_step_sql, static_cast<uint64_t>(run));
}

int64_t
TakeRunInStepSql(Oid database)
{
	// Asked every runs round: the slot is looked up once, not under the mutex each time.
	static WorkerSlot *cached = nullptr;
	if (CachedSlot(&cached, database) == nullptr)
		return 0;
	return static_cast<int64_t>(pg_atomic_exchange_u64(&cached->run_in_step_sql, 0));
}

uint64_t
CommitsCounted(Oid database)
{
	uint64_t commits = 0;
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, false);
	if (slot != nullptr)
		commits = pg_atomic_read_u64(&slot->commits);
	SpinLockRelease(&shared->mutex);
	return commits;
}

void
SetWorkerSleeping(Oid database, bool sleeping, int64_t idle_since_ms)
{
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, false);
	if (slot != nullptr && slot->pid == MyProcPid) {
		slot->sleeping = sleeping;
		slot->idle_since = idle_since_ms;
	}
	SpinLockRelease(&shared->mutex);
}

bool
ShouldMakeRoom(Oid database, bool idle, int64_t now_ms, int64_t *wait_ms)
{
	bool yield = false;
	int64_t wait = -1;
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, false);
	if (slot != nullptr && slot->pid == MyProcPid && slot->yield_asked) {
		int64_t stayed = now_ms - slot->claimed_at;
		yield = (idle && stayed >= kMinStayMs) || stayed >= kYieldQuantumMs;
		wait = yield ? 0 : (idle ? kMinStayMs : kYieldQuantumMs) - stayed;
	}
	SpinLockRelease(&shared->mutex);
	if (wait_ms != nullptr)
		*wait_ms = wait;
	return yield;
}

void
MakeRoom(Oid database, uint64_t commits_seen, int64_t due_at)
{
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, false);
	if (slot != nullptr && slot->pid == MyProcPid) {
		slot->commits_seen = commits_seen;
		slot->due_at = due_at;
	}
	SpinLockRelease(&shared->mutex);
}

void
MarkStartFailed(Oid database)
{
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, false);
	if (slot != nullptr)
		slot->starting_at = 0;
	SpinLockRelease(&shared->mutex);
}

void
ForgetDatabasesExcept(const Oid *databases, int count)
{
	SpinLockAcquire(&shared->mutex);
	for (auto &slot : shared->slots) {
		if (slot.database == InvalidOid || slot.pid != 0)
			continue;
		bool present = false;
		for (int i = 0; i < count && !present; i++)
			present = databases[i] == slot.database;
		if (!present)
			ClearSlot(&slot, InvalidOid);
	}
	SpinLockRelease(&shared->mutex);
}

bool
ClaimWorkerSlot(Oid database, Latch *latch)
{
	bool claimed = false;
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, true);
	// DROP/RENAME DATABASE holds the database: a worker the launcher started just before the
	// hold began leaves at once, before it connects (StopWorkerFor waits for that).
	if (slot != nullptr && slot->held_until > NowMs()) {
		slot->starting_at = 0;
		slot = nullptr;
	}
	if (slot != nullptr && (slot->pid == 0 || kill(slot->pid, 0) != 0)) {
		slot->pid = MyProcPid;
		slot->latch = latch;
		slot->starting_at = 0;
		slot->wants_wakes = true;
		slot->wakes_at_claim = slot->extension_wakes;
		// Wanted again at once if it exits for any other reason than making room.
		slot->due_at = 0;
		slot->claimed_at = NowMs();
		slot->sleeping = slot->yield_asked = false;
		claimed = true;
	}
	SpinLockRelease(&shared->mutex);
	return claimed;
}

void
ReleaseWorkerSlot(Oid database, bool has_extension, int64_t now_ms)
{
	if (shared == nullptr)
		return;
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, false);
	if (slot != nullptr && slot->pid == MyProcPid) {
		slot->pid = 0;
		slot->latch = nullptr;
		slot->starting_at = 0;
		slot->wants_wakes = false;
		slot->sleeping = slot->yield_asked = false;
		slot->last_exit_ms = now_ms;
		if (!has_extension && slot->extension_wakes == slot->wakes_at_claim)
			slot->idle_until = now_ms + kNoExtensionRecheckMs;
	}
	Latch *launcher = shared->launcher_latch;
	SpinLockRelease(&shared->mutex);
	if (launcher != nullptr)
		SetLatch(launcher);
}

void
StopWorkerFor(Oid database, int64_t hold_ms, int timeout_ms)
{
	if (shared == nullptr)
		return;
	pid_t pid = 0;
	bool starting = false;
	SpinLockAcquire(&shared->mutex);
	WorkerSlot *slot = FindSlot(database, true);
	if (slot != nullptr) {
		int64_t now = NowMs();
		slot->held_until = now + hold_ms;
		pid = slot->pid;
		// Registered by the launcher but not running yet: once started it finds the hold and
		// leaves before connecting (ClaimWorkerSlot), unless it claimed the slot first.
		starting = pid == 0 && Occupied(*slot, now);
	}
	SpinLockRelease(&shared->mutex);
	if (pid == 0 && !starting)
		return;
	if (pid != 0)
		kill(pid, SIGTERM);
	// By the clock: the latch wait below may return early.
	for (int64_t deadline = NowMs() + timeout_ms; NowMs() < deadline;) {
		bool gone;
		SpinLockAcquire(&shared->mutex);
		slot = FindSlot(database, false);
		bool claimed = slot != nullptr && pid == 0 && slot->pid != 0;
		if (claimed)
			pid = slot->pid; // claimed before the hold: stopped like a running one
		gone = slot == nullptr || (pid == 0 ? !Occupied(*slot, NowMs()) : slot->pid != pid);
		SpinLockRelease(&shared->mutex);
		if (claimed)
			kill(pid, SIGTERM);
		if (gone)
			return;
		// A latch wait, not pg_usleep: it ends the backend if the postmaster dies meanwhile,
		// and a cancel sets the latch, so CHECK_FOR_INTERRUPTS sees it at once.
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

} // namespace switchboard
