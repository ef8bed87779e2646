// HubSpot CRM v3 batch connector (SPEC §5 hubspot): batch upsert by idProperty, batch
// archive for deletes, 207 partial failures mapped back through objectWriteTraceId.
#include <algorithm>
#include <cctype>
#include <map>
#include <stdexcept>

#include "connectors/connector.h"
#include "http/json_limits.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

const size_t kHubSpotBatchLimit = 100;

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

class HubSpotConnector : public Connector {
public:
	size_t
	MaxBatch(const Endpoint &endpoint) const override
	{
		return BatchSizeOption(endpoint, kHubSpotBatchLimit);
	}

	std::vector<Call>
	BuildCalls(const Endpoint &endpoint, const Route &route, const std::vector<Change> &changes,
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
			nlohmann::ordered_json inputs = nlohmann::ordered_json::array();
			for (size_t i = start; i < std::min(upserts.size(), start + batch); ++i) {
				const Change &change = changes[upserts[i]];
				nlohmann::ordered_json properties = nlohmann::ordered_json::object();
				if (change.fields.is_object())
					for (const auto &field : change.fields.items())
						properties[field.key()] = RenderProperty(field.value());
				nlohmann::ordered_json input;
				input["idProperty"] = route.match_remote;
				input["id"] = change.key;
				input["properties"] = std::move(properties);
				input["objectWriteTraceId"] = TraceId(change);
				inputs.push_back(std::move(input));
				call.changes.push_back(upserts[i]);
			}
			nlohmann::ordered_json body;
			body["inputs"] = std::move(inputs);
			call.request = MakeRequest(endpoint, object_url + "/batch/upsert", body.dump(), auth);
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

	CallResult
	ParseResult(const Call &call, const std::vector<Change> &changes, const HttpResponse &response) const override
	{
		CallResult result;
		long status = response.status;
		if (status == 0) {
			result = UniformResult(call, Outcome::Retry, "transport error: " + Snippet(response.transport_error));
			result.endpoint_failure = true;
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
			result = UniformResult(call, Outcome::Retry, error, RetryAfterMs(response));
			result.endpoint_failure = true;
			// The daily quota will not come back within any backoff: stop sending until it resets.
			result.stop_endpoint = policy == "DAILY";
		} else if (status == 423 || status == 408) {
			// 423: HubSpot locks a record or portal briefly (e.g. during a merge); transient.
			result = UniformResult(call, Outcome::Retry, DescribeError(response), RetryAfterMs(response));
		} else if (status >= 500) {
			result = UniformResult(call, Outcome::Retry, DescribeError(response), RetryAfterMs(response));
			result.endpoint_failure = true;
		} else if (status == 401 || status == 403) {
			result = UniformResult(call, Outcome::Dead, "authentication failed: " + DescribeError(response));
		} else {
			result = UniformResult(call, Outcome::Dead, DescribeError(response));
		}
		result.http_status = status;
		return result;
	}

private:
	static HttpRequest
	MakeRequest(const Endpoint &endpoint, const std::string &url, std::string body, const Auth &auth)
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
	static CallResult
	ParseSuccess(const Call &call, const std::vector<Change> &changes, const HttpResponse &response)
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

		// results[]: remote ids, matched by the idProperty value HubSpot echoes back, else by
		// position (only meaningful when results cover every input, i.e. not on a 207).
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
				} else if (!partial && j < n && !accounted[j]) {
					position = static_cast<long>(j);
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

	// The idProperty of the call's inputs (all inputs of one call share it).
	static std::string
	MatchRemote(const Call &call)
	{
		Json body = TryParseRemoteJson(call.request.body);
		if (body.is_object() && body.contains("inputs") && body["inputs"].is_array() && !body["inputs"].empty() &&
		    body["inputs"][0].is_object() && body["inputs"][0].contains("idProperty") &&
		    body["inputs"][0]["idProperty"].is_string())
			return Lower(body["inputs"][0]["idProperty"].get<std::string>());
		return std::string();
	}
};

} // namespace

std::unique_ptr<Connector>
MakeHubSpotConnector()
{
	return std::make_unique<HubSpotConnector>();
}

} // namespace switchboard
