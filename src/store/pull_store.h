// The database side of pulling: which routes are due, and applying a fetched page (upserts by
// the match key, remote deletions, conflicts with pending local changes) together with the
// cursor that covers it, in one transaction.
#pragma once

#include <string>
#include <vector>

#include "connectors/pull.h"
#include "delivery/dispatcher.h"
#include "pg/spi.h"
#include "translate/route_def.h"

namespace switchboard {

struct DuePull {
	RouteDef def; // secret resolved
	PullPhase phase = PullPhase::Changes;
	PullCursor cursor;
	std::vector<std::string> fields; // remote fields with a pull_column
	std::string conflict;            // newest | local | remote
	long interval_ms = 60000;
};

// Routes whose pull is due (direction pull/both, route and endpoint enabled). In a transaction.
// Routes that cannot be loaded are left out, backed off, and added to refused.
std::vector<DuePull> PullsDue(int limit, std::vector<RouteAction> *refused);

struct PullCounts {
	int applied = 0;
	int deleted = 0;
	int skipped = 0;
	int failed = 0;
};

// Applies remote records to the route's table, as the route's owner, with no capture for the
// route itself (no echo). The one apply path of remote state (the pull, and inbound events):
// the rows of the records' keys are locked first, then pending local changes, the route's last
// pushed state and its remote ids are read; per record, in a subtransaction of its own:
//   - a deletion applies only to the remote id the route knows for the key;
//   - a record that is the echo of our own last push (IsEchoOfPush) never beats a pending
//     local change; otherwise conflict (routes.conflict) decides;
//   - when the local change wins, only fields pulled and never pushed are applied;
//   - when the remote wins, it wins for the pulled fields: a pending change carrying pushed-only
//     fields stays queued with the remote values merged into its images, else it is dropped;
//   - a transient error (deadlock, lock timeout, a racing insert) is tried again; one that
//     persists throws (nothing of the records is kept), any other error fails that record only
//     (logged in deliveries, counted as failed).
// In a transaction; remote ids of applied records are stored. failures, when given, receives
// the index in records and the error of each record that failed (inbound events record it on
// the event they came from).
struct RecordFailure {
	size_t index = 0;
	std::string error;
};
PullCounts ApplyRemoteRecords(const RouteDef &def, const std::string &conflict,
                              const std::vector<RemoteRecord> &records, long http_status,
                              std::vector<RecordFailure> *failures = nullptr);

// Applies a page (ApplyRemoteRecords) and stores the cursor after it. In a transaction.
PullCounts ApplyPullPage(const DuePull &pull, const PullPage &page, long http_status, double latency_ms);

// What the push delivered, for the pull to recognise its echo: per (route, key) of routes with
// direction 'both', the fields of the newest delivered change (fields empty: a delete, which
// forgets the key). Called by RecordResults in its transaction.
struct PushedState {
	std::string route;
	std::string key;
	int64_t change_id = 0;
	std::string fields; // JSON object text; "" for a delete
};
void NotePushedStates(const std::vector<PushedState> &states);

// A pull that could not fetch or parse a page: the cursor stays, the route is tried again later.
void RecordPullError(const DuePull &pull, const std::string &error, long http_status, long retry_ms);
void RecordRoutePullError(const std::string &route, const std::string &error, long http_status, long retry_ms);

// The crash-loop guard of the pull (the push counts attempts of in-flight changes, see
// RecoverInFlight). Before a page is fetched, in its own committed transaction, the route is
// marked: backed off, with "the worker stopped while pulling ..." as its last_error. A worker
// that dies fetching, parsing or applying the page leaves the mark, and the next try of that
// route waits longer each time. The page's own transaction undoes the mark (ClearPullMark),
// and RecordPullError replaces it.
struct PullMark {
	SpiText last_error, last_error_at; // what they were before the mark
	int stops = 0;                     // times in a row the worker stopped on this route, this try included
};
PullMark MarkPullStarted(const DuePull &pull);
void ClearPullMark(const DuePull &pull, const PullMark &mark);

// Milliseconds until the next pull is due (-1: no pulling route).
long MsUntilNextPull();

} // namespace switchboard
