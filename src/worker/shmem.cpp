#include "worker/shmem.h"

namespace switchboard {
// The worker arrives with the sync-worker milestone; until then there is nobody to wake.
void
RequestSharedMemory()
{
}
void
SetWorkerLatch(Oid)
{
}
} // namespace switchboard
