// Pulling remote changes (SPEC §6): the requests that page through records changed since a
// cursor, and the parsing of their answers into records and the next cursor.
//
// Plain C++ (no postgres.h): the worker and the unit tests share it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "connectors/connector.h"

namespace switchboard {

// Two passes per pull: records changed since the cursor, then records deleted remotely
// (only for routes with on_delete = 'delete').
enum class PullPhase { Changes, Deletions };

// Where a pull stands. Stored by the worker in the same transaction as the page it covers.
struct PullCursor {
	// HubSpot: epoch ms as a decimal string ("0" at first). Salesforce: an ISO-8601 UTC
	// datetime literal for SOQL ("1970-01-01T00:00:00.000Z" at first).
	std::string since;
	// Paging inside one query: HubSpot's paging.next.after, Salesforce's nextRecordsUrl
	// (a path starting with /services/data/). Empty: start the query from the beginning.
	std::string after;
};

// Kinds that cannot be pulled get {"", ""} (BuildPullRequest reports them per route).
PullCursor InitialPullCursor(const std::string &kind);

// hubspot and salesforce.
bool CanPull(const std::string &kind);

struct RemoteRecord {
	std::string remote_id;  // HubSpot object id, Salesforce Id
	std::string key;        // the value of route.match_remote; empty when the record has none
	Json fields = Json::object(); // remote field -> value exactly as the remote sent it
	int64_t modified_ms = 0;      // lastmodifieddate / hs_lastmodifieddate / SystemModstamp
	bool deleted = false;         // from the Deletions phase
};

struct PullPage {
	std::vector<RemoteRecord> records; // in the remote's order (ascending modification time)
	PullCursor next;                   // store this once the page is applied
	bool more = false;                 // another page can be fetched right away
};

// The request for one page. fields: the remote fields the route's mappings pull (match_remote
// and the modification-time field are added by the connector; the Deletions phase asks only for
// the key). Throws std::invalid_argument for kinds that cannot be pulled (webhook, openai), and
// for a cursor or a Salesforce name that cannot go into the query as it is (nothing is quoted
// into SOQL: names must be identifiers, since a datetime, after a /services/data/ path).
HttpRequest BuildPullRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                             PullPhase phase, const PullCursor &cursor, const Auth &auth);

// Parses a 2xx answer to BuildPullRequest. Throws std::runtime_error with a clear message
// when the body is not what the remote documents, and for any other answer ("hubspot pull
// failed: HTTP 400 VALIDATION_ERROR: ...", "... transport error: ..." for status 0), so a
// caller may hand every answer here. The cursor never moves backwards.
PullPage ParsePullResponse(const Endpoint &endpoint, const Route &route, PullPhase phase, const PullCursor &cursor,
                           const HttpResponse &response);

// HubSpot's search pages at most 10,000 results per query; past that the cursor is re-anchored
// at the last modification time seen (records sharing it are fetched again, harmlessly).
constexpr int kHubSpotSearchLimit = 200;
constexpr int kHubSpotSearchCap = 10000;

} // namespace switchboard
