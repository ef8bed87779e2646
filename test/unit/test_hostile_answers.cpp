// Hostile remote answers (issue 7 item 5): nesting far deeper than any remote documents, deep
// values hidden in a property of an otherwise valid answer, and huge bodies. Every parser of
// remote input must refuse them with a clear error, never overflow the stack (nlohmann's copy,
// comparison and dump() recurse once per level).
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "connectors/connector.h"
#include "connectors/pull.h"
#include "http/json_limits.h"
#include "fixtures.h"

namespace switchboard {
namespace {

using namespace test_support;

const size_t kHostileDepth = 100000;

std::string
Nested(size_t depth, char open = '[', char close = ']')
{
	return std::string(depth, open) + std::string(depth, close);
}

// {"a":{"a":...{"a":1}...}}: deep objects rather than arrays.
std::string
NestedObjects(size_t depth)
{
	std::string text;
	for (size_t i = 0; i < depth; ++i)
		text += "{\"a\":";
	text += "1";
	text += std::string(depth, '}');
	return text;
}

Change
Upsert(int64_t id, const std::string &key)
{
	Change change;
	change.id = id;
	change.op = Op::Update;
	change.key = key;
	change.fields = {{"firstname", "Ann"}};
	change.event_id = "evt_" + std::to_string(id);
	return change;
}

template <typename F>
std::string
RuntimeErrorOf(F f)
{
	try {
		f();
	} catch (const std::runtime_error &e) {
		return e.what();
	}
	ADD_FAILURE() << "expected std::runtime_error";
	return std::string();
}

bool
Mentions(const std::string &text, const std::string &part)
{
	return text.find(part) != std::string::npos;
}

// ---- the parser ---------------------------------------------------------------------------

TEST(RemoteJsonTest, DepthIsLimitedAtParseTime)
{
	EXPECT_EQ(ParseRemoteJson(Nested(kMaxRemoteJsonDepth)).dump().size(), 2 * kMaxRemoteJsonDepth);
	EXPECT_NO_THROW(ParseRemoteJson(NestedObjects(kMaxRemoteJsonDepth)));
	for (const std::string &text :
	     {Nested(kMaxRemoteJsonDepth + 1), Nested(kHostileDepth), NestedObjects(kMaxRemoteJsonDepth + 1),
	      NestedObjects(kHostileDepth), "{\"p\":" + Nested(kHostileDepth) + "}"}) {
		std::string message = RuntimeErrorOf([&] { ParseRemoteJson(text); });
		EXPECT_EQ(message, "JSON nested deeper than 64 levels");
	}
	// Unbalanced: the parser stops at the limit, long before the end of the text.
	EXPECT_THROW(ParseRemoteJson(std::string(kHostileDepth, '[')), RemoteJsonError);
}

TEST(RemoteJsonTest, SizeIsCappedAndSyntaxErrorsAreRemoteJsonErrors)
{
	std::string huge = "[\"" + std::string(kMaxRemoteJsonBytes, 'x') + "\"]";
	EXPECT_EQ(RuntimeErrorOf([&] { ParseRemoteJson(huge); }), "JSON text larger than 8388608 bytes");
	EXPECT_THROW(ParseRemoteJson("not json"), RemoteJsonError);
	EXPECT_THROW(ParseRemoteJson("[1e99999]"), RemoteJsonError);
	EXPECT_THROW(ParseRemoteJson(""), RemoteJsonError);

	std::string why;
	EXPECT_TRUE(TryParseRemoteJson(Nested(kHostileDepth), &why).is_discarded());
	EXPECT_EQ(why, "JSON nested deeper than 64 levels");
	EXPECT_TRUE(TryParseRemoteJson("{\"a\":", &why).is_discarded());
	EXPECT_EQ(why, "") << "not JSON, but not refused for depth or size";
	EXPECT_EQ(TryParseRemoteJson("{\"a\":[1,2]}", &why), (Json{{"a", {1, 2}}}));
	EXPECT_EQ(why, "");
}

// ---- pull pages ---------------------------------------------------------------------------

TEST(HostilePullTest, HubSpotSearchPageWithADeepProperty)
{
	const std::string body = R"({"total":1,"results":[{"id":"101","properties":{"email":"a@x.io","bio":)" +
	                         Nested(kHostileDepth) + R"(,"lastmodifieddate":"2026-11-24T10:00:00.123Z"}}]})";
	for (PullPhase phase : {PullPhase::Changes, PullPhase::Deletions}) {
		std::string message = RuntimeErrorOf([&] {
			ParsePullResponse(MakeEndpoint("hubspot", "https://remote.example"),
			                  MakeRoute("contacts", "email", "delete"), phase, PullCursor{"0", ""}, Answer(200, body));
		});
		EXPECT_TRUE(Mentions(message, "hubspot pull answer")) << message.substr(0, 300);
		EXPECT_TRUE(Mentions(message, "nested deeper than 64 levels")) << message.substr(0, 300);
		EXPECT_LT(message.size(), 400u) << "a reason, not the body";
	}
	// The same depth in an error answer only loses the remote's text.
	std::string message = RuntimeErrorOf([&] {
		ParsePullResponse(MakeEndpoint("hubspot", "https://remote.example"), MakeRoute("contacts", "email", "delete"),
		                  PullPhase::Changes, PullCursor{"0", ""},
		                  Answer(400, "{\"message\":" + Nested(kHostileDepth) + "}"));
	});
	EXPECT_TRUE(Mentions(message, "hubspot pull failed: HTTP 400")) << message.substr(0, 300);
}

TEST(HostilePullTest, SalesforceQueryPageWithADeepField)
{
	const std::string body = R"({"totalSize":1,"done":true,"records":[{"attributes":{"type":"Contact"},"Id":"003A",)"
	                         R"("SystemModstamp":"2026-11-24T10:00:00.123+0000","Email__c":"a@x.io","Bio__c":)" +
	                         NestedObjects(kHostileDepth) + "}]}";
	std::string message = RuntimeErrorOf([&] {
		ParsePullResponse(MakeEndpoint("salesforce", "https://remote.example"),
		                  MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes,
		                  PullCursor{"1970-01-01T00:00:00.000Z", ""}, Answer(200, body));
	});
	EXPECT_TRUE(Mentions(message, "salesforce pull answer")) << message.substr(0, 300);
	EXPECT_TRUE(Mentions(message, "nested deeper than 64 levels")) << message.substr(0, 300);
	message = RuntimeErrorOf([&] {
		ParsePullResponse(MakeEndpoint("salesforce", "https://remote.example"),
		                  MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes,
		                  PullCursor{"1970-01-01T00:00:00.000Z", ""}, Answer(500, "[" + Nested(kHostileDepth) + "]"));
	});
	EXPECT_TRUE(Mentions(message, "salesforce pull failed: HTTP 500")) << message.substr(0, 300);
}

TEST(HostilePullTest, HugeFlatPageIsRefused)
{
	std::string body = R"({"results":[{"id":"1","properties":{"email":")" + std::string(kMaxRemoteJsonBytes, 'x') +
	                   R"("}}]})";
	std::string message = RuntimeErrorOf([&] {
		ParsePullResponse(MakeEndpoint("hubspot", "https://remote.example"), MakeRoute("contacts", "email", "delete"),
		                  PullPhase::Changes, PullCursor{"0", ""}, Answer(200, body));
	});
	EXPECT_TRUE(Mentions(message, "larger than 8388608 bytes")) << message.substr(0, 300);
}

// ---- push results -------------------------------------------------------------------------

TEST(HostilePushTest, HubSpotBatchResults)
{
	auto connector = MakeConnector("hubspot");
	Auth auth;
	auth.bearer = "pat";
	std::vector<Change> changes = {Upsert(1, "a@x.io"), Upsert(2, "b@x.io")};
	auto calls = connector->BuildCalls(MakeEndpoint("hubspot", "https://remote.example", "pat"),
	                                   MakeRoute("contacts", "email", "delete"), changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	const std::string deep = Nested(kHostileDepth);
	const std::vector<std::pair<long, std::string>> answers = {
	    {200, R"({"status":"COMPLETE","results":[{"id":"1","properties":{"email":"a@x.io","x":)" + deep + "}}]}"},
	    {207, R"({"status":"COMPLETE","results":[],"errors":[{"status":"error","message":"bad","context":{"email":)" +
	              deep + "}}]}"},
	    {400, R"({"status":"error","message":)" + deep + "}"},
	    {429, R"({"status":"error","policyName":)" + deep + "}"},
	    {502, deep},
	};
	for (const auto &answer : answers) {
		CallResult result = connector->ParseResult(calls[0], changes, Answer(answer.first, answer.second));
		ASSERT_EQ(result.results.size(), 2u) << answer.first;
		EXPECT_EQ(result.http_status, answer.first);
		if (answer.first == 207) {
			// Which inputs failed cannot be read: send them again (upserts are idempotent).
			EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
			EXPECT_TRUE(Mentions(result.results[0].error, "nested deeper than 64 levels")) << result.results[0].error;
		}
		EXPECT_LT(result.results[0].error.size(), 600u);
	}
}

TEST(HostilePushTest, SalesforceCompositeResults)
{
	auto connector = MakeConnector("salesforce");
	Auth auth;
	auth.bearer = "tok";
	auth.instance_url = "https://acme.my.salesforce.com";
	std::vector<Change> changes = {Upsert(1, "C-1")};
	auto calls = connector->BuildCalls(MakeEndpoint("salesforce", "https://remote.example",
	                                                R"({"client_id":"i","client_secret":"s"})"),
	                                   MakeRoute("Contact", "External_Id__c", "delete"), changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	const std::string deep = Nested(kHostileDepth);
	CallResult result = connector->ParseResult(calls[0], changes,
	                                           Answer(200, R"([{"id":"003A","success":false,"errors":[{"message":)" +
	                                                           deep + "}]}]"));
	ASSERT_EQ(result.results.size(), 1u);
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(Mentions(result.results[0].error, "nested deeper than 64 levels"))
	    << result.results[0].error.substr(0, 300);
	for (long status : {400L, 401L, 403L, 500L}) {
		result = connector->ParseResult(calls[0], changes,
		                                Answer(status,
		                                       R"([{"errorCode":"INVALID_SESSION_ID","message":)" + deep + "}]"));
		ASSERT_EQ(result.results.size(), 1u);
		EXPECT_NE(result.results[0].outcome, Outcome::Delivered);
		EXPECT_LT(result.results[0].error.size(), 600u);
	}
}

// ---- token and model answers --------------------------------------------------------------

TEST(HostileTokenTest, SalesforceTokenAnswer)
{
	const std::string deep = Nested(kHostileDepth);
	std::string message = RuntimeErrorOf([&] {
		ParseSalesforceToken(
		    Answer(200, R"({"access_token":"LIVE","instance_url":"https://a.example","extra":)" + deep + "}"));
	});
	EXPECT_TRUE(Mentions(message, "salesforce token")) << message.substr(0, 300);
	EXPECT_TRUE(Mentions(message, "nested deeper than 64 levels")) << message.substr(0, 300);
	EXPECT_FALSE(Mentions(message, "LIVE"));
	message = RuntimeErrorOf([&] { ParseSalesforceToken(Answer(400, R"({"error":)" + deep + "}")); });
	EXPECT_TRUE(Mentions(message, "salesforce token request failed (HTTP 400)")) << message.substr(0, 300);
	EXPECT_LT(message.size(), 600u);
}

TEST(HostileChatTest, OpenAIAnswerAndTheModelsContent)
{
	const std::string deep = Nested(kHostileDepth);
	ChatResult result = ParseChatResult(Answer(200, R"({"choices":[{"message":{"content":"{}","x":)" + deep + "}}]}"));
	// Permanent: asking again would pay for the same answer.
	EXPECT_EQ(result.outcome, Outcome::Dead);
	EXPECT_TRUE(Mentions(result.error, "nested deeper than 64 levels")) << result.error.substr(0, 300);
	// The model's JSON arrives inside a string: the inner parse is limited too, and content that
	// is no usable JSON object is a permanent failure of the step (SPEC §5).
	result = ParseChatResult(
	    Answer(200, Json{{"choices", {{{"message", {{"content", "{\"a\":" + deep + "}"}}}}}}}.dump()));
	EXPECT_EQ(result.outcome, Outcome::Dead);
	EXPECT_TRUE(Mentions(result.error, "nested deeper than 64 levels")) << result.error.substr(0, 300);
	result = ParseChatResult(Answer(429, R"({"error":)" + deep + "}"));
	EXPECT_EQ(result.outcome, Outcome::Retry);
	EXPECT_LT(result.error.size(), 600u);
}

} // namespace
} // namespace switchboard
