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

int64_t NowMs();

// ---- routes with steps (SPEC §7 Preview) ----------------------------------------------

struct PreviewStep {
	std::string name, kind;
	int position = 0;
	SpiText endpoint, run_if, input;
	Json options = Json::object();
};

// Evaluates expr (as jsonb) over new, old and the outputs known so far, as the route's owner,
// in a subtransaction that is rolled back: a sql step's side effects never stay.
bool
EvaluateRolledBack(const RouteDef &def, const std::string &select, const std::vector<SpiText> &args, Json *value,
                   std::string *error)
{
	try {
		Subtransaction sub; // never committed
		SpiText text;
		{
			AsRole as_owner(def.owner);
			SpiResult r = SpiExec(select, args);
			text = r.rows.empty() ? std::nullopt : r.rows[0][0];
		}
		*value = text ? Json::parse(*text) : Json();
		return true;
	} catch (const PgError &e) {
		*error = e.what();
		return false;
	}
}

// The steps an expression reads that are not known before the run (their output comes from
// a request, or from a step that cannot be evaluated now).
std::vector<std::string>
UnknownRefs(const RouteDef &def, const std::string &expr, const Json &known, bool row_only)
{
	std::vector<std::string> unknown;
	StepExprInfo info;
	{
		AsRole as_owner(def.owner);
		info = row_only ? AnalyzeRowStepsExpression(def.source, expr) : AnalyzeStepExpression(def.source, expr);
	}
	for (const auto &ref : info.step_refs)
		if (!known.contains(ref))
			unknown.push_back(ref);
	return unknown;
}

Json
UnknownNote(const std::vector<std::string> &refs)
{
	std::string names;
	for (const auto &r : refs)
		names += (names.empty() ? "" : ", ") + r;
	return Json{{"unknown", true}, {"reason", "reads the output of " + names + ", not known before the run"}};
}

void
DescribeSteps(const RouteDef &def, Op op, const SpiText &new_image, const SpiText &old_image, const Translation &t,
              Json *out)
{
	SpiResult rows = SpiExec("SELECT name, kind, position, endpoint, run_if, input, options::text "
	                         "FROM switchboard.steps WHERE route = $1 ORDER BY position",
	                         {def.name});
	Json known = Json::object(); // outputs preview can compute: sql steps
	Json steps = Json::array();
	std::string from = StepsFromClause(def.source, "$1::json", "$2::json", "$3::jsonb");
	SpiText as_new = op == Op::Delete ? old_image : new_image;
	SpiText as_old = op == Op::Insert ? std::nullopt : old_image;
	bool top_level_set = false;
	for (const auto &row : rows.rows) {
		PreviewStep step{
		    *row[0], *row[1], std::stoi(*row[2]), row[3], row[4], row[5], Json::parse(row[6].value_or("{}"))};
		Json entry = {{"name", step.name}, {"position", step.position}, {"kind", step.kind}};
		std::vector<SpiText> args{as_new, as_old, known.dump()};
		std::string error;
		// Whether it would run.
		bool runs = true;
		if (step.run_if) {
			std::vector<std::string> unknown = UnknownRefs(def, *step.run_if, known, false);
			if (!unknown.empty()) {
				entry["would_run"] = UnknownNote(unknown);
			} else {
				Json yes;
				if (!EvaluateRolledBack(def,
				                        "SELECT pg_catalog.to_jsonb(coalesce(" + Parenthesize(*step.run_if) +
				                            ", false))::text" + from,
				                        args, &yes, &error)) {
					entry["would_run"] = false;
					entry["error"] = "run_if: " + error;
					steps.push_back(entry);
					continue;
				}
				runs = yes == Json(true);
				entry["would_run"] = runs;
			}
		} else {
			entry["would_run"] = true;
		}
		if (!runs) {
			steps.push_back(entry);
			continue;
		}
		// Its input, when every output it reads is known.
		Json input;
		bool input_known = true;
		if (step.input) {
			std::vector<std::string> unknown = UnknownRefs(def, *step.input, known, false);
			if (!unknown.empty()) {
				entry["input"] = UnknownNote(unknown);
				input_known = false;
			} else if (!EvaluateRolledBack(def,
			                               "SELECT pg_catalog.to_jsonb(sb_v.v)::pg_catalog.text FROM (SELECT " +
			                                   Parenthesize(*step.input) + " AS v" + from + ") sb_v",
			                               args, &input, &error)) {
				entry["error"] = "input: " + error;
				steps.push_back(entry);
				continue;
			}
		}
		if (step.kind == "sql") {
			if (input_known) {
				entry["output"] = input;
				entry["note"] = "evaluated and rolled back";
				if (entry["would_run"] == Json(true))
					known[step.name] = input;
			}
			steps.push_back(entry);
			continue;
		}
		if (step.kind == "writeback") {
			if (input_known)
				entry["assigns"] = input;
			entry["note"] = "not written by preview";
			steps.push_back(entry);
			continue;
		}
		// A request: the endpoint, masked.
		std::string endpoint_name = step.endpoint ? *step.endpoint : def.endpoint.name;
		SpiResult ep = SpiExec("SELECT name, kind, base_url, options::text, secret IS NOT NULL "
		                       "FROM switchboard.endpoints WHERE name = $1",
		                       {endpoint_name});
		if (ep.rows.empty()) {
			entry["error"] = "endpoint \"" + endpoint_name + "\" does not exist";
			steps.push_back(entry);
			continue;
		}
		Endpoint endpoint;
		endpoint.name = *ep.rows[0][0];
		endpoint.kind = *ep.rows[0][1];
		endpoint.base_url = *ep.rows[0][2];
		endpoint.options = Json::parse(ep.rows[0][3].value_or("{}"));
		entry["endpoint"] = endpoint.name;
		const Connector *connector = FindConnector(endpoint.kind);
		if (connector == nullptr) {
			entry["error"] = "unknown endpoint kind " + endpoint.kind;
			steps.push_back(entry);
			continue;
		}
		if (ep.rows[0][4] == SpiText("t") && !connector->PreviewSecret().empty())
			endpoint.secret = connector->PreviewSecret();
		Auth auth;
		auth.bearer = "****";
		auth.instance_url = endpoint.base_url;
		auth.masked = true;
		auth.signed_at_ms = NowMs();
		try {
			if (step.kind == "deliver") {
				std::vector<std::string> unknown;
				for (const auto &m : def.mappings)
					if (m.push_expr)
						for (const auto &ref : UnknownRefs(def, *m.push_expr, known, true))
							unknown.push_back(ref);
				if (!unknown.empty()) {
					entry["request"] = UnknownNote(unknown);
				} else {
					std::string pairs;
					for (const auto &m : def.mappings)
						if (m.push_expr)
							pairs += (pairs.empty() ? "" : ", ") + QuoteLiteral(m.remote_field) + ", " +
							         Parenthesize(*m.push_expr);
					Json fields = Json::object();
					std::string map_error;
					bool mapped = pairs.empty() ||
					              EvaluateRolledBack(def,
					                                 "SELECT pg_catalog.jsonb_build_object(" + pairs + ")::text" +
					                                     RowStepsFromClause(def.source, "$1::json", "$2::jsonb"),
					                                 {as_new, known.dump()}, &fields, &map_error);
					if (!mapped) {
						entry["error"] = "mappings: " + map_error;
					} else {
						Change change;
						change.op = op;
						change.key = t.key;
						change.fields = fields;
						change.event_id = "preview";
						change.occurred_at_ms = auth.signed_at_ms;
						change.remote_id =
						    SpiScalar("SELECT remote_id FROM switchboard.remote_ids WHERE route = $1 AND key = $2",
						              {def.name, t.key})
						        .value_or("");
						std::vector<Call> calls = connector->BuildCalls(endpoint, def.route, {change}, auth);
						if (calls.empty())
							entry["note"] = "not sent (a delete the route does not send)";
						else
							entry["request"] = RequestJson(calls[0].request);
					}
				}
			} else if (!input_known) {
				entry["request"] = UnknownNote({});
				entry["request"]["reason"] = "its input reads outputs not known before the run";
			} else if (step.kind == "enrich") {
				EnrichInput in;
				in.step = step.name;
				in.input = input;
				in.options = step.options;
				entry["request"] = RequestJson(connector->BuildEnrichRequest(endpoint, in, auth));
			} else if (step.kind == "notify") {
				entry["request"] = RequestJson(connector->BuildNotifyRequest(endpoint, def.name + "." + step.name,
				                                                             "preview", input, auth.signed_at_ms,
				                                                             auth));
			}
		} catch (const std::exception &e) {
			entry["error"] = e.what();
		}
		// The first request preview can show in full stands at the top level too (SPEC §8).
		if (!top_level_set && entry.contains("request") && entry["request"].is_object() &&
		    entry["request"].contains("method")) {
			for (auto &[name, value] : entry["request"].items())
				(*out)[name] = value;
			(*out)["request_of_step"] = step.name;
			top_level_set = true;
		}
		steps.push_back(entry);
	}
	(*out)["steps"] = steps;
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
	bool has_steps = SpiScalar("SELECT 1 FROM switchboard.steps WHERE route = $1", {route}).has_value();
	if (has_steps) {
		// A run: the key and the filters first (mappings are the deliver step's), then each step.
		RouteDef keyed = def;
		keyed.mappings.clear();
		Translation t = Translate(keyed, *op, new_image, old_image, true);
		if (t.status != Translation::Status::Ok) {
			Describe(def, *op, t, 0, NowMs(), &out);
			return out;
		}
		out["key"] = t.key;
		DescribeSteps(def, *op, new_image, old_image, t, &out);
		return out;
	}
	Translation t = Translate(def, *op, new_image, old_image, true);
	Describe(def, *op, t, 0, NowMs(), &out);
	return out;
}

Json
RenderJson(FunctionCallInfo fcinfo)
{
	int64_t id = PG_GETARG_INT64(0);
	SpiConnection spi;
	SpiResult r;
	{
		// The queue is the extension owner's: configuration roles may not read it. What is
		// shown of the change below is checked against the route's owner.
		AsRole as_extension_owner(ExtensionOwner(), kOwnSearchPath);
		r = SpiExec("SELECT route, op, new::text, old::text, (extract(epoch FROM captured_at) * 1000)::bigint "
		            "FROM switchboard.queue WHERE id = $1::bigint",
		            {std::to_string(id)});
	}
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
