#include "capture/enqueue.h"

#include "capture/queue_layout.h"
#include "worker/wake.h"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
}

namespace switchboard {

namespace {
char suppressed_route[NAMEDATALEN * 2] = "";

Oid
SwitchboardRelid(const char *name)
{
	Oid nsp = get_namespace_oid("switchboard", false);
	Oid relid = get_relname_relid(name, nsp);
	if (!OidIsValid(relid))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("switchboard.%s is missing", name)));
	return relid;
}

void
CheckQueueLayout(TupleDesc desc)
{
	static const char *const names[] = {"id", "route", "op", "new", "old", "captured_at", "state",
	                                    "attempts", "next_attempt_at", "key", "last_status",
	                                    "last_error", "failed_at", "payload"};
	if (desc->natts != kQueueColumns)
		elog(ERROR, "switchboard.queue has %d columns, expected %d", desc->natts, kQueueColumns);
	for (int i = 0; i < kQueueColumns; i++)
		if (strcmp(NameStr(TupleDescAttr(desc, i)->attname), names[i]) != 0)
			elog(ERROR, "switchboard.queue column %d is \"%s\", expected \"%s\"", i + 1,
			     NameStr(TupleDescAttr(desc, i)->attname), names[i]);
}

// Index entries for a heap tuple, as CatalogIndexInsert does. Plain column indexes take the
// values straight from the tuple; a partial index (the queue's index of translated keys) is
// evaluated with an executor state, made only when one exists. Ids come from a sequence, so no
// uniqueness check is needed.
void
InsertIndexEntries(Relation heap, HeapTuple tuple)
{
	List *indexes = RelationGetIndexList(heap);
	ListCell *lc;
	TupleDesc desc = RelationGetDescr(heap);
	EState *estate = nullptr;
	TupleTableSlot *slot = nullptr;
	foreach (lc, indexes) {
		Relation index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo *info = BuildIndexInfo(index);
		Datum values[INDEX_MAX_KEYS];
		bool isnull[INDEX_MAX_KEYS];
		if (info->ii_Expressions != NIL || info->ii_Predicate != NIL) {
			if (estate == nullptr) {
				estate = CreateExecutorState();
				slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
				ExecStoreHeapTuple(tuple, slot, false);
				GetPerTupleExprContext(estate)->ecxt_scantuple = slot;
			}
			if (info->ii_Predicate != NIL &&
			    !ExecQual(ExecPrepareQual(info->ii_Predicate, estate), GetPerTupleExprContext(estate))) {
				index_close(index, RowExclusiveLock);
				continue;
			}
			FormIndexDatum(info, slot, estate, values, isnull);
		} else {
			for (int i = 0; i < info->ii_NumIndexAttrs; i++)
				values[i] = heap_getattr(tuple, info->ii_IndexAttrNumbers[i], desc, &isnull[i]);
		}
		index_insert(index, values, isnull, &tuple->t_self, heap, UNIQUE_CHECK_NO, false, info);
		index_close(index, RowExclusiveLock);
	}
	if (estate != nullptr) {
		ExecDropSingleTupleTableSlot(slot);
		FreeExecutorState(estate);
	}
	list_free(indexes);
}
} // namespace

Datum
RowImage(HeapTuple tuple, TupleDesc desc)
{
	return DirectFunctionCall1(row_to_json, heap_copy_tuple_as_datum(tuple, desc));
}

void
EnqueueChange(const char *route, const char *op, Datum new_image, Datum old_image)
{
	static bool layout_checked = false;
	Datum values[kQueueColumns];
	bool nulls[kQueueColumns];

	Relation queue = table_open(SwitchboardRelid("queue"), RowExclusiveLock);
	if (!layout_checked) {
		CheckQueueLayout(RelationGetDescr(queue));
		layout_checked = true;
	}
	memset(nulls, true, sizeof nulls);
	values[kQueueId - 1] = Int64GetDatum(nextval_internal(SwitchboardRelid("queue_id_seq"), false));
	values[kQueueRoute - 1] = CStringGetTextDatum(route);
	values[kQueueOp - 1] = CStringGetTextDatum(op);
	values[kQueueNew - 1] = new_image;
	values[kQueueOld - 1] = old_image;
	values[kQueueCapturedAt - 1] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[kQueueState - 1] = CStringGetTextDatum("pending");
	values[kQueueAttempts - 1] = Int32GetDatum(0);
	nulls[kQueueId - 1] = nulls[kQueueRoute - 1] = nulls[kQueueOp - 1] = false;
	nulls[kQueueNew - 1] = new_image == (Datum) 0;
	nulls[kQueueOld - 1] = old_image == (Datum) 0;
	nulls[kQueueCapturedAt - 1] = nulls[kQueueState - 1] = nulls[kQueueAttempts - 1] = false;

	HeapTuple tuple = heap_form_tuple(RelationGetDescr(queue), values, nulls);
	simple_heap_insert(queue, tuple);
	InsertIndexEntries(queue, tuple);
	heap_freetuple(tuple);
	table_close(queue, NoLock);
	WakeWorkerAtCommit();
}

void
SetCaptureSuppressedRoute(const char *route)
{
	strlcpy(suppressed_route, route ? route : "", sizeof suppressed_route);
}

bool
CaptureSuppressed(const char *route)
{
	return suppressed_route[0] != '\0' && strcmp(suppressed_route, route) == 0;
}

} // namespace switchboard
