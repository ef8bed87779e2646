#include "orchestrate/runs.h"

#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "capture/enqueue.h"
#include "delivery/retry_policy.h"
#include "http/exact_json.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/route_budget.h"
#include "pg/time_limit.h"
#include "settings.h"
#include "store/queue_store.h"
#include "translate/route_def.h"
#include "translate/translator.h"
#include "worker/shmem.h"

extern "C" {
#include "miscadmin.h"
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
	std::string current_step;
};

constexpr const char *kRunColumns =
    "id, route, key, op, new::text, old::text, coalesce(position, 0), attempts, outputs::text, step_state::text, "
    "(extract(epoch FROM captured_at) * 1000)::bigint, state, coalesce(current_step, '')";

RunRow
RunFromRow(const SpiRow &row)
{
	RunRow run;
	run.id = std::stoll(*row[0]);
	run.route = *row[1];
	run.key = row[2];
	run.op = ParseOp(*row[3]).value_or(Op::Update);
	run.new_image = row[4];
	run.old_image = row[5];
	run.position = std::stoi(*row[6]);
	run.attempts = std::stoi(*row[7]);
	// Stored by the worker itself, so readable; a value it cannot read (a number past double
	// range that jsonb keeps) throws, and the caller fails that run alone.
	run.outputs = Json::parse(row[8].value_or("{}"));
	run.step_state = Json::parse(row[9].value_or("{}"));
	run.captured_ms = std::stoll(*row[10]);
	run.state = *row[11];
	run.current_step = *row[12];
	return run;
}

// The runs named, locked, as stored (the ones gone or finished meanwhile are left out).
std::vector<SpiRow>
LockRuns(const std::vector<int64_t> &ids)
{
	std::string list = "{";
	for (size_t i = 0; i < ids.size(); i++)
		list += (i ? "," : "") + Num(ids[i]);
	list += "}";
	return SpiExecPrepared(std::string("SELECT ") + kRunColumns +
	                           " FROM switchboard.run_queue WHERE id = ANY($1::bigint[]) "
	                           "AND state IN ('pending', 'running', 'waiting') ORDER BY id FOR UPDATE",
	                       {list})
	    .rows;
}

std::vector<StepDef>
LoadSteps(const std::string &route)
{
	SpiResult r = SpiExecPrepared("SELECT name, position, kind, endpoint, run_if, input, options::text "
	                              "FROM switchboard.steps WHERE route = $1 ORDER BY position",
	                              {route});
	std::vector<StepDef> steps;
	for (const auto &row : r.rows) {
		StepDef step;
		step.name = *row[0];
		step.position = std::stoi(*row[1]);
		step.kind = *row[2];
		step.endpoint = row[3];
		step.run_if = row[4];
		step.input = row[5];
		step.options = Json::parse(row[6].value_or("{}"));
		steps.push_back(std::move(step));
	}
	return steps;
}

// A step the run has finished (done or skipped): never run again, whatever its position now.
bool
Completed(const RunRow &run, const std::string &step)
{
	auto it = run.step_state.find(step);
	if (it == run.step_state.end() || !it->is_object())
		return false;
	std::string state = it->value("state", std::string());
	return state == "done" || state == "skipped";
}

// The run's next step: the first, in position order, that it has not finished. By name, not
// by a stored position, so steps renumbered (or inserted) while runs are pending never make
// a run repeat a step it completed.
const StepDef *
NextStep(const std::vector<StepDef> &steps, const RunRow &run)
{
	for (const auto &step : steps)
		if (!Completed(run, step.name))
			return &step;
	return nullptr;
}

void NoteNotRun(const std::string &route, const std::string &why);

// What one round knows of a route: its definition (nullopt: not run now) and its steps.
struct RouteCache {
	std::optional<RouteDef> def;
	std::vector<StepDef> steps;
};

class RoundCache {
public:
	RouteCache &Route(const std::string &name)
	{
		auto it = routes_.find(name);
		if (it != routes_.end())
			return it->second;
		RouteCache cache;
		try {
			Subtransaction sub;
			cache.def = FindRoute(name, false);
			if (cache.def && !cache.def->enabled)
				cache.def.reset();
			if (cache.def)
				cache.steps = LoadSteps(name);
			sub.Commit();
		} catch (const PgError &e) {
			if (TransientError(e.sqlerrcode))
				throw;
			cache.def.reset();
			NoteNotRun(name, e.what());
		}
		return routes_.emplace(name, std::move(cache)).first->second;
	}

	const std::optional<Endpoint> &EndpointNamed(const std::string &name);

private:
	std::map<std::string, RouteCache> routes_;
	std::map<std::string, std::optional<Endpoint>> endpoints_;
};

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

const std::optional<Endpoint> &
RoundCache::EndpointNamed(const std::string &name)
{
	auto it = endpoints_.find(name);
	if (it == endpoints_.end())
		it = endpoints_.emplace(name, LoadEndpoint(name)).first;
	return it->second;
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

// An error of step SQL that the same SQL may not raise again (a deadlock, a serialization
// failure, out of memory or disk, a lock not available): the step is retried after a backoff,
// within its max_attempts. Not a cancel: the step's own time limit is a permanent failure.
bool
RetryableStepError(int sqlerrcode)
{
	return TransientError(sqlerrcode) && ERRCODE_TO_CATEGORY(sqlerrcode) != ERRCODE_OPERATOR_INTERVENTION;
}

// Evaluates expr over new, old and steps as the route's owner, in a subtransaction, cancelled
// after time_limit_ms. Returns the jsonb text (nullopt for SQL NULL); *error says why it failed.
bool
Evaluate(const RouteDef &def, const RunRow &run, const std::string &expr, long time_limit_ms, SpiText *out,
         std::string *error, bool *transient)
{
	try {
		Subtransaction sub;
		{
			StatementTimeLimit limit(time_limit_ms, run.id, expr);
			AsRole as_owner(def.owner);
			// Not read-only: a sql step may call a function that writes (in this subtransaction).
			// A kept plan, as the push path's translations: the text repeats for every run of
			// the step, and the plan cache replans for another role or search_path.
			SpiResult r = SpiExecPrepared(AsJsonbSql(expr,
			                                         StepsFromClause(def.source, "$1::json", "$2::json", "$3::jsonb")),
			                              ImageArgs(run), false);
			*out = r.rows.empty() ? std::nullopt : r.rows[0][0];
		}
		sub.Commit();
		return true;
	} catch (const PgError &e) {
		*error = e.what();
		*transient = RetryableStepError(e.sqlerrcode);
		return false;
	}
}

// The mapped fields a deliver step sends: the route's mappings over the row and steps.
bool
MappedFields(const RouteDef &def, const RunRow &run, long time_limit_ms, Json *fields, std::string *error,
             bool *transient)
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
			StatementTimeLimit limit(time_limit_ms, run.id, sql);
			AsRole as_owner(def.owner);
			SpiResult r = SpiExecPrepared("SELECT (" + sql + ")::text" +
			                                  RowStepsFromClause(def.source, "$1::json", "$2::jsonb"),
			                              {image, run.outputs.dump()}, true);
			text = r.rows.empty() ? std::nullopt : r.rows[0][0];
		}
		sub.Commit();
		*fields = ParseKeepingDigits(text.value_or("{}"));
		if (fields->is_discarded()) {
			*error = "mappings: the mapped fields cannot be sent as JSON (a number beyond a double's range, or text "
			         "that is not UTF-8)";
			*transient = false;
			return false;
		}
		return true;
	} catch (const PgError &e) {
		*error = "mappings: " + std::string(e.what());
		*transient = RetryableStepError(e.sqlerrcode);
		return false;
	}
}

// Updates the source row (by primary key) with the columns of values, as the route's owner,
// not captured by this route, cancelled after time_limit_ms.
bool
WriteBack(const RouteDef &def, const RunRow &run, const Json &values, long time_limit_ms, std::string *error,
          bool *transient)
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
		for (const auto &row : pk.rows) {
			// The row written is the run's own: an input built from a remote answer (a model's)
			// must not move it to another key.
			if (values.contains(*row[0]))
				Fail(ERRCODE_INSUFFICIENT_PRIVILEGE,
				     "writeback may not set primary key column \"" + *row[0] + "\" of " + table);
			keys += (keys.empty() ? "" : ", ") + QuoteIdent(*row[0]);
		}
		std::string sql = "UPDATE " + table + " SET (" + cols + ") = (SELECT " + cols +
		                  " FROM pg_catalog.jsonb_populate_record(NULL::" + table + ", $1::pg_catalog.jsonb)) WHERE (" +
		                  keys + ") = (SELECT " + keys + " FROM pg_catalog.json_populate_record(NULL::" + table +
		                  ", $2::pg_catalog.json))";
		SpiText image = run.op == Op::Delete ? run.old_image : run.new_image;
		{
			StatementTimeLimit limit(time_limit_ms, run.id, sql);
			SuppressCapture no_echo(def.name);
			AsRole as_owner(def.owner);
			SpiExec(sql, {values.dump(), image});
		}
		sub.Commit();
		return true;
	} catch (const PgError &e) {
		*error = e.what();
		*transient = RetryableStepError(e.sqlerrcode);
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
	// The newest run of its key that is done: an older change of the key (a dead letter retried)
	// is never run after it, even once this run is pruned (Adopt, retry()).
	if (state == "done" && run.key)
		SpiExecPrepared(
		    "INSERT INTO switchboard.delivered_marks AS m (route, key, change_id) VALUES ($1, $2, $3::bigint) "
		    "ON CONFLICT (route, key) DO UPDATE SET change_id = GREATEST(m.change_id, excluded.change_id)",
		    {run.route, run.key, Num(run.id)});
}

// The step is over: its output counts, the run goes on with the next one (saved by the
// caller: local steps of a run complete one after another in one transaction).
void
MarkDone(RunRow *run, const StepDef &step, const Json &output, const std::string &state, long http_status,
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
	run->state = "pending";
}

// Saves a run whose step just completed: pending at its next step, or done.
void
SaveDone(RunRow *run, const std::vector<StepDef> &steps, long http_status)
{
	const StepDef *next = NextStep(steps, *run);
	if (next)
		run->position = next->position;
	SaveRun(*run, next ? "pending" : "done", next ? next->name : "", "", http_status, 0);
}

// How long one attempt of the step may take: its options.timeout_ms, else
// switchboard.http_timeout (requests and step SQL alike).
long
StepTimeLimitMs(const StepDef &step)
{
	if (step.options.contains("timeout_ms") && step.options["timeout_ms"].is_number_integer() &&
	    step.options["timeout_ms"].get<int64_t>() > 0)
		return static_cast<long>(step.options["timeout_ms"].get<int64_t>());
	return setting_http_timeout_ms;
}

// How long the step's SQL may run: its time limit, never more than switchboard.route_sql_timeout.
long
StepSqlLimitMs(const StepDef &step)
{
	return std::min<long>(StepTimeLimitMs(step), setting_route_sql_timeout_ms);
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

// Runs f in a subtransaction of its own: true when it completed. A failure that is this run's
// alone (an error of its step's SQL, a value the worker cannot read, an answer jsonb refuses)
// is rolled back and said in *error; one that is not (a cancel, shutdown) goes up.
template <typename F>
bool
Isolated(F &&f, std::string *error)
{
	try {
		Subtransaction sub;
		f();
		sub.Commit();
		return true;
	} catch (const PgError &e) {
		if (TransientError(e.sqlerrcode))
			throw;
		*error = e.what();
	} catch (const std::exception &e) {
		*error = e.what();
	}
	return false;
}

// The run could not be carried on at step: it fails there (retry(id) resumes it there), so it
// is neither tried again round after round nor holds up the others.
void
FailRun(int64_t id, const std::string &step, const std::string &error)
{
	std::string ignored;
	bool ok = Isolated(
	    [&] {
		    SpiExecPrepared("UPDATE switchboard.run_queue SET state = 'failed', current_step = nullif($2, ''), "
		                    "last_error = $3, next_attempt_at = NULL, finished_at = now(), "
		                    "step_state = CASE WHEN $2 = '' THEN step_state ELSE step_state || "
		                    "pg_catalog.jsonb_build_object($2, pg_catalog.jsonb_build_object('state', 'failed', "
		                    "'attempts', attempts, 'error', $3)) END "
		                    "WHERE id = $1::bigint",
		                    {Num(id), step, error});
	    },
	    &ignored);
	if (!ok)
		Report(LOG, "switchboard: could not mark run " + Num(id) + " failed: " + ignored);
}

} // namespace

// A route whose definition fails its checks: its changes are left out of adoption and its runs
// are not due for kHoldBackMs (the checks are re-run then), so that neither fills the round's
// pages (LIMIT 1000) and starves the other routes, nor makes the worker spin.
constexpr int64_t kHoldBackMs = 10 * 1000;

// How long one round carries runs through their local steps before it sends what it has.
constexpr std::chrono::milliseconds kPrepareBudget{1000};

// The most a step's output may take (as JSON text): every output is kept in the run and read
// back with it each round, a thousand runs at a time.
constexpr size_t kMaxOutputBytes = 1024 * 1024;

std::string
OutputTooBig(size_t bytes)
{
	return "its output is " + std::to_string(bytes) + " bytes, more than the " +
	       std::to_string(kMaxOutputBytes / 1024) + " kB a step may keep in its run";
}

// Has a change of the key newer than id run (started, or done: marked in delivered_marks)?
bool
NewerRunOfKey(const std::string &route, const std::string &key, int64_t id)
{
	return SpiScalar("SELECT 1 FROM switchboard.delivered_marks m WHERE m.route = $1 AND m.key = $2 "
	                 "AND m.change_id > $3::bigint UNION ALL "
	                 "SELECT 1 FROM switchboard.run_queue n WHERE n.route = $1 AND n.key = $2 AND n.id > $3::bigint "
	                 "AND (n.started_at IS NOT NULL OR n.state <> 'pending') LIMIT 1",
	                 {route, key, Num(id)})
	    .has_value();
}

namespace {

// Of the runs the round locked, those that are not the oldest unfinished run of their key any
// more, read after the locks (a statement of its own: what others committed meanwhile): true for
// one a newer run of its key has started before (or was done: delivered_marks), which is stale,
// false for one an older run of its key is unfinished before, which waits. The round chose them
// from a snapshot taken before the locks: retry(id) may have made an older run pending since
// (it locks the newer runs of the key, so it cannot do so once one of them is started).
// Index-backed: delivered_marks by (route, key), the unfinished runs by run_queue_active.
std::map<int64_t, bool>
OutOfOrder(const std::vector<SpiRow> &locked)
{
	std::map<int64_t, bool> found;
	if (locked.empty())
		return found;
	std::string list = "{";
	for (size_t i = 0; i < locked.size(); i++)
		list += (i ? "," : "") + *locked[i][0];
	list += "}";
	SpiResult r = SpiExecPrepared(
	    "SELECT d.id, s.stale FROM switchboard.run_queue d CROSS JOIN LATERAL (SELECT "
	    "EXISTS (SELECT 1 FROM switchboard.delivered_marks m WHERE m.route = d.route AND m.key = d.key "
	    "AND m.change_id > d.id) OR EXISTS (SELECT 1 FROM switchboard.run_queue n WHERE n.route = d.route "
	    "AND n.key = d.key AND n.id > d.id AND n.state IN ('pending', 'running', 'waiting') "
	    "AND (n.started_at IS NOT NULL OR n.state <> 'pending')) AS stale) s "
	    "WHERE d.id = ANY($1::bigint[]) AND d.key IS NOT NULL AND (s.stale OR EXISTS (SELECT 1 FROM "
	    "switchboard.run_queue o WHERE o.route = d.route AND o.key = d.key AND o.id < d.id "
	    "AND o.state IN ('pending', 'running', 'waiting')))",
	    {list});
	for (const auto &row : r.rows)
		found.emplace(std::stoll(*row[0]), row[1] == SpiText("t"));
	return found;
}

// A run a newer run of its key has overtaken (retried as that one started): running it would
// apply older data after newer. Settled as Adopt settles a stale change: gone, and said.
void
SettleStale(int64_t id)
{
	SpiExecPrepared("WITH gone AS (DELETE FROM switchboard.run_queue WHERE id = $1::bigint "
	                "RETURNING route, key, op, id) "
	                "INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, error) "
	                "SELECT route, key, op, id, 'skipped', 'a newer change of its key has run; running this one "
	                "would apply older data after newer' FROM gone",
	                {Num(id)});
}

} // namespace

// The one set of routes held by the database's worker (pg/route_budget.h): the push path's
// and the runs'.
void
RunExecutor::HoldBack(const std::string &route, int64_t ms)
{
	WorkerRouteHolds().Hold(route, SteadyMs() + ms);
}

namespace {

std::string
TextArray(const std::vector<std::string> &items)
{
	return ArrayLiteral(std::vector<SpiText>(items.begin(), items.end()));
}

} // namespace

size_t
RunExecutor::Adopt()
{
	// The routes held are left out; the deferred ones (their budget ran out last round with
	// changes left) come after every other route's changes.
	RouteHolds &holds = WorkerRouteHolds();
	const int64_t now = SteadyMs();
	std::vector<std::string> held = holds.Held(now), deferred = holds.Deferred(now);
	std::vector<std::string> left_out = held;
	left_out.insert(left_out.end(), deferred.begin(), deferred.end());
	const auto fetch = [](const std::string &routes, const std::string &list, size_t limit) {
		return SpiExecPrepared(
		    "SELECT q.id, q.route, q.op, q.new::text, q.old::text, q.captured_at::text, q.last_error IS NOT NULL "
		    "FROM switchboard.queue q JOIN switchboard.routes r ON r.name = q.route AND r.enabled "
		    "WHERE q.state = 'pending' AND " +
		        routes +
		        " AND EXISTS (SELECT 1 FROM switchboard.steps s WHERE s.route = q.route) "
		        // The route locked too: one being deleted (or renamed) waits for these runs to be
		        // committed and takes them along, instead of leaving them to a later route of its name.
		        "ORDER BY q.id LIMIT $2::int FOR UPDATE OF q SKIP LOCKED FOR KEY SHARE OF r SKIP LOCKED",
		    {list, Num(static_cast<int64_t>(limit))});
	};
	constexpr size_t kAdoptLimit = 1000;
	SpiResult r = fetch("q.route <> ALL($1::pg_catalog.text[])", TextArray(left_out), kAdoptLimit);
	if (!deferred.empty() && r.rows.size() < kAdoptLimit) {
		SpiResult more = fetch("q.route = ANY($1::pg_catalog.text[])", TextArray(deferred),
		                       kAdoptLimit - r.rows.size());
		r.rows.insert(r.rows.end(), more.rows.begin(), more.rows.end());
	}
	if (r.rows.empty())
		return 0;
	RoundCache cache;
	// Set-based: one INSERT of every adopted run, one DELETE of the changes they came from.
	Json ids = Json::array(), routes = Json::array(), keys = Json::array(), ops = Json::array(), news = Json::array(),
	     olds = Json::array(), ats = Json::array(), states = Json::array(), positions = Json::array(),
	     firsts = Json::array(), errors = Json::array();
	std::string gone = "{";
	Json dead = Json::array(), stale = Json::array();
	size_t adopted = 0;
	// Route by route (each route's changes in queue order), its filters and key within one
	// budget of route_sql_timeout for the round (pg/route_budget.h).
	std::vector<std::pair<std::string, std::vector<size_t>>> groups;
	{
		std::map<std::string, size_t> index;
		for (size_t i = 0; i < r.rows.size(); i++) {
			auto [it, added] = index.emplace(*r.rows[i][1], groups.size());
			if (added)
				groups.emplace_back(*r.rows[i][1], std::vector<size_t>());
			groups[it->second].second.push_back(i);
		}
	}
	for (const auto &[route, members] : groups) {
		RouteCache &rc = cache.Route(route);
		if (!rc.def) {
			HoldBack(route); // its changes wait in the queue, without filling the next rounds' pages
			continue;
		}
		RouteDef keyed = *rc.def;
		keyed.mappings.clear(); // the key and the filters; mappings are the deliver step's
		std::vector<Translation> translated;
		std::string cut_off, slow, transient;
		{
			RouteSqlBudget budget(route);
			double ms_per_row = 0;
			for (size_t i : members) {
				if (NextChunk(1, 1, ms_per_row, budget.RemainingMs()) == 0) {
					cut_off = "its budget was spent";
					break;
				}
				const SpiRow &row = r.rows[i];
				const int64_t started = SteadyMs();
				try {
					translated.push_back(
					    Translate(keyed, ParseOp(*row[2]).value_or(Op::Update), row[3], row[4], false));
				} catch (const PgError &e) {
					// Not this change's fault alone (the route's expressions are slow, or a lock wait
					// timed out): its changes wait in the queue, and the other routes go on.
					if (!TransientError(e.sqlerrcode))
						throw;
					if (!budget.Limited() || !CancelledByTimeLimit(e.sqlerrcode, e.what()))
						transient = e.what();
					else if (translated.empty())
						slow = e.what(); // a single change took the whole budget
					else
						cut_off = e.what();
					break;
				}
				ms_per_row = std::max(ms_per_row, static_cast<double>(SteadyMs() - started));
			}
		}
		if (!slow.empty()) {
			HoldBack(route, kSlowRouteHoldMs);
			NoteRouteError(route, SlowRouteReason("its filters or key", slow));
		} else if (!transient.empty()) {
			HoldBack(route, kHoldBackMs);
			NoteRouteError(route, "held for a round (changes kept): " + transient);
		} else if (!cut_off.empty()) {
			holds.Defer(route, SteadyMs() + kDeferMs);
			NoteRouteError(route, "adopted " + std::to_string(translated.size()) + " of " +
			                          std::to_string(members.size()) +
			                          " changes within switchboard.route_sql_timeout (" +
			                          std::to_string(setting_route_sql_timeout_ms) +
			                          " ms for the route's filters and key a round); the rest waits for the next "
			                          "round, after the other routes' changes: " +
			                          cut_off);
		} else
			holds.Served(route);
		for (size_t m = 0; m < translated.size(); m++) {
			const SpiRow &row = r.rows[members[m]];
			const Translation &t = translated[m];
			if (t.status == Translation::Status::Failed) {
				// Its key or a filter raised: it stays a dead letter of the queue, so that retry()
				// passes it through the filters again (a run made of it would start past them).
				dead.push_back(Json::array({*row[0], t.key.empty() ? Json() : Json(t.key), t.error}));
				adopted++;
				continue;
			}
			// (last_error: it failed before, and was retried; a new change is newer than any run of
			// its key that has started, since a key's changes are queued in commit order.)
			if (t.status != Translation::Status::Filtered && *row[6] == "t" && !t.key.empty() &&
			    NewerRunOfKey(route, t.key, std::stoll(*row[0]))) {
				// A dead letter retried after a newer change of its key ran: running it now would
				// apply older data after newer. Settled as the push path settles a stale change.
				stale.push_back(Json::array({*row[0], route, t.key, *row[2]}));
				gone += (gone.size() > 1 ? "," : "") + *row[0];
				adopted++;
				continue;
			}
			if (t.status != Translation::Status::Filtered) {
				const StepDef *first = rc.steps.empty() ? nullptr : &rc.steps.front();
				bool failed = !first;
				ids.push_back(*row[0]);
				routes.push_back(route);
				keys.push_back(t.key);
				ops.push_back(*row[2]);
				news.push_back(row[3] ? Json(*row[3]) : Json());
				olds.push_back(row[4] ? Json(*row[4]) : Json());
				ats.push_back(*row[5]);
				states.push_back(failed ? "failed" : "pending");
				positions.push_back(first ? Json(first->position) : Json());
				firsts.push_back(first ? Json(first->name) : Json());
				errors.push_back(failed ? Json("the route has no steps") : Json());
			}
			gone += (gone.size() > 1 ? "," : "") + *row[0];
			adopted++;
		}
	}
	gone += "}";
	if (!dead.empty())
		SpiExecPrepared("UPDATE switchboard.queue q SET state = 'dead', key = a->>1, last_error = a->>2, "
		                "attempts = q.attempts + 1, failed_at = now(), next_attempt_at = NULL "
		                "FROM pg_catalog.jsonb_array_elements($1::jsonb) a WHERE q.id = (a->>0)::bigint",
		                {dead.dump()});
	if (!ids.empty())
		SpiExecPrepared("INSERT INTO switchboard.run_queue (id, route, key, op, new, old, captured_at, state, "
		                "position, current_step, last_error, finished_at) "
		                "SELECT (a->>0)::bigint, a->>1, nullif(a->>2, ''), a->>3, (a->>4)::json, (a->>5)::json, "
		                "(a->>6)::timestamptz, a->>7, (a->>8)::int, a->>9, a->>10, "
		                "CASE WHEN a->>7 = 'failed' THEN now() END "
		                "FROM pg_catalog.jsonb_array_elements($1::jsonb) a",
		                {[&] {
			                Json all = Json::array();
			                for (size_t i = 0; i < ids.size(); i++)
				                all.push_back(Json::array({ids[i], routes[i], keys[i], ops[i], news[i], olds[i], ats[i],
				                                           states[i], positions[i], firsts[i], errors[i]}));
			                return all.dump();
		                }()});
	if (!stale.empty())
		SpiExecPrepared("INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, error) "
		                "SELECT a->>1, a->>2, a->>3, (a->>0)::bigint, 'skipped', 'a newer change of its key has run; "
		                "running this one would apply older data after newer' "
		                "FROM pg_catalog.jsonb_array_elements($1::jsonb) a",
		                {stale.dump()});
	if (gone.size() > 2)
		SpiExecPrepared("DELETE FROM switchboard.queue WHERE id = ANY($1::bigint[])", {gone});
	return adopted;
}

namespace {

// Phase 1 of one run, inside the round's transaction: its local steps (skipped, sql,
// writeback) complete one after another; a request step comes back prepared, its attempt
// counted. *at is the step being worked on (for the caller, should this throw).
std::optional<Pending>
Prepare(RunRow run, RoundCache &cache, std::mt19937_64 &rng, std::string *at)
{
	RouteCache &rc = cache.Route(run.route);
	if (!rc.def)
		return std::nullopt; // not run now (disabled, or its definition fails its checks)
	const RouteDef &def = *rc.def;
	bool cut_short = run.state == "running"; // the worker stopped with this step in flight
	for (;;) {
		const StepDef *next = NextStep(rc.steps, run);
		if (!next && rc.steps.empty()) {
			// Its steps were deleted under it: nothing it was meant to do has happened, so it is
			// not done; failed, it stays visible (retry(id) once steps are back, or discard).
			SaveRun(run, "failed", run.current_step.empty() ? "-" : run.current_step, "the route has no steps any more",
			        0, 0);
			return std::nullopt;
		}
		if (!next) {
			SaveRun(run, "done", "", "", 0, 0);
			return std::nullopt;
		}
		const StepDef &step = *next;
		*at = step.name;
		run.position = step.position;
		if (cut_short && run.current_step == step.name && run.attempts >= MaxAttempts(step)) {
			// A step that keeps killing the worker (or the server) ends failed instead of
			// being sent again after every restart.
			StepFailed(&run, step, true,
			           "its last attempt was cut short (the worker stopped or crashed while it was in flight); " +
			               std::to_string(run.attempts) + " of " + std::to_string(MaxAttempts(step)) + " attempts used",
			           0, -1, 0, rng);
			return std::nullopt;
		}
		cut_short = false;
		const long limit = StepSqlLimitMs(step);
		std::string error;
		bool transient = false;
		if (step.run_if) {
			SpiText yes;
			if (!Evaluate(def, run, "coalesce(" + Parenthesize(*step.run_if) + ", false)", limit, &yes, &error,
			              &transient)) {
				run.attempts++;
				StepFailed(&run, step, !transient, "run_if: " + error, 0, -1, 0, rng);
				return std::nullopt;
			}
			if (yes != SpiText("true")) {
				MarkDone(&run, step, Json(), "skipped", 0, 0);
				continue;
			}
		}
		Json input;
		if (step.input) {
			SpiText value;
			if (!Evaluate(def, run, *step.input, limit, &value, &error, &transient)) {
				run.attempts++;
				StepFailed(&run, step, !transient, "input: " + error, 0, -1, 0, rng);
				return std::nullopt;
			}
			if (value && value->size() > kMaxOutputBytes && (step.kind == "sql" || step.kind == "writeback")) {
				run.attempts++;
				StepFailed(&run, step, true, OutputTooBig(value->size()), 0, -1, 0, rng);
				return std::nullopt;
			}
			input = value ? Json::parse(*value) : Json();
		}
		if (step.kind == "sql") {
			run.attempts++;
			MarkDone(&run, step, input, "done", 0, 0);
			continue;
		}
		if (step.kind == "writeback") {
			run.attempts++;
			if (!WriteBack(def, run, input, limit, &error, &transient)) {
				StepFailed(&run, step, !transient, "writeback: " + error, 0, -1, 0, rng);
				return std::nullopt;
			}
			MarkDone(&run, step, input, "done", 0, 0);
			continue;
		}
		// A request: enrich, notify or deliver.
		std::string endpoint_name = step.endpoint ? *step.endpoint : def.endpoint.name;
		const std::optional<Endpoint> &endpoint = cache.EndpointNamed(endpoint_name);
		if (!endpoint) {
			// Disabled (or gone): wait for it, as the push path does.
			SaveRun(run, "waiting", step.name, "endpoint \"" + endpoint_name + "\" is disabled", 0, 10000);
			return std::nullopt;
		}
		Pending p{def, step, *endpoint, input, Change()};
		p.change.id = run.id;
		p.change.op = run.op;
		p.change.key = run.key.value_or("");
		p.change.occurred_at_ms = run.captured_ms;
		p.change.event_id = "sb-run-" + Num(run.id) + "-" + step.name;
		if (step.kind == "enrich")
			p.change.fields = {{"step", step.name}, {"input", input}, {"options", step.options}};
		if (step.kind == "notify") {
			p.change.fields = input;
			p.change.event_type = def.name + "." + step.name;
		}
		if (step.kind == "deliver") {
			if (!MappedFields(def, run, limit, &p.change.fields, &error, &transient)) {
				run.attempts++;
				StepFailed(&run, step, !transient, error, 0, -1, 0, rng);
				return std::nullopt;
			}
			SpiText rid = SpiScalar("SELECT remote_id FROM switchboard.remote_ids WHERE route = $1 AND key = $2",
			                        {run.route, p.change.key});
			p.change.remote_id = rid.value_or("");
		}
		// The attempt counts before the request leaves: a crash repeats this step only, and a
		// step that keeps killing the worker ends failed instead of looping (above).
		run.attempts++;
		run.step_state[step.name] = {{"state", "running"}, {"attempts", run.attempts}};
		SaveRun(run, "running", step.name, "", 0, 0);
		return p;
	}
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
				if (a.outcome == Outcome::Delivered && d.remote_id.size() > kMaxOutputBytes) {
					a.outcome = Outcome::Dead;
					a.error = OutputTooBig(d.remote_id.size());
				} else if (a.outcome == Outcome::Delivered)
					a.output = carried.value("output", Json::object());
				r.has_usage = carried.value("has_usage", false);
				r.prompt_tokens = carried.value("prompt_tokens", static_cast<int64_t>(0));
				r.completion_tokens = carried.value("completion_tokens", static_cast<int64_t>(0));
			}
			a.enriched = r;
		}
		return a;
	}
	if (p.step.kind == "notify") {
		a.output = {{"status", d.http_status}};
		return a;
	}
	a.output = {{"remote_id", d.remote_id.empty() ? Json() : Json(d.remote_id)},
	            {"created", p.change.remote_id.empty() && !d.remote_id.empty()}};
	return a;
}

// Phase 3 of one run: the answer, committed (with the round's others) before the run's next
// step starts.
void
Record(Dispatcher *dispatcher_, std::mt19937_64 &rng, RunRow run, RoundCache &cache, const Pending &p, Answer a)
{
	if (a.enriched && (a.enriched->has_usage || a.enriched->http_status == 200))
		RecordUsage(run.route, p.endpoint.name, *a.enriched);
	if (p.step.kind == "deliver" && a.outcome == Outcome::Delivered && a.output.contains("remote_id") &&
	    a.output["remote_id"].is_string())
		SpiExecPrepared("INSERT INTO switchboard.remote_ids (route, key, remote_id) VALUES ($1, $2, $3) "
		                "ON CONFLICT (route, key) DO UPDATE SET remote_id = excluded.remote_id, updated_at = now()",
		                {run.route, p.change.key, a.output["remote_id"].get<std::string>()});
	if (a.outcome == Outcome::Delivered) {
		MarkDone(&run, p.step, a.output, "done", a.status, a.latency);
		RouteCache &rc = cache.Route(run.route);
		SaveDone(&run, rc.def ? rc.steps : std::vector<StepDef>{p.step}, a.status);
	} else {
		if (!a.attempted) {
			run.attempts = std::max(0, run.attempts - 1);
			a.retry_after = std::max<long>(200, dispatcher_->EndpointReadyAt(p.endpoint.name) - NowMs());
		}
		StepFailed(&run, p.step, a.outcome == Outcome::Dead, a.error, a.status, a.retry_after, a.latency, rng);
	}
}

} // namespace

bool
RunsWanted()
{
	// Cheap, and asked inside a transaction the worker opens anyway: an idle database whose
	// routes have no steps pays no transaction of its own for runs.
	SpiText wanted = SpiExecPrepared(
	                     "SELECT c.oid IS NOT NULL AND (EXISTS (SELECT 1 FROM switchboard.steps) OR EXISTS ("
	                     "SELECT 1 FROM switchboard.run_queue WHERE state NOT IN ('done', 'failed'))) "
	                     "FROM (SELECT NULL) x LEFT JOIN pg_catalog.pg_class c ON c.oid = "
	                     "pg_catalog.to_regclass('switchboard.run_queue')")
	                     .rows[0][0];
	return wanted == SpiText("t");
}

long
MsUntilNextRun()
{
	if (!SpiScalar("SELECT pg_catalog.to_regclass('switchboard.run_queue')"))
		return -1; // a 0.1 schema
	SpiText ms =
	    SpiExecPrepared(
	        "SELECT CASE WHEN EXISTS (SELECT 1 FROM switchboard.queue q JOIN switchboard.routes x ON x.name = q.route "
	        "AND x.enabled WHERE q.state = 'pending' "
	        "AND EXISTS (SELECT 1 FROM switchboard.steps s WHERE s.route = q.route)) THEN 0 "
	        "WHEN count(*) = 0 THEN NULL WHEN bool_or(d.next_attempt_at IS NULL) THEN 0 "
	        "ELSE greatest(0, ceil(extract(epoch FROM min(d.next_attempt_at) - clock_timestamp()) * 1000)) END::bigint "
	        "FROM switchboard.run_queue d JOIN switchboard.routes r ON r.name = d.route AND r.enabled "
	        "WHERE d.state IN ('pending', 'running', 'waiting')")
	        .rows[0][0];
	return ms ? std::stol(*ms) : -1;
}

long
RunExecutor::Round(const std::function<bool()> &should_stop)
{
	RoundCache cache;
	std::vector<std::pair<RunRow, Pending>> requests;
	bool worked = false;
	// Phase 1, in one transaction: adopt new changes, then carry every due run as far as its
	// next request (local steps complete; the request's attempt is counted). Each run in a
	// subtransaction of its own: what fails is that run's alone.
	{
		WorkerTransaction tx;
		if (!SpiScalar("SELECT pg_catalog.to_regclass('switchboard.run_queue')")) {
			tx.Commit();
			return setting_naptime_ms;
		}
		int64_t now = NowMs();
		if (now - last_prune_ms_ > 60 * 1000) {
			// Finished runs are history like deliveries: kept history_retention (failed ones
			// stay: they are dead letters).
			SpiResult pruned = SpiExecPlanned(
			    PruneByCtid("switchboard.run_queue",
			                "state = 'done' AND finished_at < now() - $1::int * interval '1 second'", 10000),
			    {std::to_string(setting_history_retention_s)}, kNoSeqScan);
			// Runs whose route is gone (deleting a route takes its runs: these outlived one by
			// TRUNCATE or triggers disabled) are never executed: dropped and said so, as when their
			// route is deleted. Chosen first, dropped in a statement of its own: a run a rename
			// carries to a route newer than the first snapshot is never among them.
			SpiResult orphans = SpiExecPrepared(
			    "SELECT coalesce(pg_catalog.array_agg(o.id), '{}')::text FROM (SELECT d.id FROM switchboard.run_queue d "
			    "WHERE NOT EXISTS (SELECT 1 FROM switchboard.routes r WHERE r.name = d.route) LIMIT 10000) o");
			SpiExecPrepared("WITH gone AS (DELETE FROM switchboard.run_queue d WHERE d.id = ANY($1::bigint[]) "
			                "AND NOT EXISTS (SELECT 1 FROM switchboard.routes r WHERE r.name = d.route) "
			                "RETURNING id, route, key, op, state, last_status) "
			                "INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, http_status, "
			                "error) SELECT route, key, op, id, 'discarded', last_status, 'route \"' || route || "
			                "'\" was deleted' FROM gone WHERE state <> 'done'",
			                {orphans.rows[0][0]});
			// A full batch: more are due, pruned again in a second (more than 10,000 runs a
			// minute finish at a thousand runs a second).
			last_prune_ms_ = pruned.processed >= 10000 ? now - 59 * 1000 : now;
		}
		// Kept until the transaction that fails it commits: the run may not even be adopted
		// again yet (its adoption was rolled back with the worker that ended).
		// (TakeStuckRun keeps it too, for the next worker should this one stop before.)
		if (const StuckRun found = TakeStuckRun(!started_); found.run != 0) {
			stuck_run_ = found.run;
			stuck_by_crash_ = found.by_crash;
		}
		started_ = true;
		const int64_t stuck = stuck_run_;
		bool stuck_settled = false;
		worked = Adopt() > 0;
		// The previous worker ended inside this run's step SQL (cut off past its time limit):
		// running the step again would end this worker too. After the adoption, which that
		// worker's round may have rolled back with it.
		if (stuck) {
			std::string ignored;
			(void) Isolated(
			    [&] {
				    // Settled once failed here, or once it is neither a run nor a queued change.
				    stuck_settled = SpiExecPrepared(
				                        "UPDATE switchboard.run_queue SET state = 'failed', last_error = $2, "
				                        "next_attempt_at = NULL, finished_at = now() "
				                        "WHERE id = $1::bigint AND state IN ('pending', 'running', 'waiting')",
				                        {Num(stuck),
				                         stuck_by_crash_
				                             ? "the server crashed " + std::to_string(kCrashesInStepSql) +
				                                   " times in a row while this run's step SQL was running (a "
				                                   "segfault, the OOM killer?); not run again: retry(id) runs it "
				                                   "again"
				                             : "the worker ended while this run's step SQL was running (it went on " +
				                                   std::to_string(StatementTimeLimit::kGraceMs / 1000) +
				                                   " s past the step's time limit, ignoring the cancel, or the "
				                                   "worker was stopped in it); not run again: retry(id) runs it again"})
				                            .processed > 0 ||
				                    !SpiScalar("SELECT 1 FROM switchboard.queue WHERE id = $1::bigint UNION ALL "
				                               "SELECT 1 FROM switchboard.run_queue WHERE id = $1::bigint "
				                               "AND state IN ('pending', 'running', 'waiting')",
				                               {Num(stuck)});
			    },
			    &ignored);
		}
		// Only the oldest unfinished run of a key is ever due: runs of a key in commit order.
		SpiResult r = SpiExecPrepared(
		    "SELECT d.id FROM (SELECT DISTINCT ON (route, key) id, route, next_attempt_at FROM switchboard.run_queue "
		    "WHERE state IN ('pending', 'running', 'waiting') ORDER BY route, key, id) d "
		    "JOIN switchboard.routes r ON r.name = d.route AND r.enabled "
		    "WHERE d.next_attempt_at IS NULL OR d.next_attempt_at <= now() ORDER BY d.id LIMIT 1000");
		std::vector<int64_t> due;
		for (const auto &row : r.rows)
			due.push_back(std::stoll(*row[0]));
		if (!due.empty()) {
			// Local steps run here one run after another, between the rounds of every route of
			// the database: past the budget the rest waits for the next round, so slow step SQL
			// (each bounded by switchboard.route_sql_timeout) delays pushes and pulls by about one
			// step's time, not by a thousand.
			const auto started = std::chrono::steady_clock::now();
			const std::vector<SpiRow> locked = LockRuns(due);
			const std::map<int64_t, bool> out_of_order = OutOfOrder(locked);
			for (const SpiRow &row : locked) {
				if (should_stop() || std::chrono::steady_clock::now() - started > kPrepareBudget)
					break;
				int64_t id = std::stoll(*row[0]);
				if (auto o = out_of_order.find(id); o != out_of_order.end()) {
					std::string error;
					if (o->second && !Isolated([&] { SettleStale(id); }, &error))
						Report(LOG, "switchboard: could not settle stale run " + Num(id) + ": " + error);
					worked = true;
					continue; // stale, or an older run of its key goes first (next round)
				}
				std::string at, error;
				std::optional<RunRow> run;
				std::optional<Pending> p;
				bool held_back = false;
				bool ok = Isolated(
				    [&] {
					    run = RunFromRow(row);
					    at = run->current_step;
					    if (!cache.Route(run->route).def) {
						    // Disabled since, or its definition fails its checks: looked at again later.
						    HoldBack(run->route);
						    SpiExecPrepared("UPDATE switchboard.run_queue SET next_attempt_at = now() + "
						                    "$2::bigint * interval '1 millisecond' WHERE id = $1::bigint",
						                    {Num(run->id), Num(kHoldBackMs)});
						    held_back = true;
						    return;
					    }
					    p = Prepare(*run, cache, *rng_, &at);
				    },
				    &error);
				if (held_back && ok)
					continue;
				worked = true;
				if (!ok) {
					FailRun(id, at, "the worker could not carry on with this step: " + error);
					continue;
				}
				if (p)
					requests.emplace_back(std::move(*run), std::move(*p));
			}
		}
		if (!requests.empty() || stuck_settled)
			CommitDurably(); // attempts counted before their requests leave
		tx.Commit();
		if (stuck_settled) {
			StuckRunSettled(stuck_run_);
			stuck_run_ = 0;
		}
	}
	if (requests.empty())
		return worked ? 0 : setting_naptime_ms;
	// Phase 2, with no transaction open: the requests of every run in one dispatch: deliver
	// steps in bulk calls per route and endpoint, enrich and notify steps one request each,
	// many in flight per endpoint within its max_concurrency and rate_limit.
	std::map<int64_t, Answer> answers;
	std::map<std::pair<std::string, std::string>, RouteBatch> batches;
	std::map<int64_t, const Pending *> by_change;
	for (auto &[run, p] : requests) {
		if (FindConnector(p.endpoint.kind) == nullptr) {
			Answer a;
			a.outcome = Outcome::Dead;
			a.error = "endpoint \"" + p.endpoint.name + "\" has unknown kind " + p.endpoint.kind;
			answers[run.id] = a;
			continue;
		}
		// One batch per route and endpoint for deliver steps, per endpoint for the others, and
		// per request timeout (the step's options.timeout_ms bounds its own requests).
		const long timeout = StepTimeLimitMs(p.step);
		std::string group = (p.step.kind == "deliver" ? p.def.name : p.step.kind) + "/" + std::to_string(timeout);
		RouteBatch &batch = batches[{p.endpoint.name, group}];
		if (batch.changes.empty()) {
			batch.endpoint = p.endpoint;
			batch.timeout_ms = timeout;
			batch.route = p.step.kind == "deliver"  ? p.def.route
			              : p.step.kind == "notify" ? Route{"notify", "notify", "", "delete"}
			                                        // every op's event is sent
			                                        : Route{"enrich", "enrich", "", "ignore"};
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
		std::vector<RouteAction> actions; // a webhook's 410 fails the step; it disables no route here
		for (const Delivery &d : dispatcher_->Deliver(list, options, should_stop, &actions)) {
			auto it = by_change.find(d.change_id);
			if (it != by_change.end())
				answers[d.change_id] = FromDelivery(*it->second, d);
		}
	}
	// Phase 3, in one transaction: each outcome recorded (in a subtransaction of its own)
	// before that run's next step starts.
	{
		WorkerTransaction tx;
		std::vector<int64_t> ids;
		for (auto &[run, p] : requests)
			ids.push_back(run.id);
		std::map<int64_t, SpiRow> current;
		for (SpiRow &row : LockRuns(ids))
			current.emplace(std::stoll(*row[0]), std::move(row));
		for (auto &[prepared, p] : requests) {
			auto row = current.find(prepared.id);
			if (row == current.end() || *row->second[11] != "running")
				continue; // discarded or retried by hand meanwhile: the answer no longer applies
			auto it = answers.find(prepared.id);
			Answer a = it == answers.end() ? Answer() : it->second;
			if (it == answers.end()) {
				a.attempted = false;
				a.error = "not sent";
			}
			std::string error;
			if (!Isolated([&] { Record(dispatcher_, *rng_, RunFromRow(row->second), cache, p, a); }, &error))
				FailRun(prepared.id, p.step.name, "the answer could not be recorded: " + error);
		}
		tx.Commit();
	}
	return 0;
}

} // namespace switchboard
