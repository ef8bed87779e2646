// Pulling remote changes (SPEC §6): HubSpot search / archived listing and Salesforce SOQL
// query / queryAll, one page per request, and the cursor that follows each page.
//
// The cursor only ever moves forward: a page applied twice is harmless (upserts by key,
// idempotent deletions), a page skipped is data lost, so every rule below errs on the side of
// fetching a record again.
#include "connectors/pull.h"
#include "http/json_limits.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <stdexcept>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

const char *const kSalesforceEpoch = "1970-01-01T00:00:00.000Z";
// HubSpot's archived listing pages at most 100 records.
const int kHubSpotArchivedLimit = 100;

// Non-negative decimal that fits an int64 comfortably (epoch ms, paging offsets).
bool
ParseDecimal(const std::string &text, int64_t *out)
{
	if (!IsDigits(text) || text.size() > 18)
		return false;
	*out = std::stoll(text);
	return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (valid for any year we will meet).
int64_t
DaysFromCivil(int64_t year, int64_t month, int64_t day)
{
	year -= month <= 2 ? 1 : 0;
	const int64_t era = (year >= 0 ? year : year - 399) / 400;
	const int64_t year_of_era = year - era * 400;
	const int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
	const int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
	return era * 146097 + day_of_era - 719468;
}

// Reads exactly n digits at text[*pos].
bool
ReadDigits(const std::string &text, size_t *pos, size_t n, int64_t *out)
{
	if (*pos + n > text.size())
		return false;
	int64_t value = 0;
	for (size_t i = 0; i < n; ++i) {
		char c = text[*pos + i];
		if (c < '0' || c > '9')
			return false;
		value = value * 10 + (c - '0');
	}
	*pos += n;
	*out = value;
	return true;
}

bool
Expect(const std::string &text, size_t *pos, char c)
{
	if (*pos >= text.size() || text[*pos] != c)
		return false;
	++*pos;
	return true;
}

// "2026-11-24T10:00:00.123Z", "2026-11-24T10:00:00.123+0000", "...+00:00", fraction optional
// (any number of digits, read to the millisecond). Unix ms, or false for anything else.
bool
ParseIsoMs(const std::string &text, int64_t *out)
{
	size_t pos = 0;
	int64_t year, month, day, hour, minute, second;
	if (!ReadDigits(text, &pos, 4, &year) || !Expect(text, &pos, '-') || !ReadDigits(text, &pos, 2, &month) ||
	    !Expect(text, &pos, '-') || !ReadDigits(text, &pos, 2, &day) || !Expect(text, &pos, 'T') ||
	    !ReadDigits(text, &pos, 2, &hour) || !Expect(text, &pos, ':') || !ReadDigits(text, &pos, 2, &minute) ||
	    !Expect(text, &pos, ':') || !ReadDigits(text, &pos, 2, &second))
		return false;
	if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
		return false;
	int64_t millis = 0;
	if (pos < text.size() && text[pos] == '.') {
		++pos;
		size_t digits = 0;
		while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
			if (digits < 3)
				millis = millis * 10 + (text[pos] - '0');
			++digits;
			++pos;
		}
		if (digits == 0)
			return false;
		for (size_t i = digits; i < 3; ++i)
			millis *= 10;
	}
	int64_t offset_minutes = 0;
	if (pos < text.size() && text[pos] == 'Z') {
		++pos;
	} else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
		int sign = text[pos] == '-' ? -1 : 1;
		++pos;
		int64_t oh, om;
		if (!ReadDigits(text, &pos, 2, &oh))
			return false;
		if (pos < text.size() && text[pos] == ':')
			++pos;
		if (!ReadDigits(text, &pos, 2, &om) || oh > 23 || om > 59)
			return false;
		offset_minutes = sign * (oh * 60 + om);
	} else {
		return false; // a time without a zone is ambiguous: never guess
	}
	if (pos != text.size())
		return false;
	int64_t seconds = DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second -
	                  offset_minutes * 60;
	*out = seconds * 1000 + millis;
	return true;
}

// A timestamp as HubSpot sends it: ISO text, or epoch ms as a string or number. 0 when absent
// or unreadable (such a record never moves the cursor).
int64_t
TimeMs(const Json &value)
{
	int64_t ms = 0;
	if (value.is_string()) {
		const auto &text = value.get_ref<const std::string &>();
		if (ParseDecimal(text, &ms) || ParseIsoMs(text, &ms))
			return ms;
		return 0;
	}
	if (value.is_number_integer())
		return value.get<int64_t>();
	return 0;
}

const Json *
Member(const Json &object, const std::string &name)
{
	if (!object.is_object())
		return nullptr;
	auto it = object.find(name);
	return it == object.end() ? nullptr : &*it;
}

// Like Member, but falls back to a case-insensitive match: Salesforce answers with the
// field's canonical spelling whatever the query said (email__c -> Email__c).
const Json *
MemberAnyCase(const Json &object, const std::string &name)
{
	if (const Json *exact = Member(object, name))
		return exact;
	if (!object.is_object())
		return nullptr;
	const std::string wanted = Lower(name);
	for (auto it = object.begin(); it != object.end(); ++it)
		if (Lower(it.key()) == wanted)
			return &*it;
	return nullptr;
}

// A key or id as text: strings as they are, numbers as their JSON text, booleans as
// true/false; null, absent and structured values as "".
std::string
KeyText(const Json *value)
{
	if (value == nullptr)
		return std::string();
	if (value->is_string())
		return value->get<std::string>();
	if (value->is_number())
		return value->dump();
	if (value->is_boolean())
		return value->get<bool>() ? "true" : "false";
	return std::string();
}

// Appends name unless empty or already present (compared with key, e.g. lower-cased).
void
AddUnique(std::vector<std::string> *names, std::set<std::string> *seen, const std::string &name,
          bool case_insensitive)
{
	if (name.empty())
		return;
	if (seen->insert(case_insensitive ? Lower(name) : name).second)
		names->push_back(name);
}

std::string
ApiVersion(const Endpoint &endpoint)
{
	if (const Json *version = Member(endpoint.options, "api_version"))
		if (version->is_string() && !version->get_ref<const std::string &>().empty())
			return version->get<std::string>();
	return "59.0";
}

std::string
AuthorizationValue(const Auth &auth)
{
	return auth.masked ? "Bearer ****" : "Bearer " + auth.bearer;
}

[[noreturn]] void
CannotPull(const std::string &kind)
{
	if (kind == "webhook" || kind == "openai")
		throw std::invalid_argument(kind + " endpoints cannot be pulled");
	throw std::invalid_argument("unknown endpoint kind \"" + Snippet(kind, 60) + "\": cannot be pulled");
}

// A non-2xx answer as a short message: the remote's own error text where it has one
// (HubSpot {"message","category"}, Salesforce [{"message","errorCode"}]).
std::string
DescribeFailure(const HttpResponse &response)
{
	if (response.status == 0)
		return "transport error: " + Snippet(response.transport_error);
	std::string head = "HTTP " + std::to_string(response.status);
	Json body = TryParseRemoteJson(response.body);
	Json errors = body.is_array() ? body : Json::array({body});
	std::string detail;
	for (const auto &error : errors) {
		const Json *message = Member(error, "message");
		if (message == nullptr || !message->is_string())
			continue;
		std::string code;
		for (const char *name : {"errorCode", "category"}) {
			const Json *value = Member(error, name);
			if (value != nullptr && value->is_string()) {
				code = value->get<std::string>();
				break;
			}
		}
		if (!detail.empty())
			detail += "; ";
		detail += (code.empty() ? std::string() : code + ": ") + Snippet(message->get<std::string>(), 300);
	}
	if (!detail.empty())
		return head + " " + detail;
	if (response.body.empty())
		return head;
	return head + ": " + Snippet(response.body);
}

[[noreturn]] void
Malformed(const std::string &what, const HttpResponse &response)
{
	throw std::runtime_error(what + ": " + (response.body.empty() ? std::string("(empty body)") : Snippet(response.body)));
}

// ---- HubSpot ----------------------------------------------------------------------------

// The property HubSpot keeps each object's modification time in.
std::string
HubSpotModifiedProperty(const Route &route)
{
	return route.remote_object == "contacts" ? "lastmodifieddate" : "hs_lastmodifieddate";
}

int64_t
HubSpotSince(const PullCursor &cursor)
{
	int64_t since = 0;
	if (!ParseDecimal(cursor.since, &since))
		throw std::invalid_argument("hubspot pull cursor \"" + Snippet(cursor.since, 60) +
		                            "\" is not epoch milliseconds");
	return since;
}

HttpRequest
HubSpotChangesRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                      const PullCursor &cursor, const Auth &auth)
{
	HubSpotSince(cursor); // validates: the value goes into a filter verbatim
	const std::string modified = HubSpotModifiedProperty(route);
	std::vector<std::string> properties;
	std::set<std::string> seen;
	for (const auto &field : fields)
		AddUnique(&properties, &seen, field, false);
	AddUnique(&properties, &seen, route.match_remote, false);
	AddUnique(&properties, &seen, modified, false);

	nlohmann::ordered_json filter;
	filter["propertyName"] = modified;
	filter["operator"] = "GT";
	filter["value"] = cursor.since;
	nlohmann::ordered_json sort;
	sort["propertyName"] = modified;
	sort["direction"] = "ASCENDING";
	nlohmann::ordered_json body;
	body["filterGroups"] = nlohmann::ordered_json::array({{{"filters", nlohmann::ordered_json::array({filter})}}});
	body["sorts"] = nlohmann::ordered_json::array({sort});
	body["properties"] = properties;
	body["limit"] = kHubSpotSearchLimit;
	if (!cursor.after.empty())
		body["after"] = cursor.after;

	HttpRequest request;
	request.method = "POST";
	request.url = JoinUrl(endpoint.base_url, "/crm/v3/objects/" + UrlEncode(route.remote_object) + "/search");
	request.headers.emplace_back("Authorization", AuthorizationValue(auth));
	request.headers.emplace_back("Content-Type", "application/json");
	AppendOptionHeaders(endpoint, &request.headers);
	request.body = body.dump();
	return request;
}

HttpRequest
HubSpotDeletionsRequest(const Endpoint &endpoint, const Route &route, const PullCursor &cursor, const Auth &auth)
{
	std::string url = JoinUrl(endpoint.base_url, "/crm/v3/objects/" + UrlEncode(route.remote_object)) +
	                  "?archived=true&limit=" + std::to_string(kHubSpotArchivedLimit);
	if (!route.match_remote.empty())
		url += "&properties=" + UrlEncode(route.match_remote);
	if (!cursor.after.empty())
		url += "&after=" + UrlEncode(cursor.after);
	HttpRequest request;
	request.method = "GET";
	request.url = std::move(url);
	request.headers.emplace_back("Authorization", AuthorizationValue(auth));
	AppendOptionHeaders(endpoint, &request.headers);
	return request;
}

// results[] of a search or listing answer; throws when the body is not HubSpot's shape.
std::vector<RemoteRecord>
HubSpotRecords(const Json &body, const Route &route, const HttpResponse &response, bool deleted)
{
	const Json *results = Member(body, "results");
	if (results == nullptr || !results->is_array())
		Malformed("hubspot answer without a results array", response);
	const std::string modified = HubSpotModifiedProperty(route);
	std::vector<RemoteRecord> records;
	records.reserve(results->size());
	for (const auto &item : *results) {
		RemoteRecord record;
		record.remote_id = KeyText(Member(item, "id"));
		if (record.remote_id.empty())
			Malformed("hubspot result without an id", response);
		const Json *properties = Member(item, "properties");
		if (properties != nullptr && properties->is_object())
			record.fields = *properties;
		else if (properties != nullptr && !properties->is_null())
			Malformed("hubspot result whose properties are not an object", response);
		record.key = KeyText(MemberAnyCase(record.fields, route.match_remote));
		if (deleted) {
			const Json *archived_at = Member(item, "archivedAt");
			record.modified_ms = archived_at != nullptr ? TimeMs(*archived_at) : 0;
		} else if (const Json *stamp = Member(record.fields, modified)) {
			record.modified_ms = TimeMs(*stamp);
		}
		if (record.modified_ms == 0)
			if (const Json *updated = Member(item, "updatedAt"))
				record.modified_ms = TimeMs(*updated);
		record.deleted = deleted;
		records.push_back(std::move(record));
	}
	return records;
}

// paging.next.after as text; empty when there is no next page.
std::string
HubSpotNextAfter(const Json &body, const HttpResponse &response, bool *has_next)
{
	*has_next = false;
	const Json *paging = Member(body, "paging");
	const Json *next = paging != nullptr ? Member(*paging, "next") : nullptr;
	if (next == nullptr || next->is_null())
		return std::string();
	*has_next = true;
	std::string after = KeyText(Member(*next, "after"));
	if (after.empty())
		Malformed("hubspot paging.next without after", response);
	return after;
}

PullPage
ParseHubSpot(const Route &route, PullPhase phase, const PullCursor &cursor, const HttpResponse &response,
             const Json &body)
{
	PullPage page;
	const bool deletions = phase == PullPhase::Deletions;
	page.records = HubSpotRecords(body, route, response, deletions);
	bool has_next = false;
	std::string next_after = HubSpotNextAfter(body, response, &has_next);

	if (deletions) {
		// The archived listing has no time filter: each cycle walks it whole, and since stays.
		page.next.since = cursor.since;
		page.next.after = has_next ? next_after : std::string();
		page.more = has_next;
		return page;
	}

	const int64_t since = HubSpotSince(cursor);
	if (page.records.empty()) {
		page.next.since = cursor.since;
		return page;
	}
	int64_t newest = 0;
	for (const auto &record : page.records)
		newest = std::max(newest, record.modified_ms);

	if (has_next) {
		int64_t offset = 0;
		// An opaque (non-numeric) after cannot be checked against the cap: follow it.
		bool within_cap = !ParseDecimal(next_after, &offset) || offset + kHubSpotSearchLimit < kHubSpotSearchCap;
		if (within_cap) {
			page.next.since = cursor.since;
			page.next.after = next_after;
		} else {
			// Past the cap HubSpot refuses to page. Start a new query just below the newest
			// time seen, so records sharing that millisecond are fetched again, never skipped.
			page.next.since = std::to_string(std::max(since, newest - 1));
		}
		page.more = true;
		return page;
	}
	// The query is exhausted: results were ascending, so this page holds the newest time.
	page.next.since = std::to_string(std::max(since, newest));
	return page;
}

// ---- Salesforce -------------------------------------------------------------------------

// Names go into SOQL verbatim: letters, digits, underscores, and dots for relationship fields.
void
CheckSoqlName(const std::string &name, const char *what)
{
	bool ok = !name.empty() && (std::isalpha(static_cast<unsigned char>(name[0])) != 0) &&
	          std::all_of(name.begin(), name.end(), [](char c) {
		          return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.';
	          });
	if (!ok)
		throw std::invalid_argument(std::string("salesforce ") + what + " \"" + Snippet(name, 60) +
		                            "\" is not a valid SOQL name");
}

int64_t
SalesforceSinceMs(const PullCursor &cursor)
{
	int64_t ms = 0;
	if (!ParseIsoMs(cursor.since, &ms))
		throw std::invalid_argument("salesforce pull cursor \"" + Snippet(cursor.since, 60) +
		                            "\" is not an ISO-8601 datetime with a zone");
	return ms;
}

HttpRequest
SalesforceRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                  PullPhase phase, const PullCursor &cursor, const Auth &auth)
{
	// Before the first token (preview) the instance is unknown; the login host stands in.
	const std::string instance = auth.instance_url.empty() ? endpoint.base_url : auth.instance_url;
	std::string url;
	if (!cursor.after.empty()) {
		// The bearer token goes wherever this points: only a path on the instance is followed.
		if (cursor.after.compare(0, 15, "/services/data/") != 0)
			throw std::invalid_argument("salesforce pull cursor: nextRecordsUrl \"" + Snippet(cursor.after, 80) +
			                            "\" is not a /services/data/ path");
		url = JoinUrl(instance, cursor.after);
	} else {
		SalesforceSinceMs(cursor); // validates: the literal goes into SOQL unquoted
		CheckSoqlName(route.remote_object, "object");
		std::vector<std::string> names;
		std::set<std::string> seen;
		// SOQL field names are case-insensitive, and a field selected twice is an error.
		AddUnique(&names, &seen, "Id", true);
		AddUnique(&names, &seen, "SystemModstamp", true);
		CheckSoqlName(route.match_remote, "field");
		AddUnique(&names, &seen, route.match_remote, true);
		if (phase == PullPhase::Changes) {
			for (const auto &field : fields) {
				CheckSoqlName(field, "field");
				AddUnique(&names, &seen, field, true);
			}
		}
		std::string soql = "SELECT ";
		for (size_t i = 0; i < names.size(); ++i)
			soql += (i ? ", " : "") + names[i];
		soql += " FROM " + route.remote_object + " WHERE ";
		if (phase == PullPhase::Deletions)
			soql += "IsDeleted = true AND ";
		soql += "SystemModstamp > " + cursor.since + " ORDER BY SystemModstamp ASC";
		// queryAll is the only way to see deleted (recycle bin) records.
		const char *resource = phase == PullPhase::Deletions ? "/queryAll" : "/query";
		url = JoinUrl(instance, "/services/data/v" + ApiVersion(endpoint) + resource) + "?q=" + UrlEncode(soql);
	}
	HttpRequest request;
	request.method = "GET";
	request.url = std::move(url);
	request.headers.emplace_back("Authorization", AuthorizationValue(auth));
	AppendOptionHeaders(endpoint, &request.headers);
	return request;
}

PullPage
ParseSalesforce(const Route &route, PullPhase phase, const PullCursor &cursor, const HttpResponse &response,
                const Json &body)
{
	const Json *records = Member(body, "records");
	if (records == nullptr || !records->is_array())
		Malformed("salesforce query answer without a records array", response);
	PullPage page;
	int64_t newest = 0;
	for (const auto &item : *records) {
		if (!item.is_object())
			Malformed("salesforce query record that is not an object", response);
		RemoteRecord record;
		record.remote_id = KeyText(Member(item, "Id"));
		if (record.remote_id.empty())
			Malformed("salesforce query record without an Id", response);
		record.fields = item;
		record.fields.erase("attributes");
		record.key = KeyText(MemberAnyCase(item, route.match_remote));
		if (const Json *stamp = Member(item, "SystemModstamp"))
			record.modified_ms = TimeMs(*stamp);
		record.deleted = phase == PullPhase::Deletions;
		newest = std::max(newest, record.modified_ms);
		page.records.push_back(std::move(record));
	}

	std::string next_url;
	if (const Json *next = Member(body, "nextRecordsUrl"))
		if (next->is_string())
			next_url = next->get<std::string>();
	const Json *done = Member(body, "done");
	const bool finished = done != nullptr && done->is_boolean() && done->get<bool>();
	if (!next_url.empty() && !finished) {
		if (next_url.compare(0, 15, "/services/data/") != 0)
			Malformed("salesforce nextRecordsUrl is not a /services/data/ path", response);
		page.next.since = cursor.since;
		page.next.after = next_url;
		page.more = true;
		return page;
	}
	// The query is exhausted: ordered by SystemModstamp, so the newest time is the last seen.
	int64_t since_ms = 0;
	const bool since_known = ParseIsoMs(cursor.since, &since_ms);
	if (newest > 0 && (!since_known || newest > since_ms))
		page.next.since = IsoTimestampUtc(newest);
	else
		page.next.since = cursor.since;
	return page;
}

} // namespace

PullCursor
InitialPullCursor(const std::string &kind)
{
	if (kind == "hubspot")
		return PullCursor{"0", ""};
	if (kind == "salesforce")
		return PullCursor{kSalesforceEpoch, ""};
	// Not an exception: the worker reads cursors of every pulling route in one pass, and
	// BuildPullRequest reports the kind per route.
	return PullCursor{"", ""};
}

HttpRequest
BuildPullRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                 PullPhase phase, const PullCursor &cursor, const Auth &auth)
{
	if (endpoint.kind == "hubspot")
		return phase == PullPhase::Changes ? HubSpotChangesRequest(endpoint, route, fields, cursor, auth)
		                                   : HubSpotDeletionsRequest(endpoint, route, cursor, auth);
	if (endpoint.kind == "salesforce")
		return SalesforceRequest(endpoint, route, fields, phase, cursor, auth);
	CannotPull(endpoint.kind);
}

PullPage
ParsePullResponse(const Endpoint &endpoint, const Route &route, PullPhase phase, const PullCursor &cursor,
                  const HttpResponse &response)
{
	if (endpoint.kind != "hubspot" && endpoint.kind != "salesforce")
		CannotPull(endpoint.kind);
	if (response.status < 200 || response.status >= 300)
		throw std::runtime_error(endpoint.kind + " pull failed: " + DescribeFailure(response));
	std::string refused;
	Json body = TryParseRemoteJson(response.body, &refused);
	if (!refused.empty())
		throw std::runtime_error(endpoint.kind + " pull answer refused: " + refused);
	if (body.is_discarded() || !body.is_object())
		Malformed(endpoint.kind + " pull answer is not a JSON object", response);
	if (endpoint.kind == "hubspot")
		return ParseHubSpot(route, phase, cursor, response, body);
	return ParseSalesforce(route, phase, cursor, response, body);
}

bool
CanPull(const std::string &kind)
{
	return kind == "hubspot" || kind == "salesforce";
}

} // namespace switchboard
