// Generic webhook connector (SPEC §5 webhook): one event per request, signed with Standard
// Webhooks headers when the endpoint has a secret.
#include <stdexcept>

#include "connectors/connector.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// Unix seconds, floored (a capture time before 1970 is absurd, but keep it consistent).
std::string
UnixSeconds(int64_t unix_ms)
{
	int64_t seconds = unix_ms / 1000;
	if (unix_ms % 1000 < 0)
		seconds -= 1;
	return std::to_string(seconds);
}

// The worker always sets event_id; fall back to the queue id so an event is never unnamed.
std::string
EventId(const Change &change)
{
	return change.event_id.empty() ? "switchboard-" + std::to_string(change.id) : change.event_id;
}

std::string
Describe(const HttpResponse &response)
{
	std::string head = "HTTP " + std::to_string(response.status);
	return response.body.empty() ? head : head + ": " + Snippet(response.body, 200);
}

class WebhookConnector : public Connector {
public:
	// A notify step's event is one webhook event (SPEC §7).
	bool Notifies() const override { return true; }

	size_t BulkLimit() const override
	{
		return 1; // one event per request
	}

	std::vector<std::string> ReservedHeaders() const override
	{
		// Authorization is the user's to set (receivers often want Basic or a token).
		return {"content-type", "webhook-id", "webhook-timestamp", "webhook-signature"};
	}

	std::string PreviewSecret() const override
	{
		return "whsec_c3RhbmQtaW4ta2V5"; // signatures are computed (and masked) in preview too
	}

	int DefaultConcurrency() const override
	{
		return 16; // small independent requests: many at once, unlike bulk calls
	}

	// Signed at send time: receivers reject stale timestamps.
	bool RebuildAtSend() const override { return true; }

	std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &route, const std::vector<Change> &changes,
	                             const Auth &auth) const override
	{
		std::vector<Call> calls;
		for (size_t i = 0; i < changes.size(); ++i) {
			const Change &change = changes[i];
			if (change.op == Op::Delete && route.on_delete != "delete")
				continue; // skipped: SkippedChanges reports it
			Call call;
			call.changes.push_back(i);
			call.request = Event(endpoint,
			                     change.event_type.empty() ? route.remote_object + "." + OpName(change.op)
			                                               : change.event_type,
			                     EventId(change), change.fields, change.occurred_at_ms, auth);
			calls.push_back(std::move(call));
		}
		return calls;
	}

	HttpRequest BuildNotifyRequest(const Endpoint &endpoint, const std::string &type, const std::string &id,
	                               const Json &data, int64_t occurred_at_ms, const Auth &auth) const override
	{
		return Event(endpoint, type, id, data, occurred_at_ms, auth);
	}

	static HttpRequest Event(const Endpoint &endpoint, const std::string &type, const std::string &id, const Json &data,
	                         int64_t occurred_at_ms, const Auth &auth)
	{
		nlohmann::ordered_json body;
		body["type"] = type;
		body["id"] = id;
		body["timestamp"] = IsoTimestampUtc(occurred_at_ms);
		body["data"] = data.is_object() ? nlohmann::ordered_json(data) : nlohmann::ordered_json::object();
		HttpRequest request;
		request.method = "POST";
		request.url = endpoint.base_url;
		request.body = body.dump();
		request.headers.emplace_back("Content-Type", "application/json");
		AppendOptionHeaders(endpoint, &request.headers);
		if (!endpoint.secret.empty()) {
			// Signed at send time (receivers reject stale timestamps); webhook-id stays
			// the same across retries, which is what receivers deduplicate on.
			std::string timestamp = UnixSeconds(auth.signed_at_ms ? auth.signed_at_ms : occurred_at_ms);
			// Computed even when masked, so preview() reports a malformed secret too.
			std::string signature = StandardWebhookSignature(endpoint.secret, id, timestamp, request.body);
			request.headers.emplace_back("webhook-id", id);
			request.headers.emplace_back("webhook-timestamp", timestamp);
			request.headers.emplace_back("webhook-signature", auth.masked ? "v1,****" : signature);
		}
		return request;
	}

	CallResult ParseResult(const Call &call, const std::vector<Change> &, const HttpResponse &response) const override
	{
		CallResult result;
		long status = response.status;
		if (status >= 200 && status < 300) {
			result = UniformResult(call, Outcome::Delivered, std::string());
		} else if (status == 0) {
			result = UniformResult(call, Outcome::Retry, "transport error: " + Snippet(response.transport_error));
		} else if (status == 410) {
			// The receiver says this subscription is gone for good: stop the route, keep the reason.
			result = UniformResult(call, Outcome::Dead,
			                       "HTTP 410 Gone: the receiver no longer accepts these events; route disabled");
			result.disable_route = true;
		} else if (status == 429 || status >= 500) {
			result = UniformResult(call, Outcome::Retry, Describe(response), RetryAfterMs(response));
		} else if (status == 408) {
			result = UniformResult(call, Outcome::Retry, Describe(response), RetryAfterMs(response));
		} else {
			result = UniformResult(call, Outcome::Dead, Describe(response));
		}
		MarkAnswer(ClassifyAnswer(response), &result); // 0, 429, 5xx: endpoint failures
		result.http_status = status;
		return result;
	}
};

} // namespace

std::unique_ptr<Connector>
MakeWebhookConnector()
{
	return std::make_unique<WebhookConnector>();
}

} // namespace switchboard
