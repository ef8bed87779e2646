// OpenAI chat completions, used by enrichment steps (SPEC §5 openai, §7): the model answers
// with a JSON object that is merged into the record.
#include <stdexcept>

#include "connectors/connector.h"
#include "http/json_limits.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

class OpenAIConnector : public Connector {
public:
	size_t BulkLimit() const override { return 1; }

	std::vector<std::string> ExtraOptions() const override { return {"model"}; }

	void ValidateOption(const std::string &name, const Json &value) const override
	{
		if (name != "model")
			return Connector::ValidateOption(name, value);
		if (!value.is_string() || value.get_ref<const std::string &>().empty())
			throw std::invalid_argument("option \"model\" must be a non-empty string, got " +
			                            Snippet(value.dump(), 60));
	}

	std::string NotARouteTarget() const override
	{
		return "is an openai endpoint, which enriches records but is not a route target";
	}

	std::vector<Call> BuildCalls(const Endpoint &, const Route &, const std::vector<Change> &,
	                             const Auth &) const override
	{
		throw std::logic_error("openai endpoints are used by enrichment steps, not as route targets");
	}

	CallResult ParseResult(const Call &, const std::vector<Change> &, const HttpResponse &) const override
	{
		throw std::logic_error("openai endpoints are used by enrichment steps, not as route targets");
	}
};

std::string
Text(const Json &object, const char *name)
{
	if (object.is_object() && object.contains(name) && object[name].is_string())
		return object[name].get<std::string>();
	return std::string();
}

std::string
Describe(const HttpResponse &response, const Json &error)
{
	std::string text = "HTTP " + std::to_string(response.status);
	std::string code = Text(error, "code");
	if (code.empty())
		code = Text(error, "type");
	if (!code.empty())
		text += " " + code;
	std::string message = Text(error, "message");
	if (!message.empty())
		return text + ": " + Snippet(message, 500);
	return response.body.empty() ? text : text + ": " + Snippet(response.body);
}

} // namespace

std::unique_ptr<Connector>
MakeOpenAIConnector()
{
	return std::make_unique<OpenAIConnector>();
}

HttpRequest
BuildChatRequest(const Endpoint &endpoint, const std::string &model, const Json &messages, bool masked)
{
	std::string chosen = model;
	if (chosen.empty() && endpoint.options.is_object())
		chosen = Text(endpoint.options, "model");
	if (chosen.empty())
		throw std::invalid_argument("openai endpoint \"" + endpoint.name +
		                            "\": no model given (set options.model or name one in the step)");
	nlohmann::ordered_json body;
	body["model"] = chosen;
	body["messages"] = messages;
	body["response_format"] = {{"type", "json_object"}};
	HttpRequest request;
	request.method = "POST";
	request.url = JoinUrl(endpoint.base_url, "/v1/chat/completions");
	request.headers.emplace_back("Authorization", masked ? "Bearer ****" : "Bearer " + endpoint.secret);
	request.headers.emplace_back("Content-Type", "application/json");
	AppendOptionHeaders(endpoint, &request.headers);
	request.body = body.dump();
	return request;
}

ChatResult
ParseChatResult(const HttpResponse &response)
{
	ChatResult result;
	result.http_status = response.status;
	long status = response.status;
	if (status == 0) {
		result.outcome = Outcome::Retry;
		result.error = "transport error: " + Snippet(response.transport_error);
		result.endpoint_failure = true;
		return result;
	}
	std::string refused;
	Json body = TryParseRemoteJson(response.body, &refused);
	Json error = body.is_object() && body.contains("error") ? body["error"] : Json();
	if (status == 200) {
		// choices[0].message.content holds the model's JSON object as a string.
		std::string content;
		if (body.is_object() && body.contains("choices") && body["choices"].is_array() && !body["choices"].empty()) {
			const Json &choice = body["choices"][0];
			if (choice.is_object() && choice.contains("message"))
				content = Text(choice["message"], "content");
		}
		if (!refused.empty()) {
			result.outcome = Outcome::Retry;
			result.error = "model answer refused: " + refused;
			return result;
		}
		Json parsed = TryParseRemoteJson(content, &refused);
		if (!refused.empty()) {
			result.outcome = Outcome::Retry;
			result.error = "model answer refused: " + refused;
			return result;
		}
		if (!parsed.is_object()) {
			// Models answer differently on a second try (or were cut off by max tokens):
			// retry, bounded by max_attempts.
			result.outcome = Outcome::Retry;
			result.error = "model answer is not a JSON object: " + Snippet(content.empty() ? response.body : content);
			return result;
		}
		result.outcome = Outcome::Delivered;
		result.content = std::move(parsed);
		return result;
	}
	result.error = Describe(response, error);
	if (status == 429) {
		if (Text(error, "code") == "insufficient_quota" || Text(error, "type") == "insufficient_quota") {
			// Billing, not load: retrying only burns attempts until someone tops up the account.
			result.outcome = Outcome::Dead;
			result.stop_endpoint = true;
			return result;
		}
		result.outcome = Outcome::Retry;
		result.endpoint_failure = true;
		result.retry_after_ms = RetryAfterMs(response);
		return result;
	}
	if (status >= 500) {
		result.outcome = Outcome::Retry;
		result.endpoint_failure = true;
		result.retry_after_ms = RetryAfterMs(response);
		return result;
	}
	if (status == 408) {
		result.outcome = Outcome::Retry;
		result.retry_after_ms = RetryAfterMs(response);
		return result;
	}
	result.outcome = Outcome::Dead;
	if (status == 401 || status == 403)
		result.error = "authentication failed: " + result.error;
	return result;
}

} // namespace switchboard
