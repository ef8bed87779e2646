// switchboard._validate(): BEFORE INSERT, UPDATE or DELETE trigger on the configuration tables,
// and StoredRouteProblem(), the same checks over a stored route that the worker and every other
// reader run before they use it. Every rejection names the table, the row and the reason.
//
// Two kinds of checks (SPEC §2, §8 "Who acts"):
//  - who may write: a route (with its mappings and filters) and a secret have an owner, the
//    role that wrote them; only a role with the owner's privileges may change or delete them,
//    and only one with a secret owner's privileges may attach that secret to an endpoint or
//    move an endpoint that carries it. These always run, restore or not.
//  - what is valid: expressions parse and type-check as the route's owner, the source is a
//    table the owner may read (push) or write (pull), hosts are allowed, options known. A
//    pg_dump restore (check_function_bodies off) skips these, since a row may arrive before
//    what it refers to; StoredRouteProblem() runs them again before the route is ever used, so
//    switching check_function_bodies off is no way around them.
#include "config/validate.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "config/host_policy.h"
#include "connectors/connector.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "settings.h"
#include "translate/route_def.h"
#include "worker/shared_limits.h"

extern "C" {
#include "commands/dbcommands.h"
#include "catalog/catalog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

using namespace switchboard;

namespace {

// A configuration row as text by column name; regclass and regrole columns hold OIDs.
class Row {
public:
	Row() = default;
	static Row FromTuple(TupleDesc desc, HeapTuple tuple)
	{
		Row row;
		for (int i = 0; i < desc->natts; i++) {
			Form_pg_attribute att = TupleDescAttr(desc, i);
			if (att->attisdropped)
				continue;
			bool isnull = true;
			bool is_oid = att->atttypid == REGCLASSOID || att->atttypid == REGROLEOID || att->atttypid == OIDOID;
			Datum value = 0;
			char *text = nullptr;
			Guarded([&] {
				value = SPI_getbinval(tuple, desc, i + 1, &isnull);
				if (!isnull && !is_oid)
					text = SPI_getvalue(tuple, desc, i + 1);
			});
			const char *name = NameStr(att->attname);
			if (isnull)
				row.values_.emplace(name, std::nullopt);
			else if (is_oid)
				row.values_.emplace(name, std::to_string(DatumGetObjectId(value)));
			else
				row.values_.emplace(name, std::string(text));
		}
		return row;
	}
	static Row FromSpi(const SpiResult &result, size_t n)
	{
		Row row;
		for (size_t i = 0; i < result.columns.size(); i++)
			row.values_.emplace(result.columns[i], result.rows[n][i]);
		return row;
	}
	SpiText Get(const char *column) const
	{
		auto it = values_.find(column);
		return it == values_.end() ? SpiText() : it->second;
	}
	std::string Text(const char *column) const { return Get(column).value_or(""); }
	Oid GetOid(const char *column) const
	{
		SpiText v = Get(column);
		return v ? static_cast<Oid>(std::stoul(*v)) : InvalidOid;
	}

private:
	std::map<std::string, SpiText> values_;
};

class Rejecter {
public:
	Rejecter(std::string table, std::string row) : table_(std::move(table)), row_(std::move(row)) {}
	[[noreturn]] void Reject(const std::string &reason, const std::string &hint = "",
	                         int code = ERRCODE_INVALID_PARAMETER_VALUE) const
	{
		Fail(code, "invalid row in switchboard." + table_ + " " + row_ + ": " + reason, "", hint);
	}
	[[noreturn]] void Deny(const std::string &reason, const std::string &hint = "") const
	{
		Fail(ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied for switchboard." + table_ + " " + row_ + ": " + reason,
		     "", hint);
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

std::string
Num(Oid v)
{
	return std::to_string(v);
}

// Set by Validate(): the schema predates owners (see SchemaPredatesOwners). Its rows are then
// checked as 0.1 checked them, with the writer as the one whose privileges count.
bool legacy_schema = false;

// ---- who may write ----------------------------------------------------------------------

// The owner a new or changed row gets: the one it names when the writer has that role's
// privileges, the old one when it names none, the writer on insert. A restore of a dump made
// before rows had owners names none: the restoring role (the extension's owner, as trusted as
// configuration was then) takes them. A restored owner that no longer exists is not guessed
// (an OID can name another role in another cluster): the row is kept without an owner and
// never used until one is set.
Oid
EffectiveOwner(const Rejecter &r, Oid requested, Oid old_owner)
{
	if (!OidIsValid(requested))
		return OidIsValid(old_owner) ? old_owner : GetUserId();
	if (!RoleExists(requested)) {
		if (RestoringFromDump())
			return InvalidOid;
		r.Reject("owner role with OID " + Num(requested) + " does not exist");
	}
	if (requested != old_owner && !CurrentUserHasPrivsOf(requested))
		r.Deny("only a role with the privileges of " + RoleName(requested) + " can make it the owner");
	return requested;
}

void
RequireOwner(const Rejecter &r, Oid owner, const std::string &what)
{
	// A row without an owner (a restore whose owner role did not exist) or whose owner was
	// dropped is left to superusers: nobody else may take it over.
	if (!OidIsValid(owner) || !RoleExists(owner)) {
		if (!superuser())
			r.Deny(what + " has no owner (" + (OidIsValid(owner) ? RoleName(owner) + " was dropped" : "none set") + ")",
			       "only a superuser may change it, or set its owner");
		return;
	}
	if (!CurrentUserHasPrivsOf(owner))
		r.Deny(what + " belongs to role " + RoleName(owner),
		       "only a role with the privileges of its owner may change it");
}

Oid
SecretOwner(const std::string &secret)
{
	SpiText owner = SpiScalar("SELECT owner::oid FROM switchboard.secrets WHERE name = $1", {secret});
	return owner ? static_cast<Oid>(std::stoul(*owner)) : InvalidOid;
}

bool
RoleHasPrivsOf(Oid member, Oid role)
{
	bool has = false;
	Guarded([&] { has = has_privs_of_role(member, role); });
	return has;
}

// nullopt when the route does not exist (its foreign key says so); InvalidOid when it has no owner.
std::optional<Oid>
RouteOwner(const std::string &route)
{
	SpiResult found = SpiExec("SELECT owner::oid FROM switchboard.routes WHERE name = $1", {route});
	if (found.rows.empty())
		return std::nullopt;
	return found.rows[0][0] ? static_cast<Oid>(std::stoul(*found.rows[0][0])) : InvalidOid;
}

// A role that cannot read a secret cannot make it be sent elsewhere.
void
CheckEndpointSecret(const Rejecter &r, const Row &row, const Row *old_row)
{
	SpiText secret = row.Get("secret");
	if (!secret)
		return;
	bool moved = !old_row || old_row->Get("secret") != secret || old_row->Text("base_url") != row.Text("base_url") ||
	             old_row->Text("kind") != row.Text("kind");
	if (!moved)
		return;
	Oid owner = SecretOwner(*secret);
	if (!OidIsValid(owner) || !RoleExists(owner)) {
		if (!superuser())
			r.Deny("secret \"" + *secret + "\" has no owner", "only a superuser may attach it");
		return;
	}
	if (!CurrentUserHasPrivsOf(owner))
		r.Deny("secret \"" + *secret + "\" belongs to role " + RoleName(owner),
		       "attaching a secret to an endpoint, or changing the base_url or kind of an endpoint that has one, "
		       "needs the privileges of the secret's owner");
}

// The same for the secret a route's inbound webhooks are verified with (SPEC §9): whoever
// knows it can forge events into the route's table.
void
CheckInboundSecret(const Rejecter &r, const Row &row, const Row *old_row)
{
	SpiText secret = row.Get("inbound_secret");
	if (!secret || (old_row && old_row->Get("inbound_secret") == secret))
		return;
	Oid owner = SecretOwner(*secret);
	if (!OidIsValid(owner) || !RoleExists(owner)) {
		if (!superuser())
			r.Deny("inbound_secret \"" + *secret + "\" has no owner", "only a superuser may attach it");
		return;
	}
	if (!CurrentUserHasPrivsOf(owner))
		r.Deny("inbound_secret \"" + *secret + "\" belongs to role " + RoleName(owner),
		       "verifying a route's webhooks with a secret needs the privileges of the secret's owner");
}

// ---- what is valid ----------------------------------------------------------------------

void
ValidateEndpoint(const Row &row)
{
	std::string name = row.Text("name");
	Rejecter r("endpoints", "(name)=(" + name + ")");
	if (!ValidName(name, 63))
		r.Reject("name must be 1-63 characters of letters, digits, _ - .");
	std::string kind = row.Text("kind");
	if (!IsKnownKind(kind)) {
		std::string known;
		for (const auto &k : ConnectorKinds())
			known += (known.empty() ? "" : ", ") + k;
		r.Reject("unknown kind \"" + kind + "\"", "known kinds: " + known);
	}
	std::string url = row.Text("base_url");
	std::string allowed = setting_allowed_hosts ? setting_allowed_hosts : "";
	std::string url_problem = EndpointUrlProblem(url, allowed);
	if (!url_problem.empty())
		r.Reject("base_url \"" + url + "\": " + url_problem,
		         allowed.empty() ? "" : "switchboard.allowed_hosts: " + allowed);
	Json options;
	try {
		options = Json::parse(row.Text("options"));
		ValidateOptions(kind, options);
	} catch (const std::exception &e) {
		r.Reject(std::string("options: ") + e.what());
	}
	if (options.is_object() && options.contains("rate_limit_group") && options["rate_limit_group"].is_string() &&
	    !RateLimitGroupDeclared(options["rate_limit_group"].get<std::string>()))
		r.Reject("options: rate_limit_group \"" + options["rate_limit_group"].get<std::string>() +
		             "\" is not declared in switchboard.rate_limit_groups",
		         "A group is shared by every database of the cluster, so a superuser declares it: add its name to "
		         "switchboard.rate_limit_groups (postgresql.conf) and reload.");
	else if (options.is_object() && options.contains("rate_limit_group") && options["rate_limit_group"].is_string()) {
		const char *database = nullptr;
		Guarded([&] { database = get_database_name(MyDatabaseId); });
		const std::string group = options["rate_limit_group"].get<std::string>();
		if (!RateLimitGroupAllows(group, database ? database : ""))
			r.Reject("options: rate_limit_group \"" + group + "\" is not open to database \"" +
			             std::string(database ? database : "") + "\"",
			         "Its entry in switchboard.rate_limit_groups lists the databases that may share it "
			         "(name@db1 db2=limit); a superuser adds this one there.");
	}
}

// "" when a route may use relid as its source, else why not.
std::string
RelationKindCheck(Oid relid)
{
	char relkind = 0;
	Oid nsp = InvalidOid;
	bool catalog = false;
	Guarded([&] {
		relkind = get_rel_relkind(relid);
		nsp = get_rel_namespace(relid);
		catalog = IsCatalogRelationOid(relid);
	});
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		return "is not a table";
	std::string nspname;
	Guarded([&] { nspname = get_namespace_name(nsp); });
	if (nspname == "switchboard")
		return "is switchboard's own table";
	if (catalog || nspname == "pg_catalog" || nspname == "information_schema" || nspname.rfind("pg_toast", 0) == 0)
		return "is a system catalog";
	SpiText extension = SpiScalar(
	    "SELECT e.extname FROM pg_catalog.pg_depend d "
	    "JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid "
	    "WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = $1::oid "
	    "AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'",
	    {Num(relid)});
	if (extension)
		return "belongs to extension " + *extension;
	return "";
}

bool
RoleHas(Oid role, Oid relid, const std::string &privilege, const SpiText &column = std::nullopt)
{
	SpiText yes = column ? SpiScalar("SELECT pg_catalog.has_column_privilege($1::oid, $2::oid, $3, $4)",
	                                 {Num(role), Num(relid), *column, privilege})
	                     : SpiScalar("SELECT pg_catalog.has_table_privilege($1::oid, $2::oid, $3)",
	                                 {Num(role), Num(relid), privilege});
	return yes == SpiText("t");
}

// The owner may read the rows it pushes and write the columns it pulls into.
void CheckPullColumnPrivileges(const Rejecter &r, Oid owner, Oid source, const std::string &column);

void
CheckSourcePrivileges(const Rejecter &r, const std::string &route, Oid owner, Oid source, const std::string &direction,
                      const std::string &on_delete)
{
	std::string who = RoleName(owner);
	std::string table = QualifiedName(source);
	// A route's expressions see every column of the row image: reading it needs SELECT on all.
	if (!RoleHas(owner, source, "SELECT"))
		r.Deny("route owner " + who + " has no SELECT privilege on " + table);
	// Capture puts a trigger on the table (switchboard does, but on the owner's behalf).
	if (direction != "pull" && !RoleHas(owner, source, "TRIGGER"))
		r.Deny("route owner " + who + " has no TRIGGER privilege on " + table, "capture needs a trigger on the table");
	if (direction == "push")
		return;
	if (on_delete == "delete" && !RoleHas(owner, source, "DELETE"))
		r.Deny("route owner " + who + " has no DELETE privilege on " + table + " (on_delete is delete)");
	// The mappings' pull columns, again: the direction or the owner may have just changed.
	SpiResult columns = SpiExec(
	    "SELECT pull_column FROM switchboard.mappings WHERE route = $1 AND pull_column IS NOT NULL", {route});
	for (const auto &c : columns.rows)
		CheckPullColumnPrivileges(r, owner, source, *c[0]);
}

void
CheckPullColumnPrivileges(const Rejecter &r, Oid owner, Oid source, const std::string &column)
{
	for (const char *privilege : {"INSERT", "UPDATE"})
		if (!RoleHas(owner, source, privilege, column))
			r.Deny("route owner " + RoleName(owner) + " has no " + privilege + " privilege on column " + column +
			       " of " + QualifiedName(source));
}

// Route expressions resolve names in the owner's schema and public (kRouteSearchPath). If a
// role without the owner's privileges may create objects there, it could plant a better-matching
// function (lower(varchar) beside pg_catalog.lower(text)) that then runs as the owner: refuse.
void
CheckSearchPathSchemas(const Rejecter &r, Oid owner)
{
	SpiText open = SpiScalar(
	    "SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('%I (%s)', n.nspname, "
	    "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::pg_catalog.text END), ', ') "
	    "FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(n.nspacl, "
	    "pg_catalog.acldefault('n', n.nspowner))) a "
	    "WHERE n.nspname IN ('public', (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = $1::oid)) "
	    "AND a.privilege_type = 'CREATE' AND (a.grantee = 0 OR NOT pg_catalog.pg_has_role("
	    "CASE WHEN a.grantee = 'pg_database_owner'::pg_catalog.regrole "
	    "THEN (SELECT datdba FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) "
	    "ELSE a.grantee END, $1::oid, 'USAGE'))",
	    {Num(owner)});
	if (open)
		r.Deny("route owner " + RoleName(owner) +
		           "'s expressions resolve names in schemas where other roles may create "
		           "objects: " +
		           *open,
		       "revoke CREATE on those schemas from roles that do not have the owner's privileges");
}

void
ValidateRoute(const Row &row, Oid owner)
{
	std::string name = row.Text("name");
	Rejecter r("routes", "(name)=(" + name + ")");
	if (!ValidName(name, 40))
		r.Reject("name must be 1-40 characters of letters, digits, _ - .",
		         "the name is part of the capture trigger names");
	Oid source = row.GetOid("source");
	if (!OidIsValid(source)) {
		// The table was dropped: the route may only be kept, disabled, as a record of that.
		if (row.Text("enabled") != "t")
			return;
		r.Reject("source must name a table",
		         "a route whose table was dropped stays disabled until source is set again");
	}
	bool exists = SpiScalar("SELECT 1 FROM pg_catalog.pg_class WHERE oid = $1::oid", {Num(source)}).has_value();
	if (!exists)
		r.Reject("source table with OID " + Num(source) + " does not exist");
	std::string problem = RelationKindCheck(source);
	if (!problem.empty())
		r.Reject("source " + QualifiedName(source) + " " + problem);
	if (!RoleExists(owner))
		r.Reject("owner " + RoleName(owner) + " no longer exists", "set owner to a role with the privileges it needs");

	std::string endpoint = row.Text("endpoint");
	SpiResult ep = SpiExec(std::string("SELECT kind, ") + (legacy_schema ? "NULL::oid" : "owner::oid") +
	                           " FROM switchboard.endpoints WHERE name = $1",
	                       {endpoint});
	if (ep.rows.empty())
		r.Reject("endpoint \"" + endpoint + "\" does not exist", "", ERRCODE_FOREIGN_KEY_VIOLATION);
	SpiText kind = ep.rows[0][0];
	// An endpoint carries its owner's credentials and reaches its owner's account: only routes
	// of a role with the owner's privileges go through it.
	Oid endpoint_owner = ep.rows[0][1] ? static_cast<Oid>(std::stoul(*ep.rows[0][1])) : InvalidOid;
	if (legacy_schema)
		endpoint_owner = owner;
	else if (!OidIsValid(endpoint_owner))
		r.Reject("endpoint \"" + endpoint + "\" has no owner", "set switchboard.endpoints.owner");
	if (!RoleHasPrivsOf(owner, endpoint_owner))
		r.Deny("endpoint \"" + endpoint + "\" belongs to role " + RoleName(endpoint_owner) +
		           ", and the route's owner " + RoleName(owner) + " does not have its privileges",
		       "a route may use the endpoints of its owner (or of roles whose privileges it has)");
	CheckSearchPathSchemas(r, owner);
	// What a route may do with the endpoint depends on its kind: its connector says.
	const Connector *connector = kind ? FindConnector(*kind) : nullptr;
	if (connector != nullptr && !connector->NotARouteTarget().empty())
		r.Reject("endpoint \"" + endpoint + "\" " + connector->NotARouteTarget());

	if (row.Text("remote_object").empty())
		r.Reject("remote_object must not be empty");
	std::string direction = row.Text("direction");
	if (direction != "push" && direction != "pull" && direction != "both")
		r.Reject("direction \"" + direction + "\" is not push, pull or both");
	if (direction != "push" && connector != nullptr && !connector->CanPull())
		r.Reject(*kind + " endpoints can only be pushed to (direction push)");

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
	{
		AsRole as_owner(owner);
		r.Expression("match_local", [&] { return AnalyzeRowExpression(source, match_local); });
	}
	std::string match_remote = row.Text("match_remote");
	if (connector != nullptr && !connector->MatchRemoteHint().empty() && match_remote.empty())
		r.Reject("match_remote is required for " + *kind + " routes", connector->MatchRemoteHint());
	std::string on_delete = row.Text("on_delete");
	if (on_delete != "ignore" && on_delete != "delete")
		r.Reject("on_delete \"" + on_delete + "\" is not ignore or delete");
	std::string conflict = row.Text("conflict");
	if (conflict != "newest" && conflict != "local" && conflict != "remote")
		r.Reject("conflict \"" + conflict + "\" is not newest, local or remote");
	if (SpiScalar("SELECT $1::pg_catalog.interval < interval '1 second'", {row.Get("pull_interval")}) == SpiText("t"))
		r.Reject("pull_interval must be at least 1 second");
	CheckSourcePrivileges(r, name, owner, source, direction, on_delete);
}

struct RouteInfo {
	Oid source = InvalidOid;
	Oid owner = InvalidOid;
	std::string direction;
};

RouteInfo
RouteSource(const Rejecter &r, const std::string &route)
{
	SpiResult found = SpiExec(std::string("SELECT r.source::oid, ") + (legacy_schema ? "NULL::oid" : "r.owner::oid") +
	                              ", r.direction FROM switchboard.routes r "
	                              "JOIN pg_catalog.pg_class c ON c.oid = r.source WHERE r.name = $1",
	                          {route});
	if (found.rows.empty()) {
		if (!SpiScalar("SELECT 1 FROM switchboard.routes WHERE name = $1", {route}))
			r.Reject("route \"" + route + "\" does not exist", "", ERRCODE_FOREIGN_KEY_VIOLATION);
		r.Reject("the source table of route \"" + route + "\" no longer exists");
	}
	RouteInfo info;
	info.source = static_cast<Oid>(std::stoul(*found.rows[0][0]));
	info.owner = found.rows[0][1] ? static_cast<Oid>(std::stoul(*found.rows[0][1])) : InvalidOid;
	if (legacy_schema)
		info.owner = GetUserId();
	else if (!OidIsValid(info.owner))
		r.Reject("route \"" + route + "\" has no owner", "set switchboard.routes.owner");
	info.direction = *found.rows[0][2];
	if (!RoleExists(info.owner))
		r.Reject("the owner of route \"" + route + "\" (" + RoleName(info.owner) + ") no longer exists");
	return info;
}

// Between a package upgrade and ALTER EXTENSION UPDATE the steps table may not exist yet.
bool
SchemaLacksSteps()
{
	return !SpiScalar("SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
	                  "WHERE n.nspname = 'switchboard' AND c.relname = 'steps'")
	            .has_value();
}

// Defined with the steps below.
void CheckStepRefs(const Rejecter &r, const std::string &what, const StepExprInfo &info,
                   const std::set<std::string> &earlier, const std::string &before_what);

void
ValidateMapping(const Row &row)
{
	std::string route = row.Text("route");
	std::string field = row.Text("remote_field");
	Rejecter r("mappings", "(route, remote_field)=(" + route + ", " + field + ")");
	if (field.empty())
		r.Reject("remote_field must not be empty");
	RouteInfo info = RouteSource(r, route);
	Oid source = info.source;
	SpiText push = row.Get("push_expr");
	SpiText pull_column = row.Get("pull_column");
	SpiText pull_expr = row.Get("pull_expr");
	if (!push && !pull_column)
		r.Reject("a mapping needs push_expr, pull_column or both");
	AsRole as_owner(info.owner);
	// A route with steps: its mappings may read steps (the outputs of the steps before the
	// deliver step that sends them; ValidateStep checks that order).
	std::set<std::string> steps;
	bool has_steps = false;
	if (push && !SchemaLacksSteps()) {
		// Only steps before the first deliver step: every deliver step sends the mappings.
		SpiResult found = SpiExec(
		    "SELECT name, position < coalesce((SELECT min(d.position) FROM switchboard.steps d WHERE d.route = $1 "
		    "AND d.kind = 'deliver'), position + 1) FROM switchboard.steps WHERE route = $1",
		    {route});
		for (const auto &s : found.rows) {
			has_steps = true;
			if (s[1] == SpiText("t"))
				steps.insert(*s[0]);
		}
	}
	if (push && !has_steps)
		r.Expression("push_expr", [&] { return AnalyzeRowExpression(source, *push); });
	else if (push) {
		StepExprInfo mapped = r.Expression("push_expr", [&] { return AnalyzeRowStepsExpression(source, *push); });
		CheckStepRefs(r, "push_expr", mapped, steps, "the route's first deliver step");
	}
	if (pull_expr && !pull_column)
		r.Reject("pull_expr needs pull_column (the column that receives its value)");
	if (pull_column) {
		SpiResult col = SpiExec("SELECT atttypid, atttypmod, attgenerated <> '' FROM pg_catalog.pg_attribute "
		                        "WHERE attrelid = $1::oid AND attname = $2 AND attnum > 0 AND NOT attisdropped",
		                        {Num(source), *pull_column});
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
		if (info.direction != "push")
			CheckPullColumnPrivileges(r, info.owner, source, *pull_column);
	}
}

void
ValidateFilter(const Row &row)
{
	std::string route = row.Text("route");
	std::string name = row.Text("name");
	Rejecter r("filters", "(route, name)=(" + route + ", " + name + ")");
	if (name.empty())
		r.Reject("name must not be empty");
	RouteInfo info = RouteSource(r, route);
	AsRole as_owner(info.owner);
	r.Expression("predicate", [&] { return AnalyzePredicate(info.source, row.Text("predicate")); });
}

// ---- steps (SPEC §2 steps, §7) --------------------------------------------------------

const std::set<std::string> kStepKinds = {"enrich", "sql", "deliver", "notify", "writeback"};

// The route's steps before position (not the row itself, which an update may be moving).
std::set<std::string>
EarlierSteps(const std::string &route, const std::string &self, const std::string &position)
{
	SpiResult found = SpiExec(
	    "SELECT name FROM switchboard.steps WHERE route = $1 AND name <> $2 AND position < $3::pg_catalog.int4",
	    {route, self, position});
	std::set<std::string> names;
	for (const auto &row : found.rows)
		names.insert(*row[0]);
	return names;
}

std::string
NameList(const std::set<std::string> &names)
{
	if (names.empty())
		return "none";
	std::string out;
	for (const auto &n : names)
		out += (out.empty() ? "" : ", ") + n;
	return out;
}

// A step expression (or a mapping) reads only outputs of steps that ran before it.
void
CheckStepRefs(const Rejecter &r, const std::string &what, const StepExprInfo &info,
              const std::set<std::string> &earlier, const std::string &before_what)
{
	if (info.steps_opaque)
		r.Reject(what + " uses steps other than as steps->'name' (or ->>, #>, #>>) with a constant step name",
		         "which step outputs an expression reads must be known when it is written");
	for (const auto &ref : info.step_refs)
		if (!earlier.count(ref))
			r.Reject(what + " refers to steps->'" + ref + "', which is not a step before " + before_what,
			         "steps before it: " + NameList(earlier));
}

std::string
TypeName(Oid type)
{
	std::string name;
	Guarded([&] { name = format_type_be(type); });
	return name;
}

void
ValidateStep(const Row &row)
{
	std::string route = row.Text("route");
	std::string name = row.Text("name");
	Rejecter r("steps", "(route, name)=(" + route + ", " + name + ")");
	if (!ValidName(name, 63))
		r.Reject("name must be 1-63 characters of letters, digits, _ - .", "the name is the key of steps.<name>");
	RouteInfo info = RouteSource(r, route);
	std::string kind = row.Text("kind");
	if (!kStepKinds.count(kind))
		r.Reject("unknown kind \"" + kind + "\"", "step kinds: enrich, sql, deliver, notify, writeback");
	if (!row.Get("position"))
		r.Reject("position must not be NULL", "steps run in position order");
	std::string position = row.Text("position");

	// The endpoint a step calls, by what its kind's connector can do.
	SpiText endpoint = row.Get("endpoint");
	const Connector *connector = nullptr;
	Endpoint ep;
	if (kind == "sql" || kind == "writeback") {
		if (endpoint)
			r.Reject(kind + " steps call no endpoint (endpoint must be NULL)");
	} else {
		if (!endpoint && kind != "deliver")
			r.Reject(kind + " steps need an endpoint",
			         kind == "enrich" ? "an openai or http endpoint" : "a webhook endpoint");
		std::string ep_name = endpoint ? *endpoint
		                               : *SpiScalar("SELECT endpoint FROM switchboard.routes WHERE name = $1", {route});
		SpiResult found = SpiExec(std::string("SELECT kind, options::text, ") +
		                              (legacy_schema ? "NULL::oid" : "owner::oid") +
		                              " FROM switchboard.endpoints WHERE name = $1",
		                          {ep_name});
		if (found.rows.empty())
			r.Reject("endpoint \"" + ep_name + "\" does not exist", "", ERRCODE_FOREIGN_KEY_VIOLATION);
		ep.name = ep_name;
		ep.kind = *found.rows[0][0];
		ep.options = Json::parse(found.rows[0][1].value_or("{}"));
		connector = FindConnector(ep.kind);
		if (connector == nullptr)
			r.Reject("endpoint \"" + ep_name + "\" has unknown kind \"" + ep.kind + "\"");
		if (kind == "enrich" && !connector->Enriches())
			r.Reject("endpoint \"" + ep_name + "\" (kind " + ep.kind + ") cannot enrich",
			         "enrich steps call an openai or http endpoint");
		if (kind == "notify" && !connector->Notifies())
			r.Reject("endpoint \"" + ep_name + "\" (kind " + ep.kind + ") cannot notify",
			         "notify steps send a webhook event");
		if (kind == "deliver" && !connector->NotARouteTarget().empty())
			r.Reject("endpoint \"" + ep_name + "\" " + connector->NotARouteTarget());
		Oid endpoint_owner = found.rows[0][2] ? static_cast<Oid>(std::stoul(*found.rows[0][2])) : InvalidOid;
		if (!legacy_schema && (!OidIsValid(endpoint_owner) || !RoleHasPrivsOf(info.owner, endpoint_owner)))
			r.Deny("endpoint \"" + ep_name + "\" belongs to role " + RoleName(endpoint_owner) +
			           ", and the route's owner " + RoleName(info.owner) + " does not have its privileges",
			       "a step may use the endpoints of its route's owner (or of roles whose privileges it has)");
	}

	// Options: those of every kind, and the connector's for enrich steps.
	Json options;
	try {
		options = Json::parse(row.Text("options"));
	} catch (const std::exception &e) {
		r.Reject(std::string("options: ") + e.what());
	}
	if (!options.is_object())
		r.Reject("options must be a JSON object");
	std::vector<std::string> known = {"timeout_ms", "max_attempts"};
	if (kind == "enrich")
		for (const auto &extra : connector->EnrichOptions())
			known.push_back(extra);
	for (auto it = options.begin(); it != options.end(); ++it) {
		const std::string &option = it.key();
		const Json &value = it.value();
		if (std::find(known.begin(), known.end(), option) == known.end()) {
			std::string list;
			for (const auto &k : known)
				list += (list.empty() ? "" : ", ") + k;
			r.Reject("options: unknown option \"" + option + "\" for " + kind + " steps" +
			             (kind == "enrich" ? " through " + ep.kind + " endpoints" : ""),
			         "known: " + list);
		}
		if (option == "timeout_ms" &&
		    (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > 3600000))
			r.Reject("options: timeout_ms must be an integer from 1 to 3600000, got " + value.dump());
		else if (option == "max_attempts" &&
		         (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > 1000))
			r.Reject("options: max_attempts must be an integer from 1 to 1000, got " + value.dump());
		else if (option != "timeout_ms" && option != "max_attempts") {
			try {
				connector->ValidateEnrichOption(option, value);
			} catch (const std::exception &e) {
				r.Reject(std::string("options: ") + e.what());
			}
		}
	}
	if (kind == "enrich") {
		std::string problem = connector->EnrichProblem(ep, options);
		if (!problem.empty())
			r.Reject(problem);
	}

	// Expressions: as the route's owner, over new, old and the outputs of earlier steps.
	std::set<std::string> earlier = EarlierSteps(route, name, position);
	std::string here = "this one (position " + position + ")";
	AsRole as_owner(info.owner);
	if (SpiText run_if = row.Get("run_if")) {
		StepExprInfo cond = r.Expression("run_if", [&] { return AnalyzeStepExpression(info.source, *run_if); });
		if (cond.type != BOOLOID)
			r.Reject("run_if must be a boolean expression, not " + TypeName(cond.type), "", ERRCODE_DATATYPE_MISMATCH);
		CheckStepRefs(r, "run_if", cond, earlier, here);
	}
	SpiText input = row.Get("input");
	if (kind == "deliver") {
		if (input)
			r.Reject("deliver steps take no input (they send the route's mappings)", "set input to NULL");
		// The mappings it sends may read steps: only those before it.
		SpiResult maps = SpiExec(
		    "SELECT remote_field, push_expr FROM switchboard.mappings WHERE route = $1 AND push_expr IS NOT NULL",
		    {route});
		for (const auto &m : maps.rows) {
			StepExprInfo mapped = r.Expression("mapping \"" + *m[0] + "\"",
			                                   [&] { return AnalyzeRowStepsExpression(info.source, *m[1]); });
			CheckStepRefs(r, "mapping \"" + *m[0] + "\" (sent by this step)", mapped, earlier, here);
		}
		return;
	}
	if (!input)
		r.Reject(kind + " steps need an input",
		         kind == "enrich"   ? "the prompt (text) or messages (jsonb) for openai, the JSON body for http"
		         : kind == "sql"    ? "the SQL expression whose value is the step's output"
		         : kind == "notify" ? "the data (json or jsonb) of the event"
		                            : "a jsonb object of column -> value");
	StepExprInfo in = r.Expression("input", [&] { return AnalyzeStepExpression(info.source, *input); });
	CheckStepRefs(r, "input", in, earlier, here);
	bool is_json = in.type == JSONBOID || in.type == JSONOID;
	bool is_text = in.type == TEXTOID || in.type == VARCHAROID || in.type == UNKNOWNOID || in.type == BPCHAROID;
	if (kind == "enrich" && !is_json && !(is_text && connector->EnrichTakesText()))
		r.Reject("input of an enrich step through " + ep.kind + " endpoints must be " +
		             (connector->EnrichTakesText() ? "text (the prompt) or jsonb (the messages)" : "json or jsonb") +
		             ", not " + TypeName(in.type),
		         "", ERRCODE_DATATYPE_MISMATCH);
	if ((kind == "notify" || kind == "writeback") && !is_json)
		r.Reject("input of a " + kind + " step must be json or jsonb, not " + TypeName(in.type), "",
		         ERRCODE_DATATYPE_MISMATCH);
	if (kind == "writeback") {
		// Written by primary key, with the owner's own UPDATE privilege (checked again per
		// column when it runs).
		if (!SpiScalar("SELECT 1 FROM pg_catalog.pg_index WHERE indrelid = $1::oid AND indisprimary",
		               {Num(info.source)}))
			r.Reject("writeback needs a primary key on " + QualifiedName(info.source));
		if (SpiScalar("SELECT pg_catalog.has_any_column_privilege($1::oid, $2::oid, 'UPDATE')",
		              {Num(info.owner), Num(info.source)}) != SpiText("t"))
			r.Deny("route owner " + RoleName(info.owner) + " has no UPDATE privilege on " + QualifiedName(info.source));
	}
}

std::string
RowLabel(const std::string &table, const Row &row)
{
	if (table == "mappings")
		return "(route, remote_field)=(" + row.Text("route") + ", " + row.Text("remote_field") + ")";
	if (table == "filters" || table == "steps")
		return "(route, name)=(" + row.Text("route") + ", " + row.Text("name") + ")";
	return "(name)=(" + row.Text("name") + ")";
}

// The update turns a route or an endpoint off (and may say why, or forget a dropped source)
// and changes nothing else: always allowed to the owner, valid definition or not.
bool
OnlyDisables(const std::string &table, const Row &old_row, const Row &row)
{
	if ((table != "routes" && table != "endpoints") || row.Text("enabled") != "f")
		return false;
	const std::vector<const char *> routes = {"name",       "endpoint",      "remote_object", "direction",
	                                          "operations", "match_local",   "match_remote",  "on_delete",
	                                          "conflict",   "pull_interval", "owner",         "inbound_secret"};
	const std::vector<const char *> endpoints = {"name", "kind", "base_url", "secret", "options", "owner"};
	for (const char *column : table == "routes" ? routes : endpoints)
		if (old_row.Get(column) != row.Get(column))
			return false;
	return table == "endpoints" || !row.Get("source") || old_row.Get("source") == row.Get("source");
}

// Sets column to value in tuple (the owner a row gets).
HeapTuple
WithOid(Relation rel, HeapTuple tuple, const char *column, Oid value)
{
	HeapTuple out = nullptr;
	Guarded([&] {
		TupleDesc desc = RelationGetDescr(rel);
		int attno = SPI_fnumber(desc, column);
		if (attno <= 0)
			elog(ERROR, "column %s not found", column);
		Datum values[1] = {ObjectIdGetDatum(value)};
		bool nulls[1] = {!OidIsValid(value)};
		int cols[1] = {attno};
		out = heap_modify_tuple_by_cols(tuple, desc, 1, cols, values, nulls);
	});
	return out;
}

Datum
Validate(FunctionCallInfo fcinfo)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		Fail(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, "switchboard._validate() must run BEFORE ... FOR EACH ROW");
	bool is_update = TRIGGER_FIRED_BY_UPDATE(td->tg_event);
	bool is_delete = TRIGGER_FIRED_BY_DELETE(td->tg_event);
	HeapTuple tuple = is_update ? td->tg_newtuple : td->tg_trigtuple;
	TupleDesc desc = RelationGetDescr(td->tg_relation);
	std::string table = RelationGetRelationName(td->tg_relation);
	SpiConnection spi;

	Row row = Row::FromTuple(desc, tuple);
	Row old_row;
	if (is_update || is_delete)
		old_row = Row::FromTuple(desc, td->tg_trigtuple);
	const Row &current = is_delete ? old_row : row;
	Rejecter r(table, RowLabel(table, current));

	// Who may write: always checked (there are owners since 0.2).
	legacy_schema = SchemaPredatesOwners();
	Oid owner = GetUserId();
	if (legacy_schema) {
		// Rows have no owners yet: until ALTER EXTENSION UPDATE gives them some, nobody but a
		// superuser may write configuration (it would be checked as nobody's).
		if (!superuser())
			r.Deny("the extension's schema predates owners", "run ALTER EXTENSION switchboard UPDATE first");
		if (is_delete)
			return PointerGetDatum(tuple);
	} else if (table == "routes" || table == "secrets" || table == "endpoints") {
		Oid old_owner = is_update || is_delete ? old_row.GetOid("owner") : InvalidOid;
		std::string what = "the " + table.substr(0, table.size() - 1); // "the route"
		if (is_update || is_delete)
			RequireOwner(r, old_owner, what);
		if (is_delete)
			return PointerGetDatum(tuple);
		owner = EffectiveOwner(r, row.GetOid("owner"), old_owner);
		if (owner != row.GetOid("owner"))
			tuple = WithOid(td->tg_relation, tuple, "owner", owner);
		if (table == "endpoints")
			CheckEndpointSecret(r, row, is_update ? &old_row : nullptr);
		if (table == "routes")
			CheckInboundSecret(r, row, is_update ? &old_row : nullptr);
	} else if (table == "mappings" || table == "filters" || table == "steps") {
		if (is_update || is_delete) {
			std::optional<Oid> route_owner = RouteOwner(old_row.Text("route"));
			if (route_owner)
				RequireOwner(r, *route_owner, "route \"" + old_row.Text("route") + "\"");
		}
		if (is_delete)
			return PointerGetDatum(tuple);
		if (!is_update || row.Text("route") != old_row.Text("route")) {
			std::optional<Oid> route_owner = RouteOwner(row.Text("route"));
			if (route_owner)
				RequireOwner(r, *route_owner, "route \"" + row.Text("route") + "\"");
		}
	} else {
		Fail(ERRCODE_INTERNAL_ERROR, "switchboard._validate() attached to unexpected table " + table);
	}

	// What is valid: see the file comment for why a restore skips it. Disabling a route needs
	// no valid definition (switchboard disables broken routes itself).
	if (RestoringFromDump() || (is_update && OnlyDisables(table, old_row, row)))
		return PointerGetDatum(tuple);
	if (table == "endpoints")
		ValidateEndpoint(row);
	else if (table == "routes")
		ValidateRoute(row, owner);
	else if (table == "mappings")
		ValidateMapping(row);
	else if (table == "filters")
		ValidateFilter(row);
	else if (table == "steps")
		ValidateStep(row);
	return PointerGetDatum(tuple);
}

void
ValidateStoredRows(const std::string &table, const std::string &where, const std::string &value)
{
	SpiResult rows = SpiExec("SELECT * FROM switchboard." + table + " WHERE " + where + " = $1", {value});
	for (size_t i = 0; i < rows.rows.size(); i++) {
		Row row = Row::FromSpi(rows, i);
		if (table == "endpoints")
			ValidateEndpoint(row);
		else if (table == "mappings")
			ValidateMapping(row);
		else if (table == "filters")
			ValidateFilter(row);
		else if (table == "steps")
			ValidateStep(row);
	}
}

} // namespace

namespace switchboard {

std::string
StoredRouteProblem(const std::string &route)
{
	legacy_schema = false;
	try {
		// Its own subtransaction: a check that raises is caught here, and what it left behind
		// (locks, SPI state) rolled back, so the caller can go on with other routes.
		Subtransaction sub;
		SpiResult rows = SpiExec("SELECT name, source::oid AS source, endpoint, remote_object, direction, "
		                         "operations::text AS operations, match_local, match_remote, on_delete, conflict, "
		                         "pull_interval::text AS pull_interval, enabled, owner::oid AS owner "
		                         "FROM switchboard.routes WHERE name = $1",
		                         {route});
		std::string problem;
		if (!rows.rows.empty()) {
			Row row = Row::FromSpi(rows, 0);
			Oid owner = row.GetOid("owner");
			if (!OidIsValid(owner))
				problem = "route \"" + route + "\" has no owner";
			else {
				ValidateRoute(row, owner);
				ValidateStoredRows("endpoints", "name", row.Text("endpoint"));
				ValidateStoredRows("mappings", "route", route);
				ValidateStoredRows("filters", "route", route);
				if (!SchemaLacksSteps())
					ValidateStoredRows("steps", "route", route);
			}
		}
		sub.Commit();
		return problem;
	} catch (const PgError &e) {
		// A timeout or a cancel is no problem of the route's: the caller tries again.
		if (TransientError(e.sqlerrcode))
			throw;
		return e.what();
	}
}

} // namespace switchboard

SB_PG_FUNCTION(switchboard_validate)
{
	return Validate(fcinfo);
}
