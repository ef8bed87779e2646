// Waking the database's worker when a transaction that captured changes commits, and the
// launcher when one created the extension.
#pragma once

namespace switchboard {
// Called by capture: at commit (never at abort) the worker's latch is set, once per transaction.
void WakeWorkerAtCommit();
// Called by CREATE EXTENSION: at commit the launcher starts this database's worker.
void WakeLauncherAtCommit();
// Registers the transaction callback (from _PG_init).
void InstallWakeCallback();
} // namespace switchboard
