// Coalescing the claimed changes of one route: which change of each key is sent, with which
// meaning, and which are settled at the claim (filtered, failed, superseded).
//
// SPEC §4: pending changes of one key may be coalesced into one upsert of the latest state;
// never reordered. What the remote ends up with must not depend on how many changes a claim
// happened to see at once.
//
// Plain C++ (no postgres.h): the worker's claim (store/queue_store.cpp) and the unit tests
// share it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "connectors/connector.h" // Op

namespace switchboard {

// One claimed (due) change of the route, translated.
struct ClaimedRow {
	enum class State { Ok, Filtered, Failed };
	int64_t id = 0; // queue id: rows are given in id (commit) order
	Op op = Op::Update;
	std::string key; // Ok: the value of match_local
	State state = State::Ok;
};

// An older change of the route waiting for its retry (not due, so not claimed), translated
// when it was claimed before: its key is known.
struct HeldChange {
	int64_t id = 0;
	std::string key;
	Op op = Op::Update;
};

struct Coalesced {
	struct Send {
		size_t row = 0;     // index into the claimed rows
		Op op = Op::Update; // as sent: an update of a key created among the coalesced changes is an insert
		// Older changes of the key (claimed or held) this one stands for. They stay queued until
		// it is settled: if it must wait for a retry they wait with it and are coalesced again,
		// so that what they meant (an insert) is not lost.
		std::vector<int64_t> superseded;
	};
	std::vector<Send> send;       // at most one per key, in queue order
	std::vector<int64_t> dropped; // queue ids of filtered changes: settled without a send
	std::vector<size_t> failed;   // indexes of rows whose translation failed (dead letters)
};

// rows: the claimed changes of one route in queue order; held: its older changes waiting for
// a retry whose keys occur among rows (any order); deletes_sent: the route's on_delete is
// 'delete' (with 'ignore' a delete means nothing to the remote).
Coalesced Coalesce(const std::vector<ClaimedRow> &rows, const std::vector<HeldChange> &held, bool deletes_sent);

// Per-key order across retries (SPEC §4, a stale change never overwrites a newer one): marks
// holds, per key, the queue id of the newest change already delivered. A
// change to send that is not newer than its key's mark (a dead letter retried after a newer
// change was delivered, a change recovered after a crash) is taken out of coalesced->send and
// returned, with what it superseded, to be settled as skipped.
std::vector<Coalesced::Send> TakeStale(Coalesced *coalesced, const std::vector<ClaimedRow> &rows,
                                       const std::map<std::string, int64_t> &marks);

} // namespace switchboard
