// switchboard.resync(route, where_clause): enqueue the current state of existing rows
// (initial load, backfill, repair) as updates, through the same filters as live changes.
#include "capture/resync.h"

#include "capture/enqueue.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "translate/route_def.h"
#include "worker/wake.h"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
}

#include <utility>

using namespace switchboard;

namespace {

// Resync reads rows without locking them, so a transaction may change a row after resync's
// snapshot but draw its queue id before resync does: its newer image would then be sent before
// resync's older one, which has the higher id, and per-key order (ids) would say the stale
// image is the newest (SPEC §4: a stale change never overwrites a newer one). So after queueing
// a chunk, every row version read is checked: if a transaction that did not abort has updated
// or deleted it, resync's queue row is taken back and the newest version re-read (after waiting
// for that transaction), as SELECT FOR SHARE would do, without needing UPDATE privilege.
// Any transaction that updates the row after the check draws its id after resync's; should it
// be delivered before resync commits, the worker has marked its key (HoldResyncLock), so the
// older image resync queued is not sent after it.
struct QueuedRow {
	Oid table;
	ItemPointerData row;       // the source row version that was read
	ItemPointerData queue_row; // resync's queue row carrying its image
};

// Whether a transaction other than an aborted one has updated or deleted that row version;
// waits first for one still in progress. Only heap tables are checked.
bool
Superseded(Oid table, ItemPointer row, ItemPointer latest)
{
	Relation rel = table_open(table, AccessShareLock);
	// Tuple headers are read as the heap lays them out; a row of another kind of table (a
	// foreign partition) is queued as read, unchecked.
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID) {
		table_close(rel, AccessShareLock);
		return false;
	}
	bool superseded = false;
	for (;;) {
		HeapTupleData tuple;
		Buffer buffer = InvalidBuffer;
		tuple.t_self = *row;
		TransactionId in_progress = InvalidTransactionId;
		if (!heap_fetch(rel, SnapshotAny, &tuple, &buffer, true)) {
			// Gone (pruned): it had a committed successor or deleter.
			if (BufferIsValid(buffer))
				ReleaseBuffer(buffer);
			superseded = true;
			break;
		}
		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		uint16 mask = tuple.t_data->t_infomask;
		if (!(mask & HEAP_XMAX_INVALID) && !HEAP_XMAX_IS_LOCKED_ONLY(mask)) {
			TransactionId updater = HeapTupleHeaderGetUpdateXid(tuple.t_data);
			if (!TransactionIdIsValid(updater))
				;
			else if (TransactionIdIsCurrentTransactionId(updater))
				superseded = true;
			else if (TransactionIdIsInProgress(updater))
				in_progress = updater;
			else if (TransactionIdDidCommit(updater))
				superseded = true;
		}
		LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
		ReleaseBuffer(buffer);
		if (!TransactionIdIsValid(in_progress))
			break;
		// It may still commit or abort: wait, then look again.
		XactLockTableWait(in_progress, rel, row, XLTW_None);
	}
	if (superseded) {
		if (IsolationUsesXactSnapshot())
			ereport(ERROR, (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			                errmsg("could not serialize access due to concurrent update"),
			                errdetail("A row resync read was changed by another transaction."),
			                errhint("Retry the transaction, or run resync in READ COMMITTED.")));
		*latest = *row;
		TableScanDesc scan = table_beginscan_tid(rel, GetLatestSnapshot());
		table_tuple_get_latest_tid(scan, latest);
		table_endscan(scan);
	}
	table_close(rel, AccessShareLock);
	return superseded;
}

// Queues the image (third column) of each row of the current SPI result, remembering where
// the row versions are (first two).
int
QueueResult(const char *route, QueuedRow *out)
{
	int n = 0;
	for (uint64 i = 0; i < SPI_processed; i++) {
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool isnull = true;
		out[n].table = DatumGetObjectId(SPI_getbinval(row, desc, 1, &isnull));
		out[n].row = *reinterpret_cast<ItemPointer>(DatumGetPointer(SPI_getbinval(row, desc, 2, &isnull)));
		Datum image = SPI_getbinval(row, desc, 3, &isnull);
		out[n].queue_row = EnqueueChange(route, "update", isnull ? (Datum) 0 : image, (Datum) 0);
		n++;
	}
	return n;
}

// Checks the rows just queued; replaces the image of each that was changed meanwhile, and
// checks the replacements in turn.
void
SettleChunk(const char *route, SPIPlanPtr one_row, const QueuedRow *chunk, int n)
{
	// Each pass re-reads at most one row per row it checks.
	size_t size = sizeof(QueuedRow) * (n > 0 ? n : 1);
	QueuedRow *rows = static_cast<QueuedRow *>(palloc(size));
	QueuedRow *next = static_cast<QueuedRow *>(palloc(size));
	memcpy(rows, chunk, sizeof(QueuedRow) * n);
	while (n > 0) {
		CommandCounterIncrement(); // the queue rows above may be taken back
		int m = 0;
		for (int i = 0; i < n; i++) {
			ItemPointerData latest;
			if (!Superseded(rows[i].table, &rows[i].row, &latest))
				continue;
			WithdrawChange(rows[i].queue_row);
			// The newest committed version, if it still exists and still passes where_clause
			// and the filters (a fresh snapshot: READ COMMITTED).
			Datum args[2] = {ObjectIdGetDatum(rows[i].table), PointerGetDatum(&latest)};
			if (SPI_execute_plan(one_row, args, nullptr, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "resync: re-reading a changed row failed");
			m += QueueResult(route, next + m);
			SPI_freetuptable(SPI_tuptable);
		}
		std::swap(rows, next);
		n = m;
	}
	pfree(rows);
	pfree(next);
}

int64_t
EnqueueRows(const char *route, const char *all_sql, const char *one_sql)
{
	SPIPlanPtr plan = SPI_prepare(all_sql, 0, nullptr);
	Oid types[2] = {OIDOID, TIDOID};
	SPIPlanPtr one_row = SPI_prepare(one_sql, 2, types);
	if (plan == nullptr || one_row == nullptr)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	constexpr int kChunk = 1000;
	QueuedRow *rows = static_cast<QueuedRow *>(palloc(sizeof(QueuedRow) * kChunk));
	int64_t count = 0;
	Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, true);
	// A chunk at a time, in a context of its own: a resync of a large table never holds all
	// its rows (nor what queueing them allocated) in memory.
	MemoryContext chunk_memory = AllocSetContextCreate(CurrentMemoryContext, "switchboard resync chunk",
	                                                   ALLOCSET_DEFAULT_SIZES);
	for (;;) {
		SPI_cursor_fetch(portal, true, kChunk);
		if (SPI_processed == 0)
			break;
		MemoryContext caller = MemoryContextSwitchTo(chunk_memory);
		int n = QueueResult(route, rows);
		count += n;
		SPI_freetuptable(SPI_tuptable);
		SettleChunk(route, one_row, rows, n);
		MemoryContextSwitchTo(caller);
		MemoryContextReset(chunk_memory);
	}
	MemoryContextDelete(chunk_memory);
	SPI_cursor_close(portal);
	pfree(rows);
	return count;
}

// An advisory lock tag no SQL advisory function reaches (their last field is 1 or 2).
LOCKTAG
ResyncLockTag()
{
	LOCKTAG tag;
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0x53425259 /* "SBRY" */, 0, 3);
	return tag;
}

int64_t
Resync(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		Fail(ERRCODE_NULL_VALUE_NOT_ALLOWED, "resync needs a route name");
	std::string route = TextArg(fcinfo, 0);
	std::optional<std::string> where;
	if (!PG_ARGISNULL(1))
		where = TextArg(fcinfo, 1);

	SpiConnection spi;
	RouteDef def = LoadRoute(route, false);
	if (!def.source_exists)
		Fail(ERRCODE_UNDEFINED_TABLE, "the source table of route \"" + route + "\" no longer exists");
	// where_clause runs as the route's owner, as its filters do: only a role that has the
	// owner's privileges may write one.
	// Checked before AsRole below, while the current user is still the caller.
	if (!CurrentUserHasPrivsOf(def.owner))
		Fail(ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied to resync route \"" + route + "\"", "",
		     "it needs the privileges of the route's owner, " + RoleName(def.owner));
	std::string table = QualifiedName(def.source);
	std::string alias = RelationAlias(def.source);
	AsRole as_owner(def.owner);
	if (where) {
		// Checked before it is pasted into the statement below: exactly one expression (it
		// cannot close the parenthesis and add clauses of its own), type-checked as the owner.
		Oid type = InvalidOid;
		try {
			type = AnalyzeRowExpression(def.source, *where);
		} catch (const PgError &e) {
			// Prefixed, so the caller knows the error is about that argument.
			Fail(e.sqlerrcode, std::string("where_clause: ") + e.what(), e.detail, e.hint);
		}
		if (type != BOOLOID)
			Fail(ERRCODE_DATATYPE_MISMATCH, "where_clause must be a boolean expression");
	}
	// Rows are enqueued as updates from "nothing" (old is a row of NULLs). Filters the capture
	// trigger would evaluate in WHEN are applied here; the others by the translator, as usual.
	std::string filters;
	for (const auto &f : def.filters)
		if (f.InWhen(Op::Update))
			filters += " AND " + Parenthesize(f.predicate);
	// The inner alias is the table's own name, as in mappings, so where_clause may qualify
	// columns with it; the outer "new" and "old" are what the filters read. Each row comes with
	// where its version is (tableoid, ctid), for the check below.
	auto query = [&](bool one_row) {
		return "SELECT sb.t, sb.c, pg_catalog.row_to_json(new) FROM (SELECT " + alias + ".tableoid AS t, " + alias +
		       ".ctid AS c, CAST(ROW(" + alias + ".*) AS " + table + ") AS r FROM " + table + " AS " + alias +
		       " WHERE " + (where ? Parenthesize(*where) : "true") +
		       (one_row ? " AND " + alias + ".tableoid = $1 AND " + alias + ".ctid = $2" : "") +
		       ") AS sb CROSS JOIN LATERAL (SELECT (sb.r).*) AS new, pg_catalog.json_populate_record(NULL::" + table +
		       ", NULL::pg_catalog.json) AS old WHERE true" + filters;
	};
	std::string all_rows = query(false), one_row = query(true);
	// Before any row is read; see HoldResyncLock.
	Guarded([] { HoldResyncLock(); });
	// Read as the owner through a cursor, a chunk at a time; each row goes into the queue the
	// way the capture trigger puts it there (the owner needs no privilege on the queue).
	int64_t count = 0;
	const char *route_name = route.c_str();
	const char *all_sql = all_rows.c_str(), *one_sql = one_row.c_str();
	Guarded([&] { count = EnqueueRows(route_name, all_sql, one_sql); });
	// The rows become visible to the worker when the caller's transaction commits.
	if (count > 0)
		WakeWorkerAtCommit();
	return count;
}

} // namespace

namespace switchboard {

void
HoldResyncLock()
{
	// Shared among resyncs, until the end of the transaction: released after its rows are
	// visible, so once the worker finds it free, what resync queued is in the queue and the
	// usual rule (a mark when an older change of the key is left) covers it.
	LOCKTAG tag = ResyncLockTag();
	(void) LockAcquire(&tag, ShareLock, false, false);
}

bool
ResyncRunning()
{
	// Tried, never waited for: the worker does not queue behind a resync.
	bool running = false;
	Guarded([&] {
		LOCKTAG tag = ResyncLockTag();
		if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
			running = true;
		else
			LockRelease(&tag, ExclusiveLock, true);
	});
	return running;
}

} // namespace switchboard

SB_PG_FUNCTION(switchboard_resync)
{
	return Int64GetDatum(Resync(fcinfo));
}
