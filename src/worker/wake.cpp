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

extern "C" {
PG_FUNCTION_INFO_V1(switchboard_wake);
PG_FUNCTION_INFO_V1(switchboard_start_worker);

// switchboard.wake(): now, so that a waiting caller (wait_idle) is served without committing.
Datum
switchboard_wake(PG_FUNCTION_ARGS)
{
	return Boundary([&] {
		SetWorkerLatch(MyDatabaseId);
		PG_RETURN_VOID();
	});
}

Datum
switchboard_start_worker(PG_FUNCTION_ARGS)
{
	return Boundary([&] {
		WakeLauncherAtCommit();
		PG_RETURN_VOID();
	});
}
}
