// A route as the translator sees it: its row, its endpoint, its mappings and its filters,
// each filter analysed once (which side it reads, whether the trigger can evaluate it).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "connectors/connector.h"

#include "pg/prelude.h"

namespace switchboard {

struct FilterDef {
	std::string name;
	std::string predicate;
	bool refs_new = false;
	bool refs_old = false;
	bool when_safe = false;
	// Evaluated by the trigger's WHEN clause for this operation; otherwise by the translator.
	bool InWhen(Op op) const;
};

struct MappingDef {
	std::string remote_field;
	std::optional<std::string> push_expr;
	std::optional<std::string> pull_column;
	std::optional<std::string> pull_expr;
};

struct RouteDef {
	std::string name;
	Oid source = InvalidOid;
	bool source_exists = false;
	std::string direction;
	std::vector<Op> operations;
	std::string match_local;
	bool enabled = true;
	Oid owner = InvalidOid; // the role its expressions and pulled writes run as
	Route route;            // connector's view: remote_object, match_remote, on_delete
	Endpoint endpoint;      // secret resolved only when asked for
	bool has_secret = false;
	std::vector<MappingDef> mappings;
	std::vector<FilterDef> filters;

	bool NeedsOldImage() const; // an update must carry its old image for a deferred filter
};

// Both check the stored definition as it would be checked when written (StoredRouteProblem)
// and throw PgError when it fails: nothing uses a definition that skipped validation.
// LoadRoute also throws (undefined object) when the route does not exist.
RouteDef LoadRoute(const std::string &name, bool with_secret);
std::optional<RouteDef> FindRoute(const std::string &name, bool with_secret);

// True while the installed schema is older than this library (0.1: no owners), between a
// package upgrade and ALTER EXTENSION switchboard UPDATE. Capture and configuration then keep
// 0.1's rules (expressions as the source table's owner); the worker waits for the update.
bool SchemaPredatesOwners();

std::optional<Op> ParseOp(const std::string &op);
std::vector<Op> ParseOperations(const std::string &text_array); // "{insert,update}"

} // namespace switchboard
