#include "translate/translator.h"

#include "pg/boundary.h"
#include "pg/expr.h"

namespace switchboard {

namespace {

std::string
FieldsSql(const RouteDef &def)
{
	// jsonb_build_object takes at most 100 arguments: build it in chunks.
	std::vector<std::string> chunks;
	std::string current;
	int pairs = 0;
	for (const auto &m : def.mappings) {
		if (!m.push_expr)
			continue;
		if (pairs == 50) {
			chunks.push_back("jsonb_build_object(" + current + ")");
			current.clear();
			pairs = 0;
		}
		if (pairs > 0)
			current += ", ";
		current += QuoteLiteral(m.remote_field) + ", " + Parenthesize(*m.push_expr);
		pairs++;
	}
	if (pairs > 0)
		chunks.push_back("jsonb_build_object(" + current + ")");
	if (chunks.empty())
		return "'{}'::jsonb";
	std::string sql;
	for (size_t i = 0; i < chunks.size(); i++)
		sql += (i ? " || " : "") + chunks[i];
	return sql;
}

// Runs sql in a subtransaction; returns false with the error text on failure.
bool
TryQuery(const std::string &sql, const std::vector<SpiText> &args, SpiResult *out, std::string *error)
{
	try {
		Subtransaction sub;
		*out = SpiExec(sql, args, true);
		sub.Commit();
		return true;
	} catch (const PgError &e) {
		*error = e.what();
		return false;
	}
}

} // namespace

std::string
MappingSql(const RouteDef &def)
{
	return "SELECT " + Parenthesize(def.match_local) + "::text, (" + FieldsSql(def) + ")::text" +
	       RowFromClause(def.source, "$1::json");
}

Translation
Translate(const RouteDef &def, Op op, const SpiText &new_image, const SpiText &old_image, bool all_filters)
{
	Translation t;
	if (!def.source_exists) {
		t.status = Translation::Status::Failed;
		t.error = "source table of route \"" + def.name + "\" no longer exists";
		return t;
	}

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
		for (size_t i = 0; i < filters.size(); i++)
			sql += (i ? ", " : "") + std::string("coalesce(") + Parenthesize(filters[i]->predicate) + ", false)";
		SpiResult r;
		std::string error;
		if (!TryQuery(sql + from, args, &r, &error)) {
			// Name the filter that raised.
			for (const FilterDef *f : filters) {
				SpiResult one;
				if (!TryQuery("SELECT " + Parenthesize(f->predicate) + from, args, &one, &error)) {
					t.status = Translation::Status::Failed;
					t.error = "filter \"" + f->name + "\": " + error;
					return t;
				}
			}
			t.status = Translation::Status::Failed;
			t.error = "filters: " + error;
			return t;
		}
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
		std::string from = RowFromClause(def.source, "$1::json");
		SpiResult one;
		if (!TryQuery("SELECT " + Parenthesize(def.match_local) + "::text" + from, {image}, &one, &error)) {
			t.status = Translation::Status::Failed;
			t.error = "match_local: " + error;
			return t;
		}
		for (const auto &m : def.mappings) {
			if (m.push_expr && !TryQuery("SELECT to_jsonb(" + Parenthesize(*m.push_expr) + ")" + from, {image}, &one,
			                             &error)) {
				t.status = Translation::Status::Failed;
				t.error = "mapping \"" + m.remote_field + "\": " + error;
				return t;
			}
		}
		t.status = Translation::Status::Failed;
		t.error = error;
		return t;
	}
	if (r.rows.empty() || !r.rows[0][0]) {
		t.status = Translation::Status::Failed;
		t.error = "match_local (" + def.match_local + ") is NULL for this row";
		return t;
	}
	t.key = *r.rows[0][0];
	t.fields = Json::parse(r.rows[0][1].value_or("{}"));
	return t;
}

} // namespace switchboard
