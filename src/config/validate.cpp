// switchboard._validate(): BEFORE INSERT OR UPDATE trigger on the configuration tables.
// Every rejection names the table, the row and the reason.
#include <set>

#include "config/host_policy.h"
#include "connectors/connector.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "settings.h"
#include "translate/route_def.h"

extern "C" {
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

using namespace switchboard;

namespace {

struct RowRef {
	TupleDesc desc;
	HeapTuple tuple;

	SpiText Get(const char *column) const
	{
		SpiText out;
		Guarded([&] {
			int attno = SPI_fnumber(desc, column);
			if (attno <= 0)
				elog(ERROR, "column %s not found", column);
			char *value = SPI_getvalue(tuple, desc, attno);
			if (value != nullptr)
				out = std::string(value);
		});
		return out;
	}
	std::string Text(const char *column) const { return Get(column).value_or(""); }
	Oid GetOid(const char *column) const
	{
		Oid out = InvalidOid;
		Guarded([&] {
			bool isnull = true;
			Datum value = SPI_getbinval(tuple, desc, SPI_fnumber(desc, column), &isnull);
			out = isnull ? InvalidOid : DatumGetObjectId(value);
		});
		return out;
	}
};

class Rejecter {
public:
	Rejecter(std::string table, std::string row) : table_(std::move(table)), row_(std::move(row)) {}
	[[noreturn]] void Reject(const std::string &reason, const std::string &hint = "",
	                         int code = ERRCODE_INVALID_PARAMETER_VALUE) const
	{
		Fail(code, "invalid row in switchboard." + table_ + " " + row_ + ": " + reason, "", hint);
	}
	// Runs check; a Postgres error from it (parse, type-check) is re-raised naming the row.
	template <typename F>
	auto Expression(const std::string &what, F &&check) const -> decltype(check())
	{
		try {
			return check();
		} catch (const PgError &e) {
			Reject(what + ": " + e.what(), e.hint, e.sqlerrcode);
		}
	}

private:
	std::string table_;
	std::string row_;
};

bool
ValidName(const std::string &name, size_t max_len)
{
	if (name.empty() || name.size() > max_len)
		return false;
	for (unsigned char c : name)
		if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.'))
			return false;
	return true;
}

void
ValidateEndpoint(const RowRef &row)
{
	std::string name = row.Text("name");
	Rejecter r("endpoints", "(name)=(" + name + ")");
	if (!ValidName(name, 63))
		r.Reject("name must be 1-63 characters of letters, digits, _ - .");
	std::string kind = row.Text("kind");
	if (!IsKnownKind(kind))
		r.Reject("unknown kind \"" + kind + "\"", "known kinds: hubspot, salesforce, webhook, openai");
	std::string url = row.Text("base_url");
	UrlParts parts;
	if (!ParseHttpUrl(url, &parts))
		r.Reject("base_url \"" + url + "\" is not an absolute http:// or https:// URL with a host");
	if (!HostAllowed(parts.host, setting_allowed_hosts ? setting_allowed_hosts : ""))
		r.Reject("host \"" + parts.host + "\" is not in switchboard.allowed_hosts",
		         std::string("allowed: ") + setting_allowed_hosts);
	try {
		ValidateOptions(kind, Json::parse(row.Text("options")));
	} catch (const std::exception &e) {
		r.Reject(std::string("options: ") + e.what());
	}
}

std::string
RelationKindCheck(Oid relid)
{
	char relkind = 0;
	Oid nsp = InvalidOid;
	Guarded([&] {
		relkind = get_rel_relkind(relid);
		nsp = get_rel_namespace(relid);
	});
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		return "is not a table";
	std::string nspname;
	Guarded([&] { nspname = get_namespace_name(nsp); });
	if (nspname == "switchboard")
		return "is switchboard's own table";
	return "";
}

void
ValidateRoute(const RowRef &row)
{
	std::string name = row.Text("name");
	Rejecter r("routes", "(name)=(" + name + ")");
	if (!ValidName(name, 40))
		r.Reject("name must be 1-40 characters of letters, digits, _ - .",
		         "the name is part of the capture trigger names");
	Oid source = row.GetOid("source");
	std::string source_name = row.Text("source");
	if (!OidIsValid(source)) {
		// The table was dropped: the route may only be kept, disabled, as a record of that.
		if (row.Text("enabled") != "t")
			return;
		r.Reject("source must name a table", "a route whose table was dropped stays disabled until source is set again");
	}
	std::string problem = RelationKindCheck(source);
	if (!problem.empty())
		r.Reject("source " + source_name + " " + problem);

	std::string endpoint = row.Text("endpoint");
	SpiText kind = SpiScalar("SELECT kind FROM switchboard.endpoints WHERE name = $1", {endpoint});
	if (!kind)
		r.Reject("endpoint \"" + endpoint + "\" does not exist", "", ERRCODE_FOREIGN_KEY_VIOLATION);
	if (*kind == "openai")
		r.Reject("endpoint \"" + endpoint + "\" is an openai endpoint, which enriches records but is not a route target");

	if (row.Text("remote_object").empty())
		r.Reject("remote_object must not be empty");
	std::string direction = row.Text("direction");
	if (direction != "push" && direction != "pull" && direction != "both")
		r.Reject("direction \"" + direction + "\" is not push, pull or both");
	if (direction != "push" && *kind == "webhook")
		r.Reject("webhook endpoints can only be pushed to (direction push)");

	std::vector<Op> ops;
	try {
		ops = ParseOperations(row.Text("operations"));
	} catch (const PgError &e) {
		r.Reject(std::string("operations: ") + e.what(), e.hint);
	}
	if (ops.empty())
		r.Reject("operations must name at least one of insert, update, delete");
	if (std::set<Op>(ops.begin(), ops.end()).size() != ops.size())
		r.Reject("operations lists an operation twice");

	std::string match_local = row.Text("match_local");
	r.Expression("match_local", [&] { return AnalyzeRowExpression(source, match_local); });
	std::string match_remote = row.Text("match_remote");
	if ((*kind == "hubspot" || *kind == "salesforce") && match_remote.empty())
		r.Reject("match_remote is required for " + *kind + " routes",
		         *kind == "hubspot" ? "the HubSpot property holding the key, e.g. email"
		                            : "the Salesforce external ID field holding the key, e.g. Email__c");
	std::string on_delete = row.Text("on_delete");
	if (on_delete != "ignore" && on_delete != "delete")
		r.Reject("on_delete \"" + on_delete + "\" is not ignore or delete");
	std::string conflict = row.Text("conflict");
	if (conflict != "newest" && conflict != "local" && conflict != "remote")
		r.Reject("conflict \"" + conflict + "\" is not newest, local or remote");
	if (SpiScalar("SELECT $1::interval < interval '1 second'", {row.Get("pull_interval")}) == SpiText("t"))
		r.Reject("pull_interval must be at least 1 second");
}

Oid
RouteSource(const Rejecter &r, const std::string &route)
{
	SpiText source = SpiScalar("SELECT r.source::oid FROM switchboard.routes r "
	                           "JOIN pg_catalog.pg_class c ON c.oid = r.source WHERE r.name = $1",
	                           {route});
	if (!source) {
		if (!SpiScalar("SELECT 1 FROM switchboard.routes WHERE name = $1", {route}))
			r.Reject("route \"" + route + "\" does not exist", "", ERRCODE_FOREIGN_KEY_VIOLATION);
		r.Reject("the source table of route \"" + route + "\" no longer exists");
	}
	return static_cast<Oid>(std::stoul(*source));
}

void
ValidateMapping(const RowRef &row)
{
	std::string route = row.Text("route");
	std::string field = row.Text("remote_field");
	Rejecter r("mappings", "(route, remote_field)=(" + route + ", " + field + ")");
	if (field.empty())
		r.Reject("remote_field must not be empty");
	Oid source = RouteSource(r, route);
	SpiText push = row.Get("push_expr");
	SpiText pull_column = row.Get("pull_column");
	SpiText pull_expr = row.Get("pull_expr");
	if (!push && !pull_column)
		r.Reject("a mapping needs push_expr, pull_column or both");
	if (push)
		r.Expression("push_expr", [&] { return AnalyzeRowExpression(source, *push); });
	if (pull_expr && !pull_column)
		r.Reject("pull_expr needs pull_column (the column that receives its value)");
	if (pull_column) {
		SpiResult col = SpiExec("SELECT atttypid, atttypmod, attgenerated <> '' FROM pg_catalog.pg_attribute "
		                        "WHERE attrelid = $1::oid AND attname = $2 AND attnum > 0 AND NOT attisdropped",
		                        {std::to_string(source), *pull_column});
		if (col.rows.empty())
			r.Reject("pull_column \"" + *pull_column + "\" is not a column of the route's source table", "",
			         ERRCODE_UNDEFINED_COLUMN);
		if (col.rows[0][2] == SpiText("t"))
			r.Reject("pull_column \"" + *pull_column + "\" is a generated column");
		if (pull_expr) {
			Oid type = static_cast<Oid>(std::stoul(*col.rows[0][0]));
			int32 typmod = std::stoi(*col.rows[0][1]);
			r.Expression("pull_expr", [&] { return AnalyzeValueExpression(*pull_expr, type, typmod); });
		}
	}
}

void
ValidateFilter(const RowRef &row)
{
	std::string route = row.Text("route");
	std::string name = row.Text("name");
	Rejecter r("filters", "(route, name)=(" + route + ", " + name + ")");
	if (name.empty())
		r.Reject("name must not be empty");
	Oid source = RouteSource(r, route);
	r.Expression("predicate", [&] { return AnalyzePredicate(source, row.Text("predicate")); });
}

Datum
Validate(FunctionCallInfo fcinfo)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		Fail(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, "switchboard._validate() must run BEFORE ... FOR EACH ROW");
	HeapTuple tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	if (RestoringFromDump())
		return PointerGetDatum(tuple);
	RowRef row{RelationGetDescr(td->tg_relation), tuple};
	std::string table = RelationGetRelationName(td->tg_relation);
	SpiConnection spi;
	if (table == "endpoints")
		ValidateEndpoint(row);
	else if (table == "routes")
		ValidateRoute(row);
	else if (table == "mappings")
		ValidateMapping(row);
	else if (table == "filters")
		ValidateFilter(row);
	else
		Fail(ERRCODE_INTERNAL_ERROR, "switchboard._validate() attached to unexpected table " + table);
	return PointerGetDatum(tuple);
}

} // namespace

extern "C" {
PG_FUNCTION_INFO_V1(switchboard_validate);
Datum
switchboard_validate(PG_FUNCTION_ARGS)
{
	return Boundary([&] { return Validate(fcinfo); });
}
}
