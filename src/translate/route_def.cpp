#include "translate/route_def.h"

#include <chrono>
#include <map>

#include "config/validate.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "settings.h"

extern "C" {
#include "miscadmin.h"
#include "utils/lsyscache.h"
}

namespace switchboard {

bool
FilterDef::InWhen(Op op) const
{
	if (!when_safe)
		return false;
	// A WHEN clause of an INSERT trigger cannot read OLD, nor a DELETE trigger's NEW; such
	// filters see a row of NULLs there, which the translator supplies.
	if (op == Op::Insert && refs_old)
		return false;
	if (op == Op::Delete && refs_new)
		return false;
	return true;
}

bool
RouteDef::NeedsOldImage() const
{
	for (const auto &f : filters)
		if (f.refs_old && !f.InWhen(Op::Update))
			return true;
	return false;
}

std::optional<Op>
ParseOp(const std::string &op)
{
	if (op == "insert")
		return Op::Insert;
	if (op == "update")
		return Op::Update;
	if (op == "delete")
		return Op::Delete;
	return std::nullopt;
}

std::vector<Op>
ParseOperations(const std::string &text_array)
{
	std::vector<Op> ops;
	std::string token;
	for (char ch : text_array + ",") {
		if (ch == '{' || ch == '}' || ch == '"' || ch == ' ')
			continue;
		if (ch == ',') {
			if (!token.empty()) {
				auto op = ParseOp(token);
				if (!op)
					Fail(ERRCODE_INVALID_PARAMETER_VALUE, "unknown operation \"" + token + "\"", "",
					     "operations are insert, update and delete");
				ops.push_back(*op);
			}
			token.clear();
			continue;
		}
		token += ch;
	}
	return ops;
}

namespace {

// Definitions that passed StoredRouteProblem, by the text they were loaded from: a round
// re-checks only what changed, and everything again after a while (privileges change too).
struct CheckedDefinition {
	std::string problem;
	int64_t checked_at_ms = 0;
};
std::map<std::string, CheckedDefinition> checked_definitions;
constexpr int64_t kRecheckMs = 10 * 1000;
constexpr size_t kMaxCheckedDefinitions = 1000;

int64_t
SteadyMs()
{
	using namespace std::chrono;
	return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// Filter analyses (which side a filter reads, whether the trigger's WHEN clause holds it), by
// definition fingerprint: parsing and analysing every filter as the owner in every round was
// a fixed cost of each delivery round at a trickle of commits. Worker only, renewed with the
// definition checks.
struct AnalysedFilters {
	std::vector<FilterDef> filters;
	int64_t analysed_at_ms = 0;
};
std::map<std::string, AnalysedFilters> analysed_filters;

std::vector<FilterDef>
AnalyseFilters(const RouteDef &def, const SpiResult &rows, const std::string &fingerprint)
{
	int64_t now = SteadyMs();
	if (IsBackgroundWorker) {
		auto it = analysed_filters.find(fingerprint);
		if (it != analysed_filters.end() && now - it->second.analysed_at_ms <= kRecheckMs)
			return it->second.filters;
	}
	std::vector<FilterDef> filters;
	for (auto &fr : rows.rows) {
		FilterDef filter;
		filter.name = *fr[0];
		filter.predicate = *fr[1];
		if (def.source_exists) {
			AsRole as_owner(def.owner);
			PredicateInfo info = AnalyzePredicate(def.source, filter.predicate);
			filter.refs_new = info.refs_new;
			filter.refs_old = info.refs_old;
			filter.when_safe = info.when_safe;
		}
		filters.push_back(std::move(filter));
	}
	if (IsBackgroundWorker) {
		if (analysed_filters.size() >= kMaxCheckedDefinitions)
			analysed_filters.clear();
		analysed_filters[fingerprint] = AnalysedFilters{filters, now};
	}
	return filters;
}

void
CheckDefinition(const std::string &name, const std::string &fingerprint)
{
	// Only the worker, which loads the same routes round after round, keeps results; any
	// other caller (preview, resync, attaching triggers) checks every time.
	if (!IsBackgroundWorker) {
		std::string problem = StoredRouteProblem(name);
		if (!problem.empty())
			Fail(ERRCODE_INVALID_OBJECT_DEFINITION, "route \"" + name + "\" is not used: " + problem, "",
			     "fix the definition; its changes are kept until then");
		return;
	}
	int64_t now = SteadyMs();
	auto it = checked_definitions.find(fingerprint);
	if (it == checked_definitions.end() || now - it->second.checked_at_ms > kRecheckMs) {
		if (checked_definitions.size() >= kMaxCheckedDefinitions)
			checked_definitions.clear();
		CheckedDefinition checked{StoredRouteProblem(name), now};
		it = checked_definitions.insert_or_assign(fingerprint, checked).first;
	}
	if (!it->second.problem.empty())
		Fail(ERRCODE_INVALID_OBJECT_DEFINITION, "route \"" + name + "\" is not used: " + it->second.problem, "",
		     "fix the definition; its changes are kept until then");
}

void
AddField(std::string *fingerprint, const SpiText &value)
{
	// Length-prefixed, so that no two different definitions print the same.
	*fingerprint += value ? std::to_string(value->size()) + ":" + *value : "-";
}

} // namespace

bool
SchemaPredatesOwners()
{
	return !SpiScalar(
	            "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'switchboard.routes'::pg_catalog.regclass "
	            "AND attname = 'owner' AND NOT attisdropped")
	            .has_value();
}

std::optional<RouteDef>
FindRoute(const std::string &name, bool with_secret)
{
	bool legacy = SchemaPredatesOwners();
	// Kept plans (SpiExecPrepared): the worker loads every route it delivers for in every round.
	SpiResult r = SpiExecPrepared("SELECT r.source::oid, r.direction, r.operations::text, r.match_local, r.enabled, "
	                              "r.remote_object, coalesce(r.match_remote, ''), r.on_delete, "
	                              "e.name, e.kind, e.base_url, e.options::text, e.secret, "
	                              "EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = r.source), " +
	                                  std::string(
	                                      legacy ? "(SELECT relowner FROM pg_catalog.pg_class c WHERE c.oid = r.source)"
	                                             : "r.owner::oid") +
	                                  ", "
	                                  "r.conflict, r.pull_interval::text, e.enabled, " +
	                                  std::string(legacy ? "NULL::oid" : "e.owner::oid") +
	                                  " "
	                                  "FROM switchboard.routes r JOIN switchboard.endpoints e ON e.name = r.endpoint "
	                                  "WHERE r.name = $1",
	                              {name});
	if (r.rows.empty())
		return std::nullopt;
	const SpiRow &row = r.rows[0];
	RouteDef def;
	def.name = name;
	def.source = row[0] ? static_cast<Oid>(std::stoul(*row[0])) : InvalidOid;
	def.direction = *row[1];
	def.operations = ParseOperations(*row[2]);
	def.match_local = *row[3];
	def.enabled = *row[4] == "t";
	def.route.name = name;
	def.route.remote_object = *row[5];
	def.route.match_remote = *row[6];
	def.route.on_delete = *row[7];
	def.endpoint.name = *row[8];
	def.endpoint.kind = *row[9];
	def.endpoint.base_url = *row[10];
	def.endpoint.options = Json::parse(*row[11]);
	def.source_exists = *row[13] == "t";
	def.owner = row[14] ? static_cast<Oid>(std::stoul(*row[14])) : InvalidOid;
	def.has_secret = row[12].has_value();
	// Only the owner (and the worker) may read secrets; configuration paths never ask.
	if (with_secret && row[12]) {
		SpiResult secret = SpiExecPrepared("SELECT value FROM switchboard.secrets WHERE name = $1", {*row[12]});
		def.endpoint.secret = secret.rows.empty() ? "" : secret.rows[0][0].value_or("");
	}

	SpiResult m = SpiExecPrepared("SELECT remote_field, push_expr, pull_column, pull_expr FROM switchboard.mappings "
	                              "WHERE route = $1 ORDER BY remote_field",
	                              {name});
	for (auto &mr : m.rows)
		def.mappings.push_back(MappingDef{*mr[0], mr[1], mr[2], mr[3]});

	SpiResult f = SpiExecPrepared("SELECT name, predicate FROM switchboard.filters WHERE route = $1 ORDER BY name",
	                              {name});
	// The policy the checks read besides the rows: a reload of allowed_hosts checks again.
	std::string fingerprint = name;
	AddField(&fingerprint, std::string(setting_allowed_hosts ? setting_allowed_hosts : ""));
	for (const auto &v : row)
		AddField(&fingerprint, v);
	for (const auto &mr : m.rows)
		for (const auto &v : mr)
			AddField(&fingerprint, v);
	for (const auto &fr : f.rows)
		for (const auto &v : fr)
			AddField(&fingerprint, v);
	// A route whose table was dropped is only kept as a record; there is nothing to check.
	if (def.source_exists && !legacy)
		CheckDefinition(name, fingerprint);
	def.filters = AnalyseFilters(def, f, fingerprint);
	return def;
}

RouteDef
LoadRoute(const std::string &name, bool with_secret)
{
	auto def = FindRoute(name, with_secret);
	if (!def)
		Fail(ERRCODE_UNDEFINED_OBJECT, "route \"" + name + "\" does not exist");
	return std::move(*def);
}

} // namespace switchboard
