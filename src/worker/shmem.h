// Shared memory: one slot per database, so that backends can wake their database's worker
// and the launcher knows which databases have one.
#pragma once

#include "pg/prelude.h"

extern "C" {
#include "storage/latch.h"
}

namespace switchboard {

constexpr int kMaxDatabases = 256;

void RequestSharedMemory(); // from _PG_init (shmem_request_hook)

// Backends: wake the worker of a database (no-op when it has none).
void SetWorkerLatch(Oid database);
// Backends: ask the launcher to look at a database now (CREATE EXTENSION).
void WakeLauncher(Oid database);

// Launcher side.
void RegisterLauncherLatch(Latch *latch);
// Of the databases listed, those whose worker should be started now (marked as starting),
// written to out: databases that want one (never looked at, a commit since its last worker's
// last round, a retry or pull come due), the longest unserved first, while fewer than
// max_workers (switchboard.max_workers) run. When more want one, running workers are asked to
// make room. Returns how many were written. commits_count false (delivery paused): commits
// alone do not call for a worker.
int PickDatabasesToStart(const Oid *databases, int count, int max_workers, bool commits_count, int64_t now_ms,
                         Oid *out);
// Every database wants a worker again (delivery resumed: switchboard.enabled turned on).
void MarkAllWanted();
void ForgetDatabasesExcept(const Oid *databases, int count);
void MarkStartFailed(Oid database);

// Worker side: claims the database's slot (false if another worker holds it).
bool ClaimWorkerSlot(Oid database, Latch *latch);
void ReleaseWorkerSlot(Oid database, bool has_extension, int64_t now_ms);
// Worker side: whether commits should wake it (not while delivery is paused).
void SetWorkerWantsWakes(Oid database, bool wants);
// Worker side, for switchboard.max_workers. Capturing commits counted so far in this database
// (read before a round: those are visible to it).
uint64_t CommitsCounted(Oid database);

// The run whose step SQL the worker of database is running (0: none; see StatementTimeLimit),
// and, for the next worker, the one it was running when its predecessor ended (read once).
void SetRunInStepSql(Oid database, int64_t run);
int64_t TakeRunInStepSql(Oid database);
// The worker waits with nothing to do, its rounds having found nothing since idle_since_ms
// (the launcher asks such workers to make room first, the longest idle first).
void SetWorkerSleeping(Oid database, bool sleeping, int64_t idle_since_ms = 0);
// Whether the launcher asked this worker to make room and it should now: when idle once it
// has stayed a minimum (half a second), when busy once it has run a while (so that no database
// starves). wait_ms (optional): -1 when not asked, else how long until it should.
bool ShouldMakeRoom(Oid database, bool idle, int64_t now_ms, int64_t *wait_ms = nullptr);
// Before exiting to make room: the commits its last round had seen, and when it has work
// again (a retry or pull due; the launcher starts a worker then, or at the next commit).
void MakeRoom(Oid database, uint64_t commits_seen, int64_t due_at);

// DROP/RENAME DATABASE: stop the database's worker and keep it stopped for hold_ms.
// Returns after the worker has exited or timeout_ms passed.
void StopWorkerFor(Oid database, int64_t hold_ms, int timeout_ms);

int64_t NowMs();

} // namespace switchboard
