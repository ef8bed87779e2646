#include "worker/wake.h"

#include "pg/prelude.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
}

#include "worker/shmem.h"

namespace switchboard {

namespace {
bool wake_pending = false;

void
OnXactEvent(XactEvent event, void *)
{
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
		if (wake_pending)
			SetWorkerLatch(MyDatabaseId);
		wake_pending = false;
		break;
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
		wake_pending = false;
		break;
	default:
		break;
	}
}
} // namespace

void
WakeWorkerAtCommit()
{
	wake_pending = true;
}

void
InstallWakeCallback()
{
	RegisterXactCallback(OnXactEvent, nullptr);
}

} // namespace switchboard
