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
void EnqueueChange(const char *route, const char *op, Datum new_image, Datum old_image);

// Echo suppression: while set, changes of this route are not captured (the pull writes them).
void SetCaptureSuppressedRoute(const char *route);
bool CaptureSuppressed(const char *route);

} // namespace switchboard
