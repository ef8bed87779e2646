// preview(route, key, op) and render(change_id): the exact request a row or a queued change
// becomes, built by the same translator and connector code the worker uses, secrets masked.
#include "connectors/connector.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "translate/translator.h"

extern "C" {
#include "utils/builtins.h"
#include "utils/jsonb.h"
}

using namespace switchboard;

namespace {

Json
RequestJson(const HttpRequest &request)
{
	Json headers = Json::object();
	for (const auto &[name, value] : request.headers)
		headers[name] = value;
	Json body;
	if (request.body.empty())
		body = nullptr;
	else {
		body = Json::parse(request.body, nullptr, false);
		if (body.is_discarded())
			body = request.body;
	}
	return Json{{"method", request.method}, {"url", request.url}, {"headers", headers}, {"body", body}};
}

std::string
EventId(int64_t change_id)
{
	SpiText instance = SpiScalar("SELECT id FROM switchboard.instance");
	return "sb_" + instance.value_or("0") + "_" + std::to_string(change_id);
}

// Adds the translation outcome and, when it translated, the request to out.
void
Describe(const RouteDef &def, Op op, const Translation &t, int64_t change_id, int64_t occurred_at_ms, Json *out)
{
	if (t.status == Translation::Status::Failed) {
		(*out)["error"] = t.error;
		return;
	}
	if (t.status == Translation::Status::Filtered) {
		(*out)["filtered"] = true;
		(*out)["rejected_by"] = t.rejected_by;
		(*out)["note"] = "a filter rejects this change: it would not be sent";
		return;
	}
	(*out)["key"] = t.key;
	Change change;
	change.id = change_id;
	change.op = op;
	change.key = t.key;
	change.fields = t.fields;
	// A preview is no event yet: it gets a placeholder id instead of a real one.
	change.event_id = change_id > 0 ? EventId(change_id) : "preview";
	change.occurred_at_ms = occurred_at_ms;
	change.remote_id = SpiScalar("SELECT remote_id FROM switchboard.remote_ids WHERE route = $1 AND key = $2",
	                             {def.name, t.key})
	                       .value_or("");
	Auth auth;
	auth.bearer = "****";
	auth.instance_url = def.endpoint.base_url;
	auth.masked = true;
	auth.signed_at_ms = occurred_at_ms;
	// The output is masked: a stand-in key shows which headers a signed request carries
	// without reading the secret (which the caller may not be allowed to).
	auto connector = MakeConnector(def.endpoint.kind);
	Endpoint endpoint = def.endpoint;
	if (def.has_secret && !connector->PreviewSecret().empty())
		endpoint.secret = connector->PreviewSecret();
	std::vector<Call> calls = connector->BuildCalls(endpoint, def.route, {change}, auth);
	if (calls.empty()) {
		(*out)["note"] = op == Op::Delete && def.route.on_delete != "delete"
		                     ? "deletes are not sent: the route's on_delete is ignore"
		                     : "not sent: the remote record id of this key is not known";
		return;
	}
	// The request's keys at the top level (SPEC §8), beside route, op, key.
	Json request = RequestJson(calls[0].request);
	for (auto &[name, value] : request.items())
		(*out)[name] = value;
}

Datum
JsonbResult(const Json &value)
{
	std::string text = value.dump();
	Datum result = 0;
	Guarded([&] { result = DirectFunctionCall1(jsonb_in, CStringGetDatum(text.c_str())); });
	return result;
}

int64_t
NowMs()
{
	return static_cast<int64_t>(std::stod(*SpiScalar("SELECT extract(epoch FROM clock_timestamp()) * 1000")));
}

// Both return their Json after the SPI connection has closed: a Datum made while it is open
// would live in SPI's memory and vanish with it.
Json
PreviewJson(FunctionCallInfo fcinfo)
{
	std::string route = TextArg(fcinfo, 0);
	std::string key = TextArg(fcinfo, 1);
	std::string op_name = TextArg(fcinfo, 2);
	auto op = ParseOp(op_name);
	if (!op)
		Fail(ERRCODE_INVALID_PARAMETER_VALUE, "op must be insert, update or delete, not \"" + op_name + "\"");

	SpiConnection spi;
	RouteDef def = LoadRoute(route, false);
	if (!def.source_exists)
		Fail(ERRCODE_UNDEFINED_TABLE, "the source table of route \"" + route + "\" no longer exists");
	// The row is read and translated as the route's owner: only a role with its privileges
	// may ask, or preview() would read for anyone what only the owner may read.
	if (!CurrentUserHasPrivsOf(def.owner))
		Fail(ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied to preview route \"" + route + "\"", "",
		     "it needs the privileges of the route's owner, " + RoleName(def.owner));
	std::string alias = RelationAlias(def.source);
	SpiResult rows;
	{
		// match_local is the route's expression and the row is read with its owner's
		// privileges, not those of whoever asks for the preview.
		AsRole as_owner(def.owner);
		rows = SpiExec("SELECT pg_catalog.row_to_json(" + alias + ")::pg_catalog.text FROM " +
		                   QualifiedName(def.source) + " AS " + alias + " WHERE " + Parenthesize(def.match_local) +
		                   "::pg_catalog.text = $1::pg_catalog.text LIMIT 2",
		               {key}, true);
	}
	if (rows.rows.empty())
		Fail(ERRCODE_NO_DATA_FOUND, "no row of " + QualifiedName(def.source) + " has key \"" + key +
		                                "\" (match_local: " + def.match_local + ")");

	Json out = {{"route", route}, {"op", op_name}, {"endpoint", def.endpoint.name}};
	if (rows.rows.size() > 1)
		out["warning"] = "more than one row has this key; showing the first";
	SpiText image = rows.rows[0][0];
	// As an update that leaves the row as it is: new and old are both the current row.
	SpiText new_image = *op == Op::Delete ? std::nullopt : image;
	SpiText old_image = *op == Op::Insert ? std::nullopt : image;
	Translation t = Translate(def, *op, new_image, old_image, true);
	Describe(def, *op, t, 0, NowMs(), &out);
	return out;
}

Json
RenderJson(FunctionCallInfo fcinfo)
{
	int64_t id = PG_GETARG_INT64(0);
	SpiConnection spi;
	SpiResult r = SpiExec("SELECT route, op, new::text, old::text, (extract(epoch FROM captured_at) * 1000)::bigint "
	                      "FROM switchboard.queue WHERE id = $1::bigint",
	                      {std::to_string(id)});
	if (r.rows.empty())
		return Json{{"error", "no queued change with id " + std::to_string(id)}};
	const SpiRow &row = r.rows[0];
	Json out = Json::object();
	auto def = FindRoute(*row[0], false);
	if (!def) {
		out["error"] = "route \"" + *row[0] + "\" no longer exists";
		return out;
	}
	if (!CurrentUserHasPrivsOf(def->owner)) {
		out["error"] = "not shown: rendering needs the privileges of the route's owner, " + RoleName(def->owner);
		return out;
	}
	Op op = *ParseOp(*row[1]);
	Translation t = Translate(*def, op, row[2], row[3], false);
	Describe(*def, op, t, id, std::stoll(*row[4]), &out);
	return out;
}

} // namespace

SB_PG_FUNCTION(switchboard_preview)
{
	return JsonbResult(PreviewJson(fcinfo));
}

SB_PG_FUNCTION(switchboard_render)
{
	return JsonbResult(RenderJson(fcinfo));
}
