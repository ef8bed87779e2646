// switchboard.resync(route, where_clause): enqueue the current state of existing rows
// (initial load, backfill, repair) as updates, through the same filters as live changes.
#include "capture/enqueue.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "translate/route_def.h"
#include "worker/wake.h"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/spi.h"
}

using namespace switchboard;

namespace {

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
	if (!CurrentUserHasPrivsOf(def.owner))
		Fail(ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied to resync route \"" + route + "\"", "",
		     "it needs the privileges of the route's owner, " + RoleName(def.owner));
	std::string table = QualifiedName(def.source);
	std::string alias = RelationAlias(def.source);
	AsRole as_owner(def.owner);
	if (where) {
		Oid type = InvalidOid;
		try {
			type = AnalyzeRowExpression(def.source, *where);
		} catch (const PgError &e) {
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
	std::string sql = "SELECT pg_catalog.row_to_json(new) FROM (SELECT * FROM " + table + " AS " + alias +
	                  (where ? " WHERE " + Parenthesize(*where) : "") +
	                  ") AS new, pg_catalog.json_populate_record(NULL::" + table +
	                  ", NULL::pg_catalog.json) AS old WHERE true" + filters;
	// Read as the owner through a cursor, a chunk at a time; each row goes into the queue the
	// way the capture trigger puts it there (the owner needs no privilege on the queue).
	int64_t count = 0;
	const char *route_name = route.c_str();
	Guarded([&] {
		SPIPlanPtr plan = SPI_prepare(sql.c_str(), 0, nullptr);
		if (plan == nullptr)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, true);
		for (;;) {
			SPI_cursor_fetch(portal, true, 1000);
			if (SPI_processed == 0)
				break;
			for (uint64 i = 0; i < SPI_processed; i++) {
				bool isnull = true;
				Datum image = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
				EnqueueChange(route_name, "update", isnull ? (Datum) 0 : image, (Datum) 0);
				count++;
			}
			SPI_freetuptable(SPI_tuptable);
		}
		SPI_cursor_close(portal);
	});
	if (count > 0)
		WakeWorkerAtCommit();
	return count;
}

} // namespace

SB_PG_FUNCTION(switchboard_resync)
{
	return Int64GetDatum(Resync(fcinfo));
}
