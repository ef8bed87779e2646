// WooCommerce REST API v3 connector (SPEC §5 woocommerce): push of customers, products and
// orders through /wp-json/wc/v3/{object}/batch (create without a known remote id, update with
// one, delete by id), per-object results and errors read back list by list; pull of orders,
// products and coupons by modified_after, walking pages until X-WP-TotalPages. HTTP Basic
// auth from the JSON secret {"consumer_key","consumer_secret"} (WooCommerce accepts it over
// HTTPS; over plain HTTP it wants OAuth 1.0a, which a shop behind TLS never needs).
#include <algorithm>
#include <stdexcept>

#include "connectors/crypto.h"
#include "connectors/pull.h"
#include "http/json_limits.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// WooCommerce's batch endpoints refuse more than 100 objects in all (create + update + delete).
const size_t kWooBatchLimit = 100;
const int kWooPerPage = 100;
// A shop that claims more pages than this in one query is re-anchored at the newest time seen
// (as HubSpot's 10,000-result cap is): a hostile X-WP-TotalPages cannot pin one query forever.
const int64_t kWooMaxPages = 1000;
const char *const kWooEpoch = "1970-01-01T00:00:00";

using pull::KeyText;
using pull::Malformed;
using pull::Member;

// "Basic base64(key:secret)" from the JSON secret; "Basic ****" when masked (preview never
// reads the secret, so nothing is parsed then).
std::string
BasicAuthorization(const Auth &auth)
{
	if (auth.masked)
		return "Basic ****";
	Json secret = TryParseRemoteJson(auth.bearer);
	auto text = [&](const char *name) {
		const Json *value = Member(secret, name);
		return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
	};
	std::string key = text("consumer_key"), password = text("consumer_secret");
	// Never quote the secret: the message reaches route_status.
	if (key.empty() || password.empty())
		throw std::invalid_argument(
		    "woocommerce secret must be JSON {\"consumer_key\": \"ck_...\", \"consumer_secret\": \"cs_...\"}");
	return "Basic " + Base64Encode(key + ":" + password);
}

std::string
ApiUrl(const Endpoint &endpoint, const std::string &path)
{
	return JoinUrl(endpoint.base_url, "/wp-json/wc/v3/" + path);
}

// "HTTP 400 woocommerce_rest_invalid_id: Invalid ID." from {"code","message","data":{"status"}}.
std::string
DescribeError(const HttpResponse &response)
{
	std::string head = "HTTP " + std::to_string(response.status);
	Json body = TryParseRemoteJson(response.body);
	const Json *message = Member(body, "message");
	if (message != nullptr && message->is_string()) {
		std::string code = KeyText(Member(body, "code"));
		return head + (code.empty() ? std::string() : " " + Snippet(code, 80)) + ": " +
		       Snippet(message->get<std::string>(), 300);
	}
	return response.body.empty() ? head : head + ": " + Snippet(response.body);
}

// A per-object error of a batch answer: "code: message".
std::string
ObjectError(const Json &error)
{
	std::string code = KeyText(Member(error, "code"));
	const Json *message = Member(error, "message");
	std::string text = message != nullptr && message->is_string() ? Snippet(message->get<std::string>(), 300)
	                                                              : std::string("rejected by WooCommerce");
	return code.empty() ? text : Snippet(code, 80) + ": " + text;
}

// ---- pull -------------------------------------------------------------------------------

// WooCommerce's *_gmt times carry no zone (UTC by name) and whole seconds.
int64_t
GmtMs(const Json *value)
{
	if (value == nullptr || !value->is_string())
		return 0;
	int64_t ms = 0;
	const std::string &text = value->get_ref<const std::string &>();
	if (pull::ParseIsoMs(text + "Z", &ms) || pull::ParseIsoMs(text, &ms))
		return ms;
	return 0;
}

// Unix ms -> "2026-11-24T10:00:00", the form modified_after takes with dates_are_gmt=true.
std::string
GmtText(int64_t ms)
{
	std::string iso = IsoTimestampUtc(ms); // "2026-11-24T10:00:00.123Z"
	return iso.substr(0, 19);
}

int64_t
SinceMs(const PullCursor &cursor)
{
	int64_t ms = 0;
	if (cursor.since.size() != 19 || !pull::ParseIsoMs(cursor.since + "Z", &ms))
		throw std::invalid_argument("woocommerce pull cursor \"" + Snippet(cursor.since, 60) +
		                            "\" is not a UTC datetime like 2026-11-24T10:00:00");
	return ms;
}

int64_t
PageOf(const PullCursor &cursor)
{
	if (cursor.after.empty())
		return 1;
	int64_t page = 0;
	if (!pull::ParseDecimal(cursor.after, &page) || page < 1 || page > kWooMaxPages)
		throw std::invalid_argument("woocommerce pull cursor page \"" + Snippet(cursor.after, 30) +
		                            "\" is not a page number");
	return page;
}

class WooCommerceConnector : public Connector {
public:
	size_t BulkLimit() const override { return kWooBatchLimit; }

	// Updates go to /batch "update" by id: without it a change would create a second record.
	bool UpdatesNeedRemoteId() const override { return true; }

	// ---- push -------------------------------------------------------------------------

	std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &route, const std::vector<Change> &changes,
	                             const Auth &auth) const override
	{
		std::vector<size_t> sendable;
		for (size_t i = 0; i < changes.size(); ++i) {
			// A delete needs the remote id, and on_delete = delete; otherwise no call (Skipped).
			if (changes[i].op == Op::Delete && (route.on_delete != "delete" || changes[i].remote_id.empty()))
				continue;
			sendable.push_back(i);
		}
		const std::string url = ApiUrl(endpoint, UrlEncode(route.remote_object) + "/batch");
		const std::string authorization = sendable.empty() ? std::string() : BasicAuthorization(auth);
		const size_t batch = MaxBatch(endpoint);
		std::vector<Call> calls;
		for (size_t start = 0; start < sendable.size(); start += batch) {
			const size_t end = std::min(sendable.size(), start + batch);
			nlohmann::ordered_json create = nlohmann::ordered_json::array();
			nlohmann::ordered_json update = nlohmann::ordered_json::array();
			nlohmann::ordered_json remove = nlohmann::ordered_json::array();
			std::vector<size_t> creates, updates, deletes;
			for (size_t s = start; s < end; ++s) {
				const Change &change = changes[sendable[s]];
				if (change.op == Op::Delete) {
					remove.push_back(IdValue(change.remote_id));
					deletes.push_back(sendable[s]);
					continue;
				}
				nlohmann::ordered_json object = nlohmann::ordered_json::object();
				// A remote id known from an earlier answer makes it an update; else a create.
				if (!change.remote_id.empty())
					object["id"] = IdValue(change.remote_id);
				if (change.fields.is_object())
					for (const auto &field : change.fields.items())
						if (field.key() != "id")
							object[field.key()] = field.value();
				// The key goes along under match_remote (email for customers, sku for products)
				// unless a mapping sends that field itself.
				if (!route.match_remote.empty() && route.match_remote != "id" && !object.contains(route.match_remote))
					object[route.match_remote] = change.key;
				if (change.remote_id.empty()) {
					create.push_back(std::move(object));
					creates.push_back(sendable[s]);
				} else {
					update.push_back(std::move(object));
					updates.push_back(sendable[s]);
				}
			}
			nlohmann::ordered_json body = nlohmann::ordered_json::object();
			if (!create.empty())
				body["create"] = std::move(create);
			if (!update.empty())
				body["update"] = std::move(update);
			if (!remove.empty())
				body["delete"] = std::move(remove);
			Call call;
			// Request order: the create list, then update, then delete, as the answer lists them.
			call.changes = creates;
			call.changes.insert(call.changes.end(), updates.begin(), updates.end());
			call.changes.insert(call.changes.end(), deletes.begin(), deletes.end());
			call.request.method = "POST";
			call.request.url = url;
			call.request.headers.emplace_back("Authorization", authorization);
			call.request.headers.emplace_back("Content-Type", "application/json");
			AppendOptionHeaders(endpoint, &call.request.headers);
			call.request.body = body.dump();
			calls.push_back(std::move(call));
		}
		return calls;
	}

	CallResult ParseResult(const Call &call, const std::vector<Change> &changes,
	                       const HttpResponse &response) const override
	{
		CallResult result;
		const long status = response.status;
		if (status == 0) {
			result = UniformResult(call, Outcome::Retry, "transport error: " + Snippet(response.transport_error));
		} else if (status >= 200 && status < 300) {
			result = ParseBatch(call, changes, response);
		} else if (status == 429 || status == 408 || status >= 500) {
			result = UniformResult(call, Outcome::Retry, DescribeError(response), RetryAfterMs(response));
		} else if (status == 401 || status == 403) {
			result = UniformResult(call, Outcome::Dead, "authentication failed: " + DescribeError(response));
		} else {
			result = UniformResult(call, Outcome::Dead, DescribeError(response));
			// A whole batch refused (rest_invalid_param for one object, too large): isolate it.
			result.split = status == 400 || status == 413;
		}
		MarkAnswer(ClassifyAnswer(response), &result);
		result.http_status = status;
		return result;
	}

	// ---- pull -------------------------------------------------------------------------

	bool CanPull() const override { return true; }

	PullCursor InitialPullCursor() const override { return PullCursor{kWooEpoch, ""}; }

	bool PullAnswerIsList() const override { return true; }

	HttpRequest BuildPullRequest(const Endpoint &endpoint, const Route &route, const std::vector<std::string> &,
	                             PullPhase phase, const PullCursor &cursor, const Auth &auth) const override
	{
		SinceMs(cursor); // validates: it goes into the query string as it is
		int64_t page = PageOf(cursor);
		std::string url = ApiUrl(endpoint, UrlEncode(route.remote_object)) +
		                  "?modified_after=" + UrlEncode(cursor.since) +
		                  "&dates_are_gmt=true&orderby=modified&order=asc&per_page=" + std::to_string(kWooPerPage) +
		                  "&page=" + std::to_string(page);
		// WooCommerce lists no deleted records; trashed ones are the deletions it can show.
		if (phase == PullPhase::Deletions)
			url += "&status=trash";
		HttpRequest request;
		request.method = "GET";
		request.url = std::move(url);
		request.headers.emplace_back("Authorization", BasicAuthorization(auth));
		AppendOptionHeaders(endpoint, &request.headers);
		return request;
	}

	PullPage ParsePullPage(const Endpoint &, const Route &route, PullPhase phase, const PullCursor &cursor,
	                       const HttpResponse &response, const Json &body) const override
	{
		pull::RecordShape shape;
		shape.array = "items"; // ParsePullResponse hands a JSON array answer as {"items": [...]}
		shape.id = "id";
		shape.answer = "woocommerce answer";
		shape.record = "woocommerce record";
		shape.must_be_object = true;
		shape.fields = [](const Json &item) { return item; };
		shape.modified = [](const Json &item, const Json &) { return GmtMs(Member(item, "date_modified_gmt")); };
		PullPage page;
		page.records = pull::ReadRecords(body, shape, route, phase == PullPhase::Deletions, response);

		const int64_t current = PageOf(cursor);
		int64_t total = 0;
		const std::string header = HeaderValue(response.headers, "X-WP-TotalPages");
		if (!header.empty() && !pull::ParseDecimal(header, &total))
			Malformed("woocommerce X-WP-TotalPages \"" + Snippet(header, 30) + "\" is not a number", response);
		if (current < total && current < kWooMaxPages && !page.records.empty()) {
			// The query stands (same modified_after) while its pages are walked.
			page.next.since = cursor.since;
			page.next.after = std::to_string(current + 1);
			page.more = true;
			return page;
		}
		// Exhausted (or capped): the next query starts after the newest time seen.
		int64_t since_ms = SinceMs(cursor);
		page.next.since = pull::SinceAfter(cursor, since_ms, pull::NewestModified(page.records), GmtText);
		page.more = current < total; // capped: go on at once from the new anchor
		return page;
	}

private:
	// WooCommerce ids are integers; one we got back as digits goes out as a number.
	static nlohmann::ordered_json IdValue(const std::string &remote_id)
	{
		int64_t id = 0;
		if (pull::ParseDecimal(remote_id, &id))
			return id;
		return remote_id;
	}

	// 200: {"create":[…],"update":[…],"delete":[…]}, each list in request order; an object
	// that failed carries {"id", "error": {"code","message"}}.
	static CallResult ParseBatch(const Call &call, const std::vector<Change> &changes, const HttpResponse &response)
	{
		std::string refused;
		Json body = TryParseRemoteJson(response.body, &refused);
		if (!refused.empty() || !body.is_object())
			// Which objects landed is unknown: send again (updates and deletes repeat
			// harmlessly; a create would repeat too, which is why the answer is needed).
			return UniformResult(call, Outcome::Retry,
			                     "woocommerce batch answer unreadable: " +
			                         (refused.empty() ? Snippet(response.body) : refused));
		CallResult result;
		result.results.resize(call.changes.size());
		size_t position = 0;
		for (const char *list : {"create", "update", "delete"}) {
			size_t count = 0;
			for (size_t p = 0; p < call.changes.size(); ++p)
				if (ListOf(changes.at(call.changes[p])) == std::string(list))
					++count;
			const Json *items = Member(body, list);
			for (size_t k = 0; k < count; ++k, ++position) {
				ChangeResult &change_result = result.results[position];
				const Json *item = items != nullptr && items->is_array() && k < items->size() ? &(*items)[k] : nullptr;
				if (item == nullptr || !item->is_object()) {
					change_result.outcome = Outcome::Retry;
					change_result.error = std::string("woocommerce batch answer has no ") + list + " result " +
					                      std::to_string(k + 1);
					continue;
				}
				const Json *error = Member(*item, "error");
				if (error != nullptr && error->is_object()) {
					change_result.outcome = Outcome::Dead;
					change_result.error = ObjectError(*error);
					continue;
				}
				change_result.outcome = Outcome::Delivered;
				std::string id = KeyText(Member(*item, "id"));
				change_result.remote_id = id == "0" ? std::string() : id;
			}
		}
		return result;
	}

	static const char *ListOf(const Change &change)
	{
		if (change.op == Op::Delete)
			return "delete";
		return change.remote_id.empty() ? "create" : "update";
	}
};

} // namespace

std::unique_ptr<Connector>
MakeWooCommerceConnector()
{
	return std::make_unique<WooCommerceConnector>();
}

} // namespace switchboard
