// Applying received events (SPEC §9) like a pull page: which records a batch of stored events
// of one route makes, which object ids must be read back first (HubSpot names only ids), and
// which events need nothing applied. The worker (store/inbound_store.h) loads the events and
// applies the records through the one apply path, ApplyRemoteRecords.
//
// Plain C++ (no postgres.h): unit-tested without a server.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "inbound/verify.h"

namespace switchboard {
namespace inbound {

// One row of switchboard.inbound_events, as ParseEvents made its event.
struct StoredEvent {
	int64_t id = 0; // the receiver's commit order
	Event event;
};

// A record to apply and the events it settles: the newest event of its key and the older ones
// it supersedes (they are applied with it, never on their own).
struct PlannedRecord {
	RemoteRecord record;
	std::vector<int64_t> events;
	int64_t occurred_ms = 0; // of the newest event
	int64_t last_id = 0;     // its id (ties of occurred_ms)
};

// An object to read back and the events that named it.
struct ReadBackItem {
	std::string object_id;
	std::vector<int64_t> events;
	int64_t occurred_ms = 0;
	int64_t last_id = 0;
};

struct Plan {
	std::vector<PlannedRecord> records;  // oldest first; one per key
	std::vector<ReadBackItem> read_back; // in order of their newest event
	std::vector<int64_t> settled;        // nothing to apply (a deletion of an id the route does not know)
	std::vector<std::pair<int64_t, std::string>> refused; // events that name no record: their error
};

// known_keys: remote id -> key, as switchboard.remote_ids holds them for the route (needed for
// deletions, whose events carry only the id). Per key the newest event wins (occurred_ms, then
// id); a deletion applies only to the remote id the route knows for its key (ApplyRemoteRecords
// checks it again), and a deletion of an id the route does not know settles with nothing done.
Plan PlanEvents(const std::vector<StoredEvent> &events, const std::string &match_remote,
                const std::map<std::string, std::string> &known_keys);

// The records of a read-back: each asked object the answer holds becomes its record; one the
// answer lacks is gone from the remote, a deletion when the route knows its id, else settled.
// Merged with plan->records (newest per key again).
void AddReadBack(Plan *plan, const std::vector<ReadBackItem> &asked, const std::vector<RemoteRecord> &answer,
                 const std::map<std::string, std::string> &known_keys);

// Read-back items in chunks of at most `limit` ids (one batch/read each).
std::vector<std::vector<ReadBackItem>> Chunks(const std::vector<ReadBackItem> &items, size_t limit);

// The records only, in plan order (what ApplyRemoteRecords takes).
std::vector<RemoteRecord> RecordsOfPlan(const Plan &plan);

} // namespace inbound
} // namespace switchboard
