// OpenAI chat completions, used by enrichment steps (SPEC §5 openai, §7): the model answers
// with a JSON object that is merged into the record.
#include <cctype>
#include <cmath>
#include <stdexcept>

#include "connectors/connector.h"
#include "connectors/json_schema_check.h"
#include "http/json_limits.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

class OpenAIConnector : public Connector {
public:
	// One chat completion answers one record.
	size_t BulkLimit() const override { return 1; }

	// options.model: the endpoint's default, for steps that name no model of their own.
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

	bool Enriches() const override { return true; }
	bool EnrichTakesText() const override { return true; }
	std::vector<std::string> EnrichOptions() const override
	{
		return {"model", "system", "temperature", "max_tokens", "json_schema"};
	}
	void ValidateEnrichOption(const std::string &name, const Json &value) const override;
	std::string EnrichProblem(const Endpoint &endpoint, const Json &options) const override
	{
		bool step_model = options.is_object() && options.contains("model");
		bool endpoint_model = endpoint.options.is_object() && endpoint.options.contains("model");
		if (!step_model && !endpoint_model)
			return "no model: set options.model in the step or in endpoint \"" + endpoint.name + "\"";
		return std::string();
	}
	HttpRequest BuildEnrichRequest(const Endpoint &endpoint, const EnrichInput &input, const Auth &auth) const override
	{
		Endpoint signed_with = endpoint;
		if (!auth.masked && !auth.bearer.empty())
			signed_with.secret = auth.bearer;
		return BuildChatRequestForStep(signed_with, input, auth.masked);
	}
	EnrichResult ParseEnrichResult(const HttpResponse &response) const override { return ParseChatResult(response); }
	void CheckEnrichAnswer(const EnrichInput &input, EnrichResult *result) const override
	{
		CheckChatAnswer(input.options, result);
	}

	// Routes never target this kind (NotARouteTarget); enrich steps of many runs are sent
	// through the dispatcher with these (EnrichCalls in connector.h).
	std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &, const std::vector<Change> &changes,
	                             const Auth &auth) const override
	{
		return EnrichCalls(*this, endpoint, changes, auth);
	}

	CallResult ParseResult(const Call &call, const std::vector<Change> &changes,
	                       const HttpResponse &response) const override
	{
		return EnrichCallResult(*this, call, changes, response);
	}
};

std::string
Text(const Json &object, const char *name)
{
	if (object.is_object() && object.contains(name) && object[name].is_string())
		return object[name].get<std::string>();
	return std::string();
}

void
OpenAIConnector::ValidateEnrichOption(const std::string &name, const Json &value) const
{
	auto fail = [&](const std::string &what) {
		throw std::invalid_argument("option \"" + name + "\" must be " + what + ", got " + Snippet(value.dump(), 60));
	};
	if (name == "model") {
		if (!value.is_string() || value.get_ref<const std::string &>().empty())
			fail("a non-empty string");
	} else if (name == "system") {
		if (!value.is_string())
			fail("a string (the system prompt)");
	} else if (name == "temperature") {
		if (!value.is_number() || value.get<double>() < 0 || value.get<double>() > 2)
			fail("a number from 0 to 2");
	} else if (name == "max_tokens") {
		if (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > 1000000)
			fail("a positive integer");
	} else if (name == "json_schema") {
		// Either the schema itself, or {"name", "schema"} as OpenAI's response_format names it.
		if (!value.is_object() || value.empty())
			fail("a JSON schema (an object)");
		if (value.contains("schema") && !value["schema"].is_object())
			fail("a JSON schema, whose \"schema\" is an object");
		// The answer is checked against it (compatible servers may ignore response_format):
		// refused now when the check could not use it.
		std::string problem = JsonSchemaProblem(StepJsonSchema(value));
		if (!problem.empty())
			throw std::invalid_argument("option \"json_schema\" is not a schema the answer can be checked against: " +
			                            problem);
	} else {
		Connector::ValidateEnrichOption(name, value);
	}
}

// OpenAI's json_schema names are [a-zA-Z0-9_-], at most 64.
std::string
SchemaName(const std::string &step)
{
	std::string name;
	for (char c : step)
		name += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') ? c : '_';
	if (name.empty())
		name = "output";
	return name.substr(0, 64);
}

std::string
Describe(const HttpResponse &response, const Json &error)
{
	std::string text = "HTTP " + std::to_string(response.status);
	// OpenAI often sends "code": null, and some compatible servers only a type; then the
	// type is the best name for the error.
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
	// The step's model first, else the endpoint's default.
	std::string chosen = model;
	if (chosen.empty() && endpoint.options.is_object())
		chosen = Text(endpoint.options, "model");
	if (chosen.empty())
		throw std::invalid_argument("openai endpoint \"" + endpoint.name +
		                            "\": no model given (set options.model or name one in the step)");
	nlohmann::ordered_json body;
	body["model"] = chosen;
	body["messages"] = messages;
	// The step's output must be a JSON object (SPEC §5): ask the model for nothing else.
	body["response_format"] = {{"type", "json_object"}};
	HttpRequest request;
	request.method = "POST";
	request.url = JoinUrl(endpoint.base_url, "/v1/chat/completions");
	// masked: preview shows the request, never the secret.
	request.headers.emplace_back("Authorization", masked ? "Bearer ****" : "Bearer " + endpoint.secret);
	request.headers.emplace_back("Content-Type", "application/json");
	AppendOptionHeaders(endpoint, &request.headers);
	request.body = body.dump();
	return request;
}

HttpRequest
BuildChatRequestForStep(const Endpoint &endpoint, const EnrichInput &input, bool masked)
{
	const Json &options = input.options.is_object() ? input.options : Json::object();
	std::string model = Text(options, "model");
	std::string system = Text(options, "system");
	Json messages = Json::array();
	if (input.input.is_array()) {
		// The messages themselves; a system prompt in the options goes first unless they
		// bring their own.
		bool has_system = false;
		for (const auto &m : input.input) {
			if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
				throw std::invalid_argument("input messages must be objects with role and content, got " +
				                            Snippet(m.dump(), 80));
			has_system = has_system || m["role"] == "system";
		}
		if (!system.empty() && !has_system)
			messages.push_back({{"role", "system"}, {"content", system}});
		for (const auto &m : input.input)
			messages.push_back(m);
	} else if (input.input.is_null()) {
		throw std::invalid_argument("the prompt (input) is NULL for this row");
	} else {
		if (!system.empty())
			messages.push_back({{"role", "system"}, {"content", system}});
		// A JSON string is the prompt; any other value is sent as its JSON text.
		std::string prompt = input.input.is_string() ? input.input.get<std::string>() : input.input.dump();
		messages.push_back({{"role", "user"}, {"content", prompt}});
	}
	HttpRequest request = BuildChatRequest(endpoint, model, messages, masked);
	nlohmann::ordered_json body = nlohmann::ordered_json::parse(request.body);
	if (options.contains("temperature"))
		body["temperature"] = options["temperature"];
	if (options.contains("max_tokens"))
		body["max_tokens"] = options["max_tokens"];
	if (options.contains("json_schema")) {
		const Json &given = options["json_schema"];
		bool wrapped = given.contains("schema") && given["schema"].is_object();
		nlohmann::ordered_json schema;
		schema["name"] = wrapped && given.contains("name") && given["name"].is_string()
		                     ? SchemaName(given["name"].get<std::string>())
		                     : SchemaName(input.step);
		schema["schema"] = wrapped ? given["schema"] : given;
		schema["strict"] = true;
		body["response_format"] = {{"type", "json_schema"}, {"json_schema", schema}};
	}
	request.body = body.dump();
	return request;
}

long
ParseOpenAIDuration(const std::string &text)
{
	// A sequence of <number><unit>, units h, m, s, ms (Go's time.Duration text).
	if (text.empty())
		return -1;
	double total_ms = 0;
	size_t i = 0;
	while (i < text.size()) {
		size_t start = i;
		while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
			i++;
		if (i == start)
			return -1;
		double number = 0;
		try {
			number = std::stod(text.substr(start, i - start));
		} catch (const std::exception &) {
			return -1;
		}
		double unit = 0;
		if (text.compare(i, 2, "ms") == 0) {
			unit = 1;
			i += 2;
		} else if (i < text.size() && text[i] == 'h') {
			unit = 3600000;
			i++;
		} else if (i < text.size() && text[i] == 'm') {
			unit = 60000;
			i++;
		} else if (i < text.size() && text[i] == 's') {
			unit = 1000;
			i++;
		} else {
			return -1;
		}
		total_ms += number * unit;
		if (total_ms > 86400000.0 * 7)
			return -1;
	}
	return static_cast<long>(std::ceil(total_ms));
}

namespace {

// Retry-After first; else when the request limit resets (x-ratelimit-reset-requests).
long
RateLimitWaitMs(const HttpResponse &response)
{
	long ms = RetryAfterMs(response);
	if (ms >= 0)
		return ms;
	for (const auto &h : response.headers)
		if (Lower(h.first) == "x-ratelimit-reset-requests")
			return ParseOpenAIDuration(h.second);
	return -1;
}

void
ReadUsage(const Json &body, ChatResult *result)
{
	if (!body.is_object() || !body.contains("usage") || !body["usage"].is_object())
		return;
	const Json &usage = body["usage"];
	auto count = [&](const char *name) -> int64_t {
		if (usage.contains(name) && usage[name].is_number_integer() && usage[name].get<int64_t>() >= 0)
			return usage[name].get<int64_t>();
		return 0;
	};
	result->has_usage = true;
	result->prompt_tokens = count("prompt_tokens");
	result->completion_tokens = count("completion_tokens");
}

} // namespace

void
CheckChatAnswer(const Json &options, ChatResult *result)
{
	if (result->outcome != Outcome::Delivered || !options.is_object() || !options.contains("json_schema"))
		return;
	std::string mismatch = JsonSchemaMismatch(StepJsonSchema(options["json_schema"]), result->output);
	if (mismatch.empty())
		return;
	// Permanent, like content that is not a JSON object: the same prompt is likely to get the
	// same answer (retry(id) asks again once the prompt, schema or server is fixed). Usage stays.
	result->outcome = Outcome::Dead;
	result->error = "model answer does not match json_schema: " + mismatch;
	result->output = Json();
}

ChatResult
ParseChatResult(const HttpResponse &response)
{
	ChatResult result;
	result.http_status = response.status;
	const long status = response.status;
	if (status == 0) {
		ClassifyFailedEnrich(response, "", -1, &result);
		return result;
	}
	std::string refused;
	Json body = TryParseRemoteJson(response.body, &refused);
	Json error = body.is_object() && body.contains("error") ? body["error"] : Json();
	if (status == 200) {
		// Tokens were spent whatever the content says: recorded even when it is unusable.
		ReadUsage(body, &result);
		result.model = Text(body, "model");
		// choices[0].message.content holds the model's JSON object as a string.
		std::string content;
		if (body.is_object() && body.contains("choices") && body["choices"].is_array() && !body["choices"].empty()) {
			const Json &choice = body["choices"][0];
			if (choice.is_object() && choice.contains("message"))
				content = Text(choice["message"], "content");
		}
		// The content is remote input too, a second JSON document inside the first: the same
		// bounds apply to it.
		Json parsed = refused.empty() ? TryParseRemoteJson(content, &refused) : Json();
		if (!refused.empty()) {
			// Too deep or too large (the answer, or its content): permanent, like any content
			// that is not a JSON object; asking again would pay for the same answer.
			result.outcome = Outcome::Dead;
			result.error = "model answer refused: " + refused;
			return result;
		}
		if (!parsed.is_object()) {
			// SPEC §5: content that is not a JSON object is a permanent failure of the step
			// (retry(id) asks the model again once the prompt or schema is fixed).
			result.outcome = Outcome::Dead;
			result.error = "model answer is not a JSON object: " + Snippet(content.empty() ? response.body : content);
			return result;
		}
		result.outcome = Outcome::Delivered;
		result.output = std::move(parsed);
		return result;
	}
	if (status == 429 && (Text(error, "code") == "insufficient_quota" || Text(error, "type") == "insufficient_quota")) {
		// Billing, not load: retrying only burns attempts until someone tops up the account.
		result.outcome = Outcome::Dead;
		result.error = Describe(response, error);
		result.stop_endpoint = true;
		return result;
	}
	// A rate limit makes the whole endpoint wait (Retry-After, else the request limit's reset).
	ClassifyFailedEnrich(response, Describe(response, error),
	                     status == 429 ? RateLimitWaitMs(response) : RetryAfterMs(response), &result);
	return result;
}

} // namespace switchboard
