// The hot path of capture: one queue row per change, inserted without SPI or the executor.
#pragma once

#include "pg/prelude.h"

extern "C" {
#include "access/htup.h"
#include "utils/rel.h"
}

namespace switchboard {

// Row image of tuple as json (column name -> value), as row_to_json renders it.
Datum RowImage(HeapTuple tuple, TupleDesc desc);

// Inserts a queue row in the current transaction. new_image/old_image may be (Datum) 0.
// Returns where the queue row is, for resync, which may take it back (WithdrawChange).
ItemPointerData EnqueueChange(const char *route, const char *op, Datum new_image, Datum old_image);

// Deletes a queue row this transaction inserted (resync replacing a stale image).
void WithdrawChange(ItemPointerData queue_row);

// Echo suppression: while set, changes of this route are not captured (the pull writes them).
void SetCaptureSuppressedRoute(const char *route);
bool CaptureSuppressed(const char *route);

} // namespace switchboard
