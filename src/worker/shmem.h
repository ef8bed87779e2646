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
// True when a worker for the database should be started now (marks it as starting).
bool ShouldStartWorker(Oid database, int64_t now_ms);
void ForgetDatabasesExcept(const Oid *databases, int count);
void MarkStartFailed(Oid database);

// Worker side: claims the database's slot (false if another worker holds it).
bool ClaimWorkerSlot(Oid database, Latch *latch);
void ReleaseWorkerSlot(Oid database, bool has_extension, int64_t now_ms);
// Worker side: whether commits should wake it (not while delivery is paused).
void SetWorkerWantsWakes(Oid database, bool wants);

// DROP/RENAME DATABASE: stop the database's worker and keep it stopped for hold_ms.
// Returns after the worker has exited or timeout_ms passed.
void StopWorkerFor(Oid database, int64_t hold_ms, int timeout_ms);

int64_t NowMs();

} // namespace switchboard
