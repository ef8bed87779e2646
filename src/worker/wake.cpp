#include "worker/wake.h"

#include "pg/boundary.h"
#include "worker/shmem.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
}

namespace switchboard {

namespace {
// Per backend and per transaction: capture only notes that a wake-up is due. Setting the
// latch at once would wake the worker before the rows are visible to it; it would find
// nothing and sleep until the next naptime.
bool wake_worker = false;
bool wake_launcher = false;

void
OnXactEvent(XactEvent event, void *)
{
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
		// The commit is already visible to new snapshots here. Nothing below may raise: the
		// transaction can no longer abort, so both calls only take a spinlock and set a latch.
		if (wake_worker)
			SetWorkerLatch(MyDatabaseId);
		if (wake_launcher)
			WakeLauncher(MyDatabaseId);
		wake_worker = wake_launcher = false;
		break;
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
		// The captured rows are gone with the transaction; the flags must not carry over
		// into the next one either.
		wake_worker = wake_launcher = false;
		break;
	default:
		break;
	}
}
} // namespace

void
WakeWorkerAtCommit()
{
	wake_worker = true;
}

void
WakeLauncherAtCommit()
{
	wake_launcher = true;
}

void
InstallWakeCallback()
{
	// Once per process (from _PG_init): callbacks are per backend and last its lifetime.
	RegisterXactCallback(OnXactEvent, nullptr);
}

} // namespace switchboard

using namespace switchboard;

// switchboard.wake(): now, so that a waiting caller (wait_idle) is served without committing;
// and again at commit, since what the caller changed (retry(), pull_now() in a transaction)
// is visible only then: a worker woken now may find nothing and leave (max_workers).
SB_PG_FUNCTION(switchboard_wake)
{
	SetWorkerLatch(MyDatabaseId);
	WakeWorkerAtCommit();
	PG_RETURN_VOID();
}

// Called by the install script: at commit, not now, because a worker started before
// CREATE EXTENSION commits would not see the extension in its database yet.
SB_PG_FUNCTION(switchboard_start_worker)
{
	WakeLauncherAtCommit();
	PG_RETURN_VOID();
}
