// The pull's conflict rule (routes.conflict): a pulled remote record whose key has local
// changes still waiting to be pushed. Either the remote state is applied (and the older
// local changes dropped, so they cannot overwrite it), or the record is skipped (and the
// local changes are pushed as usual).
//
// Plain C++ (no postgres.h): the pull (store/pull_store.cpp) and the unit tests share it.
#pragma once

#include <cstdint>
#include <string>

namespace switchboard {

enum class ConflictWinner { Local, Remote };

// rule: routes.conflict, one of
//   remote  the remote record always wins;
//   local   the pending local change always wins;
//   newest  the later of the two wins: the remote's modification time against the capture
//           time of the newest pending local change (unix ms); a tie, or a remote time that
//           is unknown (0), goes to the local change, which then reaches the remote anyway.
// Any other text (the configuration check allows none) keeps the local change: nothing local
// is discarded on a rule the worker does not know.
ConflictWinner SettleConflict(const std::string &rule, int64_t remote_modified_ms, int64_t local_newest_ms);

} // namespace switchboard
