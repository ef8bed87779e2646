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
Translation Translate(const RouteDef &def, Op op, const SpiText &new_image, const SpiText &old_image,
                      bool all_filters);

// The SQL that computes key and fields from the row image given as $1 (json).
std::string MappingSql(const RouteDef &def);

} // namespace switchboard
