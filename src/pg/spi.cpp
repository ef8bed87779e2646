#include "pg/spi.h"

#include <map>

#include "pg/boundary.h"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
}

namespace switchboard {

SpiConnection::SpiConnection()
{
	Guarded([] {
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
	});
}

SpiConnection::~SpiConnection()
{
	// Not Guarded, as a destructor may not throw: SPI_finish reports misuse by its return
	// code, not by raising.
	SPI_finish();
}

namespace {

// Plans kept by SpiExecPrepared; the map is allocated once and never freed (no static
// destructors). Statements built per route (translations) make the set of texts open-ended,
// so past kMaxPlans the least recently used plan makes room; never while a kept plan is
// executing (a statement can fire a trigger that runs another).
struct KeptPlan {
	SPIPlanPtr plan;
	uint64_t last_used;
};
std::map<std::string, KeptPlan> *prepared = nullptr;
constexpr size_t kMaxPlans = 256;
int executing_kept_plans = 0;
uint64_t plan_uses = 0;

void
EvictLeastRecentlyUsedPlan()
{
	auto oldest = prepared->begin();
	for (auto it = prepared->begin(); it != prepared->end(); ++it)
		if (it->second.last_used < oldest->second.last_used)
			oldest = it;
	SPIPlanPtr plan = oldest->second.plan;
	prepared->erase(oldest); // first: a failing free leaves no dangling entry behind
	Guarded([&] { SPI_freeplan(plan); });
}

// Counts a kept plan's execution, also when it ends with an error.
struct ExecutingKeptPlan {
	ExecutingKeptPlan() { executing_kept_plans++; }
	~ExecutingKeptPlan() { executing_kept_plans--; }
};

// The plan shapes that PlanSettings turns off (enable_seqscan and the like).
int
RunPlan(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, const std::vector<const char *> &disabled)
{
	if (disabled.empty())
		return SPI_execute_plan(plan, values, nulls, read_only, 0);
	// A setting level of its own, as a function with a SET clause opens: planned (a first
	// execution, or a replan after an invalidation) and run with these plan shapes off, and
	// the worker's own settings back afterwards, also when the statement raises.
	volatile int rc = 0;
	const volatile int level = NewGUCNestLevel();
	PG_TRY();
	{
		// jit too: a plan shape turned off costs 10^10, past any jit_above_cost, and compiling
		// made a statement of a millisecond take a hundred.
		for (const char *name : disabled)
			(void) set_config_option(name, "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		rc = SPI_execute_plan(plan, values, nulls, read_only, 0);
	}
	PG_FINALLY();
	{
		AtEOXact_GUC(false, level);
	}
	PG_END_TRY();
	return rc;
}

SpiResult
Execute(const std::string &sql, const std::vector<SpiText> &args, bool read_only, bool keep_plan,
        const std::vector<const char *> &disabled = {})
{
	// Every parameter goes in as text and the SQL casts it: one calling convention for all
	// statements, and a NULL stays a NULL of any type.
	const int nargs = static_cast<int>(args.size());
	std::vector<Oid> types(nargs, TEXTOID);
	std::vector<Datum> values(nargs);
	std::vector<char> nulls(nargs, ' ');
	for (int i = 0; i < nargs; i++) {
		if (args[i])
			Guarded([&] { values[i] = CStringGetTextDatum(args[i]->c_str()); });
		else
			nulls[i] = 'n';
	}

	int rc = 0;
	if (keep_plan) {
		if (prepared == nullptr)
			prepared = new std::map<std::string, KeptPlan>();
		auto it = prepared->find(sql);
		// Only on a miss: `it` is end() either way, so no iterator is left pointing into the
		// cleared map.
		if (it == prepared->end() && prepared->size() >= kMaxPlans && executing_kept_plans == 0)
			EvictLeastRecentlyUsedPlan();
		if (it == prepared->end()) {
			SPIPlanPtr plan = nullptr;
			Guarded([&] {
				plan = SPI_prepare(sql.c_str(), nargs, types.data());
				if (plan == nullptr)
					elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
				// Out of the SPI connection's memory, so the plan outlives SPI_finish and the
				// transaction.
				SPI_keepplan(plan);
			});
			it = prepared->emplace(sql, KeptPlan{plan, 0}).first;
		}
		// Held across the call, so a nested statement (fired by a trigger of this one) does
		// not free the plan that is running.
		ExecutingKeptPlan executing;
		it->second.last_used = ++plan_uses;
		Guarded([&] { rc = RunPlan(it->second.plan, values.data(), nulls.data(), read_only, disabled); });
	} else {
		Guarded([&] {
			rc = SPI_execute_with_args(sql.c_str(), nargs, types.data(), values.data(), nulls.data(), read_only, 0);
		});
	}
	// A negative code is SPI misuse; errors of the statement itself raised inside Guarded.
	if (rc < 0)
		Fail(ERRCODE_INTERNAL_ERROR, "SPI failed (" + std::to_string(rc) + ") running: " + sql);

	// Copied out: the tuple table and the strings of SPI_getvalue live in the connection's
	// memory, which the next statement or SPI_finish frees.
	SpiResult result;
	result.processed = SPI_processed;
	// No tuple table for a statement that returns no rows (DML without RETURNING, utility).
	if (SPI_tuptable == nullptr)
		return result;
	TupleDesc desc = SPI_tuptable->tupdesc;
	for (int c = 0; c < desc->natts; c++)
		result.columns.emplace_back(NameStr(TupleDescAttr(desc, c)->attname));
	result.rows.reserve(SPI_processed);
	for (uint64_t r = 0; r < SPI_processed; r++) {
		SpiRow row;
		row.reserve(desc->natts);
		HeapTuple tuple = SPI_tuptable->vals[r];
		for (int c = 1; c <= desc->natts; c++) {
			char *value = nullptr;
			Guarded([&] { value = SPI_getvalue(tuple, desc, c); });
			if (value == nullptr)
				row.emplace_back(std::nullopt);
			else
				row.emplace_back(std::string(value));
		}
		result.rows.push_back(std::move(row));
	}
	return result;
}

} // namespace

SpiResult
SpiExec(const std::string &sql, const std::vector<SpiText> &args, bool read_only)
{
	return Execute(sql, args, read_only, false);
}

SpiResult
SpiExecPrepared(const std::string &sql, const std::vector<SpiText> &args, bool read_only)
{
	return Execute(sql, args, read_only, true);
}

SpiResult
SpiExecPlanned(const std::string &sql, const std::vector<SpiText> &args, const std::vector<const char *> &disabled)
{
	return Execute(sql, args, false, true, disabled);
}

SpiText
SpiScalar(const std::string &sql, const std::vector<SpiText> &args)
{
	SpiResult result = SpiExec(sql, args);
	if (result.rows.empty() || result.rows[0].empty())
		return std::nullopt;
	return result.rows[0][0];
}

std::string
TextArg(FunctionCallInfo fcinfo, int n)
{
	// Guarded: detoasting reads storage and can raise.
	const char *value = nullptr;
	Guarded([&] { value = text_to_cstring(PG_GETARG_TEXT_PP(n)); });
	return value;
}

std::string
PruneByCtid(const std::string &table, const std::string &cond, int limit)
{
	return "DELETE FROM " + table + " WHERE ctid OPERATOR(pg_catalog.=) ANY(ARRAY(SELECT ctid FROM " + table +
	       " WHERE " + cond + " LIMIT " + std::to_string(limit) + ")) AND " + cond;
}

std::string
QuoteIdent(const std::string &ident)
{
	const char *quoted = nullptr;
	Guarded([&] { quoted = quote_identifier(ident.c_str()); });
	return quoted;
}

std::string
QuoteLiteral(const std::string &text)
{
	std::string out = "'";
	bool backslash = false;
	for (char ch : text) {
		if (ch == '\'')
			out += '\'';
		if (ch == '\\')
			backslash = true;
		out += ch;
	}
	out += '\'';
	// As quote_literal() does: with a backslash, the E'' form with backslashes doubled reads
	// the same whatever standard_conforming_strings is set to.
	if (backslash) {
		std::string escaped = "E'";
		for (char ch : text) {
			if (ch == '\'' || ch == '\\')
				escaped += ch;
			escaped += ch;
		}
		return escaped + "'";
	}
	return out;
}

} // namespace switchboard
