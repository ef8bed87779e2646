// SQL expressions written by users (mappings, filters, match keys, resync conditions):
// checked to be exactly one expression, then parsed and type-checked in the very form in which
// switchboard evaluates them, so what is accepted at write time runs at delivery time.
#pragma once

#include <string>
#include <vector>

#include "pg/prelude.h"

namespace switchboard {

// Wraps an expression so that a trailing "--" comment cannot swallow what follows.
std::string Parenthesize(const std::string &expr);

// Throws PgError unless text is one SQL expression and nothing more.
void CheckSingleExpression(const std::string &text);

// "NULL::<source>", with the table's OID in a comment (kept plans of a replaced table).
std::string RowTypeNull(Oid source);
// "FROM json_populate_record(NULL::<source>, <image>) AS <alias>": the row a mapping sees.
std::string RowFromClause(Oid source, const std::string &image_sql);
// "FROM json_populate_record(...) AS new, json_populate_record(...) AS old": what a filter sees.
std::string NewOldFromClause(Oid source, const std::string &new_sql, const std::string &old_sql);
std::string QualifiedName(Oid relid);
std::string RelationAlias(Oid relid);

// Type of expr evaluated over a row of source; throws PgError when it does not parse or type-check.
Oid AnalyzeRowExpression(Oid source, const std::string &expr);

// Type of expr evaluated with "value jsonb" in scope (the pull side of a mapping).
Oid AnalyzeValueExpression(const std::string &expr, Oid target_type, int32 target_typmod);

struct PredicateInfo {
	bool refs_new = false;
	bool refs_old = false;
	// Can run in the trigger's WHEN clause: nothing that may raise (only leakproof functions
	// and operators, no cast through text, no subquery), nothing volatile. Others are
	// evaluated by the worker, so a filter never fails the application's write (SPEC §3).
	bool when_safe = false;
};
PredicateInfo AnalyzePredicate(Oid source, const std::string &predicate);

// An expression of a route with steps (SPEC §7): its type and the steps whose outputs it reads.
struct StepExprInfo {
	Oid type = InvalidOid;
	// Names read as steps->'name', steps->>'name', steps#>'{name,...}' or steps#>>'{name,...}'.
	std::vector<std::string> step_refs;
	// steps used in any other way (passed whole, a computed name): which outputs it reads
	// cannot be known, so validation refuses it.
	bool steps_opaque = false;
};

// "FROM ... AS new, ... AS old, (SELECT <steps_sql>::jsonb AS steps) AS sb_steps": what a step
// expression (run_if, input) sees.
std::string StepsFromClause(Oid source, const std::string &new_sql, const std::string &old_sql,
                            const std::string &steps_sql);
// "FROM ... AS <table>, (SELECT <steps_sql>::jsonb AS steps) AS sb_steps": what a mapping of a
// route with steps sees.
std::string RowStepsFromClause(Oid source, const std::string &image_sql, const std::string &steps_sql);

// A step's run_if or input: over new, old and steps (jsonb).
StepExprInfo AnalyzeStepExpression(Oid source, const std::string &expr);
// A mapping's push_expr of a route with steps: over the row and steps (jsonb).
StepExprInfo AnalyzeRowStepsExpression(Oid source, const std::string &expr);

} // namespace switchboard
