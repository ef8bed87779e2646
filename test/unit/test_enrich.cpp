// Enrich steps (SPEC §5 openai, http; §7): request building and every answer shape.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>

#include "connectors/connector.h"
#include "fixtures.h"

namespace switchboard {
namespace {

using namespace test_support;

EnrichInput
Input(const Json &input, const Json &options = Json::object(), const std::string &step = "score")
{
	EnrichInput in;
	in.step = step;
	in.input = input;
	in.options = options;
	return in;
}

// action throws std::invalid_argument whose message holds part.
void
ExpectInvalid(const std::function<void()> &action, const std::string &part)
{
	std::string message = ExpectThrows<std::invalid_argument>(action);
	EXPECT_NE(message.find(part), std::string::npos) << message;
}

const Connector &
Kind(const char *kind)
{
	return *FindConnector(kind);
}

TEST(Enrich, WhichKindsEnrichAndNotify)
{
	EXPECT_TRUE(Kind("openai").Enriches());
	EXPECT_TRUE(Kind("http").Enriches());
	EXPECT_FALSE(Kind("hubspot").Enriches());
	EXPECT_FALSE(Kind("webhook").Enriches());
	EXPECT_TRUE(Kind("webhook").Notifies());
	EXPECT_FALSE(Kind("openai").Notifies());
	EXPECT_TRUE(Kind("openai").EnrichTakesText());
	EXPECT_FALSE(Kind("http").EnrichTakesText());
	EXPECT_FALSE(Kind("http").NotARouteTarget().empty());
	EXPECT_THROW(Kind("hubspot").BuildEnrichRequest(Endpoint(), Input("x"), Auth()), std::invalid_argument);
}

TEST(Enrich, OpenAIStepOptions)
{
	const Connector &c = Kind("openai");
	EXPECT_NO_THROW(c.ValidateEnrichOption("model", "gpt-4o-mini"));
	EXPECT_NO_THROW(c.ValidateEnrichOption("system", "You score leads."));
	EXPECT_NO_THROW(c.ValidateEnrichOption("temperature", 0.2));
	EXPECT_NO_THROW(c.ValidateEnrichOption("max_tokens", 200));
	EXPECT_NO_THROW(c.ValidateEnrichOption("json_schema", {{"type", "object"}}));
	EXPECT_THROW(c.ValidateEnrichOption("model", ""), std::invalid_argument);
	EXPECT_THROW(c.ValidateEnrichOption("system", 3), std::invalid_argument);
	EXPECT_THROW(c.ValidateEnrichOption("temperature", 3), std::invalid_argument);
	EXPECT_THROW(c.ValidateEnrichOption("max_tokens", 0), std::invalid_argument);
	EXPECT_THROW(c.ValidateEnrichOption("json_schema", "object"), std::invalid_argument);
	EXPECT_THROW(c.ValidateEnrichOption("json_schema", {{"schema", 1}}), std::invalid_argument);
	// A schema the answer could not be checked against is refused when the step is written.
	EXPECT_NO_THROW(
	    c.ValidateEnrichOption("json_schema",
	                           {{"name", "s"},
	                            {"schema", {{"$defs", {{"n", {{"type", "integer"}}}}}, {"$ref", "#/$defs/n"}}}}));
	ExpectInvalid(
	    [&] {
		    c.ValidateEnrichOption("json_schema", {{"type", "int"}});
	    },
	    "option \"json_schema\" is not a schema the answer can be checked against: #/type: unknown type "
	    "\"int\"");
	ExpectInvalid(
	    [&] {
		    c.ValidateEnrichOption("json_schema", {{"name", "s"}, {"schema", {{"$ref", "#/$defs/x"}}}});
	    },
	    "#/$ref: \"#/$defs/x\" does not resolve");
	ExpectInvalid(
	    [&] {
		    c.ValidateEnrichOption("json_schema",
		                           {{"type", "object"}, {"properties", {{"a", {{"items", {{"type", {"x"}}}}}}}}});
	    },
	    "#/properties/a/items/type: unknown type \"x\"");
	ExpectInvalid([&] { c.ValidateEnrichOption("json_schema", {{"$ref", "#"}}); }, "loops back");
	std::vector<std::string> known = c.EnrichOptions();
	EXPECT_NE(std::find(known.begin(), known.end(), "json_schema"), known.end());

	Endpoint no_model = MakeEndpoint("openai", "https://api.openai.com", "sk");
	EXPECT_NE(c.EnrichProblem(no_model, Json::object()).find("no model"), std::string::npos);
	EXPECT_EQ(c.EnrichProblem(no_model, {{"model", "m"}}), "");
	no_model.options = {{"model", "m"}};
	EXPECT_EQ(c.EnrichProblem(no_model, Json::object()), "");
}

TEST(Enrich, OpenAIRequestFromAPrompt)
{
	Endpoint endpoint = MakeEndpoint("openai", "http://127.0.0.1:9/", "sk-SECRETKEY", {{"model", "gpt-4o-mini"}});
	Json options = {{"system", "Score the lead 0-100. Answer {\"score\": n}."}, {"temperature", 0}, {"max_tokens", 50}};
	HttpRequest request = Kind("openai").BuildEnrichRequest(endpoint, Input("Lead: ada@example.com", options),
	                                                        Auth{"sk-SECRETKEY", "", false});
	EXPECT_EQ(request.url, "http://127.0.0.1:9/v1/chat/completions");
	EXPECT_EQ(HeaderValue(request.headers, "authorization"), "Bearer sk-SECRETKEY");
	Json body = Json::parse(request.body);
	EXPECT_EQ(body["model"], "gpt-4o-mini");
	ASSERT_EQ(body["messages"].size(), 2u);
	EXPECT_EQ(body["messages"][0]["role"], "system");
	EXPECT_EQ(body["messages"][1], Json({{"role", "user"}, {"content", "Lead: ada@example.com"}}));
	EXPECT_EQ(body["response_format"], Json({{"type", "json_object"}}));
	EXPECT_EQ(body["temperature"], 0);
	EXPECT_EQ(body["max_tokens"], 50);

	// The step's model wins over the endpoint's; masked never shows the key.
	HttpRequest masked = Kind("openai").BuildEnrichRequest(endpoint, Input("x", {{"model", "llama3"}}),
	                                                       Auth{"", "", true});
	EXPECT_EQ(Json::parse(masked.body)["model"], "llama3");
	EXPECT_EQ(WireText(masked).find("SECRETKEY"), std::string::npos);
	EXPECT_EQ(HeaderValue(masked.headers, "authorization"), "Bearer ****");

	// A non-string JSON prompt is sent as its text; NULL is no prompt.
	Json sent = Json::parse(BuildChatRequestForStep(endpoint, Input({{"email", "a@b"}})).body);
	EXPECT_EQ(sent["messages"][0]["content"], R"({"email":"a@b"})");
	EXPECT_THROW(BuildChatRequestForStep(endpoint, Input(nullptr)), std::invalid_argument);
}

TEST(Enrich, OpenAIRequestFromMessagesAndSchema)
{
	Endpoint endpoint = MakeEndpoint("openai", "https://api.openai.com", "sk", {{"model", "m"}});
	Json messages = Json::array({{{"role", "user"}, {"content", "hi"}}});
	Json schema = {{"type", "object"}, {"properties", {{"score", {{"type", "integer"}}}}}};
	Json body = Json::parse(
	    BuildChatRequestForStep(endpoint, Input(messages, {{"json_schema", schema}, {"system", "S"}}, "lead score"))
	        .body);
	ASSERT_EQ(body["messages"].size(), 2u);
	EXPECT_EQ(body["messages"][0], Json({{"role", "system"}, {"content", "S"}}));
	EXPECT_EQ(body["response_format"]["type"], "json_schema");
	EXPECT_EQ(body["response_format"]["json_schema"]["name"], "lead_score");
	EXPECT_EQ(body["response_format"]["json_schema"]["schema"], schema);
	EXPECT_EQ(body["response_format"]["json_schema"]["strict"], true);

	// {"name", "schema"} as OpenAI spells it is taken as given.
	body = Json::parse(
	    BuildChatRequestForStep(endpoint, Input(messages, {{"json_schema", {{"name", "s1"}, {"schema", schema}}}}))
	        .body);
	EXPECT_EQ(body["response_format"]["json_schema"]["name"], "s1");
	EXPECT_EQ(body["response_format"]["json_schema"]["schema"], schema);

	// Messages that bring their own system prompt keep it alone.
	Json own = Json::array({{{"role", "system"}, {"content", "mine"}}, {{"role", "user"}, {"content", "hi"}}});
	body = Json::parse(BuildChatRequestForStep(endpoint, Input(own, {{"system", "S"}})).body);
	EXPECT_EQ(body["messages"], own);
	EXPECT_THROW(BuildChatRequestForStep(endpoint, Input(Json::array({1}))), std::invalid_argument);
}

TEST(Enrich, OpenAIAnswers)
{
	const Connector &c = Kind("openai");
	EnrichResult r = c.ParseEnrichResult(Answer(200, R"({"model":"gpt-4o-mini","choices":[{"message":
	    {"role":"assistant","content":"{\"score\":91}"}}],"usage":{"prompt_tokens":42,"completion_tokens":7,"total_tokens":49}})"));
	EXPECT_EQ(r.outcome, Outcome::Delivered);
	EXPECT_EQ(r.output, Json({{"score", 91}}));
	EXPECT_TRUE(r.has_usage);
	EXPECT_EQ(r.prompt_tokens, 42);
	EXPECT_EQ(r.completion_tokens, 7);
	EXPECT_EQ(r.model, "gpt-4o-mini");

	// Malformed content: not JSON, a JSON array, a JSON string, empty, missing choices. All
	// permanent; tokens spent are still recorded.
	for (const char *content :
	     {R"("{\"score\":")", R"("[1,2]")", R"("\"high\"")", R"("")", R"(null)", R"("```json\n{}\n```")"}) {
		std::string body = std::string(R"({"choices":[{"message":{"content":)") + content +
		                   R"(}}],"usage":{"prompt_tokens":5,"completion_tokens":3}})";
		r = c.ParseEnrichResult(Answer(200, body));
		EXPECT_EQ(r.outcome, Outcome::Dead) << content;
		EXPECT_NE(r.error.find("not a JSON object"), std::string::npos) << r.error;
		EXPECT_EQ(r.prompt_tokens, 5) << content;
	}
	EXPECT_EQ(c.ParseEnrichResult(Answer(200, R"({"choices":[]})")).outcome, Outcome::Dead);
	EXPECT_EQ(c.ParseEnrichResult(Answer(200, "<html>")).outcome, Outcome::Dead);
	// Content nested deeper than any answer may be: refused, permanently.
	std::string deep = std::string(100, '[') + std::string(100, ']');
	r = c.ParseEnrichResult(Answer(200, Json({{"choices", {{{"message", {{"content", deep}}}}}}}).dump()));
	EXPECT_EQ(r.outcome, Outcome::Dead);

	// Quota vs rate limit.
	r = c.ParseEnrichResult(Answer(429, R"({"error":{"code":"insufficient_quota","message":"quota"}})"));
	EXPECT_EQ(r.outcome, Outcome::Dead);
	EXPECT_TRUE(r.stop_endpoint);
	r = c.ParseEnrichResult(Answer(429, R"({"error":{"code":"rate_limit_exceeded","message":"slow down"}})",
	                               {{"x-ratelimit-reset-requests", "1.5s"}}));
	EXPECT_EQ(r.outcome, Outcome::Retry);
	EXPECT_TRUE(r.endpoint_failure);
	EXPECT_EQ(r.retry_after_ms, 1500);
	r = c.ParseEnrichResult(Answer(429, R"({"error":{"code":"rate_limit_exceeded"}})",
	                               {{"retry-after", "3"}, {"x-ratelimit-reset-requests", "1s"}}));
	EXPECT_EQ(r.retry_after_ms, 3000);
	EXPECT_EQ(c.ParseEnrichResult(Answer(503, "")).outcome, Outcome::Retry);
	EXPECT_EQ(c.ParseEnrichResult(Answer(400, R"({"error":{"message":"bad model"}})")).outcome, Outcome::Dead);
}

// A compatible server (a self-hosted model behind base_url) may ignore response_format: the
// answer is checked against the step's json_schema, a mismatch is permanent, usage is kept.
TEST(Enrich, OpenAIAnswerMustMatchTheJsonSchema)
{
	auto connector = MakeConnector("openai");
	Json schema = {{"type", "object"},
	               {"properties", {{"score", {{"type", "integer"}}}, {"reason", {{"type", "string"}}}}},
	               {"required", {"score", "reason"}},
	               {"additionalProperties", false}};
	auto answer = [](const std::string &content) {
		return Answer(200, Json({{"model", "llama3"},
		                         {"choices", {{{"message", {{"role", "assistant"}, {"content", content}}}}}},
		                         {"usage", {{"prompt_tokens", 11}, {"completion_tokens", 4}}}})
		                       .dump());
	};
	for (const Json &option : {schema, Json({{"name", "lead"}, {"schema", schema}, {"strict", true}})}) {
		Change change;
		change.fields = {{"step", "score"}, {"input", "hi"}, {"options", {{"model", "m"}, {"json_schema", option}}}};
		std::vector<Call> calls = connector->BuildCalls(MakeEndpoint("openai", "http://127.0.0.1:9"), Route(), {change},
		                                                Auth());
		ASSERT_EQ(calls.size(), 1u);

		CallResult result = connector->ParseResult(calls[0], {change}, answer(R"({"score":7,"reason":"ok"})"));
		ASSERT_EQ(result.results.size(), 1u);
		EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
		EXPECT_EQ(Json::parse(result.results[0].remote_id)["output"], Json({{"score", 7}, {"reason", "ok"}}));

		result = connector->ParseResult(calls[0], {change}, answer(R"({"score":"7","reason":"ok"})"));
		EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
		EXPECT_EQ(result.results[0].error,
		          "model answer does not match json_schema: $.score: expected integer, got string");
		EXPECT_EQ(result.error, result.results[0].error);
		EXPECT_EQ(result.http_status, 200);
		EXPECT_FALSE(result.endpoint_failure);
		// The tokens were spent: usage still travels (without an output).
		Json carried = Json::parse(result.results[0].remote_id);
		EXPECT_EQ(carried["has_usage"], true);
		EXPECT_EQ(carried["prompt_tokens"], 11);
		EXPECT_EQ(carried["completion_tokens"], 4);
		EXPECT_FALSE(carried.contains("output"));

		result = connector->ParseResult(calls[0], {change}, answer(R"({"score":7})"));
		EXPECT_EQ(result.results[0].error,
		          "model answer does not match json_schema: $: missing required property \"reason\"");
		result = connector->ParseResult(calls[0], {change}, answer(R"({"score":7,"reason":"ok","mood":"x"})"));
		EXPECT_EQ(result.results[0].error, "model answer does not match json_schema: $: unexpected property \"mood\"");
		// Not an object at all: the older, more telling error; usage kept as well.
		result = connector->ParseResult(calls[0], {change}, answer("[7]"));
		EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
		EXPECT_NE(result.results[0].error.find("not a JSON object"), std::string::npos) << result.results[0].error;
		EXPECT_EQ(Json::parse(result.results[0].remote_id)["prompt_tokens"], 11);
		// Errors other than the answer's own are not checked.
		result = connector->ParseResult(calls[0], {change}, Answer(503, ""));
		EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
		EXPECT_EQ(result.results[0].remote_id, "");
	}

	// Without json_schema any object is fine.
	Change plain;
	plain.fields = {{"step", "score"}, {"input", "hi"}, {"options", {{"model", "m"}}}};
	std::vector<Call> calls = connector->BuildCalls(MakeEndpoint("openai", "http://127.0.0.1:9"), Route(), {plain},
	                                                Auth());
	EXPECT_EQ(connector->ParseResult(calls[0], {plain}, answer(R"({"score":"high"})")).results[0].outcome,
	          Outcome::Delivered);

	// The check alone.
	ChatResult r = ParseChatResult(answer(R"({"score":1.5,"reason":"ok"})"));
	ASSERT_EQ(r.outcome, Outcome::Delivered);
	CheckChatAnswer({{"json_schema", schema}}, &r);
	EXPECT_EQ(r.outcome, Outcome::Dead);
	EXPECT_EQ(r.error, "model answer does not match json_schema: $.score: expected integer, got number");
	EXPECT_TRUE(r.has_usage);
	EXPECT_EQ(r.prompt_tokens, 11);
	EXPECT_EQ(r.model, "llama3");
	ChatResult retry = ParseChatResult(Answer(500, ""));
	CheckChatAnswer({{"json_schema", schema}}, &retry);
	EXPECT_EQ(retry.outcome, Outcome::Retry);
}

TEST(Enrich, OpenAIDurations)
{
	EXPECT_EQ(ParseOpenAIDuration("1s"), 1000);
	EXPECT_EQ(ParseOpenAIDuration("20ms"), 20);
	EXPECT_EQ(ParseOpenAIDuration("6m0s"), 360000);
	EXPECT_EQ(ParseOpenAIDuration("1h2m3.5s"), 3723500);
	EXPECT_EQ(ParseOpenAIDuration("0.25s"), 250);
	EXPECT_EQ(ParseOpenAIDuration(""), -1);
	EXPECT_EQ(ParseOpenAIDuration("soon"), -1);
	EXPECT_EQ(ParseOpenAIDuration("5"), -1);
	EXPECT_EQ(ParseOpenAIDuration("99999h"), -1);
}

TEST(Enrich, HttpRequestAndAnswers)
{
	const Connector &c = Kind("http");
	Endpoint endpoint = MakeEndpoint("http", "https://enrich.example.com/v1/person", "tok-SECRET",
	                                 {{"headers", {{"X-Team", "growth"}}}});
	HttpRequest request = c.BuildEnrichRequest(endpoint, Input({{"email", "ada@example.com"}}),
	                                           Auth{"tok-SECRET", "", false});
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://enrich.example.com/v1/person");
	EXPECT_EQ(request.body, R"({"email":"ada@example.com"})");
	EXPECT_EQ(HeaderValue(request.headers, "authorization"), "Bearer tok-SECRET");
	EXPECT_EQ(HeaderValue(request.headers, "content-type"), "application/json");
	EXPECT_EQ(HeaderValue(request.headers, "x-team"), "growth");
	HttpRequest masked = c.BuildEnrichRequest(endpoint, Input({{"email", "a"}}), Auth{"", "", true});
	EXPECT_EQ(WireText(masked).find("SECRET"), std::string::npos);
	Endpoint open = MakeEndpoint("http", "https://enrich.example.com", "");
	EXPECT_EQ(HeaderValue(c.BuildEnrichRequest(open, Input(Json::object()), Auth()).headers, "authorization"), "");
	EXPECT_THROW(c.BuildEnrichRequest(open, Input(nullptr), Auth()), std::invalid_argument);

	EnrichResult r = c.ParseEnrichResult(Answer(200, R"({"company":"Acme","employees":40})"));
	EXPECT_EQ(r.outcome, Outcome::Delivered);
	EXPECT_EQ(r.output["company"], "Acme");
	EXPECT_FALSE(r.has_usage);
	EXPECT_EQ(c.ParseEnrichResult(Answer(201, R"({})")).outcome, Outcome::Delivered);
	for (const char *bad : {"[1]", "\"x\"", "not json", ""})
		EXPECT_EQ(c.ParseEnrichResult(Answer(200, bad)).outcome, Outcome::Dead) << bad;
	r = c.ParseEnrichResult(Answer(429, "", {{"retry-after", "2"}}));
	EXPECT_EQ(r.outcome, Outcome::Retry);
	EXPECT_EQ(r.retry_after_ms, 2000);
	EXPECT_TRUE(r.endpoint_failure);
	EXPECT_EQ(c.ParseEnrichResult(Answer(502, "")).outcome, Outcome::Retry);
	EXPECT_EQ(c.ParseEnrichResult(HttpResponse()).outcome, Outcome::Retry);
	EXPECT_EQ(c.ParseEnrichResult(Answer(404, "{}")).outcome, Outcome::Dead);
	EXPECT_EQ(c.ParseEnrichResult(Answer(301, "")).outcome, Outcome::Dead);
	EXPECT_NE(c.ParseEnrichResult(Answer(401, "")).error.find("authentication"), std::string::npos);
}

} // namespace
} // namespace switchboard
