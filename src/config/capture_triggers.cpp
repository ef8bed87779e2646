// switchboard._sync_capture(): AFTER trigger on routes and filters. Keeps the capture triggers
// on each route's source table in line with the route: one AFTER ROW trigger per captured
// operation, named switchboard_<route>_<op>, whose WHEN clause holds the filters that cannot
// raise (so rejected changes cost the writer almost nothing).
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "settings.h"
#include "translate/route_def.h"

extern "C" {
#include "catalog/dependency.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/rel.h"
}

using namespace switchboard;

namespace {

const Op kAllOps[] = {Op::Insert, Op::Update, Op::Delete};

std::string
TriggerName(const std::string &route, Op op)
{
	return "switchboard_" + route + "_" + OpName(op);
}

bool
RelationExists(Oid relid)
{
	return SpiScalar("SELECT 1 FROM pg_catalog.pg_class WHERE oid = $1::oid", {std::to_string(relid)}).has_value();
}

void
Detach(const std::string &route, Oid source)
{
	if (!RelationExists(source))
		return; // dropped with its table
	std::string table = QualifiedName(source);
	for (Op op : kAllOps) {
		std::string name = TriggerName(route, op);
		if (SpiScalar("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1::oid AND tgname = $2",
		              {std::to_string(source), name}))
			SpiExec("DROP TRIGGER " + QuoteIdent(name) + " ON " + table);
	}
}

void
Attach(const RouteDef &def)
{
	std::string table = QualifiedName(def.source);
	// The WHEN clause is parsed here as it was checked: names resolved as for the route's owner
	// (its schema, public), not the extension owner's. Rolled back with the caller's AsRole.
	SpiExec("SELECT pg_catalog.set_config('search_path', $1, true)",
	        {QuoteIdent(RoleName(def.owner)) + ", public, pg_temp"});
	for (Op op : def.operations) {
		std::string when;
		for (const auto &f : def.filters) {
			if (!f.InWhen(op))
				continue;
			when += (when.empty() ? "" : " AND ") + Parenthesize(f.predicate);
		}
		std::string args = QuoteLiteral(def.name);
		if (op == Op::Update && def.NeedsOldImage())
			args += ", 'old'";
		std::string op_upper = OpName(op);
		for (auto &c : op_upper)
			c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
		std::string name = TriggerName(def.name, op);
		SpiExec("CREATE TRIGGER " + QuoteIdent(name) + " AFTER " + op_upper + " ON " + table + " FOR EACH ROW" +
		        (when.empty() ? "" : " WHEN (" + when + ")") + " EXECUTE FUNCTION switchboard.capture(" + args + ")");
		// The switchboard_capture_created event trigger ties it to the extension.
	}
}

// Re-creates the triggers of a route from its current definition. Detaching needs nothing
// but the route's name and table (so a broken route can always be disabled); attaching loads,
// and so checks, the whole definition first.
void
Resync(const std::string &route)
{
	SpiResult r = SpiExec("SELECT r.source::oid, r.enabled AND r.direction <> 'pull' FROM switchboard.routes r "
	                      "JOIN pg_catalog.pg_class c ON c.oid = r.source WHERE r.name = $1",
	                      {route});
	if (r.rows.empty())
		return; // deleted, or its table is gone
	Oid source = static_cast<Oid>(std::stoul(*r.rows[0][0]));
	// A route that only pulls captures nothing.
	std::optional<RouteDef> def;
	if (r.rows[0][1] == SpiText("t"))
		def = LoadRoute(route, false); // checked: its owner may read the table and put triggers on it
	Detach(route, source);
	if (def)
		Attach(*def);
}

// A renamed route takes its state along: queued changes, remote ids, pull cursor, counters and
// history are keyed by the route's name. Called after the old triggers were dropped, which
// waited for every writer that still captured under the old name, so the UPDATEs below (each
// with a new snapshot) see all of their changes. Refused while changes are in flight: the
// worker records their results (remote ids, counters) under the name it claimed them with.
// State left behind by an earlier, deleted route of this name (remote ids, cursor, delivered
// marks, counters) is not a new route's: its remote ids would name records of another
// endpoint's system, its cursor skip what the new route never pulled. Delivery history stays.
// A route's runs are its own: they hold its row images and step outputs, and are executed under
// its definition, found by name. They go when the route goes, each one not done said so in
// deliveries (outcome 'discarded'), so that no later route of that name executes them (as
// another owner, to another endpoint) and none waits forever for a route that is gone.
void
ForgetRuns(const std::string &route, const std::string &why, bool by_session_user = false)
{
	if (!SpiScalar("SELECT pg_catalog.to_regclass('switchboard.run_queue')::pg_catalog.text"))
		return; // a 0.1 schema
	SpiExec(
	    "WITH gone AS (DELETE FROM switchboard.run_queue WHERE route = $1 "
	    "RETURNING id, route, key, op, state, last_status) "
	    "INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, http_status, error) "
	    "SELECT route, key, op, id, 'discarded', last_status, $2::pg_catalog.text || CASE WHEN $3::pg_catalog.bool THEN ' by ' || session_user "
	    "ELSE '' END FROM gone WHERE state <> 'done'",
	    {route, why, by_session_user ? "t" : "f"});
}

void
ForgetEarlierRoute(const std::string &route)
{
	// A schema not yet updated (0.1 between a package upgrade and ALTER EXTENSION UPDATE) lacks
	// the newer of these tables.
	for (const char *table : {"remote_ids", "delivered_marks", "pull_state", "pushed_state", "route_stats"})
		if (SpiScalar("SELECT pg_catalog.to_regclass($1)::pg_catalog.text", {std::string("switchboard.") + table}))
			SpiExec(std::string("DELETE FROM switchboard.") + table + " WHERE route = $1", {route});
	// Runs an earlier route of this name left (adopted while it was being deleted) are not the
	// new route's.
	ForgetRuns(route, "run of an earlier route \"" + route + "\" dropped: a new route of that name was created");
}

void
CarryRename(const std::string &from, const std::string &to)
{
	// Changes left queued under the new name (dead letters of a deleted route of that name)
	// hold another route's row images: never adopted by a rename.
	if (SpiScalar("SELECT 1 FROM switchboard.queue WHERE route = $1 LIMIT 1", {to}))
		Fail(ERRCODE_OBJECT_IN_USE,
		     "route \"" + from + "\" cannot be renamed to \"" + to +
		         "\": changes of an earlier route of that name are still queued",
		     "", "Deal with them first (switchboard.retry() or switchboard.discard() of those dead letters).");
	// Runs too: a rename must not merge another route's runs into this one's (its row images,
	// run under this route's definition).
	if (SpiScalar("SELECT pg_catalog.to_regclass('switchboard.run_queue')::pg_catalog.text") &&
	    SpiScalar("SELECT 1 FROM switchboard.run_queue WHERE route = $1 LIMIT 1", {to}))
		Fail(ERRCODE_OBJECT_IN_USE,
		     "route \"" + from + "\" cannot be renamed to \"" + to +
		         "\": runs of an earlier route of that name are still kept",
		     "", "Discard them first (switchboard.discard() of each run of that name).");
	SpiExec("UPDATE switchboard.queue SET route = $2 WHERE route = $1", {from, to});
	// After the UPDATE: it waited for a claim in progress, whose rows are now in flight.
	if (SpiScalar("SELECT 1 FROM switchboard.queue WHERE route = $1 AND state = 'in_flight' LIMIT 1", {to}))
		Fail(ERRCODE_OBJECT_IN_USE, "route \"" + from + "\" cannot be renamed while changes of it are being delivered",
		     "", "Disable the route, wait until route_status.in_flight is 0, then rename it.");
	ForgetEarlierRoute(to);
	for (const char *table :
	     {"remote_ids", "delivered_marks", "pull_state", "pushed_state", "route_stats", "delivery_log", "run_queue"})
		if (SpiScalar("SELECT pg_catalog.to_regclass($1)::pg_catalog.text", {std::string("switchboard.") + table}))
			SpiExec(std::string("UPDATE switchboard.") + table + " SET route = $2 WHERE route = $1", {from, to});
}

std::optional<Oid>
OidField(TupleDesc desc, HeapTuple tuple, const char *column)
{
	bool isnull = true;
	Datum value = 0;
	Guarded([&] { value = SPI_getbinval(tuple, desc, SPI_fnumber(desc, column), &isnull); });
	if (isnull)
		return std::nullopt;
	return DatumGetObjectId(value);
}

std::string
TextField(TupleDesc desc, HeapTuple tuple, const char *column)
{
	std::string out;
	Guarded([&] {
		char *v = SPI_getvalue(tuple, desc, SPI_fnumber(desc, column));
		out = v ? v : "";
	});
	return out;
}

Datum
SyncCapture(FunctionCallInfo fcinfo)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		Fail(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, "switchboard._sync_capture() must run AFTER ... FOR EACH ROW");
	if (RestoringFromDump())
		return PointerGetDatum(nullptr);
	TupleDesc desc = RelationGetDescr(td->tg_relation);
	std::string table = RelationGetRelationName(td->tg_relation);
	bool is_insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
	bool is_delete = TRIGGER_FIRED_BY_DELETE(td->tg_event);
	HeapTuple old_row = is_insert ? nullptr : td->tg_trigtuple;
	HeapTuple new_row = is_insert ? td->tg_trigtuple : (is_delete ? nullptr : td->tg_newtuple);

	SpiConnection spi;
	// Capture triggers are switchboard's: made and dropped by the extension's owner, whoever
	// wrote the route (dropping a trigger needs the table's owner, not the TRIGGER privilege,
	// which ValidateRoute requires of the route's owner).
	AsRole as_extension_owner(ExtensionOwner(), kOwnSearchPath);
	if (table == "routes") {
		if (old_row) {
			auto source = OidField(desc, old_row, "source");
			if (source)
				Detach(TextField(desc, old_row, "name"), *source);
		}
		if (old_row && new_row && TextField(desc, old_row, "name") != TextField(desc, new_row, "name"))
			CarryRename(TextField(desc, old_row, "name"), TextField(desc, new_row, "name"));
		if (new_row && !old_row) {
			// Changes an earlier route of this name left queued (pending until the worker sees
			// the route gone, then dead letters) hold that route's row images: a new route of the
			// name (maybe another owner's) must neither adopt nor retry them.
			const std::string name = TextField(desc, new_row, "name");
			if (SpiScalar("SELECT 1 FROM switchboard.queue WHERE route = $1 LIMIT 1", {name}))
				Fail(ERRCODE_OBJECT_IN_USE,
				     "route \"" + name +
				         "\" cannot be created: changes of an earlier route of that name are still queued",
				     "",
				     "Wait until the worker has set them aside as dead letters, then switchboard.discard() each "
				     "(SELECT switchboard.discard(id) FROM switchboard.dead_letters WHERE route = " +
				         QuoteLiteral(name) + "), or create the route under another name.");
			ForgetEarlierRoute(name);
		}
		if (old_row && !new_row) {
			std::string name = TextField(desc, old_row, "name");
			ForgetRuns(name, "route \"" + name + "\" deleted", true);
		}
		if (new_row)
			Resync(TextField(desc, new_row, "name"));
	} else if (table == "filters") {
		if (old_row)
			Resync(TextField(desc, old_row, "route"));
		if (new_row && (!old_row || TextField(desc, old_row, "route") != TextField(desc, new_row, "route")))
			Resync(TextField(desc, new_row, "route"));
	}
	return PointerGetDatum(nullptr);
}

// DROP EXTENSION takes capture triggers with it through an automatic dependency. Not
// membership: that keeps them in pg_dump's output, so a restore recreates them after the data
// (and this runs again for those, from the event trigger).
void
TieToExtension(Oid trigger_oid)
{
	// Only capture triggers: anything else tied to the extension would vanish with it.
	SpiResult found = SpiExec(
	    "SELECT t.tgname, t.tgfoid = 'switchboard.capture()'::pg_catalog.regprocedure, t.tgparentid <> 0, "
	    "(pg_catalog.string_to_array(pg_catalog.encode(t.tgargs, 'escape'), '\\000'))[1], "
	    "EXISTS (SELECT 1 FROM switchboard.routes r WHERE r.name = (pg_catalog.string_to_array("
	    "pg_catalog.encode(t.tgargs, 'escape'), '\\000'))[1] AND r.source = t.tgrelid) "
	    "FROM pg_catalog.pg_trigger t WHERE t.oid = $1::oid",
	    {std::to_string(trigger_oid)});
	if (found.rows.empty())
		Fail(ERRCODE_UNDEFINED_OBJECT, "no trigger with OID " + std::to_string(trigger_oid));
	const SpiRow &t = found.rows[0];
	if (t[1] != SpiText("t"))
		Fail(ERRCODE_INVALID_PARAMETER_VALUE, "trigger \"" + *t[0] + "\" is not a switchboard capture trigger", "",
		     "only capture triggers are tied to the extension");
	// A capture trigger feeds its route's queue: on any other table it would let whoever made
	// it put rows of their choosing into another role's route. Partition clones come from a
	// checked parent.
	if (t[2] != SpiText("t") && t[4] != SpiText("t"))
		Fail(ERRCODE_INSUFFICIENT_PRIVILEGE,
		     "trigger \"" + *t[0] + "\" captures for route \"" + t[3].value_or("") +
		         "\", which does not capture this table",
		     "", "capture triggers are made by switchboard for each route's source table");
	Guarded([&] {
		ObjectAddress trigger, extension;
		ObjectAddressSet(trigger, TriggerRelationId, trigger_oid);
		ObjectAddressSet(extension, ExtensionRelationId, get_extension_oid("switchboard", false));
		recordDependencyOn(&trigger, &extension, DEPENDENCY_AUTO);
	});
}

} // namespace

SB_PG_FUNCTION(switchboard_tie_to_extension)
{
	SpiConnection spi;
	TieToExtension(PG_GETARG_OID(0));
	return (Datum) 0;
}

SB_PG_FUNCTION(switchboard_sync_capture)
{
	return SyncCapture(fcinfo);
}
