// The database side of applying received webhook events (SPEC §9): which routes have events
// waiting, loading them, and recording what became of each. The records themselves go through
// the one apply path of remote state, ApplyRemoteRecords (store/pull_store.h), without the
// polling cursor: a pull of the same route stays possible, as a safety net, and is not moved.
//
// An event is (the states of view inbound_status)
//   pending  applied_at IS NULL: the worker applies it. A failure that is no fault of the
//            event (an HTTP 5xx/429/timeout or transport error of a read-back, a transient
//            Postgres error) leaves it as it is, and the route is tried again after a backoff;
//            any other failure counts an attempt and sets last_error, and the event is tried
//            again after a backoff of its own;
//   applied  applied_at set, last_error NULL (also when it needed nothing: a deletion of an id
//            the route does not know, a change a pending local change won, an older event of a
//            key a newer one superseded); deleted after switchboard.inbound_retention;
//   failed   applied_at set with last_error: given up after switchboard.max_attempts attempts,
//            or at once when no retry can help (the event names no record); kept like a dead
//            letter (switchboard.dead_letter_retention, 0: until deleted).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "inbound/apply_plan.h"
#include "store/pull_store.h"
#include "translate/route_def.h"

namespace switchboard {

struct InboundRoute {
	RouteDef def; // secret resolved (a read-back needs it)
	std::string conflict;
	std::vector<std::string> fields;               // remote fields with a pull_column
	std::vector<inbound::StoredEvent> events;      // oldest first (id order)
	std::map<std::string, std::string> known_keys; // remote id -> key, for the events' object ids
	bool more = false;                             // more events are waiting than were loaded
};

// Routes (direction pull/both, route and endpoint enabled) with pending events, each with up to
// per_route of its oldest ones; routes in held and events in held_events are left out. In a
// transaction. Routes that cannot be loaded are left out (the pull reports and disables them).
std::vector<InboundRoute> InboundDue(int per_route, const std::set<std::string> &held,
                                     const std::vector<int64_t> &held_events);

// Applies a plan's records (ApplyRemoteRecords, as the route's owner, conflict policy, no
// echo) and marks its events: applied, or, for records that failed, an attempt more with
// last_error (failed once max_attempts are spent; refused events fail at once). In a
// transaction. Returns the ids of events that failed and stay pending; nothing is marked and
// nothing returned when the route changed since it was loaded (renamed, disabled, new owner):
// its events wait for the next round.
std::vector<int64_t> ApplyInbound(const InboundRoute &route, const inbound::Plan &plan);

// Events that could not be applied (a read-back the remote refused, a route that cannot be
// applied at all): an attempt more, last_error, failed once max_attempts are spent. In a
// transaction. Returns those that stay pending.
std::vector<int64_t> RecordInboundFailure(const std::vector<int64_t> &events, const std::string &error);

// Applied events older than retention_s, and failed ones older than dead_letter_retention_s
// (0: kept until deleted). In a transaction.
void PruneInbound(int retention_s, int dead_letter_retention_s);

// True when the schema has the inbound tables (an extension not yet updated has not).
bool HasInboundSchema();

// Whether any received event waits to be applied (the partial index answers it). Cheap, and
// asked inside a transaction the worker opens anyway: an idle database pays no transaction of
// its own for inbound events.
bool InboundWanted();

} // namespace switchboard
