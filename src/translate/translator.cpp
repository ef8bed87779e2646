#include "translate/translator.h"
#include "http/exact_json.h"

#include <algorithm>
#include <map>

#include "pg/boundary.h"
#include "pg/as_role.h"
#include "pg/expr.h"
#include "pg/route_budget.h"
#include "pg/time_limit.h"
#include "settings.h"

extern "C" {
#include "miscadmin.h"
#include "utils/lsyscache.h"
}

namespace switchboard {

namespace {

std::string
FieldsSqlFor(const RouteDef &def)
{
	// jsonb_build_object takes at most 100 arguments: build it in chunks.
	std::vector<std::string> chunks;
	std::string current;
	int pairs = 0;
	for (const auto &m : def.mappings) {
		// No push_expr: the field is pull-only.
		if (!m.push_expr)
			continue;
		// 50 pairs are 100 arguments; the chunks are merged with jsonb ||, which loses
		// nothing as remote_field is unique per route.
		if (pairs == 50) {
			chunks.push_back("pg_catalog.jsonb_build_object(" + current + ")");
			current.clear();
			pairs = 0;
		}
		if (pairs > 0)
			current += ", ";
		current += QuoteLiteral(m.remote_field) + ", " + Parenthesize(*m.push_expr);
		pairs++;
	}
	if (pairs > 0)
		chunks.push_back("pg_catalog.jsonb_build_object(" + current + ")");
	if (chunks.empty())
		return "'{}'::jsonb";
	std::string sql;
	for (size_t i = 0; i < chunks.size(); i++)
		sql += (i ? " || " : "") + chunks[i];
	return sql;
}

// Runs sql in a subtransaction; returns false with the error text on failure.
bool
TryQuery(const std::string &sql, const std::vector<SpiText> &args, SpiResult *out, std::string *error,
         bool keep_plan = false)
{
	try {
		// A user expression that raises rolls back this try alone; the caller goes on, to the
		// next row or to the next piece while naming the one that failed.
		Subtransaction sub;
		*out = keep_plan ? SpiExecPrepared(sql, args, true) : SpiExec(sql, args, true);
		sub.Commit();
		return true;
	} catch (const PgError &e) {
		// A cancel or timeout is not the row's fault: the claim holds the route and retries.
		if (TransientError(e.sqlerrcode))
			throw;
		*error = e.what();
		return false;
	}
}

// The translated fields as JSON, every digit kept (a number a double would round goes out as
// its exact text). jsonb can hold what JSON text cannot be read back from (a number beyond a
// double's range, text that is not UTF-8 in a LATIN1 database): that row fails, alone.
bool
ParseFields(const SpiText &text, Translation *t)
{
	Json fields = ParseKeepingDigits(text.value_or("{}"));
	if (fields.is_discarded()) {
		t->status = Translation::Status::Failed;
		t->error = "the mapped fields cannot be sent as JSON (a number beyond a double's range, or text that is not "
		           "UTF-8)";
		return false;
	}
	t->fields = std::move(fields);
	return true;
}

} // namespace

std::string
MappingSql(const RouteDef &def)
{
	// Key and fields together: one statement per row, and the same SQL text for every row of
	// the route. Text out, since SPI results come back as text.
	return "SELECT " + Parenthesize(def.match_local) + "::text, (" + FieldsSqlFor(def) + ")::text" +
	       RowFromClause(def.source, "$1::json");
}

namespace {

// match_local of a row image on its own; empty when it fails or is NULL.
std::string
KeyOf(const RouteDef &def, const SpiText &image)
{
	SpiResult r;
	std::string error;
	if (!image ||
	    !TryQuery("SELECT " + Parenthesize(def.match_local) + "::text" + RowFromClause(def.source, "$1::json"), {image},
	              &r, &error))
		return "";
	return r.rows.empty() || !r.rows[0][0] ? "" : *r.rows[0][0];
}

} // namespace

Translation
Translate(const RouteDef &def, Op op, const SpiText &new_image, const SpiText &old_image, bool all_filters)
{
	Translation t;
	if (!def.source_exists) {
		t.status = Translation::Status::Failed;
		t.error = "source table of route \"" + def.name + "\" no longer exists";
		return t;
	}
	// In the worker, under the route's budget for this round (switchboard.route_sql_timeout;
	// the caller's, when it has one: TranslateBatch, adoption of runs). A DBA's preview runs
	// under the session's own statement_timeout. Whoever asks, the expressions run as the
	// route's owner.
	RouteSqlBudget budget(def.name);
	AsRole as_owner(def.owner);

	// Filters the trigger's WHEN clause held already passed, or the change would not be
	// queued; preview and resync never went through the trigger, so they evaluate all.
	std::vector<const FilterDef *> filters;
	for (const auto &f : def.filters)
		if (all_filters || !f.InWhen(op))
			filters.push_back(&f);
	if (!filters.empty()) {
		// Insert: old is a row of NULLs. Delete: new and old are both the deleted row, so a
		// filter on what the record is ("new.status = 'qualified'") lets its deletion through.
		std::vector<SpiText> args{op == Op::Delete ? old_image : new_image,
		                          op == Op::Insert ? std::nullopt : old_image};
		std::string from = NewOldFromClause(def.source, "$1::json", "$2::json");
		std::string sql = "SELECT ";
		// NULL rejects, as in a WHERE or a trigger's WHEN clause. All filters in one statement,
		// so every filter that says no is named, not just the first.
		for (size_t i = 0; i < filters.size(); i++)
			sql += (i ? ", " : "") + std::string("coalesce(") + Parenthesize(filters[i]->predicate) + ", false)";
		SpiResult r;
		std::string error;
		if (!TryQuery(sql + from, args, &r, &error)) {
			// The dead letter can be found by its key, and its retry ordered by it, even though
			// a filter failed (empty when match_local fails too).
			t.key = KeyOf(def, op == Op::Delete ? old_image : new_image);
			// Name the filter that raised.
			for (const FilterDef *f : filters) {
				SpiResult one;
				if (!TryQuery("SELECT " + Parenthesize(f->predicate) + from, args, &one, &error)) {
					t.status = Translation::Status::Failed;
					t.error = "filter \"" + f->name + "\": " + error;
					return t;
				}
			}
			// No filter fails alone: report the error of the combined statement as it came.
			t.status = Translation::Status::Failed;
			t.error = "filters: " + error;
			return t;
		}
		// No row (cannot happen with a FROM of two functions) counts as a rejection: fail closed.
		for (size_t i = 0; i < filters.size(); i++)
			if (r.rows.empty() || r.rows[0][i] != SpiText("t"))
				t.rejected_by.push_back(filters[i]->name);
		if (!t.rejected_by.empty()) {
			t.status = Translation::Status::Filtered;
			return t;
		}
	}

	SpiText image = op == Op::Delete ? old_image : new_image;
	if (!image) {
		t.status = Translation::Status::Failed;
		t.error = "the change carries no row image";
		return t;
	}
	SpiResult r;
	std::string error;
	if (!TryQuery(MappingSql(def), {image}, &r, &error)) {
		// Find the piece that raised: the key first (without it nothing else matters), then
		// each mapping on its own.
		std::string from = RowFromClause(def.source, "$1::json");
		SpiResult one;
		if (!TryQuery("SELECT " + Parenthesize(def.match_local) + "::text" + from, {image}, &one, &error)) {
			t.status = Translation::Status::Failed;
			t.error = "match_local: " + error + " (the change has no key)";
			return t;
		}
		// The key is known even though a mapping failed: the dead letter can be found by it.
		if (!one.rows.empty() && one.rows[0][0])
			t.key = *one.rows[0][0];
		for (const auto &m : def.mappings) {
			// to_jsonb, as jsonb_build_object converts each value the same way: a value whose
			// conversion raises is found here too.
			SpiResult field;
			if (m.push_expr && !TryQuery("SELECT pg_catalog.to_jsonb(" + Parenthesize(*m.push_expr) + ")" + from,
			                             {image}, &field, &error)) {
				t.status = Translation::Status::Failed;
				t.error = "mapping \"" + m.remote_field + "\": " + error;
				return t;
			}
		}
		t.status = Translation::Status::Failed;
		t.error = error;
		return t;
	}
	// A NULL key could name no remote record, nor order and coalesce the changes of a key.
	if (r.rows.empty() || !r.rows[0][0]) {
		t.status = Translation::Status::Failed;
		t.error = "match_local (" + def.match_local + ") is NULL for this row";
		return t;
	}
	t.key = *r.rows[0][0];
	ParseFields(r.rows[0][1], &t);
	return t;
}

std::string
ArrayLiteral(const std::vector<SpiText> &items)
{
	std::string out = "{";
	for (size_t i = 0; i < items.size(); i++) {
		if (i)
			out += ',';
		// Unquoted NULL is the SQL NULL; every value is quoted, so the text "NULL", commas,
		// braces and blanks come through as themselves.
		if (!items[i]) {
			out += "NULL";
			continue;
		}
		out += '"';
		for (char ch : *items[i]) {
			if (ch == '"' || ch == '\\')
				out += '\\';
			out += ch;
		}
		out += '"';
	}
	return out + "}";
}

namespace {

// All rows in one query; false when any row raised (the caller then goes row by row).
bool
TranslateSetBased(const RouteDef &def, const std::vector<PendingRow> &rows, std::vector<Translation> *out)
{
	// The rows mix operations, so a filter is evaluated when some operation leaves it to the
	// worker; below, its verdict counts only for the rows of such an operation.
	std::vector<const FilterDef *> filters;
	for (const auto &f : def.filters)
		if (!f.InWhen(Op::Insert) || !f.InWhen(Op::Update) || !f.InWhen(Op::Delete))
			filters.push_back(&f);
	std::vector<SpiText> news, olds, ops;
	for (const auto &row : rows) {
		news.push_back(row.new_image);
		olds.push_back(row.old_image);
		ops.emplace_back(OpName(row.op));
	}
	// The same new and old as Translate gives a filter: for a delete, new is the deleted row;
	// for an insert, old is a row of NULLs.
	std::string type = QualifiedName(def.source);
	std::string row_image = "CASE WHEN i.op = 'delete' THEN i.old_img ELSE i.new_img END";
	std::string sql = "SELECT m.key, m.fields";
	for (size_t k = 0; k < filters.size(); k++)
		sql += ", f.f" + std::to_string(k);
	// ROWS FROM of three unnest calls: the multi-argument unnest is a special form of the
	// unqualified name only; pg_catalog.unnest(a, b, c) does not exist.
	sql += " FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.json[]), pg_catalog.unnest($2::pg_catalog.json[]), "
	       "pg_catalog.unnest($3::pg_catalog.text[])) WITH ORDINALITY AS i(new_img, old_img, op, n)";
	if (!filters.empty()) {
		sql += " CROSS JOIN LATERAL (SELECT ";
		for (size_t k = 0; k < filters.size(); k++)
			sql += (k ? ", " : "") + std::string("coalesce(") + Parenthesize(filters[k]->predicate) + ", false) AS f" +
			       std::to_string(k);
		sql += NewOldFromClause(def.source, row_image, "CASE WHEN i.op = 'insert' THEN NULL ELSE i.old_img END") +
		       ") f";
	}
	sql += " CROSS JOIN LATERAL (SELECT " + Parenthesize(def.match_local) + "::text AS key, (" + FieldsSqlFor(def) +
	       ")::text AS fields" + RowFromClause(def.source, row_image) + ") m ORDER BY i.n";
	// Kept plan: the text depends only on the definition, so it repeats round after round.
	// ORDER BY the ordinality pairs result rows with `rows` by position.
	SpiResult r;
	std::string error;
	if (!TryQuery(sql, {ArrayLiteral(news), ArrayLiteral(olds), ArrayLiteral(ops)}, &r, &error, true)) {
		// Row by row is the slow path: say why, for whoever looks at the throughput.
		Report(DEBUG1, "route \"" + def.name + "\": translating row by row: " + error);
		return false;
	}
	// Each input yields exactly one row; if not, fall back rather than pair them wrongly.
	if (r.rows.size() != rows.size())
		return false;
	out->assign(rows.size(), Translation());
	for (size_t i = 0; i < rows.size(); i++) {
		Translation &t = (*out)[i];
		const SpiRow &row = r.rows[i];
		for (size_t k = 0; k < filters.size(); k++)
			if (!filters[k]->InWhen(rows[i].op) && row[2 + k] != SpiText("t"))
				t.rejected_by.push_back(filters[k]->name);
		if (!t.rejected_by.empty()) {
			t.status = Translation::Status::Filtered;
			continue;
		}
		if (!row[0]) {
			t.status = Translation::Status::Failed;
			t.error = "match_local (" + def.match_local + ") is NULL for this row";
			continue;
		}
		t.key = *row[0];
		ParseFields(row[1], &t);
	}
	return true;
}

// What a route's set-based statements showed will fit in its budget, route by route (worker).
std::map<std::string, size_t> learned_chunks;

// The most changes one set-based statement translates (a claim's size, kClaimLimit).
constexpr size_t kMaxChunk = 2000;

long
ElapsedSince(int64_t started_ms)
{
	return static_cast<long>(SteadyMs() - started_ms);
}

} // namespace

BatchTranslation
TranslateBatch(const RouteDef &def, const std::vector<PendingRow> &rows)
{
	BatchTranslation res;
	std::vector<Translation> &done = res.done;
	if (rows.empty())
		return res;
	if (!def.source_exists) {
		Translation failed;
		failed.status = Translation::Status::Failed;
		failed.error = "source table of route \"" + def.name + "\" no longer exists";
		done.assign(rows.size(), failed);
		return res;
	}
	// One budget for the route's SQL this round, whatever it goes through: set-based chunks, the
	// row-by-row fallback. Past it, the changes translated so far go on and the rest waits.
	RouteSqlBudget budget(def.name);
	size_t local_learned = 0;
	size_t &learned = budget.Limited() ? learned_chunks[def.name] : local_learned;
	double ms_per_row = 0; // measured this round
	bool first = true;     // the next statement is the round's first: it has the whole budget
	const auto cut_off = [&](const std::string &why) {
		res.cut_off = "translated " + std::to_string(done.size()) + " of " + std::to_string(rows.size()) +
		              " changes within switchboard.route_sql_timeout (" + std::to_string(budget.FullMs()) +
		              " ms for the route's filters, key and mappings a round); the rest waits for the next round, "
		              "after the other routes' changes" +
		              (why.empty() ? "" : ": " + why);
	};
	// A statement was cancelled by the budget: a single change on its own, with nothing
	// translated before it, is slow by itself (the route is held); otherwise the rest waits.
	const auto timed_out = [&](size_t n, const std::string &error) {
		if (n == 1 && done.empty())
			res.slow = error;
		else
			cut_off(error);
	};
	while (done.size() < rows.size()) {
		const size_t n = NextChunk(learned, rows.size() - done.size(), ms_per_row, budget.RemainingMs());
		if (n == 0) {
			cut_off("");
			break;
		}
		const std::vector<PendingRow> chunk(rows.begin() + static_cast<long>(done.size()),
		                                    rows.begin() + static_cast<long>(done.size() + n));
		std::vector<Translation> out;
		bool ok = false;
		const int64_t started = SteadyMs();
		try {
			AsRole as_owner(def.owner);
			ok = TranslateSetBased(def, chunk, &out);
		} catch (const PgError &e) {
			if (!budget.Limited() || !CancelledByTimeLimit(e.sqlerrcode, e.what()))
				throw;
			// Too many changes for one statement: the next rounds try half as many.
			if (first)
				learned = LearnChunk(n, true, ElapsedSince(started), budget.FullMs(), kMaxChunk);
			timed_out(n, e.what());
			break;
		}
		first = false;
		if (ok) {
			const long elapsed = ElapsedSince(started);
			learned = LearnChunk(n, false, elapsed, budget.FullMs(), kMaxChunk);
			ms_per_row = std::max(ms_per_row, static_cast<double>(elapsed) / static_cast<double>(n));
			for (auto &t : out)
				done.push_back(std::move(t));
			continue;
		}
		// One row raised and took the whole statement with it: row by row, each fails alone and
		// says which filter or mapping it was, within what is left of the budget.
		for (const auto &row : chunk) {
			if (NextChunk(1, 1, ms_per_row, budget.RemainingMs()) == 0) {
				cut_off("");
				return res;
			}
			const int64_t row_started = SteadyMs();
			try {
				done.push_back(Translate(def, row.op, row.new_image, row.old_image, false));
			} catch (const PgError &e) {
				if (!budget.Limited() || !CancelledByTimeLimit(e.sqlerrcode, e.what()))
					throw;
				timed_out(1, e.what());
				return res;
			}
			ms_per_row = std::max(ms_per_row, static_cast<double>(ElapsedSince(row_started)));
		}
	}
	return res;
}

} // namespace switchboard
