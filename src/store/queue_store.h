// The worker's side of the queue, in short transactions: claim and translate due changes,
// then (after delivery, with no transaction open) record what became of them.
#pragma once

#include <map>
#include <random>
#include <string>
#include <vector>

#include "delivery/dispatcher.h"
#include "pg/spi.h"

namespace switchboard {

// StartTransactionCommand + snapshot + SPI; rolled back unless Commit() is called.
class WorkerTransaction {
public:
	WorkerTransaction();
	~WorkerTransaction();
	void Commit();
	WorkerTransaction(const WorkerTransaction &) = delete;
	WorkerTransaction &operator=(const WorkerTransaction &) = delete;

private:
	bool done_ = false;
};

// What the recorder needs to know about a claimed change besides its Delivery.
struct ClaimedChange {
	std::string route;
	std::string key;
	Op op = Op::Update;
	int attempts = 0;
	std::string fields; // translated, kept with a dead letter
	// Older changes of the key it was coalesced with (still queued): settled with it, or
	// waiting with it for its retry (see Coalesced::Send::superseded).
	std::vector<int64_t> superseded;
};

struct ClaimedBatch {
	std::vector<RouteBatch> batches; // one per route, changes coalesced per key
	std::map<int64_t, ClaimedChange> changes;
	size_t rows = 0;                  // queue rows looked at
	std::vector<RouteAction> refused; // could not be loaded: to be disabled; their changes kept
};

bool ExtensionExists();

// A database made with CREATE DATABASE … TEMPLATE copies the instance row and the queue of
// the template. Seen from its own worker: it takes a new instance id (event ids never collide
// with the template's) and its routes are disabled, so that nothing copied (a staging copy of
// production, say) is pushed until a DBA enables them. True when that happened.
bool RecognizeCopy();

// Work left in flight by a worker that died is delivered again; the attempt is counted, so
// a change that keeps killing the worker ends as a dead letter instead of a crash loop.
void RecoverInFlight();

// Claims up to limit due changes (in id order), translates them, coalesces each key to its
// latest state (delivery/coalesce.h), marks those in flight and settles the filtered and
// failed ones. Superseded changes stay queued until RecordResults settles the one sent.
ClaimedBatch ClaimDue(int limit);

// A round that keeps failing outside any route's or row's own step: its error becomes the
// last_error of every route with changes waiting (route_status); nothing is dead-lettered.
void NoteRoundFailure(const std::string &error);

// Records deliveries and refreshes endpoint_state (routes to disable are the caller's).
void RecordResults(const std::vector<Delivery> &deliveries, const std::vector<EndpointStatus> &endpoints,
                   const ClaimedBatch &claimed, int max_attempts, std::mt19937_64 &rng);

// After a record step that failed: the round's changes back to pending, to be sent again.
void RequeueInFlight(const ClaimedBatch &claimed, int max_attempts);

void WriteEndpointStatus(const std::vector<EndpointStatus> &endpoints);

// Milliseconds until the earliest pending change is due (-1: none pending).
long MsUntilNextDue();

// Disables routes with the reason (shown by route_status); their queued changes stay.
void DisableRoutes(const std::vector<RouteAction> &routes);

void PruneHistory(int retention_s, int dead_letter_retention_s);

} // namespace switchboard
