// The pull's conflict rule (routes.conflict): a pulled remote record whose key has local
// changes still waiting to be pushed. Either the remote state is applied (and the older
// local changes dropped, so they cannot overwrite it), or the record is skipped (and the
// local changes are pushed as usual).
//
// Plain C++ (no postgres.h): the pull (store/pull_store.cpp) and the unit tests share it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

// Our own echo (issue 10.1): a pulled record whose values are those of the last change this
// route delivered for the key is that push coming back (stamped by the remote whenever the
// request landed, possibly after newer local commits), not a change made remotely. It never
// wins a conflict. pushed: the fields of that delivered change (remote field -> value as
// translated); pulled: the record's fields as the remote sent them; compared: the remote fields
// the route both pushes and pulls. True when at least one of them is in both and every one in
// both holds the same value: like with like, as the remote renders values (HubSpot keeps text:
// 42 and "42" are one value; numbers compare as numbers; SQL NULL and "" both clear a field).
// Field names of the pulled record match case-insensitively (Salesforce's canonical spelling).
bool IsEchoOfPush(const nlohmann::json &pushed, const nlohmann::json &pulled, const std::vector<std::string> &compared);

// The same value, as the remote renders values (see IsEchoOfPush).
bool SameRemoteValue(const nlohmann::json &pushed, const nlohmann::json &pulled);

} // namespace switchboard
