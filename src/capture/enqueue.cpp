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
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
}

namespace switchboard {

namespace {
char suppressed_route[NAMEDATALEN * 2] = "";

// What capture needs to know about switchboard.queue, looked up once per backend instead of
// once per captured row (name lookups, the index list and each index's IndexInfo were a tenth
// of the trigger's time). Dropped by the relcache invalidation of the queue, its sequence or
// any of its indexes (CREATE/DROP INDEX, DROP EXTENSION), and looked up again on next use.
struct QueueIndex {
	Oid oid;
	IndexInfo *info; // built once, in QueueCache::context
	// A partial index whose predicate is "<column> IS NOT NULL" over a column capture leaves
	// NULL (the queue's index of translated keys): it never gets an entry from capture, so the
	// predicate is not evaluated for every row.
	bool never_from_capture;
};

struct QueueCache {
	bool valid = false;
	Oid queue = InvalidOid;
	Oid sequence = InvalidOid;
	MemoryContext context = nullptr;
	QueueIndex *indexes = nullptr; // in context
	int n_indexes = 0;
	uint64_t generation = 0; // invalidations seen
};
QueueCache cache;
bool callback_registered = false;

void
InvalidateQueueCache(Datum, Oid relid)
{
	// Counted even while the cache is being filled (an index_open there processes pending
	// invalidations): a fill that saw one starts over, or it would keep what changed under it
	// (an index becoming ready for inserts during CREATE INDEX CONCURRENTLY).
	bool ours = relid == InvalidOid || relid == cache.queue || relid == cache.sequence;
	for (int i = 0; i < cache.n_indexes && !ours; i++)
		ours = relid == cache.indexes[i].oid;
	if (ours) {
		cache.generation++;
		cache.valid = false; // the context is reset when the cache is filled again
	}
}

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
	static const char *const names[] = {"id",        "route",       "op",
	                                    "new",       "old",         "captured_at",
	                                    "state",     "attempts",    "next_attempt_at",
	                                    "key",       "last_status", "last_error",
	                                    "failed_at", "payload"};
	if (desc->natts != kQueueColumns)
		elog(ERROR, "switchboard.queue has %d columns, expected %d", desc->natts, kQueueColumns);
	for (int i = 0; i < kQueueColumns; i++)
		if (strcmp(NameStr(TupleDescAttr(desc, i)->attname), names[i]) != 0)
			elog(ERROR, "switchboard.queue column %d is \"%s\", expected \"%s\"", i + 1,
			     NameStr(TupleDescAttr(desc, i)->attname), names[i]);
}

// Columns capture always leaves NULL (filled in by the worker).
bool
CaptureLeavesNull(AttrNumber attno)
{
	return attno == kQueueNextAttemptAt || attno == kQueueKey || attno == kQueueLastStatus ||
	       attno == kQueueLastError || attno == kQueueFailedAt || attno == kQueuePayload;
}

bool
NeverFromCapture(IndexInfo *info)
{
	if (info->ii_Expressions != NIL || list_length(info->ii_Predicate) != 1)
		return false;
	Node *pred = (Node *) linitial(info->ii_Predicate);
	if (!IsA(pred, NullTest))
		return false;
	NullTest *test = (NullTest *) pred;
	return test->nulltesttype == IS_NOT_NULL && !test->argisrow && IsA(test->arg, Var) &&
	       CaptureLeavesNull(((Var *) test->arg)->varattno);
}

// Fills the cache; the caller holds a lock on the queue, so its index list is stable.
void
FillQueueCacheOnce(Relation queue, Oid sequence)
{
	if (!callback_registered) {
		CacheRegisterRelcacheCallback(InvalidateQueueCache, (Datum) 0);
		callback_registered = true;
	}
	// Emptied before anything that may raise: the callback never walks memory already reset.
	cache.valid = false;
	cache.n_indexes = 0;
	cache.indexes = nullptr;
	if (cache.context == nullptr)
		cache.context = AllocSetContextCreate(CacheMemoryContext, "switchboard capture", ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(cache.context);
	CheckQueueLayout(RelationGetDescr(queue));
	cache.queue = RelationGetRelid(queue);
	cache.sequence = sequence;
	List *indexes = RelationGetIndexList(queue);
	MemoryContext old = MemoryContextSwitchTo(cache.context);
	cache.indexes = static_cast<QueueIndex *>(palloc0(sizeof(QueueIndex) * (list_length(indexes) + 1)));
	ListCell *lc;
	foreach (lc, indexes) {
		Relation index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo *info = BuildIndexInfo(index);
		index_close(index, NoLock);
		QueueIndex &entry = cache.indexes[cache.n_indexes++];
		entry.oid = lfirst_oid(lc);
		entry.info = info;
		entry.never_from_capture = NeverFromCapture(info);
	}
	MemoryContextSwitchTo(old);
	list_free(indexes);
}

// Filled again while invalidations arrive during the fill; if they keep coming, what was read
// last is used for this row and the cache stays invalid, to be filled again for the next.
void
FillQueueCache(Relation queue, Oid sequence)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		uint64_t before = cache.generation;
		FillQueueCacheOnce(queue, sequence);
		if (cache.generation == before) {
			cache.valid = true;
			return;
		}
	}
}

// Index entries for a heap tuple, as CatalogIndexInsert does. Plain column indexes take the
// values straight from the tuple; a partial or expression index other than the one capture
// never feeds is evaluated with an executor state. Ids come from a sequence, so no uniqueness
// check is needed.
void
InsertIndexEntries(Relation heap, HeapTuple tuple)
{
	TupleDesc desc = RelationGetDescr(heap);
	EState *estate = nullptr;
	TupleTableSlot *slot = nullptr;
	for (int n = 0; n < cache.n_indexes; n++) {
		const QueueIndex &entry = cache.indexes[n];
		// Not ready: an index being built concurrently (CREATE/REINDEX CONCURRENTLY) gets its
		// entries from the build, as the executor leaves it alone (ExecInsertIndexTuples).
		if (entry.never_from_capture || !entry.info->ii_ReadyForInserts)
			continue;
		IndexInfo *info = entry.info;
		Relation index = index_open(entry.oid, RowExclusiveLock);
		Datum values[INDEX_MAX_KEYS];
		bool isnull[INDEX_MAX_KEYS];
		if (info->ii_Expressions != NIL || info->ii_Predicate != NIL) {
			if (estate == nullptr) {
				estate = CreateExecutorState();
				slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
				ExecStoreHeapTuple(tuple, slot, false);
				GetPerTupleExprContext(estate)->ecxt_scantuple = slot;
			}
			// Prepared per row: the expression state lives in this row's executor state.
			if (info->ii_Predicate != NIL &&
			    !ExecQual(ExecPrepareQual(info->ii_Predicate, estate), GetPerTupleExprContext(estate))) {
				index_close(index, RowExclusiveLock);
				continue;
			}
			info->ii_ExpressionsState = NIL;
			FormIndexDatum(info, slot, estate, values, isnull);
			info->ii_ExpressionsState = NIL;
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
}
} // namespace

Datum
RowImage(HeapTuple tuple, TupleDesc desc)
{
	return DirectFunctionCall1(row_to_json, heap_copy_tuple_as_datum(tuple, desc));
}

ItemPointerData
EnqueueChange(const char *route, const char *op, Datum new_image, Datum old_image)
{
	Datum values[kQueueColumns];
	bool nulls[kQueueColumns];

	// Invalidations are processed while the lock is acquired: a cache still valid after that
	// names the queue and its sequence as they are (DROP EXTENSION elsewhere, then CREATE,
	// leaves a stale OID that try_relation_open finds gone or the callback has cleared).
	Relation queue = nullptr;
	if (cache.valid) {
		queue = try_relation_open(cache.queue, RowExclusiveLock);
		if (queue != nullptr && !cache.valid) {
			relation_close(queue, RowExclusiveLock);
			queue = nullptr;
		}
	}
	if (queue == nullptr) {
		queue = table_open(SwitchboardRelid("queue"), RowExclusiveLock);
		FillQueueCache(queue, SwitchboardRelid("queue_id_seq"));
	}
	memset(nulls, true, sizeof nulls);
	values[kQueueId - 1] = Int64GetDatum(nextval_internal(cache.sequence, false));
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
	ItemPointerData where = tuple->t_self;
	heap_freetuple(tuple);
	table_close(queue, NoLock);
	WakeWorkerAtCommit();
	return where;
}

void
WithdrawChange(ItemPointerData queue_row)
{
	// The row was inserted by an earlier command of this transaction (the caller advanced the
	// command counter); nobody else can see it yet. Its index entries die with it.
	Relation queue = table_open(SwitchboardRelid("queue"), RowExclusiveLock);
	simple_heap_delete(queue, &queue_row);
	table_close(queue, NoLock);
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
