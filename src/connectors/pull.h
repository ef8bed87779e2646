// Pulling remote changes (SPEC §6): the requests that page through records changed since a
// cursor, and the parsing of their answers into records and the next cursor. The kinds do
// the work (Connector::BuildPullRequest / ParsePullPage); this is the worker's entry point,
// and the helpers the kinds' pull code shares.
//
// Plain C++ (no postgres.h): the worker and the unit tests share it.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "connectors/connector.h"

namespace switchboard {

// Kinds that cannot be pulled get {"", ""} (BuildPullRequest reports them per route).
PullCursor InitialPullCursor(const std::string &kind);

// Connector::CanPull of a kind; false for an unknown kind.
bool CanPull(const std::string &kind);

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

// True for an answer that says the query a page belongs to is gone (Salesforce
// INVALID_QUERY_LOCATOR, cursor.after set): ParsePullResponse then returns an empty page whose
// next cursor starts the query again, instead of an error the same request would meet forever.
bool PullQueryExpired(const Endpoint &endpoint, const PullCursor &cursor, const HttpResponse &response);

// HubSpot's search pages at most 10,000 results per query; past that the cursor is re-anchored
// at the last modification time seen (records sharing it are fetched again, harmlessly).
constexpr int kHubSpotSearchLimit = 200;
constexpr int kHubSpotSearchCap = 10000;

// ---- Shared by the kinds' pull code (pull.cpp) --------------------------------------------

namespace pull {

// Non-negative decimal that fits an int64 comfortably (epoch ms, paging offsets).
bool ParseDecimal(const std::string &text, int64_t *out);
// "2026-11-24T10:00:00.123Z", "...+0000", "...+00:00", fraction optional (read to the ms).
// Unix ms, or false for anything else (a time without a zone is never guessed).
bool ParseIsoMs(const std::string &text, int64_t *out);
// A timestamp as remotes send it: ISO text, or epoch ms as a string or number. 0 when absent
// or unreadable (such a record never moves the cursor).
int64_t TimeMs(const Json &value);
// object[name], or nullptr when object is no object or lacks it.
const Json *Member(const Json &object, const std::string &name);
// Like Member, but falls back to a case-insensitive match.
const Json *MemberAnyCase(const Json &object, const std::string &name);
// A key or id as text: strings as they are, numbers as their JSON text, booleans as
// true/false; null, absent and structured values as "".
std::string KeyText(const Json *value);
// Appends name unless empty or already present (case_insensitive: compared lower-cased).
void AddUnique(std::vector<std::string> *names, std::set<std::string> *seen, const std::string &name,
               bool case_insensitive);
// "Bearer <token>", or "Bearer ****" for masked auth.
std::string AuthorizationValue(const Auth &auth);
// Throws std::runtime_error "what: <body excerpt>".
[[noreturn]] void Malformed(const std::string &what, const HttpResponse &response);

// How one kind's page lists its records, for ReadRecords.
struct RecordShape {
	const char *array;   // member of the body holding the records: "results", "records"
	const char *id;      // member of a record holding its remote id: "id", "Id"
	std::string answer;  // names the page in error messages: "hubspot answer"
	std::string record;  // names a record in error messages: "hubspot result"
	bool must_be_object; // a record that is no object is refused as such (else: as lacking an id)
	// The record's fields (may throw through Malformed), and its modification time given them.
	std::function<Json(const Json &item)> fields;
	std::function<int64_t(const Json &item, const Json &fields)> modified;
};

// Reads body[shape.array] in the remote's order: for each record its id (required), fields,
// key (route.match_remote, any case) and modification time. Throws (Malformed) on any record
// not of that shape, and when the array is missing ("<answer> without a <array> array").
std::vector<RemoteRecord> ReadRecords(const Json &body, const RecordShape &shape, const Route &route, bool deleted,
                                      const HttpResponse &response);

// Largest modified_ms of the records (0 for none).
int64_t NewestModified(const std::vector<RemoteRecord> &records);

// The since of the next query once this one is exhausted: the newest modification time seen,
// formatted the kind's way, when it is later than since_ms; else the cursor's own since. The
// cursor never moves backwards.
std::string SinceAfter(const PullCursor &cursor, int64_t since_ms, int64_t newest,
                       const std::function<std::string(int64_t)> &format);

} // namespace pull

} // namespace switchboard
