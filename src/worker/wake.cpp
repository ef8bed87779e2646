#include "worker/wake.h"

#include "pg/boundary.h"
#include "worker/shmem.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
}

namespace switchboard {

namespace {
bool wake_worker = false;
bool wake_launcher = false;

void
OnXactEvent(XactEvent event, void *)
{
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
		if (wake_worker)
			SetWorkerLatch(MyDatabaseId);
		if (wake_launcher)
			WakeLauncher(MyDatabaseId);
		wake_worker = wake_launcher = false;
		break;
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
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
	RegisterXactCallback(OnXactEvent, nullptr);
}

} // namespace switchboard

using namespace switchboard;

// switchboard.wake(): now, so that a waiting caller (wait_idle) is served without committing.
SB_PG_FUNCTION(switchboard_wake)
{
	SetWorkerLatch(MyDatabaseId);
	PG_RETURN_VOID();
}

SB_PG_FUNCTION(switchboard_start_worker)
{
	WakeLauncherAtCommit();
	PG_RETURN_VOID();
}
