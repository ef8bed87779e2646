#include "orchestrate/runs.h"

#include <limits>
#include <map>
#include <optional>

#include "capture/enqueue.h"
#include "delivery/retry_policy.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "settings.h"
#include "store/queue_store.h"
#include "translate/route_def.h"
#include "translate/translator.h"
#include "worker/shmem.h"

extern "C" {
#include "utils/guc.h"
}

namespace switchboard {

namespace {

std::string
Num(int64_t v)
{
	return std::to_string(v);
}

// The attempt mark must be on disk before the request leaves (see worker_main CommitDurably).
void
CommitDurably()
{
	Guarded([] {
		(void) set_config_option("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
		                         false);
	});
}

// While it lives, the route's own capture trigger ignores the writes (a writeback is not
// captured again by its own route); other routes on the table still see them.
class SuppressCapture {
public:
	explicit SuppressCapture(const std::string &route) { SetCaptureSuppressedRoute(route.c_str()); }
	~SuppressCapture() { SetCaptureSuppressedRoute(nullptr); }
};

struct StepDef {
	std::string name;
	int position = 0;
	std::string kind;
	SpiText endpoint;
	SpiText run_if;
	SpiText input;
	Json options = Json::object();
};

struct RunRow {
	int64_t id = 0;
	std::string route;
	SpiText key;
	Op op = Op::Update;
	SpiText new_image, old_image;
	int position = 0;
	int attempts = 0;
	Json outputs = Json::object();
	Json step_state = Json::object();
	int64_t captured_ms = 0;
	std::string state;
};

std::optional<RunRow>
LoadRun(int64_t id)
{
	SpiResult r = SpiExecPrepared(
	    "SELECT route, key, op, new::text, old::text, coalesce(position, 0), attempts, outputs::text, "
	    "step_state::text, (extract(epoch FROM captured_at) * 1000)::bigint, state "
	    "FROM switchboard.run_queue WHERE id = $1::bigint FOR UPDATE",
	    {Num(id)});
	if (r.rows.empty())
		return std::nullopt;
	const SpiRow &row = r.rows[0];
	RunRow run;
	run.id = id;
	run.route = *row[0];
	run.key = row[1];
	run.op = ParseOp(*row[2]).value_or(Op::Update);
	run.new_image = row[3];
	run.old_image = row[4];
	run.position = std::stoi(*row[5]);
	run.attempts = std::stoi(*row[6]);
	run.outputs = Json::parse(row[7].value_or("{}"));
	run.step_state = Json::parse(row[8].value_or("{}"));
	run.captured_ms = std::stoll(*row[9]);
	run.state = *row[10];
	return run;
}

std::optional<StepDef>
NextStep(const std::string &route, int position)
{
	SpiResult r = SpiExecPrepared("SELECT name, position, kind, endpoint, run_if, input, options::text "
	                              "FROM switchboard.steps WHERE route = $1 AND position >= $2::int "
	                              "ORDER BY position LIMIT 1",
	                              {route, std::to_string(position)});
	if (r.rows.empty())
		return std::nullopt;
	const SpiRow &row = r.rows[0];
	StepDef step;
	step.name = *row[0];
	step.position = std::stoi(*row[1]);
	step.kind = *row[2];
	step.endpoint = row[3];
	step.run_if = row[4];
	step.input = row[5];
	step.options = Json::parse(row[6].value_or("{}"));
	return step;
}

std::optional<Endpoint>
LoadEndpoint(const std::string &name)
{
	SpiResult r = SpiExecPrepared("SELECT e.name, e.kind, e.base_url, e.options::text, s.value "
	                              "FROM switchboard.endpoints e LEFT JOIN switchboard.secrets s ON s.name = e.secret "
	                              "WHERE e.name = $1 AND e.enabled",
	                              {name});
	if (r.rows.empty())
		return std::nullopt;
	Endpoint endpoint;
	endpoint.name = *r.rows[0][0];
	endpoint.kind = *r.rows[0][1];
	endpoint.base_url = *r.rows[0][2];
	endpoint.options = Json::parse(r.rows[0][3].value_or("{}"));
	endpoint.secret = r.rows[0][4].value_or("");
	return endpoint;
}

// new and old as a filter sees them (translator.cpp): for a delete new is the deleted row,
// for an insert old is NULL.
std::vector<SpiText>
ImageArgs(const RunRow &run)
{
	return {run.op == Op::Delete ? run.old_image : run.new_image, run.op == Op::Insert ? std::nullopt : run.old_image,
	        run.outputs.dump()};
}

// The value of a step expression as jsonb text: evaluated in a sub-select, so that a bare
// literal ('big', of type unknown there) resolves to text as in any SELECT list.
std::string
AsJsonbSql(const std::string &expr, const std::string &from)
{
	return "SELECT pg_catalog.to_jsonb(sb_v.v)::pg_catalog.text FROM (SELECT " + Parenthesize(expr) + " AS v" + from +
	       ") sb_v";
}

// Evaluates expr over new, old and steps as the route's owner, in a subtransaction. Returns
// the jsonb text (nullopt for SQL NULL); *error says why it failed.
bool
Evaluate(const RouteDef &def, const RunRow &run, const std::string &expr, SpiText *out, std::string *error)
{
	try {
		Subtransaction sub;
		{
			AsRole as_owner(def.owner);
			// Not read-only: a sql step may call a function that writes (in this subtransaction).
			SpiResult r = SpiExec(AsJsonbSql(expr, StepsFromClause(def.source, "$1::json", "$2::json", "$3::jsonb")),
			                      ImageArgs(run), false);
			*out = r.rows.empty() ? std::nullopt : r.rows[0][0];
		}
		sub.Commit();
		return true;
	} catch (const PgError &e) {
		*error = e.what();
		return false;
	}
}

// The mapped fields a deliver step sends: the route's mappings over the row and steps.
bool
MappedFields(const RouteDef &def, const RunRow &run, Json *fields, std::string *error)
{
	std::string pairs;
	std::vector<std::string> chunks;
	int n = 0;
	for (const auto &m : def.mappings) {
		if (!m.push_expr)
			continue;
		if (n == 50) {
			chunks.push_back("pg_catalog.jsonb_build_object(" + pairs + ")");
			pairs.clear();
			n = 0;
		}
		pairs += (n ? ", " : "") + QuoteLiteral(m.remote_field) + ", " + Parenthesize(*m.push_expr);
		n++;
	}
	if (n)
		chunks.push_back("pg_catalog.jsonb_build_object(" + pairs + ")");
	std::string sql = chunks.empty() ? "'{}'::pg_catalog.jsonb" : "";
	for (size_t i = 0; i < chunks.size(); i++)
		sql += (i ? " || " : "") + chunks[i];
	SpiText image = run.op == Op::Delete ? run.old_image : run.new_image;
	try {
		Subtransaction sub;
		SpiText text;
		{
			AsRole as_owner(def.owner);
			SpiResult r = SpiExec("SELECT (" + sql + ")::text" +
			                          RowStepsFromClause(def.source, "$1::json", "$2::jsonb"),
			                      {image, run.outputs.dump()}, true);
			text = r.rows.empty() ? std::nullopt : r.rows[0][0];
		}
		sub.Commit();
		*fields = Json::parse(text.value_or("{}"));
		return true;
	} catch (const PgError &e) {
		*error = "mappings: " + std::string(e.what());
		return false;
	}
}

// Updates the source row (by primary key) with the columns of values, as the route's owner,
// not captured by this route.
bool
WriteBack(const RouteDef &def, const RunRow &run, const Json &values, std::string *error)
{
	if (!values.is_object() || values.empty()) {
		*error = "input must be a non-empty jsonb object of column -> value, got " + values.dump().substr(0, 200);
		return false;
	}
	try {
		Subtransaction sub;
		std::string table = QualifiedName(def.source);
		SpiResult pk = SpiExecPrepared(
		    "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid "
		    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY a.attnum",
		    {Num(def.source)});
		if (pk.rows.empty())
			Fail(ERRCODE_INVALID_TABLE_DEFINITION, "writeback needs a primary key on " + table);
		std::string cols, keys;
		for (auto it = values.begin(); it != values.end(); ++it)
			cols += (cols.empty() ? "" : ", ") + QuoteIdent(it.key());
		for (const auto &row : pk.rows)
			keys += (keys.empty() ? "" : ", ") + QuoteIdent(*row[0]);
		std::string sql = "UPDATE " + table + " SET (" + cols + ") = (SELECT " + cols +
		                  " FROM pg_catalog.jsonb_populate_record(NULL::" + table + ", $1::pg_catalog.jsonb)) WHERE (" +
		                  keys + ") = (SELECT " + keys + " FROM pg_catalog.json_populate_record(NULL::" + table +
		                  ", $2::pg_catalog.json))";
		SpiText image = run.op == Op::Delete ? run.old_image : run.new_image;
		{
			SuppressCapture no_echo(def.name);
			AsRole as_owner(def.owner);
			SpiExec(sql, {values.dump(), image});
		}
		sub.Commit();
		return true;
	} catch (const PgError &e) {
		*error = e.what();
		return false;
	}
}

void
SaveRun(const RunRow &run, const std::string &state, const std::string &current_step, const std::string &error,
        long http_status, long next_in_ms)
{
	SpiExecPrepared(
	    "UPDATE switchboard.run_queue SET state = $2, position = $3::int, current_step = nullif($4, ''), "
	    "attempts = $5::int, outputs = $6::jsonb, step_state = $7::jsonb, last_error = nullif($8, ''), "
	    "last_status = nullif($9::int, 0), "
	    "next_attempt_at = CASE WHEN $10::bigint > 0 THEN now() + $10::bigint * interval '1 millisecond' END, "
	    "started_at = coalesce(started_at, now()), "
	    "finished_at = CASE WHEN $2 IN ('done', 'failed') THEN now() END WHERE id = $1::bigint",
	    {Num(run.id), state, std::to_string(run.position), current_step, std::to_string(run.attempts),
	     run.outputs.dump(), run.step_state.dump(), error, std::to_string(http_status), Num(next_in_ms)});
}

// The step is over: its output counts, the run goes on with the next one.
void
StepDone(RunRow *run, const StepDef &step, const Json &output, const std::string &state, long http_status,
         double latency_ms)
{
	Json entry = {{"state", state}, {"attempts", run->attempts}};
	if (state == "done") {
		run->outputs[step.name] = output;
		entry["output"] = output;
	}
	if (http_status)
		entry["http_status"] = http_status;
	if (latency_ms > 0)
		entry["latency_ms"] = static_cast<int64_t>(latency_ms + 0.5);
	run->step_state[step.name] = entry;
	run->position = step.position + 1;
	run->attempts = 0;
	std::optional<StepDef> next = NextStep(run->route, run->position);
	SaveRun(*run, next ? "pending" : "done", next ? next->name : "", "", http_status, 0);
}

int
MaxAttempts(const StepDef &step)
{
	if (step.options.contains("max_attempts") && step.options["max_attempts"].is_number_integer())
		return step.options["max_attempts"].get<int>();
	return setting_max_attempts;
}

// A failed attempt: retried after a backoff (or Retry-After), or the run fails at this step.
void
StepFailed(RunRow *run, const StepDef &step, bool permanent, const std::string &error, long http_status,
           long retry_after_ms, double latency_ms, std::mt19937_64 &rng)
{
	bool last = permanent || run->attempts >= MaxAttempts(step);
	Json entry = {{"state", last ? "failed" : "waiting"}, {"attempts", run->attempts}, {"error", error}};
	if (http_status)
		entry["http_status"] = http_status;
	if (latency_ms > 0)
		entry["latency_ms"] = static_cast<int64_t>(latency_ms + 0.5);
	run->step_state[step.name] = entry;
	long wait = last ? 0 : std::max<long>(1, BackoffMs(std::max(1, run->attempts), retry_after_ms, rng));
	SaveRun(*run, last ? "failed" : "waiting", step.name, error, http_status, wait);
}

void
RecordUsage(const std::string &route, const std::string &endpoint, const EnrichResult &result)
{
	SpiExecPrepared("INSERT INTO switchboard.ai_usage_daily AS u (route, endpoint, day, calls, prompt_tokens, "
	                "completion_tokens) VALUES ($1, $2, current_date, 1, $3::bigint, $4::bigint) "
	                "ON CONFLICT (route, endpoint, day) DO UPDATE SET calls = u.calls + 1, "
	                "prompt_tokens = u.prompt_tokens + excluded.prompt_tokens, "
	                "completion_tokens = u.completion_tokens + excluded.completion_tokens",
	                {route, endpoint, Num(result.prompt_tokens), Num(result.completion_tokens)});
}

// A route whose stored definition fails its checks is not run (its changes and runs wait
// until it is fixed); said in the log once a minute per route, not every round.
void
NoteNotRun(const std::string &route, const std::string &why)
{
	static std::map<std::string, int64_t> last_said;
	int64_t now = NowMs();
	auto it = last_said.find(route);
	if (it != last_said.end() && now - it->second < 60000)
		return;
	last_said[route] = now;
	Report(LOG, "switchboard: route \"" + route + "\" is not run until its definition is fixed: " + why);
}

// Fetch sent nothing (the endpoint is backing off, a rate limit holds requests back, the worker
// is stopping): no attempt to count.
bool
NotSent(const HttpResponse &response)
{
	if (response.status != 0)
		return false;
	const std::string &e = response.transport_error;
	return e.rfind("not sent", 0) == 0 || e.rfind("rate limited", 0) == 0 || e.rfind("abandoned", 0) == 0 ||
	       e.find(" is backing off") != std::string::npos;
}

// What phase 1 prepared for a step that makes a request.
struct Pending {
	RouteDef def;
	StepDef step;
	Endpoint endpoint;
	Json input;
	Change change; // deliver, notify; enrich: fields {"step", "input", "options"}
};

// What became of a request.
struct Answer {
	Outcome outcome = Outcome::Retry;
	Json output;
	std::string error;
	long status = 0;
	long retry_after = -1;
	bool attempted = true;
	std::optional<EnrichResult> enriched;
	double latency = 0;
};

} // namespace

size_t
RunExecutor::Adopt()
{
	SpiResult r = SpiExecPrepared(
	    "SELECT q.id, q.route, q.op, q.new::text, q.old::text, q.captured_at::text FROM switchboard.queue q "
	    "JOIN switchboard.routes r ON r.name = q.route AND r.enabled "
	    "WHERE q.state = 'pending' AND EXISTS (SELECT 1 FROM switchboard.steps s WHERE s.route = q.route) "
	    "ORDER BY q.id LIMIT 500 FOR UPDATE OF q SKIP LOCKED");
	std::map<std::string, std::optional<RouteDef>> defs;
	size_t adopted = 0;
	for (const auto &row : r.rows) {
		const std::string &route = *row[1];
		auto it = defs.find(route);
		if (it == defs.end()) {
			std::optional<RouteDef> def;
			try {
				Subtransaction sub;
				def = FindRoute(route, false);
				sub.Commit();
			} catch (const PgError &e) {
				NoteNotRun(route, e.what());
			}
			it = defs.emplace(route, std::move(def)).first;
		}
		if (!it->second)
			continue;
		RouteDef keyed = *it->second;
		keyed.mappings.clear(); // the key and the filters; mappings are the deliver step's
		Op op = ParseOp(*row[2]).value_or(Op::Update);
		Translation t = Translate(keyed, op, row[3], row[4], false);
		if (t.status != Translation::Status::Filtered) {
			std::optional<StepDef> first = NextStep(route, std::numeric_limits<int>::min());
			bool failed = t.status == Translation::Status::Failed || !first;
			SpiExecPrepared("INSERT INTO switchboard.run_queue (id, route, key, op, new, old, captured_at, state, "
			                "position, current_step, last_error, finished_at) VALUES ($1::bigint, $2, nullif($3, ''), "
			                "$4, $5::json, $6::json, $7::timestamptz, $8, $9::int, $10, nullif($11, ''), "
			                "CASE WHEN $8 = 'failed' THEN now() END)",
			                {*row[0], route, t.key, *row[2], row[3], row[4], *row[5], failed ? "failed" : "pending",
			                 first ? std::to_string(first->position) : SpiText(), first ? first->name : SpiText(),
			                 failed ? (t.error.empty() ? "the route has no steps" : t.error) : ""});
		}
		SpiExecPrepared("DELETE FROM switchboard.queue WHERE id = $1::bigint", {*row[0]});
		adopted++;
	}
	return adopted;
}

namespace {

// Phase 1 of one run's current step, in its own transaction: a local step (skipped, sql,
// writeback) completes; a request step comes back prepared, its attempt committed.
std::optional<Pending>
Prepare(int64_t run_id, bool *worked, std::mt19937_64 &rng)
{
	std::optional<Pending> pending;
	RunRow run;
	// Phase 1: the step's expressions; local steps (skipped, sql, writeback) complete here.
	{
		WorkerTransaction tx;
		std::optional<RunRow> loaded = LoadRun(run_id);
		if (!loaded || (loaded->state != "pending" && loaded->state != "running" && loaded->state != "waiting")) {
			tx.Commit();
			return std::nullopt;
		}
		run = *loaded;
		std::optional<RouteDef> def;
		try {
			Subtransaction sub;
			def = FindRoute(run.route, false);
			sub.Commit();
		} catch (const PgError &e) {
			NoteNotRun(run.route, e.what());
		}
		if (!def) {
			tx.Commit();
			return std::nullopt;
		}
		std::optional<StepDef> step = NextStep(run.route, run.position);
		if (!step) {
			SaveRun(run, "done", "", "", 0, 0);
			tx.Commit();
			*worked = true;
			return std::nullopt;
		}
		std::string error;
		if (step->run_if) {
			SpiText yes;
			if (!Evaluate(*def, run, "coalesce(" + Parenthesize(*step->run_if) + ", false)", &yes, &error)) {
				run.attempts++;
				StepFailed(&run, *step, true, "run_if: " + error, 0, -1, 0, rng);
				tx.Commit();
				*worked = true;
				return std::nullopt;
			}
			if (yes != SpiText("true")) {
				StepDone(&run, *step, Json(), "skipped", 0, 0);
				tx.Commit();
				*worked = true;
				return std::nullopt;
			}
		}
		Json input;
		if (step->input) {
			SpiText value;
			if (!Evaluate(*def, run, *step->input, &value, &error)) {
				run.attempts++;
				StepFailed(&run, *step, true, "input: " + error, 0, -1, 0, rng);
				tx.Commit();
				*worked = true;
				return std::nullopt;
			}
			input = value ? Json::parse(*value) : Json();
		}
		if (step->kind == "sql") {
			run.attempts++;
			StepDone(&run, *step, input, "done", 0, 0);
			tx.Commit();
			*worked = true;
			return std::nullopt;
		}
		if (step->kind == "writeback") {
			run.attempts++;
			if (!WriteBack(*def, run, input, &error))
				StepFailed(&run, *step, true, "writeback: " + error, 0, -1, 0, rng);
			else
				StepDone(&run, *step, input, "done", 0, 0);
			tx.Commit();
			*worked = true;
			return std::nullopt;
		}
		// A request: enrich, notify or deliver.
		std::string endpoint_name = step->endpoint ? *step->endpoint : def->endpoint.name;
		std::optional<Endpoint> endpoint = LoadEndpoint(endpoint_name);
		if (!endpoint) {
			// Disabled (or gone): wait for it, as the push path does.
			SaveRun(run, "waiting", step->name, "endpoint \"" + endpoint_name + "\" is disabled", 0, 10000);
			tx.Commit();
			return std::nullopt;
		}
		Pending p{*def, *step, *endpoint, input, Change()};
		p.change.id = run.id;
		p.change.op = run.op;
		p.change.key = run.key.value_or("");
		p.change.occurred_at_ms = run.captured_ms;
		p.change.event_id = "sb-run-" + Num(run.id) + "-" + step->name;
		if (step->kind == "enrich")
			p.change.fields = {{"step", step->name}, {"input", input}, {"options", step->options}};
		if (step->kind == "deliver") {
			if (!MappedFields(*def, run, &p.change.fields, &error)) {
				run.attempts++;
				StepFailed(&run, *step, true, error, 0, -1, 0, rng);
				tx.Commit();
				*worked = true;
				return std::nullopt;
			}
			SpiText rid = SpiScalar("SELECT remote_id FROM switchboard.remote_ids WHERE route = $1 AND key = $2",
			                        {run.route, p.change.key});
			p.change.remote_id = rid.value_or("");
		}
		// The attempt counts before the request leaves: a crash repeats this step only, and a
		// step that keeps killing the worker ends failed instead of looping.
		run.attempts++;
		run.step_state[step->name] = {{"state", "running"}, {"attempts", run.attempts}};
		SaveRun(run, "running", step->name, "", 0, 0);
		CommitDurably();
		tx.Commit();
		pending = std::move(p);
	}
	*worked = true;
	return pending;
}

Answer
Notify(Dispatcher *dispatcher_, const Pending &p, const std::function<bool()> &should_stop)
{
	const Connector *connector = FindConnector(p.endpoint.kind);
	Answer a;
	int64_t started = NowMs();
	std::string type = p.def.name + "." + p.step.name;
	try {
		HttpResponse response = dispatcher_->Fetch(
		    p.endpoint,
		    [&](const Auth &auth) {
			    return connector->BuildNotifyRequest(p.endpoint, type, p.change.event_id, p.input,
			                                         p.change.occurred_at_ms, auth);
		    },
		    p.step.options.value("timeout_ms", static_cast<long>(setting_http_timeout_ms)), 1000, should_stop);
		Call call;
		call.changes.push_back(0);
		CallResult result = connector->ParseResult(call, {p.change}, response);
		a.attempted = !NotSent(response);
		ChangeResult one = result.results.empty() ? ChangeResult() : result.results[0];
		a.outcome = one.outcome;
		a.error = dispatcher_->RedactSecrets(p.endpoint, one.error);
		a.status = response.status;
		a.retry_after = one.retry_after_ms >= 0 ? one.retry_after_ms : result.retry_after_ms;
		a.output = {{"status", response.status}};
	} catch (const std::invalid_argument &e) {
		a.outcome = Outcome::Dead;
		a.error = e.what();
	}
	a.latency = static_cast<double>(NowMs() - started);
	return a;
}

Answer
FromDelivery(const Pending &p, const Delivery &d)
{
	Answer a;
	a.outcome = d.outcome == Outcome::Skipped ? Outcome::Delivered : d.outcome;
	a.error = d.error;
	a.status = d.http_status;
	a.retry_after = d.retry_after_ms;
	a.attempted = d.attempted || d.outcome == Outcome::Skipped;
	a.latency = d.latency_ms;
	if (p.step.kind == "enrich") {
		// Usage comes on Delivered and on answers that failed (not an object, not matching
		// json_schema): tokens were spent either way (EnrichCallResult).
		Json carried = d.remote_id.empty() ? Json() : Json::parse(d.remote_id, nullptr, false);
		if (a.outcome == Outcome::Delivered || carried.is_object()) {
			EnrichResult r;
			r.outcome = a.outcome;
			r.http_status = d.http_status;
			if (carried.is_object()) {
				if (a.outcome == Outcome::Delivered)
					a.output = carried.value("output", Json::object());
				r.has_usage = carried.value("has_usage", false);
				r.prompt_tokens = carried.value("prompt_tokens", static_cast<int64_t>(0));
				r.completion_tokens = carried.value("completion_tokens", static_cast<int64_t>(0));
			}
			a.enriched = r;
		}
		return a;
	}
	a.output = {{"remote_id", d.remote_id.empty() ? Json() : Json(d.remote_id)},
	            {"created", p.change.remote_id.empty() && !d.remote_id.empty()}};
	return a;
}

// Phase 3: the answer, committed before the run's next step starts.
void
Record(Dispatcher *dispatcher_, std::mt19937_64 &rng, int64_t run_id, const Pending &p, Answer a)
{
	WorkerTransaction tx;
	std::optional<RunRow> reloaded = LoadRun(run_id);
	if (!reloaded || reloaded->state != "running") {
		// Discarded or retried by hand meanwhile: what the answer said no longer applies.
		tx.Commit();
		return;
	}
	RunRow run = *reloaded;
	if (a.enriched && (a.enriched->has_usage || a.enriched->http_status == 200))
		RecordUsage(run.route, p.endpoint.name, *a.enriched);
	if (p.step.kind == "deliver" && a.outcome == Outcome::Delivered && a.output.contains("remote_id") &&
	    a.output["remote_id"].is_string())
		SpiExecPrepared("INSERT INTO switchboard.remote_ids (route, key, remote_id) VALUES ($1, $2, $3) "
		                "ON CONFLICT (route, key) DO UPDATE SET remote_id = excluded.remote_id, updated_at = now()",
		                {run.route, p.change.key, a.output["remote_id"].get<std::string>()});
	if (a.outcome == Outcome::Delivered) {
		StepDone(&run, p.step, a.output, "done", a.status, a.latency);
	} else {
		if (!a.attempted) {
			run.attempts = std::max(0, run.attempts - 1);
			a.retry_after = std::max<long>(200, dispatcher_->EndpointReadyAt(p.endpoint.name) - NowMs());
		}
		StepFailed(&run, p.step, a.outcome == Outcome::Dead, a.error, a.status, a.retry_after, a.latency, rng);
	}
	tx.Commit();
}

} // namespace

long
RunExecutor::Round(const std::function<bool()> &should_stop)
{
	std::vector<int64_t> due;
	size_t adopted = 0;
	{
		WorkerTransaction tx;
		if (!SpiScalar("SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
		               "WHERE n.nspname = 'switchboard' AND c.relname = 'run_queue'")) {
			tx.Commit();
			return setting_naptime_ms;
		}
		adopted = Adopt();
		// Only the oldest unfinished run of a key is ever due: runs of a key in commit order.
		SpiResult r = SpiExecPrepared(
		    "SELECT d.id FROM (SELECT DISTINCT ON (route, key) id, route, next_attempt_at FROM switchboard.run_queue "
		    "WHERE state IN ('pending', 'running', 'waiting') ORDER BY route, key, id) d "
		    "JOIN switchboard.routes r ON r.name = d.route AND r.enabled "
		    "WHERE d.next_attempt_at IS NULL OR d.next_attempt_at <= now() ORDER BY d.id LIMIT 500");
		for (const auto &row : r.rows)
			due.push_back(std::stoll(*row[0]));
		tx.Commit();
	}
	bool worked = adopted > 0;
	// Phase 1 for every due run: local steps complete, requests are prepared (their attempt
	// committed first).
	std::vector<std::pair<int64_t, Pending>> requests;
	for (int64_t id : due) {
		if (should_stop())
			break;
		std::optional<Pending> p = Prepare(id, &worked, *rng_);
		if (p)
			requests.emplace_back(id, std::move(*p));
	}
	if (requests.empty())
		return worked ? 0 : setting_naptime_ms;
	// Phase 2, with no transaction open: deliver and enrich steps of many runs in one dispatch
	// (bulk calls per route, many requests in flight per endpoint within its max_concurrency
	// and rate_limit); notify steps one event each.
	std::map<int64_t, Answer> answers;
	std::map<std::pair<std::string, std::string>, RouteBatch> batches;
	std::map<int64_t, const Pending *> by_change;
	for (auto &[id, p] : requests) {
		const Connector *connector = FindConnector(p.endpoint.kind);
		if (connector == nullptr) {
			Answer a;
			a.outcome = Outcome::Dead;
			a.error = "endpoint \"" + p.endpoint.name + "\" has unknown kind " + p.endpoint.kind;
			answers[id] = a;
			continue;
		}
		if (p.step.kind == "notify") {
			answers[id] = Notify(dispatcher_, p, should_stop);
			continue;
		}
		// One batch per route and endpoint for deliver steps, per endpoint for enrich steps.
		std::string group = p.step.kind == "deliver" ? p.def.name : std::string();
		RouteBatch &batch = batches[{p.endpoint.name, group}];
		if (batch.changes.empty()) {
			batch.endpoint = p.endpoint;
			batch.route = p.step.kind == "deliver" ? p.def.route : Route{"enrich", "enrich", "", "ignore"};
		}
		batch.changes.push_back(p.change);
		by_change[p.change.id] = &p;
	}
	if (!batches.empty()) {
		std::vector<RouteBatch> list;
		for (auto &[k, b] : batches)
			list.push_back(std::move(b));
		DispatchOptions options;
		options.timeout_ms = setting_http_timeout_ms;
		std::vector<RouteAction> actions;
		for (const Delivery &d : dispatcher_->Deliver(list, options, should_stop, &actions)) {
			auto it = by_change.find(d.change_id);
			if (it != by_change.end())
				answers[d.change_id] = FromDelivery(*it->second, d);
		}
	}
	// Phase 3: each outcome committed before that run's next step starts.
	for (auto &[id, p] : requests) {
		auto it = answers.find(id);
		Answer a = it == answers.end() ? Answer() : it->second;
		if (it == answers.end()) {
			a.attempted = false;
			a.error = "not sent";
		}
		Record(dispatcher_, *rng_, id, p, a);
	}
	return 0;
}

} // namespace switchboard
