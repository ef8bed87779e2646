// The checks _validate() makes when configuration is written, run again over what is stored.
#pragma once

#include <string>

namespace switchboard {

// "" when the stored route, its endpoint, mappings and filters pass every write-time check
// (expressions as the route's owner, the owner's privileges on the source, allowed hosts);
// otherwise the first problem, naming the row. Rows written with validation skipped (a
// restore, or anyone with check_function_bodies off) are caught here before first use.
std::string StoredRouteProblem(const std::string &route);

} // namespace switchboard
