// Waking the database's worker when a transaction that captured changes commits.
#pragma once

namespace switchboard {
// Called by capture: at commit (never at abort) the worker's latch is set, once per transaction.
void WakeWorkerAtCommit();
// Registers the transaction callback (from _PG_init).
void InstallWakeCallback();
} // namespace switchboard
