// HubSpot CRM v3 connector (SPEC §5 hubspot, §6): batch upsert by idProperty, batch archive
// for deletes, 207 partial failures mapped back through objectWriteTraceId; pulls through the
// search API (changes) and the archived listing (deletions).
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <stdexcept>

#include "connectors/pull.h"
#include "http/json_limits.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

const size_t kHubSpotBatchLimit = 100;
// HubSpot allows 5 search requests per second per account; one slot of headroom keeps a clock
// skew between us and HubSpot from earning 429s.
const int kHubSpotSearchPerSecond = 4;

// The daily quota: no backoff brings it back, so the endpoint pauses until it resets.
bool
IsDailyLimit(const HttpResponse &response)
{
	if (response.status != 429)
		return false;
	Json body = TryParseRemoteJson(response.body);
	return body.is_object() && body.contains("policyName") && body["policyName"] == "DAILY";
}

// HubSpot's schema takes every property value as a string; SQL NULL becomes "" (clears it).
std::string
RenderProperty(const Json &value)
{
	if (value.is_string())
		return value.get<std::string>();
	if (value.is_null())
		return std::string();
	if (value.is_boolean())
		return value.get<bool>() ? "true" : "false";
	// A SQL array of scalars is what HubSpot's multiple checkboxes hold: "a;b;c".
	if (value.is_array() && std::all_of(value.begin(), value.end(), [](const Json &v) { return v.is_primitive(); })) {
		std::string joined;
		for (const auto &item : value) {
			if (item.is_null())
				continue;
			joined += (joined.empty() ? "" : ";") + RenderProperty(item);
		}
		return joined;
	}
	return value.dump(); // numbers as their text; objects and nested arrays as their JSON text
}

// A JSON scalar as text (ids come back as strings, but be lenient about numbers).
std::string
ScalarText(const Json &value)
{
	if (value.is_string())
		return value.get<std::string>();
	if (value.is_number())
		return value.dump();
	return std::string();
}

// objectWriteTraceId: the stable event id, so a 207 names the same input on every attempt.
std::string
TraceId(const Change &change)
{
	return change.event_id.empty() ? "switchboard-" + std::to_string(change.id) : change.event_id;
}

bool
IsArchiveCall(const Call &call)
{
	const std::string suffix = "/batch/archive";
	const std::string &url = call.request.url;
	return url.size() >= suffix.size() && url.compare(url.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "HTTP 400 VALIDATION_ERROR: Property values were not valid (correlationId 3c1…)".
std::string
DescribeError(const HttpResponse &response)
{
	std::string head = "HTTP " + std::to_string(response.status);
	Json body = TryParseRemoteJson(response.body);
	if (body.is_object() && body.contains("message") && body["message"].is_string()) {
		std::string text = head;
		if (body.contains("category") && body["category"].is_string())
			text += " " + body["category"].get<std::string>();
		text += ": " + Snippet(body["message"].get<std::string>(), 500);
		if (body.contains("correlationId") && body["correlationId"].is_string())
			text += " (correlationId " + body["correlationId"].get<std::string>() + ")";
		return text;
	}
	if (response.body.empty())
		return head;
	return head + ": " + Snippet(response.body);
}

// Strings named by an error's context entry (HubSpot uses arrays; accept a bare string too).
std::vector<std::string>
ContextValues(const Json &context, const char *name)
{
	std::vector<std::string> out;
	if (!context.is_object() || !context.contains(name))
		return out;
	const Json &entry = context[name];
	if (entry.is_array()) {
		for (const auto &item : entry)
			if (!ScalarText(item).empty())
				out.push_back(ScalarText(item));
	} else if (!ScalarText(entry).empty()) {
		out.push_back(ScalarText(entry));
	}
	return out;
}

// ---- pull: search (changes) and archived listing (deletions) --------------------------------

using pull::AddUnique;
using pull::AuthorizationValue;
using pull::KeyText;
using pull::Malformed;
using pull::Member;
using pull::NewestModified;
using pull::ParseDecimal;
using pull::ReadRecords;
using pull::RecordShape;
using pull::SinceAfter;
using pull::TimeMs;

// HubSpot's archived listing pages at most 100 records.
const int kHubSpotArchivedLimit = 100;

// The archived listing has no time filter: it is walked whole every cycle, and only the records
// archived since the deletions cursor are kept (issue 10.3; the pull also matches each one by
// the remote id it knows for the key). The cursor moves to the newest archivedAt of a whole
// walk, less this margin, for records that become visible late; applying a deletion twice is
// harmless.
const int64_t kHubSpotArchivedOverlapMs = 5 * 60 * 1000;

// Each cycle of changes starts this far before the cursor (issue 10.4): search indexes a
// change some time after its lastmodifieddate, so a record stamped at or just before the
// cursor may become visible after the cycle that set it. Records read again are applied
// idempotently (the same values; the echo of our own push is recognised as such).
const int64_t kHubSpotPullOverlapMs = 60 * 1000;

// The deletions cursor's after is "<HubSpot's after>|<newest archivedAt seen in this walk>".
void
SplitArchivedAfter(const std::string &after, std::string *token, int64_t *newest)
{
	*token = after;
	*newest = 0;
	auto bar = after.rfind('|');
	if (bar == std::string::npos)
		return;
	*token = after.substr(0, bar);
	if (!ParseDecimal(after.substr(bar + 1), newest))
		*newest = 0;
}

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

// Paging of changes is by keyset, never by HubSpot's `after` offset: an offset over a result
// set that changes between pages (our own pushes move records to its end) skips records for
// good (issue 10.4), and it stops at 10,000 results. Each page is a new search from the last
// position seen. HubSpot applies one sort rule only ("Only one sorting rule can be applied to
// any search"), so there is no (time, id) order; the position is one of
//   (empty)         a cycle's first page: times from the look-back before the cursor;
//   "t:<M>"         times >= M, by time: M is the newest time of the last page, whose records
//                   stamped M are read again (the order among them is unknown);
//   "ms:<M>:<id>"   a full page shared one millisecond M: M's records by id, after id;
//   "n:<M>:<ids>"   times > M, or = M and an object id not among <ids> (comma-separated): the
//                   ids of M's records read so far, so that none is read again (at most
//                   kHubSpotNotInValues; more, and M is read again or walked by id);
//   "gt:<M>"        M's records were walked by id: times > M, by time.
// Anything else (a HubSpot offset stored by an older version) starts the cycle again.
struct KeysetAfter {
	enum Kind { Start, From, Seen, Tie, Past } kind = Start;
	int64_t ms = 0;
	int64_t id = 0;
	std::set<int64_t> seen_ids; // Seen
};

// The most ids one NOT_IN filter of a position "n:" carries. Records written by one request
// share a modification time (a batch of 100), so a page of 200 usually ends amid one batch:
// without the ids, the next search would read that batch again and a full pull would cost up
// to twice the searches HubSpot allows.
constexpr size_t kHubSpotNotInValues = 100;

KeysetAfter
ParseKeysetAfter(const std::string &after)
{
	KeysetAfter k;
	auto number = [&](size_t at, int64_t *out) { return ParseDecimal(after.substr(at), out); };
	if (after.compare(0, 2, "t:") == 0 && number(2, &k.ms)) {
		k.kind = KeysetAfter::From;
	} else if (after.compare(0, 3, "gt:") == 0 && number(3, &k.ms)) {
		k.kind = KeysetAfter::Past;
	} else if (after.compare(0, 3, "ms:") == 0) {
		auto colon = after.find(':', 3);
		if (colon != std::string::npos && ParseDecimal(after.substr(3, colon - 3), &k.ms) && number(colon + 1, &k.id))
			k.kind = KeysetAfter::Tie;
	} else if (after.compare(0, 2, "n:") == 0) {
		auto colon = after.find(':', 2);
		bool ok = colon != std::string::npos && ParseDecimal(after.substr(2, colon - 2), &k.ms);
		for (size_t at = colon + 1; ok && at <= after.size();) {
			size_t comma = std::min(after.find(',', at), after.size());
			int64_t id = 0;
			ok = ParseDecimal(after.substr(at, comma - at), &id) && k.seen_ids.size() < kHubSpotNotInValues;
			k.seen_ids.insert(id);
			at = comma + 1;
		}
		if (ok && !k.seen_ids.empty())
			k.kind = KeysetAfter::Seen;
	}
	if (k.kind == KeysetAfter::Start)
		k = KeysetAfter();
	return k;
}

HttpRequest
HubSpotChangesRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                      const PullCursor &cursor, const Auth &auth)
{
	const int64_t since = HubSpotSince(cursor); // validates: the value goes into a filter verbatim
	const std::string modified = HubSpotModifiedProperty(route);
	std::vector<std::string> properties;
	std::set<std::string> seen;
	for (const auto &field : fields)
		AddUnique(&properties, &seen, field, false);
	AddUnique(&properties, &seen, route.match_remote, false);
	AddUnique(&properties, &seen, modified, false);

	auto condition = [](const std::string &name, const char *op, const std::string &value) {
		nlohmann::ordered_json filter;
		filter["propertyName"] = name;
		filter["operator"] = op;
		filter["value"] = value;
		return filter;
	};
	nlohmann::ordered_json filters = nlohmann::ordered_json::array();
	nlohmann::ordered_json or_group; // a second filter group (OR), for Seen
	std::string sort_by = modified;
	const KeysetAfter at = ParseKeysetAfter(cursor.after);
	switch (at.kind) {
	case KeysetAfter::Start:
		// A cycle starts a look-back before the cursor: records stamped at or just before it
		// that became visible to search late are read again (applied idempotently).
		filters.push_back(
		    condition(modified, "GTE", std::to_string(std::max<int64_t>(0, since - kHubSpotPullOverlapMs))));
		break;
	case KeysetAfter::From:
		filters.push_back(condition(modified, "GTE", std::to_string(at.ms)));
		break;
	case KeysetAfter::Tie:
		filters.push_back(condition(modified, "EQ", std::to_string(at.ms)));
		filters.push_back(condition("hs_object_id", "GT", std::to_string(at.id)));
		sort_by = "hs_object_id";
		break;
	case KeysetAfter::Seen: {
		filters.push_back(condition(modified, "GT", std::to_string(at.ms)));
		nlohmann::ordered_json not_in;
		not_in["propertyName"] = "hs_object_id";
		not_in["operator"] = "NOT_IN";
		not_in["values"] = nlohmann::ordered_json::array();
		for (int64_t id : at.seen_ids)
			not_in["values"].push_back(std::to_string(id));
		or_group["filters"] = nlohmann::ordered_json::array({condition(modified, "EQ", std::to_string(at.ms)), not_in});
		break;
	}
	case KeysetAfter::Past:
		filters.push_back(condition(modified, "GT", std::to_string(at.ms)));
		break;
	}
	nlohmann::ordered_json sort;
	sort["propertyName"] = sort_by;
	sort["direction"] = "ASCENDING";
	nlohmann::ordered_json body;
	body["filterGroups"] = nlohmann::ordered_json::array({{{"filters", filters}}});
	if (!or_group.is_null())
		body["filterGroups"].push_back(or_group);
	body["sorts"] = nlohmann::ordered_json::array({sort});
	body["properties"] = properties;
	body["limit"] = kHubSpotSearchLimit;

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
	std::string token;
	int64_t newest = 0;
	SplitArchivedAfter(cursor.after, &token, &newest);
	if (!token.empty())
		url += "&after=" + UrlEncode(token);
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
	const std::string modified = HubSpotModifiedProperty(route);
	RecordShape shape;
	shape.array = "results";
	shape.id = "id";
	shape.answer = "hubspot answer";
	shape.record = "hubspot result";
	shape.must_be_object = false;
	shape.fields = [&](const Json &item) {
		const Json *properties = Member(item, "properties");
		if (properties != nullptr && properties->is_object())
			return *properties;
		if (properties != nullptr && !properties->is_null())
			Malformed("hubspot result whose properties are not an object", response);
		return Json(Json::object());
	};
	shape.modified = [&](const Json &item, const Json &fields) {
		int64_t ms = 0;
		// An archived record's time is when it was archived; a live one's is its property.
		if (deleted) {
			const Json *archived_at = Member(item, "archivedAt");
			ms = archived_at != nullptr ? TimeMs(*archived_at) : 0;
		} else if (const Json *stamp = Member(fields, modified)) {
			ms = TimeMs(*stamp);
		}
		if (ms == 0)
			if (const Json *updated = Member(item, "updatedAt"))
				ms = TimeMs(*updated);
		return ms;
	};
	return ReadRecords(body, shape, route, deleted, response);
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
ParseHubSpotPage(const Route &route, PullPhase phase, const PullCursor &cursor, const HttpResponse &response,
                 const Json &body)
{
	PullPage page;
	const bool deletions = phase == PullPhase::Deletions;
	page.records = HubSpotRecords(body, route, response, deletions);
	bool has_next = false;
	std::string next_after = HubSpotNextAfter(body, response, &has_next);

	const int64_t since = HubSpotSince(cursor);
	if (deletions) {
		// Walked whole each cycle (see kHubSpotArchivedOverlapMs): only what was archived since
		// the cursor counts (a record without a time is kept: the remote id decides).
		std::string token;
		int64_t newest = 0;
		SplitArchivedAfter(cursor.after, &token, &newest);
		newest = std::max(newest, NewestModified(page.records));
		page.records.erase(std::remove_if(page.records.begin(), page.records.end(),
		                                  [&](const RemoteRecord &r) {
			                                  return r.modified_ms != 0 && r.modified_ms < since;
		                                  }),
		                   page.records.end());
		page.more = has_next;
		if (has_next) {
			page.next.since = cursor.since;
			page.next.after = next_after + "|" + std::to_string(newest);
		} else {
			page.next.since = std::to_string(std::max(since, newest - kHubSpotArchivedOverlapMs));
		}
		return page;
	}

	// Changes: HubSpot's paging.next only says that more results follow; the next page is a
	// new search from the position this page reached (see KeysetAfter).
	const KeysetAfter at = ParseKeysetAfter(cursor.after);
	const int64_t seen = at.kind == KeysetAfter::Start ? 0 : at.ms; // the newest time of earlier pages
	page.more = true;
	page.next.since = cursor.since;
	if (at.kind == KeysetAfter::Tie) {
		int64_t last_id = at.id;
		for (const auto &record : page.records) {
			int64_t id = 0;
			if (ParseDecimal(record.remote_id, &id))
				last_id = std::max(last_id, id);
		}
		if (has_next && last_id > at.id) {
			page.next.after = "ms:" + std::to_string(at.ms) + ":" + std::to_string(last_id);
		} else {
			if (has_next)
				// A full page without a readable id past the last one: a next page would be
				// this one again.
				Malformed("hubspot search: a full page of one millisecond without a readable object id past the "
				          "cursor; the cursor cannot move past it",
				          response);
			// Every record up to that millisecond has been read: the cursor may say so now.
			page.next.since = std::to_string(std::max(since, at.ms));
			page.next.after = "gt:" + std::to_string(at.ms);
		}
		return page;
	}
	const int64_t newest = NewestModified(page.records);
	if (!has_next) {
		// The query is exhausted: the newest time of the cycle (this page's, or the last
		// page's when this one came back empty) is where the next cycle's look-back ends.
		page.more = false;
		page.next.after.clear();
		page.next.since = SinceAfter(cursor, since, std::max(newest, seen),
		                             [](int64_t ms) { return std::to_string(ms); });
		return page;
	}
	bool below = false; // a record older than the newest time: a page from that time moves on
	// The ids of the newest time's records read so far (those of earlier pages at that time too).
	// (A page all of one time, of a search not already at that time, is a bulk import's: walked
	// by id below, as its records may be many more than one NOT_IN carries.)
	const bool continued = at.kind == KeysetAfter::Seen && at.ms == newest;
	std::set<int64_t> at_newest = continued ? at.seen_ids : std::set<int64_t>();
	bool ids_readable = true;
	for (const auto &record : page.records) {
		if (record.modified_ms > 0 && record.modified_ms < newest)
			below = true;
		int64_t id = 0;
		if (record.modified_ms != newest)
			continue;
		if (ParseDecimal(record.remote_id, &id))
			at_newest.insert(id);
		else
			ids_readable = false;
	}
	if (newest > 0 && (below || continued) && ids_readable && !at_newest.empty() &&
	    at_newest.size() <= kHubSpotNotInValues) {
		// Past the records of the newest time read so far, none of them read again.
		std::string ids;
		for (int64_t id : at_newest)
			ids += (ids.empty() ? "" : ",") + std::to_string(id);
		page.next.after = "n:" + std::to_string(newest) + ":" + ids;
	} else if (below) {
		page.next.after = "t:" + std::to_string(newest);
	} else {
		// The whole page shares one millisecond: a search from it would answer this page
		// again, forever (a bulk import). Walk that millisecond's records by id instead.
		page.next.after = "ms:" + std::to_string(newest) + ":0";
	}
	// No readable time, or none past where this search started (a remote ignoring the filter):
	// a next page would be this one again, an error the route backs off on, never a loop.
	if (newest <= 0 || (at.kind != KeysetAfter::Start && newest < at.ms) ||
	    (at.kind == KeysetAfter::Past && newest <= at.ms) || page.next.after == cursor.after)
		Malformed("hubspot search: a full page without a readable modification time past the cursor; the cursor "
		          "cannot move past it",
		          response);
	return page;
}

class HubSpotConnector : public Connector {
public:
	size_t BulkLimit() const override { return kHubSpotBatchLimit; }

	std::string MatchRemoteHint() const override { return "the HubSpot property holding the key, e.g. email"; }

	AnswerClass ClassifyAnswer(const HttpResponse &response) const override
	{
		AnswerClass answer = Connector::ClassifyAnswer(response);
		answer.stop_endpoint = IsDailyLimit(response);
		return answer;
	}

	RequestLimit ExtraLimitFor(const HttpRequest &request) const override
	{
		// Search requests (the pull) count against a per-account limit of their own.
		const std::string path = request.url.substr(0, request.url.find('?'));
		const std::string suffix = "/search";
		if (path.size() < suffix.size() || path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0)
			return RequestLimit();
		return RequestLimit{kHubSpotSearchPerSecond, 1000,
		                    "the HubSpot search limit (" + std::to_string(kHubSpotSearchPerSecond) + "/s)"};
	}

	bool CanReadBack() const override { return true; }

	// POST /crm/v3/objects/{object}/batch/read: what an inbound event names, by HubSpot id,
	// with the mapped properties (and the key and modification time, as a pull asks).
	HttpRequest BuildReadBackRequest(const Endpoint &endpoint, const Route &route,
	                                 const std::vector<std::string> &fields, const std::vector<std::string> &ids,
	                                 const Auth &auth) const override
	{
		std::vector<std::string> properties;
		std::set<std::string> seen;
		for (const auto &field : fields)
			AddUnique(&properties, &seen, field, false);
		AddUnique(&properties, &seen, route.match_remote, false);
		AddUnique(&properties, &seen, HubSpotModifiedProperty(route), false);
		nlohmann::ordered_json inputs = nlohmann::ordered_json::array();
		for (const auto &id : ids)
			inputs.push_back({{"id", id}});
		nlohmann::ordered_json body;
		body["properties"] = properties;
		body["inputs"] = std::move(inputs);
		HttpRequest request;
		request.method = "POST";
		request.url = JoinUrl(endpoint.base_url, "/crm/v3/objects/" + UrlEncode(route.remote_object) + "/batch/read");
		request.headers.emplace_back("Authorization", AuthorizationValue(auth));
		request.headers.emplace_back("Content-Type", "application/json");
		AppendOptionHeaders(endpoint, &request.headers);
		request.body = body.dump();
		return request;
	}

	// 200, or 207 whose errors[] name ids HubSpot no longer has (deleted since the event).
	std::vector<RemoteRecord> ParseReadBack(const Endpoint &, const Route &route, const HttpResponse &response,
	                                        const Json &body) const override
	{
		return HubSpotRecords(body, route, response, false);
	}

	bool CanPull() const override { return true; }

	PullCursor InitialPullCursor() const override
	{
		return PullCursor{"0", ""}; // epoch ms: everything
	}

	HttpRequest BuildPullRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
	                             PullPhase phase, const PullCursor &cursor, const Auth &auth) const override
	{
		return phase == PullPhase::Changes ? HubSpotChangesRequest(endpoint, route, fields, cursor, auth)
		                                   : HubSpotDeletionsRequest(endpoint, route, cursor, auth);
	}

	PullPage ParsePullPage(const Endpoint &, const Route &route, PullPhase phase, const PullCursor &cursor,
	                       const HttpResponse &response, const Json &body) const override
	{
		return ParseHubSpotPage(route, phase, cursor, response, body);
	}

	std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &route, const std::vector<Change> &changes,
	                             const Auth &auth) const override
	{
		std::vector<size_t> upserts, archives;
		for (size_t i = 0; i < changes.size(); ++i) {
			if (changes[i].op != Op::Delete)
				upserts.push_back(i);
			else if (route.on_delete == "delete" && !changes[i].remote_id.empty())
				archives.push_back(i);
			// Other deletes get no call: SkippedChanges reports them.
		}
		const std::string object_url = JoinUrl(endpoint.base_url, "/crm/v3/objects/" + UrlEncode(route.remote_object));
		size_t batch = MaxBatch(endpoint);
		std::vector<Call> calls;
		for (size_t start = 0; start < upserts.size(); start += batch) {
			Call call;
			// Written as text, each string through nlohmann's serializer (its escaping and its
			// refusal of text that is not UTF-8): the same body as a dump of the document, without
			// building one per input. Every property is a string (RenderProperty).
			const std::string id_property = Json(route.match_remote).dump();
			std::string body = "{\"inputs\":[";
			for (size_t i = start; i < std::min(upserts.size(), start + batch); ++i) {
				const Change &change = changes[upserts[i]];
				if (i > start)
					body += ',';
				body += "{\"idProperty\":" + id_property + ",\"id\":" + Json(change.key).dump() + ",\"properties\":{";
				bool first = true;
				if (change.fields.is_object())
					for (const auto &field : change.fields.items()) {
						if (!first)
							body += ',';
						first = false;
						body += Json(field.key()).dump() + ':' + Json(RenderProperty(field.value())).dump();
					}
				body += "},\"objectWriteTraceId\":" + Json(TraceId(change)).dump() + '}';
				call.changes.push_back(upserts[i]);
			}
			body += "]}";
			call.request = MakeRequest(endpoint, object_url + "/batch/upsert", std::move(body), auth);
			calls.push_back(std::move(call));
		}
		for (size_t start = 0; start < archives.size(); start += batch) {
			Call call;
			nlohmann::ordered_json inputs = nlohmann::ordered_json::array();
			for (size_t i = start; i < std::min(archives.size(), start + batch); ++i) {
				inputs.push_back({{"id", changes[archives[i]].remote_id}});
				call.changes.push_back(archives[i]);
			}
			nlohmann::ordered_json body;
			body["inputs"] = std::move(inputs);
			call.request = MakeRequest(endpoint, object_url + "/batch/archive", body.dump(), auth);
			calls.push_back(std::move(call));
		}
		return calls;
	}

	CallResult ParseResult(const Call &call, const std::vector<Change> &changes,
	                       const HttpResponse &response) const override
	{
		CallResult result;
		long status = response.status;
		if (status == 0) {
			result = UniformResult(call, Outcome::Retry, "transport error: " + Snippet(response.transport_error));
		} else if (status >= 200 && status < 300) {
			result = ParseSuccess(call, changes, response);
		} else if (status == 429) {
			Json body = TryParseRemoteJson(response.body);
			std::string policy;
			if (body.is_object() && body.contains("policyName") && body["policyName"].is_string())
				policy = body["policyName"].get<std::string>();
			std::string error = DescribeError(response);
			if (!policy.empty())
				error += " [policy " + policy + "]";
			// The daily quota (policy DAILY) stops the endpoint: ClassifyAnswer says so below.
			result = UniformResult(call, Outcome::Retry, error, RetryAfterMs(response));
		} else if (status == 423 || status == 408) {
			// 423: HubSpot locks a record or portal briefly (e.g. during a merge); transient.
			result = UniformResult(call, Outcome::Retry, DescribeError(response), RetryAfterMs(response));
		} else if (status >= 500) {
			result = UniformResult(call, Outcome::Retry, DescribeError(response), RetryAfterMs(response));
		} else if (status == 401 || status == 403) {
			result = UniformResult(call, Outcome::Dead, "authentication failed: " + DescribeError(response));
		} else {
			result = UniformResult(call, Outcome::Dead, DescribeError(response));
			// HubSpot refuses a whole batch for one bad input (a duplicate id, an empty id, a
			// value of the wrong type): isolate it. 404/405 name the URL, not an input.
			result.split = status == 400 || status == 409 || status == 413 || status == 422;
		}
		// Which answers are endpoint failures is decided in one place for push and pull.
		MarkAnswer(ClassifyAnswer(response), &result);
		result.http_status = status;
		return result;
	}

private:
	static HttpRequest MakeRequest(const Endpoint &endpoint, const std::string &url, std::string body, const Auth &auth)
	{
		HttpRequest request;
		request.method = "POST";
		request.url = url;
		request.headers.emplace_back("Authorization", auth.masked ? "Bearer ****" : "Bearer " + auth.bearer);
		request.headers.emplace_back("Content-Type", "application/json");
		AppendOptionHeaders(endpoint, &request.headers);
		request.body = std::move(body);
		return request;
	}

	// 200/201/204/207: everything delivered except the inputs a 207 names in errors[].
	static CallResult ParseSuccess(const Call &call, const std::vector<Change> &changes, const HttpResponse &response)
	{
		const size_t n = call.changes.size();
		CallResult result;
		ChangeResult delivered;
		delivered.outcome = Outcome::Delivered;
		result.results.assign(n, delivered);
		std::string refused;
		Json body = TryParseRemoteJson(response.body, &refused);
		const bool partial = response.status == 207;
		// Which inputs a 207 rejected is unknown: send them again (upserts and archives repeat harmlessly).
		if (partial && !refused.empty())
			return UniformResult(call, Outcome::Retry, "HTTP 207 with a body refused: " + refused);
		if (!body.is_object())
			return result; // 204 from archive, or a body we cannot read: the status says it worked
		const bool archive = IsArchiveCall(call);

		// Lookups from what HubSpot echoes back to positions in the call.
		std::map<std::string, std::vector<size_t>> by_trace, by_id;
		for (size_t p = 0; p < n; ++p) {
			const Change &change = changes.at(call.changes[p]);
			by_trace[TraceId(change)].push_back(p);
			by_id[Lower(archive ? change.remote_id : change.key)].push_back(p);
		}
		std::vector<bool> accounted(n, false);

		// errors[]: the inputs HubSpot rejected, named by objectWriteTraceId (or by id).
		std::string unattributed;
		if (body.contains("errors") && body["errors"].is_array()) {
			for (const auto &error : body["errors"]) {
				if (!error.is_object())
					continue;
				std::string message;
				if (error.contains("message") && error["message"].is_string())
					message = error["message"].get<std::string>();
				else if (error.contains("category") && error["category"].is_string())
					message = error["category"].get<std::string>();
				else
					message = "rejected by HubSpot";
				message = Snippet(message, 500);
				const Json context = error.contains("context") ? error["context"] : Json();
				bool named = false;
				auto mark = [&](const std::map<std::string, std::vector<size_t>> &lookup, const std::string &value) {
					auto it = lookup.find(value);
					if (it == lookup.end())
						return;
					for (size_t p : it->second) {
						result.results[p].outcome = Outcome::Dead;
						result.results[p].error = message;
						accounted[p] = true;
						named = true;
					}
				};
				for (const auto &trace : ContextValues(context, "objectWriteTraceId"))
					mark(by_trace, trace);
				for (const auto &id : ContextValues(context, "ids"))
					mark(by_id, Lower(id));
				if (!named) {
					if (!unattributed.empty())
						unattributed += "; ";
					unattributed += message;
				}
			}
		}

		// results[]: remote ids, matched by the idProperty value HubSpot echoes back. HubSpot
		// does not promise results in input order: position decides only for a single input.
		if (!archive && body.contains("results") && body["results"].is_array()) {
			const Json &results = body["results"];
			const std::string match_remote = MatchRemote(call);
			for (size_t j = 0; j < results.size(); ++j) {
				const Json &item = results[j];
				if (!item.is_object())
					continue;
				std::string remote_id = item.contains("id") ? ScalarText(item["id"]) : std::string();
				long position = -1;
				std::string echoed;
				bool has_echo = false;
				if (item.contains("properties") && item["properties"].is_object() && !match_remote.empty()) {
					for (const auto &prop : item["properties"].items()) {
						if (Lower(prop.key()) == match_remote && !ScalarText(prop.value()).empty()) {
							echoed = ScalarText(prop.value());
							has_echo = true;
							break;
						}
					}
				}
				if (has_echo) {
					auto it = by_id.find(Lower(echoed));
					if (it != by_id.end())
						for (size_t p : it->second)
							if (!accounted[p]) {
								position = static_cast<long>(p);
								break;
							}
				} else if (!partial && n == 1 && j == 0 && !accounted[0]) {
					position = 0;
				}
				if (position < 0)
					continue;
				accounted[position] = true;
				if (result.results[position].outcome == Outcome::Delivered)
					result.results[position].remote_id = remote_id;
			}
		}

		// An error we could not pin on an input leaves the unaccounted ones uncertain. Retry
		// them: an upsert that did land is harmless to repeat, and one that failed will reach
		// the dead letters with this message after max_attempts.
		if (!unattributed.empty()) {
			for (size_t p = 0; p < n; ++p) {
				if (!accounted[p]) {
					result.results[p].outcome = Outcome::Retry;
					result.results[p].error = unattributed;
				}
			}
			result.error = unattributed;
		}
		return result;
	}

	// Reads inputs[0].idProperty of a request body and stops there: the rest of the body (a
	// batch of 100 inputs) is never parsed. Returning false from a handler ends the parse.
	struct IdPropertyReader : nlohmann::json_sax<Json> {
		int depth = 0;            // containers open around the next value
		bool inputs_key = false;  // the root's last key was "inputs"
		bool in_inputs = false;   // inside the root's "inputs" array
		bool id_property = false; // inside inputs[0], its last key was "idProperty"
		std::string value;
		bool Scalar()
		{
			id_property = false;
			return !(in_inputs && depth == 2); // inputs[0] is not an object: no idProperty
		}
		bool null() override { return Scalar(); }
		bool boolean(bool) override { return Scalar(); }
		bool number_integer(number_integer_t) override { return Scalar(); }
		bool number_unsigned(number_unsigned_t) override { return Scalar(); }
		bool number_float(number_float_t, const string_t &) override { return Scalar(); }
		bool binary(binary_t &) override { return Scalar(); }
		bool string(string_t &val) override
		{
			if (!id_property)
				return Scalar();
			value = val;
			return false; // found
		}
		bool start_object(std::size_t) override
		{
			id_property = false;
			++depth;
			return true;
		}
		bool key(string_t &val) override
		{
			if (depth == 1)
				inputs_key = val == "inputs";
			id_property = in_inputs && depth == 3 && val == "idProperty";
			return true;
		}
		bool end_object() override
		{
			if (in_inputs && depth == 3)
				return false; // inputs[0] has no idProperty
			--depth;
			return true;
		}
		bool start_array(std::size_t) override
		{
			id_property = false;
			if (in_inputs && depth == 2)
				return false; // inputs[0] is not an object
			if (++depth == 2 && inputs_key)
				in_inputs = true;
			return true;
		}
		bool end_array() override
		{
			if (in_inputs && depth == 2)
				return false; // inputs[] is empty
			--depth;
			return true;
		}
		bool parse_error(std::size_t, const std::string &, const nlohmann::detail::exception &) override
		{
			return false;
		}
	};

	// The idProperty of the call's inputs (all inputs of one call share it).
	static std::string MatchRemote(const Call &call)
	{
		IdPropertyReader reader;
		try {
			Json::sax_parse(call.request.body, &reader);
		} catch (const Json::exception &) {
			return std::string();
		}
		return reader.value.empty() ? std::string() : Lower(reader.value);
	}
};

} // namespace

std::unique_ptr<Connector>
MakeHubSpotConnector()
{
	return std::make_unique<HubSpotConnector>();
}

} // namespace switchboard
