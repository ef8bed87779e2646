// The database side of inbound webhooks (SPEC §9): see inbound_store.h.
#include "store/inbound_store.h"

#include <nlohmann/json.hpp>

#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/spi.h"

extern "C" {
#include "miscadmin.h"
#include "utils/builtins.h"
}

using namespace switchboard;

namespace {

Oid
ExtensionOwner()
{
	SpiText owner = SpiScalar("SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'switchboard'");
	if (!owner)
		Fail(ERRCODE_UNDEFINED_OBJECT, "extension switchboard is not installed in this database");
	return static_cast<Oid>(std::stoul(*owner));
}

// The route's token, after checking that the calling role has the privileges of its owner. The
// column is read as the extension's owner: configuring roles may not read it themselves.
std::string
TokenFor(const std::string &route)
{
	SpiResult found;
	{
		AsRole as_owner(ExtensionOwner(), kOwnSearchPath);
		found = SpiExec("SELECT owner::oid, direction, inbound_token FROM switchboard.routes WHERE name = $1", {route});
	}
	if (found.rows.empty())
		Fail(ERRCODE_UNDEFINED_OBJECT, "route \"" + route + "\" does not exist");
	Oid owner = found.rows[0][0] ? static_cast<Oid>(std::stoul(*found.rows[0][0])) : InvalidOid;
	// Checked as the caller (AsRole has ended): the owner, a member of it, or a superuser.
	if (!OidIsValid(owner) ? !superuser() : !CurrentUserHasPrivsOf(owner))
		Fail(ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied to read the inbound token of route \"" + route + "\"",
		     "", "it needs the privileges of the route's owner, " + (OidIsValid(owner) ? RoleName(owner) : "(none)"));
	if (!found.rows[0][2])
		Fail(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
		     "route \"" + route + "\" receives no webhooks (direction " + found.rows[0][1].value_or("?") + ")", "",
		     "routes with direction pull or both get an inbound token");
	return *found.rows[0][2];
}

Datum
TextResult(const std::string &value)
{
	Datum d = 0;
	const char *s = value.c_str();
	Guarded([&] { d = CStringGetTextDatum(s); });
	return d;
}

std::string
InboundToken(FunctionCallInfo fcinfo)
{
	std::string route = TextArg(fcinfo, 0);
	SpiConnection spi;
	return TokenFor(route);
}

std::string
RotateInboundToken(FunctionCallInfo fcinfo)
{
	std::string route = TextArg(fcinfo, 0);
	SpiConnection spi;
	(void) TokenFor(route); // the same checks first
	// As the caller: a configuration change like any other (the validate trigger checks the
	// owner, the _inbound_token trigger draws the new token).
	SpiExec("UPDATE switchboard.routes SET inbound_token = NULL WHERE name = $1", {route});
	return TokenFor(route);
}

} // namespace

namespace switchboard {

std::map<std::string, inbound::RouteTarget>
LoadInboundTargets()
{
	std::map<std::string, inbound::RouteTarget> out;
	if (!SpiScalar("SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = "
	               "pg_catalog.to_regclass('switchboard.routes') AND attname = 'inbound_token'"))
		return out; // no extension here, or one older than inbound webhooks
	SpiResult found = SpiExecPrepared(
	    "SELECT r.inbound_token, r.name, e.kind, s.value FROM switchboard.routes r "
	    "JOIN switchboard.endpoints e ON e.name = r.endpoint "
	    "LEFT JOIN switchboard.secrets s ON s.name = r.inbound_secret "
	    "WHERE r.inbound_token IS NOT NULL AND r.enabled AND e.enabled AND r.direction IN ('pull', 'both')",
	    {}, true);
	for (const SpiRow &row : found.rows) {
		inbound::RouteTarget t;
		t.route = *row[1];
		t.scheme = inbound::SchemeForKind(row[2].value_or(""));
		t.secret = row[3].value_or("");
		out.emplace(*row[0], std::move(t));
	}
	return out;
}

void
StoreInbound(const std::vector<InboundBatchItem> &items, const std::map<std::string, InboundRejection> &rejected)
{
	using Json = nlohmann::json;
	Json events = Json::array();
	for (const InboundBatchItem &item : items)
		for (const inbound::Event &e : item.events)
			events.push_back({{"route", item.route},
			                  {"event_id", e.event_id},
			                  {"kind", inbound::SchemeName(item.scheme)},
			                  {"object_id", e.object_id.empty() ? Json(nullptr) : Json(e.object_id)},
			                  {"type", e.type.empty() ? Json(nullptr) : Json(e.type)},
			                  {"property", e.property.empty() ? Json(nullptr) : Json(e.property)},
			                  {"deleted", e.deleted},
			                  {"occurred_ms", e.occurred_ms},
			                  {"resource", e.resource},
			                  {"read_back", e.read_back}});
	if (!events.empty())
		SpiExecPrepared(
		    "INSERT INTO switchboard.inbound_events (route, event_id, kind, object_id, type, property, deleted, "
		    "occurred_at, resource, read_back) "
		    "SELECT x.route, x.event_id, x.kind, x.object_id, x.type, x.property, x.deleted, "
		    "CASE WHEN x.occurred_ms > 0 THEN pg_catalog.to_timestamp(x.occurred_ms / 1000.0) END, "
		    "CASE WHEN pg_catalog.jsonb_typeof(x.resource) = 'null' THEN NULL ELSE x.resource END, x.read_back "
		    "FROM pg_catalog.jsonb_to_recordset($1::pg_catalog.jsonb) AS x(route text, event_id text, kind text, "
		    "object_id text, type text, property text, deleted boolean, occurred_ms bigint, resource jsonb, "
		    "read_back boolean) "
		    "ON CONFLICT (route, event_id) DO NOTHING",
		    {events.dump()});
	if (rejected.empty())
		return;
	Json rows = Json::array();
	for (const auto &r : rejected)
		rows.push_back({{"route", r.first}, {"n", r.second.count}, {"error", r.second.last_error}});
	// An error text may quote what a sender sent: invalid UTF-8 in it is replaced, never fatal.
	SpiExecPrepared("INSERT INTO switchboard.inbound_rejections AS j (route, rejected, last_rejected_at, last_error) "
	                "SELECT x.route, x.n, pg_catalog.now(), x.error "
	                "FROM pg_catalog.jsonb_to_recordset($1::pg_catalog.jsonb) AS x(route text, n bigint, error text) "
	                "ON CONFLICT (route) DO UPDATE SET rejected = j.rejected + excluded.rejected, "
	                "last_rejected_at = excluded.last_rejected_at, last_error = excluded.last_error",
	                {rows.dump(-1, ' ', false, Json::error_handler_t::replace)});
}

} // namespace switchboard

SB_PG_FUNCTION(switchboard_inbound_token)
{
	return TextResult(InboundToken(fcinfo));
}

SB_PG_FUNCTION(switchboard_rotate_inbound_token)
{
	return TextResult(RotateInboundToken(fcinfo));
}
