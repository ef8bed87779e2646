// Translation of one captured change: the filters the trigger could not evaluate, then the
// route's mappings over the row image, each in a subtransaction so that a bad row is reported
// (with the failing filter or mapping named) instead of aborting the caller.
#pragma once

#include <string>
#include <vector>

#include "pg/spi.h"
#include "translate/route_def.h"

namespace switchboard {

struct Translation {
	enum class Status { Ok, Filtered, Failed } status = Status::Ok;
	std::string key;
	Json fields = Json::object();
	std::string error;                    // Failed: which filter/mapping and the message
	std::vector<std::string> rejected_by; // Filtered: names of the filters that said no
};

// all_filters: evaluate every filter (preview, resync); otherwise only those not in WHEN.
Translation Translate(const RouteDef &def, Op op, const SpiText &new_image, const SpiText &old_image, bool all_filters);

// The SQL that computes key and fields from the row image given as $1 (json).
std::string MappingSql(const RouteDef &def);

// One queued change to translate.
struct PendingRow {
	Op op = Op::Update;
	SpiText new_image;
	SpiText old_image;
};

// Translates many changes of one route with the filters the trigger did not evaluate: in
// set-based statements while the rows translate, row by row (to name the failing filter or
// mapping) for a statement where one does not. Both run as the route's owner
// (RouteDef::owner), so expressions in the configuration can do no more than that role could
// with its own privileges. In the worker, all of it within one budget of
// switchboard.route_sql_timeout (pg/route_budget.h); a statement the budget cuts off is
// tried with half as many changes in the next round.
struct BatchTranslation {
	std::vector<Translation> done; // of the first done.size() rows; the others wait
	std::string cut_off;           // the budget ran out with rows left: why (route_status)
	std::string slow;              // a single change ran past the budget on its own: the error
};
BatchTranslation TranslateBatch(const RouteDef &def, const std::vector<PendingRow> &rows);

// {"a","b"} with the quoting Postgres array input expects; nullopt elements become NULL.
std::string ArrayLiteral(const std::vector<SpiText> &items);

} // namespace switchboard
