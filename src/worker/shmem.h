// Shared memory: one slot per database worker, so backends can find and wake it.
#pragma once

#include "pg/prelude.h"

namespace switchboard {
void RequestSharedMemory(); // from _PG_init (shmem_request_hook)
void SetWorkerLatch(Oid database);
} // namespace switchboard
