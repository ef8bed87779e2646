// Salesforce connector (SPEC §5 salesforce, §6): OAuth client-credentials token, sObject
// Collections upsert by external ID and delete by id, per-record results in request order;
// pulls through SOQL query (changes) and queryAll (deletions).
#include <algorithm>
#include <cctype>
#include <set>
#include <stdexcept>

#include "config/host_policy.h"
#include "connectors/pull.h"
#include "http/json_limits.h"
#include "http/redact.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

const size_t kSalesforceBatchLimit = 200;

std::string
ApiVersion(const Endpoint &endpoint)
{
	if (endpoint.options.is_object()) {
		auto it = endpoint.options.find("api_version");
		if (it != endpoint.options.end() && it->is_string() && !it->get_ref<const std::string &>().empty())
			return it->get<std::string>();
	}
	return "59.0";
}

std::string
Text(const Json &object, const char *name)
{
	if (object.is_object() && object.contains(name) && object[name].is_string())
		return object[name].get<std::string>();
	return std::string();
}

// The error code of one Salesforce error object: record results say statusCode, call-level
// errors say errorCode.
std::string
ErrorCode(const Json &error)
{
	std::string code = Text(error, "statusCode");
	return code.empty() ? Text(error, "errorCode") : code;
}

// "STATUSCODE: message (fields: a,b)"
std::string
DescribeOne(const Json &error)
{
	std::string code = ErrorCode(error);
	std::string text = code.empty() ? std::string() : code + ": ";
	text += Snippet(Text(error, "message"), 500);
	if (error.is_object() && error.contains("fields") && error["fields"].is_array() && !error["fields"].empty()) {
		std::string fields;
		for (const auto &field : error["fields"]) {
			if (!field.is_string())
				continue;
			if (!fields.empty())
				fields += ",";
			fields += field.get<std::string>();
		}
		if (!fields.empty())
			text += " (fields: " + fields + ")";
	}
	return text;
}

std::string
DescribeAll(const Json &errors)
{
	std::string text;
	if (!errors.is_array())
		return text;
	for (const auto &error : errors) {
		if (!text.empty())
			text += "; ";
		text += DescribeOne(error);
	}
	return text;
}

// Codes that describe the moment, not the record: the same request may well succeed later.
bool
IsTransientCode(const std::string &code)
{
	return code == "UNABLE_TO_LOCK_ROW" || code == "REQUEST_LIMIT_EXCEEDED" || code == "SERVER_UNAVAILABLE";
}

// Call-level errors arrive as [{"message","errorCode","fields"}] (sometimes a bare object).
Json
CallErrors(const HttpResponse &response)
{
	Json body = TryParseRemoteJson(response.body);
	if (body.is_object())
		return Json::array({body});
	if (body.is_array())
		return body;
	return Json::array();
}

bool
HasErrorCode(const Json &errors, const std::string &code)
{
	for (const auto &error : errors)
		if (ErrorCode(error) == code)
			return true;
	return false;
}

std::string
DescribeCall(const HttpResponse &response, const Json &errors)
{
	std::string head = "HTTP " + std::to_string(response.status);
	std::string detail = DescribeAll(errors);
	if (!detail.empty())
		return head + " " + detail;
	if (response.body.empty())
		return head;
	return head + ": " + Snippet(response.body);
}

bool
IsDeleteCall(const Call &call)
{
	return call.request.method == "DELETE";
}

// ---- pull: SOQL query (changes) and queryAll (deletions) ----------------------------------

using pull::AddUnique;
using pull::AuthorizationValue;
using pull::Malformed;
using pull::Member;
using pull::NewestModified;
using pull::ParseIsoMs;
using pull::ReadRecords;
using pull::RecordShape;
using pull::SinceAfter;
using pull::TimeMs;

const char *const kSalesforceEpoch = "1970-01-01T00:00:00.000Z";

// Changes and deletions are paged by keyset (issue 10.4): each query is ordered by
// (SystemModstamp, Id) and limited to one page; the next starts after the last pair seen,
// stored as the cursor's after "k:<epoch ms>:<Id>". A cycle (after empty) starts this far
// before the cursor: SystemModstamp has one-second resolution and a record stamped in the
// cursor's second (or just before) may become visible after the cycle that set the cursor.
// Records read again are applied idempotently. An after that is a nextRecordsUrl (a remote
// answering in smaller batches than the LIMIT, or a cursor of an older version) is followed.
const int kSalesforcePullLimit = 2000;
const int64_t kSalesforcePullOverlapMs = 60 * 1000;

// Salesforce Ids: 15 or 18 letters and digits (checked: the Id goes into SOQL as a literal).
bool
IsSalesforceId(const std::string &id)
{
	return !id.empty() && id.size() <= 18 &&
	       std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; });
}

// While a query's batches are followed, the after is "<nextRecordsUrl> k:<ms>:<Id>": the URL,
// and the keyset position the batches so far reached (no blank is part of a URL path). A
// query whose locator expired starts again from that position, not from the cycle's start.
void
SplitBatchAfter(const std::string &after, std::string *url, std::string *position)
{
	auto blank = after.find(' ');
	*url = after.substr(0, blank);
	*position = blank == std::string::npos ? std::string() : after.substr(blank + 1);
}

bool
ParseKeysetAfter(const std::string &after, int64_t *ms, std::string *id)
{
	if (after.compare(0, 2, "k:") != 0)
		return false;
	auto colon = after.find(':', 2);
	if (colon == std::string::npos || !pull::ParseDecimal(after.substr(2, colon - 2), ms))
		return false;
	*id = after.substr(colon + 1);
	return IsSalesforceId(*id);
}

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
SalesforcePullRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
                      PullPhase phase, const PullCursor &cursor, const Auth &auth)
{
	// Before the first token (preview) the instance is unknown; the login host stands in.
	const std::string instance = auth.instance_url.empty() ? endpoint.base_url : auth.instance_url;
	std::string url;
	int64_t key_ms = 0;
	std::string last_id;
	const bool keyed = ParseKeysetAfter(cursor.after, &key_ms, &last_id);
	if (!cursor.after.empty() && !keyed) {
		std::string next, position;
		SplitBatchAfter(cursor.after, &next, &position);
		// The bearer token goes wherever this points: only a path on the instance is followed.
		if (next.compare(0, 15, "/services/data/") != 0)
			throw std::invalid_argument("salesforce pull cursor: nextRecordsUrl \"" + Snippet(next, 80) +
			                            "\" is not a /services/data/ path");
		url = JoinUrl(instance, next);
	} else {
		const int64_t since = SalesforceSinceMs(cursor); // validates: the literal goes into SOQL unquoted
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
		if (keyed) {
			const std::string at = IsoTimestampUtc(key_ms);
			soql += "(SystemModstamp > " + at + " OR (SystemModstamp = " + at + " AND Id > '" + last_id + "'))";
		} else {
			soql += "SystemModstamp >= " + IsoTimestampUtc(std::max<int64_t>(0, since - kSalesforcePullOverlapMs));
		}
		soql += " ORDER BY SystemModstamp ASC, Id ASC LIMIT " + std::to_string(kSalesforcePullLimit);
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
ParseSalesforcePage(const Route &route, PullPhase phase, const PullCursor &cursor, const HttpResponse &response,
                    const Json &body)
{
	RecordShape shape;
	shape.array = "records";
	shape.id = "Id";
	shape.answer = "salesforce query answer";
	shape.record = "salesforce query record";
	shape.must_be_object = true;
	shape.fields = [](const Json &item) {
		Json fields = item;
		fields.erase("attributes"); // SOQL's type/url, not a field
		return fields;
	};
	shape.modified = [](const Json &item, const Json &) {
		const Json *stamp = Member(item, "SystemModstamp");
		return stamp != nullptr ? TimeMs(*stamp) : int64_t(0);
	};
	PullPage page;
	page.records = ReadRecords(body, shape, route, phase == PullPhase::Deletions, response);

	std::string next_url;
	if (const Json *next = Member(body, "nextRecordsUrl"))
		if (next->is_string())
			next_url = next->get<std::string>();
	const Json *done = Member(body, "done");
	const bool finished = done != nullptr && done->is_boolean() && done->get<bool>();
	std::string batch_url, position;
	SplitBatchAfter(cursor.after, &batch_url, &position);
	if (position.empty())
		position = cursor.after; // the first batch of a keyset query: its own position
	int64_t key_ms = 0;
	std::string last_id;
	const bool keyed = ParseKeysetAfter(position, &key_ms, &last_id);
	if (!next_url.empty() && !finished) {
		if (next_url.compare(0, 15, "/services/data/") != 0 || next_url.find(' ') != std::string::npos)
			Malformed("salesforce nextRecordsUrl is not a /services/data/ path", response);
		page.next.since = cursor.since;
		page.next.after = next_url;
		// The position this batch reached (ordered by SystemModstamp, Id: its last record).
		if (!page.records.empty() && page.records.back().modified_ms > 0 &&
		    IsSalesforceId(page.records.back().remote_id))
			page.next.after += " k:" + std::to_string(page.records.back().modified_ms) + ":" +
			                   page.records.back().remote_id;
		else if (keyed)
			page.next.after += " " + position;
		page.more = true;
		return page;
	}
	// The query is exhausted (ordered by SystemModstamp, Id). One that filled its LIMIT may
	// have more: the next page is a query after its last (time, Id) pair.
	int64_t since_ms = 0;
	if (!ParseIsoMs(cursor.since, &since_ms))
		since_ms = 0; // an unreadable since (not one we stored) is passed by any record with a time
	int64_t total = 0;
	if (const Json *size = Member(body, "totalSize"))
		if (size->is_number_integer())
			total = size->get<int64_t>();
	if (total >= kSalesforcePullLimit && !page.records.empty()) {
		const RemoteRecord &tail = page.records.back();
		bool past = tail.modified_ms > 0 && IsSalesforceId(tail.remote_id) &&
		            (!keyed || tail.modified_ms > key_ms || (tail.modified_ms == key_ms && tail.remote_id != last_id));
		if (!past)
			Malformed("salesforce query: a full page whose last record has no readable SystemModstamp and Id past "
			          "the cursor; the cursor cannot move past it",
			          response);
		page.next.since = cursor.since;
		page.next.after = "k:" + std::to_string(tail.modified_ms) + ":" + tail.remote_id;
		page.more = true;
		return page;
	}
	page.next.since = SinceAfter(cursor, since_ms, std::max(NewestModified(page.records), keyed ? key_ms : 0),
	                             IsoTimestampUtc);
	return page;
}

class SalesforceConnector : public Connector {
public:
	size_t BulkLimit() const override { return kSalesforceBatchLimit; }

	std::vector<std::string> ExtraOptions() const override { return {"api_version"}; }

	void ValidateOption(const std::string &name, const Json &value) const override
	{
		if (name != "api_version")
			return Connector::ValidateOption(name, value);
		// "59.0": digits, a dot, digits. It lands in the URL path, so nothing else may pass.
		bool ok = false;
		if (value.is_string()) {
			const auto &text = value.get_ref<const std::string &>();
			auto dot = text.find('.');
			ok = dot != std::string::npos && IsDigits(text.substr(0, dot)) && IsDigits(text.substr(dot + 1));
		}
		if (!ok)
			throw std::invalid_argument("option \"api_version\" must be a string like \"59.0\", got " +
			                            Snippet(value.dump(), 60));
	}

	std::string MatchRemoteHint() const override
	{
		return "the Salesforce external ID field holding the key, e.g. Email__c";
	}

	// Calls carry the current token and instance, which a refresh may have changed.
	bool RebuildAtSend() const override { return true; }

	AnswerClass ClassifyAnswer(const HttpResponse &response) const override
	{
		AnswerClass answer = Connector::ClassifyAnswer(response);
		if (response.status == 401 || response.status == 403) {
			Json errors = CallErrors(response);
			// The org's API limit: a rate limit, not a verdict on the request.
			if (response.status == 403 && HasErrorCode(errors, "REQUEST_LIMIT_EXCEEDED"))
				answer.endpoint_failure = true;
			// The cached token expired: a new one, then the same request once more.
			if (response.status == 401 && HasErrorCode(errors, "INVALID_SESSION_ID"))
				answer.token_expired = true;
		}
		return answer;
	}

	bool UsesToken() const override { return true; }

	HttpRequest BuildTokenRequest(const Endpoint &endpoint) const override
	{
		return BuildSalesforceTokenRequest(endpoint);
	}

	AuthToken ParseTokenResponse(const HttpResponse &response, const std::string &allowed_hosts) const override
	{
		return ParseSalesforceToken(response, allowed_hosts);
	}

	bool CanPull() const override { return true; }

	PullCursor InitialPullCursor() const override { return PullCursor{kSalesforceEpoch, ""}; }

	// A locator Salesforce dropped (idle too long, too many open): asking again never works.
	bool PullQueryExpired(const HttpResponse &response) const override
	{
		return response.status == 400 && HasErrorCode(CallErrors(response), "INVALID_QUERY_LOCATOR");
	}

	// A new query after the position the batches followed so far reached (issue 10.4).
	PullCursor RestartPullQuery(const PullCursor &cursor) const override
	{
		std::string url, position;
		SplitBatchAfter(cursor.after, &url, &position);
		int64_t ms = 0;
		std::string id;
		return PullCursor{cursor.since, ParseKeysetAfter(position, &ms, &id) ? position : std::string()};
	}

	HttpRequest BuildPullRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &fields,
	                             PullPhase phase, const PullCursor &cursor, const Auth &auth) const override
	{
		return SalesforcePullRequest(endpoint, route, fields, phase, cursor, auth);
	}

	PullPage ParsePullPage(const Endpoint &, const Route &route, PullPhase phase, const PullCursor &cursor,
	                       const HttpResponse &response, const Json &body) const override
	{
		return ParseSalesforcePage(route, phase, cursor, response, body);
	}

	std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &route, const std::vector<Change> &changes,
	                             const Auth &auth) const override
	{
		std::vector<size_t> upserts, deletes;
		for (size_t i = 0; i < changes.size(); ++i) {
			if (changes[i].op != Op::Delete)
				upserts.push_back(i);
			else if (route.on_delete == "delete" && !changes[i].remote_id.empty())
				deletes.push_back(i);
		}
		// Before the first token (preview) the instance is unknown; the login host stands in.
		const std::string instance = auth.instance_url.empty() ? endpoint.base_url : auth.instance_url;
		const std::string collection = JoinUrl(instance,
		                                       "/services/data/v" + ApiVersion(endpoint) + "/composite/sobjects");
		const std::string authorization = auth.masked ? "Bearer ****" : "Bearer " + auth.bearer;
		size_t batch = MaxBatch(endpoint);
		std::vector<Call> calls;
		for (size_t start = 0; start < upserts.size(); start += batch) {
			Call call;
			nlohmann::ordered_json records = nlohmann::ordered_json::array();
			for (size_t i = start; i < std::min(upserts.size(), start + batch); ++i) {
				const Change &change = changes[upserts[i]];
				nlohmann::ordered_json record;
				record["attributes"] = {{"type", route.remote_object}};
				record[route.match_remote] = change.key;
				// The key decides which record is written; a mapped field of the same name
				// must not contradict it, nor may one overwrite "attributes".
				if (change.fields.is_object())
					for (const auto &field : change.fields.items())
						if (field.key() != route.match_remote && field.key() != "attributes")
							record[field.key()] = field.value();
				records.push_back(std::move(record));
				call.changes.push_back(upserts[i]);
			}
			nlohmann::ordered_json body;
			body["allOrNone"] = false;
			body["records"] = std::move(records);
			call.request.method = "PATCH";
			call.request.url = collection + "/" + UrlEncode(route.remote_object) + "/" + UrlEncode(route.match_remote);
			call.request.headers.emplace_back("Authorization", authorization);
			call.request.headers.emplace_back("Content-Type", "application/json");
			AppendOptionHeaders(endpoint, &call.request.headers);
			call.request.body = body.dump();
			calls.push_back(std::move(call));
		}
		for (size_t start = 0; start < deletes.size(); start += batch) {
			Call call;
			std::string ids;
			for (size_t i = start; i < std::min(deletes.size(), start + batch); ++i) {
				if (!ids.empty())
					ids += ",";
				ids += UrlEncode(changes[deletes[i]].remote_id);
				call.changes.push_back(deletes[i]);
			}
			call.request.method = "DELETE";
			call.request.url = collection + "?ids=" + ids + "&allOrNone=false";
			call.request.headers.emplace_back("Authorization", authorization);
			AppendOptionHeaders(endpoint, &call.request.headers);
			calls.push_back(std::move(call));
		}
		return calls;
	}

	CallResult ParseResult(const Call &call, const std::vector<Change> &changes,
	                       const HttpResponse &response) const override
	{
		(void) changes; // results come back in request order; nothing to match on
		CallResult result;
		long status = response.status;
		Json errors = CallErrors(response);
		if (status == 0) {
			result = UniformResult(call, Outcome::Retry, "transport error: " + Snippet(response.transport_error));
		} else if (status == 200) {
			result = ParseRecords(call, response);
		} else if (status >= 200 && status < 300) {
			result = UniformResult(call, Outcome::Delivered, std::string());
		} else if (ClassifyAnswer(response).token_expired) {
			// The cached token expired: the worker fetches a new one once and resends.
			result = UniformResult(call, Outcome::Retry, DescribeCall(response, errors));
		} else if (status == 401) {
			result = UniformResult(call, Outcome::Dead, "authentication failed: " + DescribeCall(response, errors));
		} else if ((status == 403 && HasErrorCode(errors, "REQUEST_LIMIT_EXCEEDED")) || status == 429) {
			// The org's API limit: a rate limit, not a verdict on the records.
			result = UniformResult(call, Outcome::Retry, DescribeCall(response, errors), RetryAfterMs(response));
		} else if (status == 408) {
			result = UniformResult(call, Outcome::Retry, DescribeCall(response, errors), RetryAfterMs(response));
		} else if (status >= 500) {
			result = UniformResult(call, Outcome::Retry, DescribeCall(response, errors), RetryAfterMs(response));
		} else {
			result = UniformResult(call, Outcome::Dead, DescribeCall(response, errors));
			// A collection request fails whole for one record's bad value (JSON_PARSER_ERROR,
			// INVALID_FIELD on one record's field): isolate it. INVALID_TYPE names the object.
			result.split = (status == 400 && !HasErrorCode(errors, "INVALID_TYPE")) || status == 413;
		}
		// Which answers are endpoint failures (or an expired token) is decided in one place.
		MarkAnswer(ClassifyAnswer(response), &result);
		result.http_status = status;
		return result;
	}

private:
	// 200: one result per record, in request order.
	static CallResult ParseRecords(const Call &call, const HttpResponse &response)
	{
		std::string refused;
		Json body = TryParseRemoteJson(response.body, &refused);
		if (!body.is_array()) {
			// Repeating an upsert or delete is harmless; a silent Delivered would not be.
			return UniformResult(call, Outcome::Retry,
			                     "HTTP 200 with an unexpected body: " +
			                         (refused.empty() ? Snippet(response.body) : refused));
		}
		CallResult result;
		const bool is_delete = IsDeleteCall(call);
		result.results.resize(call.changes.size());
		for (size_t p = 0; p < call.changes.size(); ++p) {
			ChangeResult &one = result.results[p];
			if (p >= body.size() || !body[p].is_object()) {
				one.outcome = Outcome::Retry;
				one.error = "no result for this record in the response";
				continue;
			}
			const Json &item = body[p];
			if (item.contains("success") && item["success"].is_boolean() && item["success"].get<bool>()) {
				one.outcome = Outcome::Delivered;
				one.remote_id = Text(item, "id");
				continue;
			}
			const Json record_errors = item.contains("errors") ? item["errors"] : Json::array();
			bool transient = false, already_deleted = record_errors.is_array() && !record_errors.empty();
			if (record_errors.is_array()) {
				for (const auto &error : record_errors) {
					transient = transient || IsTransientCode(ErrorCode(error));
					already_deleted = already_deleted && ErrorCode(error) == "ENTITY_IS_DELETED";
				}
			}
			if (is_delete && already_deleted) {
				// A resent delete finds the record gone: that is the outcome we wanted.
				one.outcome = Outcome::Delivered;
				one.remote_id = Text(item, "id");
				continue;
			}
			one.outcome = transient ? Outcome::Retry : Outcome::Dead;
			one.error = DescribeAll(record_errors);
			if (one.error.empty())
				one.error = "rejected by Salesforce without an error message";
		}
		return result;
	}
};

} // namespace

std::unique_ptr<Connector>
MakeSalesforceConnector()
{
	return std::make_unique<SalesforceConnector>();
}

HttpRequest
BuildSalesforceTokenRequest(const Endpoint &endpoint)
{
	// Never quote the secret in these messages: they end up in logs and status views.
	Json secret = TryParseRemoteJson(endpoint.secret); // local, but no reason to trust its depth either
	std::string client_id = Text(secret, "client_id");
	std::string client_secret = Text(secret, "client_secret");
	if (client_id.empty() || client_secret.empty())
		throw std::invalid_argument("salesforce endpoint \"" + endpoint.name +
		                            "\": secret must be JSON {\"client_id\": \"...\", \"client_secret\": \"...\"}");
	HttpRequest request;
	request.method = "POST";
	request.url = JoinUrl(endpoint.base_url, "/services/oauth2/token");
	request.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
	request.headers.emplace_back("Accept", "application/json");
	AppendOptionHeaders(endpoint, &request.headers);
	request.body = "grant_type=client_credentials&client_id=" + UrlEncode(client_id) +
	               "&client_secret=" + UrlEncode(client_secret);
	return request;
}

SalesforceToken
ParseSalesforceToken(const HttpResponse &response, const std::string &allowed_hosts)
{
	if (response.status == 0)
		throw std::runtime_error("salesforce token request failed: transport error: " +
		                         Snippet(response.transport_error));
	std::string refused;
	Json body = TryParseRemoteJson(response.body, &refused);
	if (response.status == 200 && !refused.empty())
		throw std::runtime_error("salesforce token response refused: " + refused);
	if (response.status != 200) {
		std::string text = "salesforce token request failed (HTTP " + std::to_string(response.status) + ")";
		std::string error = Text(body, "error");
		std::string description = Text(body, "error_description");
		if (!error.empty())
			text += ": " + Snippet(error, 100);
		if (!description.empty())
			text += (error.empty() ? ": " : " - ") + Snippet(description, 300);
		if (error.empty() && description.empty() && !body.is_discarded() && !response.body.empty())
			text += ": " + DescribeAll(body.is_array() ? body : Json::array({body}));
		else if (error.empty() && description.empty() && !response.body.empty())
			text += ": " + Snippet(response.body);
		throw std::runtime_error(text);
	}
	SalesforceToken token;
	token.access_token = Text(body, "access_token");
	token.instance_url = Text(body, "instance_url");
	// No body snippet here: a half-valid answer may still carry a live token.
	if (token.access_token.empty() || token.instance_url.empty())
		throw std::runtime_error("salesforce token response lacks access_token or instance_url");
	while (!token.instance_url.empty() && token.instance_url.back() == '/')
		token.instance_url.pop_back();
	// The token answer chooses where every later call (with the token) goes: the same policy
	// as for an endpoint's base_url applies, checked before anything is sent there.
	std::string problem = InstanceUrlProblem(token.instance_url, allowed_hosts);
	if (!problem.empty())
		throw std::runtime_error("salesforce token response: instance_url " + MaskUrl(token.instance_url) +
		                         " refused: " + problem);
	return token;
}

} // namespace switchboard
