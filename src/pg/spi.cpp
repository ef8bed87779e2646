#include "pg/spi.h"

#include <map>

#include "pg/boundary.h"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
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
	SPI_finish();
}

namespace {

// Plans kept by SpiExecPrepared; the map is allocated once and never freed (no static
// destructors). Statements built per route (translations) make the set of texts open-ended,
// so past kMaxPlans the kept plans are dropped and prepared again as they are used; never
// while one of them is executing (a statement can fire a trigger that runs another).
std::map<std::string, SPIPlanPtr> *prepared = nullptr;
constexpr size_t kMaxPlans = 256;
int executing_kept_plans = 0;

void
DropKeptPlans()
{
	for (auto &entry : *prepared)
		Guarded([&] { SPI_freeplan(entry.second); });
	prepared->clear();
}

// Counts a kept plan's execution, also when it ends with an error.
struct ExecutingKeptPlan {
	ExecutingKeptPlan() { executing_kept_plans++; }
	~ExecutingKeptPlan() { executing_kept_plans--; }
};

SpiResult
Execute(const std::string &sql, const std::vector<SpiText> &args, bool read_only, bool keep_plan)
{
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
			prepared = new std::map<std::string, SPIPlanPtr>();
		auto it = prepared->find(sql);
		if (it == prepared->end() && prepared->size() >= kMaxPlans && executing_kept_plans == 0)
			DropKeptPlans();
		if (it == prepared->end()) {
			SPIPlanPtr plan = nullptr;
			Guarded([&] {
				plan = SPI_prepare(sql.c_str(), nargs, types.data());
				if (plan == nullptr)
					elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
				SPI_keepplan(plan);
			});
			it = prepared->emplace(sql, plan).first;
		}
		ExecutingKeptPlan executing;
		Guarded([&] { rc = SPI_execute_plan(it->second, values.data(), nulls.data(), read_only, 0); });
	} else {
		Guarded([&] {
			rc = SPI_execute_with_args(sql.c_str(), nargs, types.data(), values.data(), nulls.data(), read_only, 0);
		});
	}
	if (rc < 0)
		Fail(ERRCODE_INTERNAL_ERROR, "SPI failed (" + std::to_string(rc) + ") running: " + sql);

	SpiResult result;
	result.processed = SPI_processed;
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
	const char *value = nullptr;
	Guarded([&] { value = text_to_cstring(PG_GETARG_TEXT_PP(n)); });
	return value;
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
