// Pulling remote changes (SPEC §6): the worker's entry points, which hand each kind's work to
// its connector (Connector::BuildPullRequest / ParsePullPage: HubSpot search and archived
// listing in hubspot.cpp, Salesforce SOQL query / queryAll in salesforce.cpp), and what those
// share: reading timestamps, ids and keys, the record loop of a page, the end-of-query cursor.
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

} // namespace

namespace pull {

// Non-negative decimal that fits an int64 comfortably (epoch ms, paging offsets).
bool
ParseDecimal(const std::string &text, int64_t *out)
{
	if (!IsDigits(text) || text.size() > 18)
		return false;
	*out = std::stoll(text);
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
AddUnique(std::vector<std::string> *names, std::set<std::string> *seen, const std::string &name, bool case_insensitive)
{
	if (name.empty())
		return;
	if (seen->insert(case_insensitive ? Lower(name) : name).second)
		names->push_back(name);
}

std::string
AuthorizationValue(const Auth &auth)
{
	return auth.masked ? "Bearer ****" : "Bearer " + auth.bearer;
}

[[noreturn]] void
Malformed(const std::string &what, const HttpResponse &response)
{
	throw std::runtime_error(what + ": " +
	                         (response.body.empty() ? std::string("(empty body)") : Snippet(response.body)));
}

std::vector<RemoteRecord>
ReadRecords(const Json &body, const RecordShape &shape, const Route &route, bool deleted, const HttpResponse &response)
{
	const Json *items = Member(body, shape.array);
	if (items == nullptr || !items->is_array())
		Malformed(shape.answer + " without a " + shape.array + " array", response);
	std::vector<RemoteRecord> records;
	records.reserve(items->size());
	for (const auto &item : *items) {
		if (shape.must_be_object && !item.is_object())
			Malformed(shape.record + " that is not an object", response);
		RemoteRecord record;
		record.remote_id = KeyText(Member(item, shape.id));
		if (record.remote_id.empty())
			Malformed(shape.record + " without an " + shape.id, response);
		record.fields = shape.fields(item);
		record.key = KeyText(MemberAnyCase(record.fields, route.match_remote));
		record.modified_ms = shape.modified(item, record.fields);
		record.deleted = deleted;
		records.push_back(std::move(record));
	}
	return records;
}

int64_t
NewestModified(const std::vector<RemoteRecord> &records)
{
	int64_t newest = 0;
	for (const auto &record : records)
		newest = std::max(newest, record.modified_ms);
	return newest;
}

std::string
SinceAfter(const PullCursor &cursor, int64_t since_ms, int64_t newest,
           const std::function<std::string(int64_t)> &format)
{
	// A record without a readable time (0) never moves the cursor, nor does an older one.
	return newest > 0 && newest > since_ms ? format(newest) : cursor.since;
}

} // namespace pull

namespace {

using pull::Member;

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
		for (const char *name : {"errorCode", "category", "code"}) {
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
CannotPull(const std::string &kind)
{
	if (FindConnector(kind) != nullptr)
		throw std::invalid_argument(kind + " endpoints cannot be pulled");
	throw std::invalid_argument("unknown endpoint kind \"" + Snippet(kind, 60) + "\": cannot be pulled");
}

// The connector of a kind that can be pulled; throws for any other kind.
const Connector &
PullConnector(const std::string &kind)
{
	const Connector *connector = FindConnector(kind);
	if (connector == nullptr || !connector->CanPull())
		CannotPull(kind);
	return *connector;
}

} // namespace

PullCursor
InitialPullCursor(const std::string &kind)
{
	// Not an exception for kinds that cannot be pulled: the worker reads cursors of every
	// pulling route in one pass, and BuildPullRequest reports the kind per route.
	const Connector *connector = FindConnector(kind);
	return connector != nullptr ? connector->InitialPullCursor() : PullCursor{"", ""};
}

bool
CanPull(const std::string &kind)
{
	const Connector *connector = FindConnector(kind);
	return connector != nullptr && connector->CanPull();
}

HttpRequest
BuildPullRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields, PullPhase phase,
                 const PullCursor &cursor, const Auth &auth)
{
	return PullConnector(endpoint.kind).BuildPullRequest(endpoint, route, fields, phase, cursor, auth);
}

bool
PullQueryExpired(const Endpoint &endpoint, const PullCursor &cursor, const HttpResponse &response)
{
	const Connector *connector = FindConnector(endpoint.kind);
	return connector != nullptr && !cursor.after.empty() && connector->PullQueryExpired(response);
}

PullPage
ParsePullResponse(const Endpoint &endpoint, const Route &route, PullPhase phase, const PullCursor &cursor,
                  const HttpResponse &response)
{
	const Connector &connector = PullConnector(endpoint.kind);
	if (PullQueryExpired(endpoint, cursor, response)) {
		// The query is gone: start it again (the cursor's since has not moved past any record
		// of it; those already applied are applied again, harmlessly). Not an error to wait on:
		// the same locator would be refused forever.
		PullPage restart;
		restart.next = connector.RestartPullQuery(cursor);
		restart.more = true;
		return restart;
	}
	if (response.status < 200 || response.status >= 300)
		throw std::runtime_error(endpoint.kind + " pull failed: " + DescribeFailure(response));
	std::string refused;
	Json body = TryParseRemoteJson(response.body, &refused);
	if (!refused.empty())
		throw std::runtime_error(endpoint.kind + " pull answer refused: " + refused);
	// A list answer (WooCommerce) reaches the kind as {"items": [...]}.
	if (body.is_array() && connector.PullAnswerIsList())
		body = Json{{"items", std::move(body)}};
	if (body.is_discarded() || !body.is_object())
		pull::Malformed(endpoint.kind + " pull answer is not a JSON object", response);
	return connector.ParsePullPage(endpoint, route, phase, cursor, response, body);
}

HttpRequest
BuildReadBackRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                     const std::vector<std::string> &ids, const Auth &auth)
{
	const Connector *connector = FindConnector(endpoint.kind);
	if (connector == nullptr || !connector->CanReadBack())
		throw std::invalid_argument(endpoint.kind + " endpoints cannot read records back");
	if (ids.empty() || ids.size() > kReadBackLimit)
		throw std::invalid_argument("a read-back names 1 to " + std::to_string(kReadBackLimit) + " ids");
	return connector->BuildReadBackRequest(endpoint, route, fields, ids, auth);
}

std::vector<RemoteRecord>
ParseReadBackResponse(const Endpoint &endpoint, const Route &route, const HttpResponse &response)
{
	const Connector *connector = FindConnector(endpoint.kind);
	if (connector == nullptr || !connector->CanReadBack())
		throw std::invalid_argument(endpoint.kind + " endpoints cannot read records back");
	if (response.status < 200 || response.status >= 300)
		throw std::runtime_error(endpoint.kind + " read-back failed: " + DescribeFailure(response));
	std::string refused;
	Json body = TryParseRemoteJson(response.body, &refused);
	if (!refused.empty())
		throw std::runtime_error(endpoint.kind + " read-back answer refused: " + refused);
	if (body.is_discarded() || !body.is_object())
		pull::Malformed(endpoint.kind + " read-back answer is not a JSON object", response);
	return connector->ParseReadBack(endpoint, route, response, body);
}

} // namespace switchboard
