// switchboard.resync(route, where_clause): enqueue the current state of existing rows
// (initial load, backfill, repair) as updates, through the same filters as live changes.
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "translate/route_def.h"
#include "worker/wake.h"

extern "C" {
#include "catalog/pg_type.h"
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
	std::string table = QualifiedName(def.source);
	std::string alias = RelationAlias(def.source);
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
	std::string sql = "INSERT INTO switchboard.queue (route, op, new, captured_at) "
	                  "SELECT $1, 'update', row_to_json(new), clock_timestamp() FROM (SELECT * FROM " +
	                  table + " AS " + alias + (where ? " WHERE " + Parenthesize(*where) : "") +
	                  ") AS new, json_populate_record(NULL::" + table + ", NULL::json) AS old WHERE true" + filters;
	SpiResult r = SpiExec(sql, {route});
	if (r.processed > 0)
		WakeWorkerAtCommit();
	return static_cast<int64_t>(r.processed);
}

} // namespace

extern "C" {
PG_FUNCTION_INFO_V1(switchboard_resync);
Datum
switchboard_resync(PG_FUNCTION_ARGS)
{
	return Boundary([&] { return Int64GetDatum(Resync(fcinfo)); });
}
}
