#include "pg/expr.h"

#include "pg/boundary.h"
#include "pg/spi.h"

extern "C" {
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/typcache.h"
#include "common/hashfn.h"
#include "utils/lsyscache.h"
}

namespace switchboard {

std::string
Parenthesize(const std::string &expr)
{
	return "(\n" + expr + "\n)";
}

void
CheckSingleExpression(const std::string &text)
{
	// Parsed in the shape it is later embedded in, because text can close the parenthesis
	// itself: "x) FROM other WHERE (true" or "1); DROP TABLE t; SELECT (1" parse well there.
	// Only a bare one-column SELECT with no clause of its own is an expression. A raw parse
	// looks up no catalog, so nothing of the text is resolved before its shape is known.
	bool ok = false;
	std::string sql = "SELECT " + Parenthesize(text);
	Guarded([&] {
		List *stmts = raw_parser(sql.c_str(), RAW_PARSE_DEFAULT);
		// A ";" inside the text made a second statement.
		if (list_length(stmts) != 1)
			return;
		Node *node = linitial_node(RawStmt, stmts)->stmt;
		if (!IsA(node, SelectStmt))
			return;
		SelectStmt *s = (SelectStmt *) node;
		ok = s->op == SETOP_NONE && list_length(s->targetList) == 1 && s->fromClause == NIL &&
		     s->whereClause == nullptr && s->groupClause == NIL && s->havingClause == nullptr &&
		     s->windowClause == NIL && s->sortClause == NIL && s->limitCount == nullptr && s->limitOffset == nullptr &&
		     s->lockingClause == NIL && s->withClause == nullptr && s->intoClause == nullptr &&
		     s->distinctClause == NIL && s->valuesLists == NIL;
	});
	if (!ok)
		Fail(ERRCODE_SYNTAX_ERROR, "is not a single SQL expression");
}

std::string
QualifiedName(Oid relid)
{
	const char *name = nullptr;
	// Schema-qualified: generated SQL runs under kRouteSearchPath, which need not contain the
	// table's schema.
	Guarded([&] {
		char *rel = get_rel_name(relid);
		// Gone between loading the route and now: a clean error rather than a NULL name.
		if (rel == nullptr)
			ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation with OID %u does not exist", relid)));
		name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), rel);
	});
	return name;
}

std::string
RelationAlias(Oid relid)
{
	// The row is aliased with the table's own name, so a column qualified by it
	// (contacts.email) resolves as in a query on the table.
	const char *alias = nullptr;
	Guarded([&] {
		char *rel = get_rel_name(relid);
		if (rel == nullptr)
			ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation with OID %u does not exist", relid)));
		alias = quote_identifier(rel);
	});
	return alias;
}

// NULL of the table's row type. A kept plan (SpiExecPrepared) holds the row type as it was
// planned, but is not invalidated when the table is replaced by one of the same name or its
// columns change (a type named in a cast is no dependency the plan cache tracks): the OID and
// a hash of the columns (names, types, typmods) in the text make either a new statement.
std::string
RowTypeNull(Oid source)
{
	uint32 shape = 0;
	Guarded([&] {
		TupleDesc desc = lookup_rowtype_tupdesc(get_rel_type_id(source), -1);
		for (int i = 0; i < desc->natts; i++) {
			Form_pg_attribute a = TupleDescAttr(desc, i);
			uint32 parts[3] = {a->attisdropped
			                       ? 0
			                       : hash_bytes(reinterpret_cast<const unsigned char *>(NameStr(a->attname)),
			                                    strlen(NameStr(a->attname))),
			                   a->atttypid, static_cast<uint32>(a->atttypmod)};
			shape = hash_combine(shape, hash_bytes(reinterpret_cast<const unsigned char *>(parts), sizeof parts));
		}
		ReleaseTupleDesc(desc);
	});
	return "NULL::" + QualifiedName(source) + " /* relation " + std::to_string(source) + " shape " +
	       std::to_string(shape) + " */";
}

std::string
RowFromClause(Oid source, const std::string &image_sql)
{
	// Queued changes carry their row as json (row_to_json in the trigger); this turns it back
	// into a typed row of the table. Analysis passes NULL::json: same types, no row needed.
	return " FROM pg_catalog.json_populate_record(" + RowTypeNull(source) + ", " + image_sql + ") AS " +
	       RelationAlias(source);
}

std::string
NewOldFromClause(Oid source, const std::string &new_sql, const std::string &old_sql)
{
	// new first, old second: FindVarRefs tells them apart by range-table index 1 and 2.
	std::string type = RowTypeNull(source);
	return " FROM pg_catalog.json_populate_record(" + type + ", " + new_sql +
	       ") AS new, pg_catalog.json_populate_record(" + type + ", " + old_sql + ") AS old";
}

namespace {

// Parse analysis of one SELECT; returns its Query (palloc'd in the current context).
Query *
Analyze(const std::string &sql)
{
	Query *query = nullptr;
	// Callers ran CheckSingleExpression first, so there is exactly one statement.
	Guarded([&] {
		List *stmts = raw_parser(sql.c_str(), RAW_PARSE_DEFAULT);
		query = parse_analyze_fixedparams(linitial_node(RawStmt, stmts), sql.c_str(), nullptr, 0, nullptr);
	});
	// An expression gives one value per row; these would fold rows together or multiply them
	// once the translator evaluates many rows in one statement.
	if (query->hasAggs || query->hasWindowFuncs || query->hasTargetSRFs)
		Fail(ERRCODE_GROUPING_ERROR, "aggregate, window and set-returning functions are not allowed here");
	return query;
}

Node *
FirstTarget(Query *query)
{
	return (Node *) linitial_node(TargetEntry, query->targetList)->expr;
}

// PG15 declares tree walkers as bool (*)(): go through a generic function pointer type.
using GenericWalker = bool (*)();
template <typename F>
GenericWalker
WalkerFn(F fn)
{
	return reinterpret_cast<GenericWalker>(reinterpret_cast<void (*)()>(fn));
}

bool MayRaise(Node *node, void *context);

struct VarRefs {
	bool varno1 = false;
	bool varno2 = false;
	int level = 0; // how deep in sub-queries the walk is: new and old are that many levels up
};

bool
FindVarRefs(Node *node, void *context)
{
	if (node == nullptr)
		return false;
	if (IsA(node, Var)) {
		Var *var = (Var *) node;
		// Only Vars of the expression's own query level name new (1) or old (2); inside a
		// sub-query they are outer references (old.x in an EXISTS still needs the old image).
		auto refs = static_cast<VarRefs *>(context);
		if (static_cast<int>(var->varlevelsup) == refs->level) {
			if (var->varno == 1)
				refs->varno1 = true;
			if (var->varno == 2)
				refs->varno2 = true;
		}
		return false;
	}
	if (IsA(node, Query)) {
		auto refs = static_cast<VarRefs *>(context);
		refs->level++;
		bool stop = query_tree_walker((Query *) node, WalkerFn(FindVarRefs), context, 0);
		refs->level--;
		return stop;
	}
	return expression_tree_walker(node, WalkerFn(FindVarRefs), context);
}

// Leakproof functions promise not to raise on any input. A few built-ins keep that promise but
// are not marked (PostgreSQL marks conservatively): numeric comparisons, which handle NaN and
// infinities, and the integer to numeric casts that parse analysis puts around a literal
// (new.mrr < 0 compares with numeric(0)). Without them a filter on a numeric column would
// never sit in the trigger's WHEN clause.
bool
LeakproofFunction(Oid funcid)
{
	switch (funcid) {
	case F_NUMERIC_EQ:
	case F_NUMERIC_NE:
	case F_NUMERIC_LT:
	case F_NUMERIC_LE:
	case F_NUMERIC_GT:
	case F_NUMERIC_GE:
	case F_NUMERIC_INT2:
	case F_NUMERIC_INT4:
	case F_NUMERIC_INT8:
		return true;
	default:
		return OidIsValid(funcid) && get_func_leakproof(funcid);
	}
}

// A comparison of text in two different collations (new.a = new.b across columns declared with
// different ones) parses, but raises "could not determine which collation to use" when run.
bool
CollationUndetermined(Node *node)
{
	if (OidIsValid(exprInputCollation(node)))
		return false;
	List *args = IsA(node, FuncExpr)            ? ((FuncExpr *) node)->args
	             : IsA(node, ScalarArrayOpExpr) ? ((ScalarArrayOpExpr *) node)->args
	                                            : ((OpExpr *) node)->args;
	ListCell *lc;
	foreach (lc, args)
		if (type_is_collatable(exprType((Node *) lfirst(lc))))
			return true;
	return false;
}

// True when node cannot raise an error whatever the row holds: only columns, constants,
// boolean logic, null tests, CASE/COALESCE and leakproof functions and operators (Postgres'
// promise that they do not fail on any input). A cast through text, integer arithmetic,
// current_setting() or any other function may raise, so such a filter is left to the worker.
bool
CannotRaise(Node *node, void *context)
{
	if (node == nullptr)
		return true;
	switch (nodeTag(node)) {
	case T_Var:
	case T_Const:
	case T_CaseTestExpr: // CASE x WHEN ...: stands for x, which is checked itself
		return true;
	case T_BoolExpr:
	case T_NullTest:
	case T_BooleanTest:
	case T_CaseExpr:
	case T_CaseWhen:
	case T_CoalesceExpr:
	case T_RelabelType: // a binary-compatible cast: no function runs
	case T_List:
		break;
	case T_FuncExpr:
		if (!LeakproofFunction(((FuncExpr *) node)->funcid) || CollationUndetermined(node))
			return false;
		break;
	case T_OpExpr:
	case T_DistinctExpr:
	case T_NullIfExpr:
		// The three share OpExpr's layout. Parse analysis leaves opfuncid unset (the planner
		// fills it), so look it up before asking whether the function is leakproof.
		set_opfuncid((OpExpr *) node);
		if (!LeakproofFunction(((OpExpr *) node)->opfuncid) || CollationUndetermined(node))
			return false;
		break;
	case T_ScalarArrayOpExpr:
		set_sa_opfuncid((ScalarArrayOpExpr *) node);
		if (!LeakproofFunction(((ScalarArrayOpExpr *) node)->opfuncid) || CollationUndetermined(node))
			return false;
		break;
	default:
		return false;
	}
	// expression_tree_walker stops at the first true: ask it for a child that may raise.
	return !expression_tree_walker(node, WalkerFn(MayRaise), context);
}

bool
MayRaise(Node *node, void *context)
{
	return !CannotRaise(node, context);
}

// Filled inside Guarded: plain C data only (no C++ object may be alive across an error).
struct StepRefs {
	int steps_varno = 0;
	int level = 0;
	List *names = NIL; // of char *
	bool opaque = false;
};

bool
IsStepsVar(Node *node, const StepRefs *refs)
{
	while (node != nullptr && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	if (node == nullptr || !IsA(node, Var))
		return false;
	Var *var = (Var *) node;
	return static_cast<int>(var->varno) == refs->steps_varno && static_cast<int>(var->varlevelsup) == refs->level;
}

// The step name of steps->'name' / steps#>'{name,...}': the right-hand constant's first name.
char *
ConstStepName(Node *node)
{
	if (node == nullptr || !IsA(node, Const))
		return nullptr;
	Const *c = (Const *) node;
	if (c->constisnull)
		return nullptr;
	if (c->consttype == TEXTOID)
		return TextDatumGetCString(c->constvalue);
	if (c->consttype != TEXTARRAYOID)
		return nullptr;
	Datum *elems = nullptr;
	bool *nulls = nullptr;
	int n = 0;
	deconstruct_array(DatumGetArrayTypeP(c->constvalue), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n < 1 || nulls[0])
		return nullptr;
	return TextDatumGetCString(elems[0]);
}

bool
FindStepRefs(Node *node, void *context)
{
	if (node == nullptr)
		return false;
	auto refs = static_cast<StepRefs *>(context);
	if (IsA(node, OpExpr)) {
		OpExpr *op = (OpExpr *) node;
		if (list_length(op->args) == 2 && IsStepsVar((Node *) linitial(op->args), refs)) {
			char *opname = get_opname(op->opno);
			bool fetch = opname != nullptr && (strcmp(opname, "->") == 0 || strcmp(opname, "->>") == 0 ||
			                                   strcmp(opname, "#>") == 0 || strcmp(opname, "#>>") == 0);
			char *name = fetch ? ConstStepName((Node *) lsecond(op->args)) : nullptr;
			if (name != nullptr) {
				refs->names = lappend(refs->names, name);
				return false;
			}
		}
	}
	if (IsA(node, Var)) {
		if (IsStepsVar(node, refs))
			refs->opaque = true;
		return false;
	}
	if (IsA(node, Query)) {
		refs->level++;
		bool stop = query_tree_walker((Query *) node, WalkerFn(FindStepRefs), context, 0);
		refs->level--;
		return stop;
	}
	return expression_tree_walker(node, WalkerFn(FindStepRefs), context);
}

StepExprInfo
AnalyzeWithSteps(const std::string &sql, int steps_varno)
{
	Query *query = Analyze(sql);
	Oid type = InvalidOid;
	StepRefs refs;
	refs.steps_varno = steps_varno;
	Guarded([&] {
		Node *expr = FirstTarget(query);
		type = exprType(expr);
		FindStepRefs(expr, &refs);
	});
	StepExprInfo info;
	info.type = type;
	ListCell *lc;
	foreach (lc, refs.names)
		info.step_refs.emplace_back(static_cast<const char *>(lfirst(lc)));
	info.steps_opaque = refs.opaque;
	return info;
}

} // namespace

std::string
StepsFromClause(Oid source, const std::string &new_sql, const std::string &old_sql, const std::string &steps_sql)
{
	// steps third: its Var has range-table index 3 (AnalyzeStepExpression looks for it).
	return NewOldFromClause(source, new_sql, old_sql) + ", (SELECT (" + steps_sql +
	       ")::pg_catalog.jsonb AS steps) AS sb_steps";
}

std::string
RowStepsFromClause(Oid source, const std::string &image_sql, const std::string &steps_sql)
{
	return RowFromClause(source, image_sql) + ", (SELECT (" + steps_sql + ")::pg_catalog.jsonb AS steps) AS sb_steps";
}

StepExprInfo
AnalyzeStepExpression(Oid source, const std::string &expr)
{
	CheckSingleExpression(expr);
	return AnalyzeWithSteps("SELECT " + Parenthesize(expr) +
	                            StepsFromClause(source, "NULL::json", "NULL::json", "NULL"),
	                        3);
}

StepExprInfo
AnalyzeRowStepsExpression(Oid source, const std::string &expr)
{
	CheckSingleExpression(expr);
	return AnalyzeWithSteps("SELECT " + Parenthesize(expr) + RowStepsFromClause(source, "NULL::json", "NULL"), 2);
}

Oid
AnalyzeRowExpression(Oid source, const std::string &expr)
{
	// Over the row exactly as the translator evaluates a mapping, so a name resolves at
	// delivery the way it resolved when the row was written.
	CheckSingleExpression(expr);
	Query *query = Analyze("SELECT " + Parenthesize(expr) + RowFromClause(source, "NULL::json"));
	Oid type = InvalidOid;
	Guarded([&] { type = exprType(FirstTarget(query)); });
	return type;
}

Oid
AnalyzeValueExpression(const std::string &expr, Oid target_type, int32 target_typmod)
{
	// Checked as the CAST into the target column that a pull evaluates, with the remote value
	// in scope as "value": an expression whose result cannot become the
	// column's type is refused when written, not when the first record arrives.
	CheckSingleExpression(expr);
	std::string type_name;
	Guarded([&] { type_name = format_type_with_typemod(target_type, target_typmod); });
	Query *query = Analyze("SELECT CAST(" + Parenthesize(expr) + " AS " + type_name +
	                       ") FROM (SELECT NULL::jsonb AS value) AS pulled");
	Oid type = InvalidOid;
	Guarded([&] { type = exprType(FirstTarget(query)); });
	return type;
}

PredicateInfo
AnalyzePredicate(Oid source, const std::string &predicate)
{
	// Over new and old, as the translator evaluates a filter.
	CheckSingleExpression(predicate);
	Query *query = Analyze("SELECT " + Parenthesize(predicate) + NewOldFromClause(source, "NULL::json", "NULL::json"));
	PredicateInfo info;
	Oid type = InvalidOid;
	VarRefs refs;
	bool may_raise = true, volatile_ = true;
	Guarded([&] {
		Node *expr = FirstTarget(query);
		type = exprType(expr);
		FindVarRefs(expr, &refs);
		// A subquery is never provably safe (it reads other tables and may raise anywhere).
		may_raise = query->hasSubLinks || MayRaise(expr, nullptr);
		volatile_ = contain_volatile_functions(expr);
	});
	if (type != BOOLOID)
		Fail(ERRCODE_DATATYPE_MISMATCH, "must be a boolean expression, not " + std::string(format_type_be(type)));
	info.refs_new = refs.varno1;
	info.refs_old = refs.varno2;
	info.when_safe = !may_raise && !volatile_;
	return info;
}

} // namespace switchboard
