// Unit tests for the server-free connector code: request shapes byte for byte, batching,
// response mapping, signatures, masking and option validation.
#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "connectors/connector.h"
#include "connectors/crypto.h"
#include "fixtures.h"

namespace switchboard {
namespace {

using namespace test_support;

// ---- fixtures and helpers ------------------------------------------------------------------

using Header = std::pair<std::string, std::string>;

Change
MakeChange(int64_t id, Op op, const std::string &key, Json fields = Json::object(), const std::string &remote_id = "")
{
	Change change;
	change.id = id;
	change.op = op;
	change.key = key;
	change.fields = std::move(fields);
	change.remote_id = remote_id;
	change.event_id = "evt_" + std::to_string(id);
	change.occurred_at_ms = 1795514400123; // 2026-11-24T10:00:00.123Z
	return change;
}

std::vector<Change>
ManyUpserts(size_t count)
{
	std::vector<Change> changes;
	for (size_t i = 0; i < count; ++i)
		changes.push_back(MakeChange(static_cast<int64_t>(i + 1), Op::Update,
		                             "user" + std::to_string(i) + "@example.com",
		                             {{"firstname", "U" + std::to_string(i)}}));
	return changes;
}

// Independent of the code under test: OpenSSL's own HMAC and base64 encoder.
std::string
ReferenceSignature(const std::string &key, const std::string &message)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
	     reinterpret_cast<const unsigned char *>(message.data()), message.size(), digest, &digest_len);
	unsigned char encoded[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
	int encoded_len = EVP_EncodeBlock(encoded, digest, static_cast<int>(digest_len));
	return "v1," + std::string(reinterpret_cast<const char *>(encoded), static_cast<size_t>(encoded_len));
}

std::string
ReferenceBase64Decode(const std::string &text)
{
	std::vector<unsigned char> out(text.size());
	int len = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char *>(text.data()),
	                          static_cast<int>(text.size()));
	size_t padding = 0;
	for (size_t i = text.size(); i > 0 && text[i - 1] == '='; --i)
		++padding;
	return std::string(reinterpret_cast<const char *>(out.data()), static_cast<size_t>(len) - padding);
}

const Headers kHubSpotHeaders = {{"Authorization", "Bearer pat-na1-SECRET"}, {"Content-Type", "application/json"}};

// ---- crypto ----------------------------------------------------------------------------------

TEST(Crypto, Base64Rfc4648Vectors)
{
	const std::vector<std::pair<std::string, std::string>> vectors = {{"", ""},
	                                                                  {"f", "Zg=="},
	                                                                  {"fo", "Zm8="},
	                                                                  {"foo", "Zm9v"},
	                                                                  {"foob", "Zm9vYg=="},
	                                                                  {"fooba", "Zm9vYmE="},
	                                                                  {"foobar", "Zm9vYmFy"}};
	for (const auto &v : vectors) {
		EXPECT_EQ(Base64Encode(v.first), v.second);
		std::string decoded;
		ASSERT_TRUE(Base64Decode(v.second, &decoded)) << v.second;
		EXPECT_EQ(decoded, v.first);
	}
	std::string binary("\x00\xff\xfe\x80\x7f", 5);
	std::string round;
	ASSERT_TRUE(Base64Decode(Base64Encode(binary), &round));
	EXPECT_EQ(round, binary);
}

TEST(Crypto, Base64DecodeIsStrict)
{
	std::string out = "untouched";
	EXPECT_FALSE(Base64Decode("Zm9v!", &out));
	EXPECT_FALSE(Base64Decode("Zm9 v", &out));
	EXPECT_FALSE(Base64Decode("Z", &out));    // impossible length
	EXPECT_FALSE(Base64Decode("Zm9=", &out)); // non-zero trailing bits
	EXPECT_FALSE(Base64Decode("Zg=", &out));  // wrong padding
	EXPECT_FALSE(Base64Decode("Zm-_", &out)); // url-safe alphabet is not standard base64
	EXPECT_EQ(out, "untouched");
	EXPECT_TRUE(Base64Decode("Zm8", &out)); // missing padding tolerated
	EXPECT_EQ(out, "fo");
}

TEST(Crypto, HmacSha256Rfc4231Case2)
{
	std::string mac = HmacSha256("Jefe", "what do ya want for nothing?");
	ASSERT_EQ(mac.size(), 32u);
	static const char kHex[] = "0123456789abcdef";
	std::string hex;
	for (unsigned char c : mac) {
		hex += kHex[c >> 4];
		hex += kHex[c & 15];
	}
	EXPECT_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

// ---- registry and helpers ------------------------------------------------------------------

TEST(Registry, KindsAndOpNames)
{
	EXPECT_STREQ(OpName(Op::Insert), "insert");
	EXPECT_STREQ(OpName(Op::Update), "update");
	EXPECT_STREQ(OpName(Op::Delete), "delete");
	for (const char *kind : {"hubspot", "salesforce", "webhook", "openai", "http"}) {
		EXPECT_TRUE(IsKnownKind(kind)) << kind;
		EXPECT_NE(MakeConnector(kind), nullptr) << kind;
	}
	EXPECT_FALSE(IsKnownKind("HubSpot"));
	EXPECT_FALSE(IsKnownKind(""));
	std::string message = ExpectThrows<std::invalid_argument>([] { MakeConnector("zendesk"); });
	EXPECT_NE(message.find("zendesk"), std::string::npos);
	EXPECT_EQ(MakeConnector("hubspot")->MaxBatch(Endpoint()), 100u);
	EXPECT_EQ(MakeConnector("salesforce")->MaxBatch(Endpoint()), 200u);
	EXPECT_EQ(MakeConnector("webhook")->MaxBatch(Endpoint()), 1u);
}

TEST(Registry, OpenAIIsNotARouteTarget)
{
	auto connector = MakeConnector("openai");
	EXPECT_FALSE(connector->NotARouteTarget().empty());
	// Its calls are enrich steps' (EnrichCalls): one chat request per change.
	Change change;
	change.fields = {{"step", "score"}, {"input", "hi"}, {"options", {{"model", "m"}}}};
	Endpoint endpoint;
	endpoint.base_url = "http://127.0.0.1:9";
	std::vector<Call> calls = connector->BuildCalls(endpoint, Route(), {change, change}, Auth());
	ASSERT_EQ(calls.size(), 2u);
	EXPECT_EQ(calls[1].changes, std::vector<size_t>{1});
	EXPECT_EQ(Json::parse(calls[0].request.body)["messages"][0]["content"], "hi");
	HttpResponse answer;
	answer.status = 200;
	answer.body =
	    R"({"choices":[{"message":{"content":"{\"a\":1}"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}})";
	CallResult result = connector->ParseResult(calls[0], {change}, answer);
	ASSERT_EQ(result.results.size(), 1u);
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	Json carried = Json::parse(result.results[0].remote_id);
	EXPECT_EQ(carried["output"], Json({{"a", 1}}));
	EXPECT_EQ(carried["prompt_tokens"], 3);
	answer.status = 429;
	answer.body = R"({"error":{"code":"insufficient_quota"}})";
	result = connector->ParseResult(calls[0], {change}, answer);
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
	EXPECT_FALSE(result.stop_endpoint); // each step fails; the endpoint is not paused
}

TEST(Helpers, SkippedChangesAreThoseWithoutACall)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "a"), MakeChange(2, Op::Delete, "b"),
	                               MakeChange(3, Op::Insert, "c"), MakeChange(4, Op::Delete, "d", {}, "99")};
	auto connector = MakeConnector("hubspot");
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "s");
	Auth auth{"s", "", false};
	auto calls = connector->BuildCalls(endpoint, MakeRoute("contacts", "email", "delete"), changes, auth);
	EXPECT_EQ(SkippedChanges(changes, calls), std::vector<size_t>({1})); // delete without remote id
	calls = connector->BuildCalls(endpoint, MakeRoute("contacts", "email", "ignore"), changes, auth);
	EXPECT_EQ(SkippedChanges(changes, calls), std::vector<size_t>({1, 3}));
}

TEST(Helpers, SnippetCutsOnCharacterBoundaries)
{
	EXPECT_EQ(Snippet("short"), "short");
	EXPECT_EQ(Snippet("a\nb\tc"), "a b c");
	std::string long_text(500, 'x');
	EXPECT_EQ(Snippet(long_text).size(), 203u); // 200 + "..."
	std::string accents;
	for (int i = 0; i < 150; ++i)
		accents += "\xC3\xA9"; // é, two bytes
	std::string cut = Snippet(accents, 201);
	EXPECT_EQ(cut, accents.substr(0, 200) + "...");
}

TEST(Helpers, UrlsAndTimestamps)
{
	EXPECT_EQ(UrlEncode("a b&c=d/é~_.-"), "a%20b%26c%3Dd%2F%C3%A9~_.-");
	EXPECT_EQ(JoinUrl("https://x.test//", "/v1/a"), "https://x.test/v1/a");
	EXPECT_EQ(IsoTimestampUtc(1795514400123), "2026-11-24T10:00:00.123Z");
	EXPECT_EQ(IsoTimestampUtc(0), "1970-01-01T00:00:00.000Z");
	EXPECT_EQ(IsoTimestampUtc(-1), "1969-12-31T23:59:59.999Z");
	EXPECT_EQ(HeaderValue({{"Retry-After", "3"}}, "retry-after"), "3");
	EXPECT_EQ(HeaderValue({{"x", "3"}}, "retry-after"), "");
}

// ---- Retry-After -----------------------------------------------------------------------------

TEST(RetryAfter, Parsing)
{
	EXPECT_EQ(RetryAfterMs(Answer(429, "", {{"retry-after", "7"}})), 7000);
	EXPECT_EQ(RetryAfterMs(Answer(429, "")), -1);
}

// ---- options -------------------------------------------------------------------------------

TEST(Options, ParseRateLimit)
{
	int count = 0;
	long window = 0;
	ASSERT_TRUE(ParseRateLimit("100/10s", &count, &window));
	EXPECT_EQ(count, 100);
	EXPECT_EQ(window, 10000);
	ASSERT_TRUE(ParseRateLimit("5/1s", &count, &window));
	EXPECT_EQ(count, 5);
	EXPECT_EQ(window, 1000);
	ASSERT_TRUE(ParseRateLimit("1000/1m", &count, &window));
	EXPECT_EQ(window, 60000);
	ASSERT_TRUE(ParseRateLimit("20/500ms", &count, &window));
	EXPECT_EQ(window, 500);
	ASSERT_TRUE(ParseRateLimit("10000/24h", &count, &window));
	EXPECT_EQ(window, 24L * 3600 * 1000);
	ASSERT_TRUE(ParseRateLimit("5/s", &count, &window));
	EXPECT_EQ(window, 1000);
	count = -7;
	window = -7;
	for (const char *bad : {"", "100", "/10s", "0/10s", "100/0s", "100/10", "100/10d", "-1/1s", "1.5/1s", "100 / 10s",
	                        "100/10S", "99999999999/1s", "a/1s", "100/1s extra"}) {
		EXPECT_FALSE(ParseRateLimit(bad, &count, &window)) << bad;
	}
	EXPECT_EQ(count, -7);
	EXPECT_EQ(window, -7);
}

TEST(Options, AcceptsEveryKnownOption)
{
	Json common = {{"batch_size", 50},
	               {"max_concurrency", 8},
	               {"rate_limit", "100/10s"},
	               {"timeout_ms", 30000},
	               {"headers", {{"X-Tenant", "acme"}}}};
	EXPECT_NO_THROW(ValidateOptions("hubspot", common));
	Json salesforce = common;
	salesforce["batch_size"] = 200;
	salesforce["api_version"] = "60.0";
	EXPECT_NO_THROW(ValidateOptions("salesforce", salesforce));
	EXPECT_NO_THROW(ValidateOptions("openai", {{"model", "gpt-4o-mini"}, {"timeout_ms", 100}}));
	EXPECT_NO_THROW(ValidateOptions("webhook", {{"batch_size", 1}, {"headers", {{"Authorization", "Basic x"}}}}));
	EXPECT_NO_THROW(ValidateOptions("hubspot", Json::object()));
	EXPECT_NO_THROW(ValidateOptions("hubspot", Json()));
	EXPECT_NO_THROW(ValidateOptions("hubspot", Json::parse("{\"batch_size\": 100.0}"))); // jsonb numeric
}

TEST(Options, RejectsWithClearMessages)
{
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"foo", 1}});
	          }),
	          "unknown option \"foo\" for kind hubspot (known: batch_size, max_concurrency, rate_limit, timeout_ms, "
	          "headers)");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"batch_size", "x"}});
	          }),
	          "option \"batch_size\" must be an integer between 1 and 100, got \"x\"");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"batch_size", 101}});
	          }),
	          "option \"batch_size\" must be an integer between 1 and 100, got 101");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("salesforce", {{"batch_size", 201}});
	          }),
	          "option \"batch_size\" must be an integer between 1 and 200, got 201");
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("webhook", {{"batch_size", 5}});
	          }).find("must be 1"),
	          std::string::npos);
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"batch_size", 2.5}});
	          }),
	          "option \"batch_size\" must be an integer between 1 and 100, got 2.5");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"max_concurrency", 65}});
	          }),
	          "option \"max_concurrency\" must be an integer between 1 and 64, got 65");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"max_concurrency", 0}});
	          }),
	          "option \"max_concurrency\" must be an integer between 1 and 64, got 0");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("webhook", {{"timeout_ms", 99}});
	          }),
	          "option \"timeout_ms\" must be an integer between 100 and 600000, got 99");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("webhook", {{"timeout_ms", 600001}});
	          }),
	          "option \"timeout_ms\" must be an integer between 100 and 600000, got 600001");
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"rate_limit", "100 per 10s"}});
	          }).find("option \"rate_limit\" must be a string like \"100/10s\""),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"rate_limit", 100}});
	          }).find("rate_limit"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"headers", {{"X-A", 1}}}});
	          }).find("value of \"X-A\" must be a string"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"headers", "X-A: 1"}});
	          }).find("headers"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"headers", {{"Bad Name", "1"}}}});
	          }).find("not a valid header name"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("webhook", {{"headers", {{"X-A", "1\r\nX-B: 2"}}}});
	          }).find("line breaks"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"headers", {{"authorization", "Bearer x"}}}});
	          }).find("may not set \"authorization\""),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("webhook", {{"headers", {{"Webhook-Signature", "x"}}}});
	          }).find("may not set"),
	          std::string::npos);
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", {{"api_version", "59.0"}});
	          }),
	          "unknown option \"api_version\" for kind hubspot (known: batch_size, max_concurrency, rate_limit, "
	          "timeout_ms, headers)");
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("salesforce", {{"api_version", "59.0/../x"}});
	          }).find("api_version"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("salesforce", {{"api_version", 59}});
	          }).find("api_version"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("salesforce", {{"model", "gpt"}});
	          })
	              .find("unknown option \"model\" for kind salesforce (known: batch_size, max_concurrency, rate_limit, "
	                    "timeout_ms, headers, api_version)"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("openai", {{"model", ""}});
	          }).find("model"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("hubspot", Json::array());
	          }).find("JSON object"),
	          std::string::npos);
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions("zendesk", Json::object());
	          }).find("unknown endpoint kind"),
	          std::string::npos);
}

// ---- hubspot -------------------------------------------------------------------------------

class HubSpotTest : public ::testing::Test {
protected:
	std::unique_ptr<Connector> connector = MakeConnector("hubspot");
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com/", "pat-na1-SECRET");
	Route route = MakeRoute("contacts", "email", "delete");
	Auth auth{"pat-na1-SECRET", "", false};
};

TEST_F(HubSpotTest, UpsertRequestShape)
{
	std::vector<Change> changes = {MakeChange(1, Op::Insert, "ada@example.com",
	                                          {{"firstname", "Ada"}, {"lastname", "Lovelace"}}),
	                               MakeChange(2, Op::Update, "bob@example.com", {{"firstname", "Bob"}})};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	const HttpRequest &request = calls[0].request;
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert");
	EXPECT_EQ(request.headers, kHubSpotHeaders);
	EXPECT_EQ(
	    request.body,
	    R"({"inputs":[)"
	    R"({"idProperty":"email","id":"ada@example.com","properties":{"firstname":"Ada","lastname":"Lovelace"},"objectWriteTraceId":"evt_1"},)"
	    R"({"idProperty":"email","id":"bob@example.com","properties":{"firstname":"Bob"},"objectWriteTraceId":"evt_2"}]})");
	EXPECT_EQ(calls[0].changes, std::vector<size_t>({0, 1}));
}

TEST_F(HubSpotTest, PropertyValuesAreRenderedAsStrings)
{
	Json fields = {{"s", "text"},          {"i", 42},           {"neg", -7},       {"f", 3.25},         {"t", true},
	               {"b", false},           {"n", nullptr},      {"o", {{"a", 1}}}, {"arr", {1, "two"}}, {"empty", ""},
	               {"date", "2026-11-24"}, {"nested", {{1}, 2}}};
	auto calls = connector->BuildCalls(endpoint, route, {MakeChange(1, Op::Update, "k", fields)}, auth);
	ASSERT_EQ(calls.size(), 1u);
	Json properties = Json::parse(calls[0].request.body)["inputs"][0]["properties"];
	EXPECT_EQ(properties["s"], "text");
	EXPECT_EQ(properties["i"], "42");
	EXPECT_EQ(properties["neg"], "-7");
	EXPECT_EQ(properties["f"], "3.25");
	EXPECT_EQ(properties["t"], "true");
	EXPECT_EQ(properties["b"], "false");
	EXPECT_EQ(properties["n"], "");
	EXPECT_EQ(properties["o"], "{\"a\":1}");
	EXPECT_EQ(properties["arr"], "1;two"); // multiple-checkbox format
	EXPECT_EQ(properties["nested"], "[[1],2]");
	EXPECT_EQ(properties["empty"], "");
	EXPECT_EQ(properties["date"], "2026-11-24");
	for (const auto &item : properties.items())
		EXPECT_TRUE(item.value().is_string()) << item.key();
}

TEST_F(HubSpotTest, BatchesAtOneHundred)
{
	auto changes = ManyUpserts(250);
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 3u);
	EXPECT_EQ(calls[0].changes.size(), 100u);
	EXPECT_EQ(calls[1].changes.size(), 100u);
	EXPECT_EQ(calls[2].changes.size(), 50u);
	EXPECT_EQ(calls[1].changes.front(), 100u);
	EXPECT_EQ(calls[2].changes.back(), 249u);
	EXPECT_EQ(Json::parse(calls[2].request.body)["inputs"].size(), 50u);
	EXPECT_EQ(Json::parse(calls[2].request.body)["inputs"][49]["id"], "user249@example.com");
	EXPECT_TRUE(SkippedChanges(changes, calls).empty());
}

TEST_F(HubSpotTest, BatchSizeOptionLowersTheLimit)
{
	endpoint.options = {{"batch_size", 40}};
	EXPECT_EQ(connector->MaxBatch(endpoint), 40u);
	auto calls = connector->BuildCalls(endpoint, route, ManyUpserts(250), auth);
	ASSERT_EQ(calls.size(), 7u);
	EXPECT_EQ(calls[6].changes.size(), 10u);
	endpoint.options = {{"batch_size", 500}}; // never above the remote's limit
	EXPECT_EQ(connector->MaxBatch(endpoint), 100u);
}

TEST_F(HubSpotTest, DeletesArchiveOnlyWhenAskedAndKnown)
{
	std::vector<Change> changes = {MakeChange(1, Op::Delete, "a@x.com", {}, "501"),
	                               MakeChange(2, Op::Delete, "b@x.com"), MakeChange(3, Op::Update, "c@x.com"),
	                               MakeChange(4, Op::Delete, "d@x.com", {}, "504")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 2u);
	EXPECT_EQ(calls[0].request.url, "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert");
	EXPECT_EQ(calls[0].changes, std::vector<size_t>({2}));
	EXPECT_EQ(calls[1].request.method, "POST");
	EXPECT_EQ(calls[1].request.url, "https://api.hubapi.com/crm/v3/objects/contacts/batch/archive");
	EXPECT_EQ(calls[1].request.headers, kHubSpotHeaders);
	EXPECT_EQ(calls[1].request.body, R"({"inputs":[{"id":"501"},{"id":"504"}]})");
	EXPECT_EQ(calls[1].changes, std::vector<size_t>({0, 3}));

	route.on_delete = "ignore";
	calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	EXPECT_EQ(SkippedChanges(changes, calls), std::vector<size_t>({0, 1, 3}));
}

TEST_F(HubSpotTest, OptionHeadersAreAppended)
{
	endpoint.options = {{"headers", {{"X-Tenant", "acme"}}}};
	auto calls = connector->BuildCalls(endpoint, route, {MakeChange(1, Op::Update, "k")}, auth);
	Headers expected = kHubSpotHeaders;
	expected.emplace_back("X-Tenant", "acme");
	EXPECT_EQ(calls[0].request.headers, expected);
}

TEST_F(HubSpotTest, MaskedPreviewHasNoSecret)
{
	auth.masked = true;
	auto calls = connector->BuildCalls(endpoint, route, {MakeChange(1, Op::Update, "k", {{"a", "b"}})}, auth);
	ASSERT_EQ(calls.size(), 1u);
	EXPECT_EQ(HeaderValue(calls[0].request.headers, "authorization"), "Bearer ****");
	EXPECT_EQ(WireText(calls[0].request).find("SECRET"), std::string::npos);
}

TEST_F(HubSpotTest, SuccessMatchesIdsByEchoedPropertyCaseInsensitively)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "Ada@Example.com"),
	                               MakeChange(2, Op::Update, "bob@example.com")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	// Out of order, and HubSpot lower-cases emails.
	auto result = connector->ParseResult(calls[0], changes, Answer(200, R"({"status":"COMPLETE","results":[
	        {"id":"702","properties":{"email":"bob@example.com"},"new":true},
	        {"id":"701","properties":{"email":"ada@example.com"},"new":false}]})"));
	EXPECT_EQ(result.http_status, 200);
	ASSERT_EQ(result.results.size(), 2u);
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[0].remote_id, "701");
	EXPECT_EQ(result.results[1].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[1].remote_id, "702");
	EXPECT_FALSE(result.endpoint_failure);
}

TEST_F(HubSpotTest, ResultsWithoutEchoedPropertyAreNotMatchedByPosition)
{
	// HubSpot does not promise results in input order: without the idProperty value echoed
	// back, only a single input can be matched to its result.
	std::vector<Change> changes = {MakeChange(1, Op::Update, "a"), MakeChange(2, Op::Update, "b")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(calls[0], changes,
	                                     Answer(201, R"({"results":[{"id":"11","properties":{}},{"id":12}]})"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[1].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[0].remote_id, "");
	EXPECT_EQ(result.results[1].remote_id, "");
	std::vector<Change> one = {MakeChange(3, Op::Update, "c")};
	auto single = connector->BuildCalls(endpoint, route, one, auth);
	result = connector->ParseResult(single[0], one, Answer(200, R"({"results":[{"id":"13","properties":{}}]})"));
	EXPECT_EQ(result.results[0].remote_id, "13");
	// A 200 whose body we cannot read still means the batch landed.
	result = connector->ParseResult(calls[0], changes, Answer(200, "not json"));
	EXPECT_EQ(result.results[1].outcome, Outcome::Delivered);
}

TEST_F(HubSpotTest, WholeBatchRefusalAsksForASplit)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "a@x.com"), MakeChange(2, Op::Update, "A@x.com")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(calls[0], changes, Answer(400, R"({"status":"error",
	    "message":"Duplicate IDs found in batch input: [a@x.com]. IDs must be unique","category":"VALIDATION_ERROR"})"));
	EXPECT_TRUE(result.split);
	EXPECT_FALSE(result.endpoint_failure);
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead); // what stands for a call of one change
	EXPECT_NE(result.results[0].error.find("Duplicate IDs"), std::string::npos) << result.results[0].error;
	// Answers about the credentials, the URL or the endpoint's health are not about an input.
	for (long status : {401L, 403L, 404L, 405L, 429L, 503L})
		EXPECT_FALSE(connector->ParseResult(calls[0], changes, Answer(status, "{}")).split) << status;
	EXPECT_TRUE(connector->ParseResult(calls[0], changes, Answer(413, "")).split);
}

TEST_F(HubSpotTest, PartialFailure207)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "a@x.com"), MakeChange(2, Op::Update, "b@x.com"),
	                               MakeChange(3, Op::Update, "c@x.com")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(calls[0], changes, Answer(207, R"({
	    "status":"COMPLETE",
	    "results":[{"id":"901","properties":{"email":"a@x.com"}},{"id":"903","properties":{"email":"c@x.com"}}],
	    "numErrors":1,
	    "errors":[{"status":"error","category":"VALIDATION_ERROR",
	               "message":"Property values were not valid: lifecyclestage",
	               "context":{"objectWriteTraceId":["evt_2"]}}]})"));
	EXPECT_EQ(result.http_status, 207);
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[0].remote_id, "901");
	EXPECT_EQ(result.results[1].outcome, Outcome::Dead);
	EXPECT_EQ(result.results[1].error, "Property values were not valid: lifecyclestage");
	EXPECT_EQ(result.results[2].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[2].remote_id, "903");
	EXPECT_FALSE(result.endpoint_failure);
}

TEST_F(HubSpotTest, PartialFailureWithUnattributedErrorRetriesTheUncertain)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "a@x.com"), MakeChange(2, Op::Update, "b@x.com")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(calls[0], changes, Answer(207, R"({
	    "results":[{"id":"901","properties":{"email":"a@x.com"}}],
	    "errors":[{"status":"error","message":"something odd"}]})"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[1].outcome, Outcome::Retry);
	EXPECT_EQ(result.results[1].error, "something odd");
}

TEST_F(HubSpotTest, ArchiveResults)
{
	std::vector<Change> changes = {MakeChange(1, Op::Delete, "a", {}, "501"),
	                               MakeChange(2, Op::Delete, "b", {}, "502")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	auto result = connector->ParseResult(calls[0], changes, Answer(204, ""));
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[1].outcome, Outcome::Delivered);
	result = connector->ParseResult(calls[0], changes,
	                                Answer(207, R"({"errors":[{"message":"not allowed","context":{"ids":["502"]}}]})"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[1].outcome, Outcome::Dead);
	EXPECT_EQ(result.results[1].error, "not allowed");
}

TEST_F(HubSpotTest, CallLevelErrors)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "a"), MakeChange(2, Op::Update, "b")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	const Call &call = calls[0];

	auto result = connector->ParseResult(call, changes, Answer(400, R"({"status":"error",
	    "message":"Property values were not valid","category":"VALIDATION_ERROR","correlationId":"abc-123"})"));
	for (const auto &one : result.results) {
		EXPECT_EQ(one.outcome, Outcome::Dead);
		EXPECT_EQ(one.error, "HTTP 400 VALIDATION_ERROR: Property values were not valid (correlationId abc-123)");
	}
	EXPECT_FALSE(result.endpoint_failure);

	for (long status : {404L, 409L, 422L}) {
		result = connector->ParseResult(call, changes, Answer(status, R"({"status":"error","message":"nope"})"));
		EXPECT_EQ(result.results[0].outcome, Outcome::Dead) << status;
	}

	result = connector->ParseResult(
	    call, changes,
	    Answer(
	        429,
	        R"({"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"})",
	        {{"retry-after", "10"}}));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_EQ(result.results[1].retry_after_ms, 10000);
	EXPECT_EQ(result.retry_after_ms, 10000);
	EXPECT_TRUE(result.endpoint_failure);
	EXPECT_FALSE(result.stop_endpoint);

	result = connector->ParseResult(call, changes,
	                                Answer(429, R"({"status":"error","message":"daily limit","policyName":"DAILY"})"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(result.stop_endpoint);
	EXPECT_EQ(result.retry_after_ms, -1);

	result = connector->ParseResult(call, changes, Answer(423, R"({"status":"error","message":"locked"})"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_FALSE(result.endpoint_failure);

	result = connector->ParseResult(call, changes, Answer(502, "<html>bad gateway</html>"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(result.endpoint_failure);
	EXPECT_EQ(result.results[0].error, "HTTP 502: <html>bad gateway</html>");

	HttpResponse dropped;
	dropped.transport_error = "Connection refused";
	result = connector->ParseResult(call, changes, dropped);
	EXPECT_EQ(result.results[1].outcome, Outcome::Retry);
	EXPECT_TRUE(result.endpoint_failure);
	EXPECT_EQ(result.http_status, 0);
	EXPECT_NE(result.error.find("Connection refused"), std::string::npos);

	for (long status : {401L, 403L}) {
		result = connector->ParseResult(
		    call, changes, Answer(status, R"({"status":"error","message":"Authentication credentials not found."})"));
		EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
		EXPECT_EQ(result.results[0].error.rfind("authentication failed", 0), 0u) << result.results[0].error;
	}
}

// ---- salesforce ----------------------------------------------------------------------------

class SalesforceTest : public ::testing::Test {
protected:
	std::unique_ptr<Connector> connector = MakeConnector("salesforce");
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com",
	                                 R"({"client_id":"3MVG9 id&x","client_secret":"TOPSECRET=+/"})");
	Route route = MakeRoute("Contact", "External_Id__c", "delete");
	Auth auth{"00Dxx!ACCESSTOKEN", "https://acme.my.salesforce.com", false};
};

TEST_F(SalesforceTest, WholeRequestRefusalAsksForASplit)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "K1", {{"LastName", "A"}}),
	                               MakeChange(2, Op::Update, "K2", {{"LastName", "B"}})};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	// One record's value of the wrong type fails the whole collection request.
	auto result = connector->ParseResult(calls[0], changes, Answer(400, R"([{"errorCode":"JSON_PARSER_ERROR",
	    "message":"Cannot deserialize instance of double from VALUE_STRING value abc"}])"));
	EXPECT_TRUE(result.split);
	EXPECT_EQ(result.results[1].outcome, Outcome::Dead);
	// An unknown object type is wrong for every record: no split.
	result = connector->ParseResult(calls[0], changes, Answer(400, R"([{"errorCode":"INVALID_TYPE",
	    "message":"sObject type 'Contactt' is not supported."}])"));
	EXPECT_FALSE(result.split);
	EXPECT_FALSE(connector->ParseResult(calls[0], changes, Answer(401, "[]")).split);
}

TEST_F(SalesforceTest, TokenRequestShape)
{
	HttpRequest request = BuildSalesforceTokenRequest(endpoint);
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://login.salesforce.com/services/oauth2/token");
	EXPECT_EQ(request.headers,
	          Headers({{"Content-Type", "application/x-www-form-urlencoded"}, {"Accept", "application/json"}}));
	EXPECT_EQ(request.body, "grant_type=client_credentials&client_id=3MVG9%20id%26x&client_secret=TOPSECRET%3D%2B%2F");
}

TEST_F(SalesforceTest, TokenRequestRejectsBadSecretWithoutQuotingIt)
{
	for (const char *secret : {"plain-TOPSECRET", R"({"client_id":"x"})", R"({"client_secret":"TOPSECRET"})", ""}) {
		endpoint.secret = secret;
		std::string message = ExpectThrows<std::invalid_argument>([&] { BuildSalesforceTokenRequest(endpoint); });
		EXPECT_NE(message.find("client_id"), std::string::npos) << message;
		EXPECT_EQ(message.find("TOPSECRET"), std::string::npos) << message;
	}
}

TEST_F(SalesforceTest, ParseToken)
{
	SalesforceToken token = ParseSalesforceToken(Answer(200, R"({"access_token":"00D!abc",
	    "instance_url":"https://acme.my.salesforce.com/","token_type":"Bearer","issued_at":"1"})"));
	EXPECT_EQ(token.access_token, "00D!abc");
	EXPECT_EQ(token.instance_url, "https://acme.my.salesforce.com");

	try {
		ParseSalesforceToken(
		    Answer(400, R"({"error":"invalid_client","error_description":"invalid client credentials"})"));
		FAIL() << "expected runtime_error";
	} catch (const std::runtime_error &e) {
		EXPECT_STREQ(e.what(),
		             "salesforce token request failed (HTTP 400): invalid_client - invalid client credentials");
	}
	try {
		ParseSalesforceToken(Answer(200, R"({"access_token":"LIVE-TOKEN"})"));
		FAIL() << "expected runtime_error";
	} catch (const std::runtime_error &e) {
		EXPECT_EQ(std::string(e.what()).find("LIVE-TOKEN"), std::string::npos);
	}
	HttpResponse dropped;
	dropped.transport_error = "Could not resolve host";
	EXPECT_THROW(ParseSalesforceToken(dropped), std::runtime_error);
}

TEST_F(SalesforceTest, TokenInstanceUrlMustPassTheHostPolicy)
{
	auto answer = [](const std::string &instance) {
		return Answer(200, R"({"access_token":"LIVE-TOKEN","instance_url":")" + instance + R"("})");
	};
	auto refused = [&](const std::string &instance, const std::string &allowed, const std::string &why) {
		try {
			ParseSalesforceToken(answer(instance), allowed);
			ADD_FAILURE() << instance << " accepted under \"" << allowed << "\"";
		} catch (const std::runtime_error &e) {
			std::string text = e.what();
			EXPECT_NE(text.find("instance_url"), std::string::npos) << text;
			EXPECT_NE(text.find(why), std::string::npos) << text;
			EXPECT_EQ(text.find("LIVE-TOKEN"), std::string::npos) << text;
			EXPECT_EQ(text.find("secret-path"), std::string::npos) << text;
		}
	};
	refused("https://evil.example.com/secret-path", "*.my.salesforce.com", "allowed_hosts");
	refused("http://acme.my.salesforce.com", "*.my.salesforce.com", "https");
	refused("http://acme.my.salesforce.com", "", "https");
	refused("https://169.254.169.254", "", "link-local");
	refused("https://acme.my.salesforce.com?x=secret-path", "", "query");
	refused("https://u:p@acme.my.salesforce.com", "", "user");
	refused("javascript:alert(1)", "", "http");
	EXPECT_EQ(ParseSalesforceToken(answer("https://acme.my.salesforce.com"), "*.my.salesforce.com").instance_url,
	          "https://acme.my.salesforce.com");
	// Loopback (the tests' doubles) may be plain http.
	EXPECT_EQ(ParseSalesforceToken(answer("http://127.0.0.1:5000/"), "127.0.0.1").instance_url,
	          "http://127.0.0.1:5000");
	EXPECT_EQ(ParseSalesforceToken(answer("http://localhost:5000"), "").instance_url, "http://localhost:5000");
}

TEST_F(SalesforceTest, ErrorExcerptsAreMasked)
{
	try {
		ParseSalesforceToken(
		    Answer(500, R"(upstream said: client_secret=abc123&password=hunter2 via https://idp.example/x/y)"));
		FAIL() << "expected runtime_error";
	} catch (const std::runtime_error &e) {
		std::string text = e.what();
		EXPECT_EQ(text.find("abc123"), std::string::npos) << text;
		EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
		EXPECT_EQ(text.find("x/y"), std::string::npos) << text;
	}
}

TEST_F(SalesforceTest, UpsertRequestShape)
{
	std::vector<Change> changes = {
	    MakeChange(1, Op::Insert, "C-1",
	               {{"LastName", "Lovelace"}, {"Score__c", 42}, {"Phone", nullptr}, {"Active__c", true}}),
	    MakeChange(2, Op::Update, "C-2", {{"LastName", "Hopper"}, {"External_Id__c", "ignored"}})};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	const HttpRequest &request = calls[0].request;
	EXPECT_EQ(request.method, "PATCH");
	EXPECT_EQ(request.url,
	          "https://acme.my.salesforce.com/services/data/v59.0/composite/sobjects/Contact/External_Id__c");
	EXPECT_EQ(request.headers,
	          Headers({{"Authorization", "Bearer 00Dxx!ACCESSTOKEN"}, {"Content-Type", "application/json"}}));
	// Typed values; SQL NULL stays null; the key is never overwritten by a mapped field.
	EXPECT_EQ(
	    request.body,
	    R"({"allOrNone":false,"records":[)"
	    R"({"attributes":{"type":"Contact"},"External_Id__c":"C-1","Active__c":true,"LastName":"Lovelace","Phone":null,"Score__c":42},)"
	    R"({"attributes":{"type":"Contact"},"External_Id__c":"C-2","LastName":"Hopper"}]})");
	EXPECT_EQ(calls[0].changes, std::vector<size_t>({0, 1}));
}

TEST_F(SalesforceTest, ApiVersionAndInstanceFallback)
{
	endpoint.options = {{"api_version", "61.0"}};
	auth.instance_url.clear();
	auth.masked = true;
	auto calls = connector->BuildCalls(endpoint, route, {MakeChange(1, Op::Update, "C-1")}, auth);
	EXPECT_EQ(calls[0].request.url,
	          "https://login.salesforce.com/services/data/v61.0/composite/sobjects/Contact/External_Id__c");
	EXPECT_EQ(HeaderValue(calls[0].request.headers, "Authorization"), "Bearer ****");
	std::string wire = WireText(calls[0].request);
	EXPECT_EQ(wire.find("ACCESSTOKEN"), std::string::npos);
	EXPECT_EQ(wire.find("TOPSECRET"), std::string::npos);
}

TEST_F(SalesforceTest, BatchesAtTwoHundred)
{
	auto calls = connector->BuildCalls(endpoint, route, ManyUpserts(450), auth);
	ASSERT_EQ(calls.size(), 3u);
	EXPECT_EQ(calls[0].changes.size(), 200u);
	EXPECT_EQ(calls[1].changes.size(), 200u);
	EXPECT_EQ(calls[2].changes.size(), 50u);
	EXPECT_EQ(Json::parse(calls[1].request.body)["records"].size(), 200u);
	endpoint.options = {{"batch_size", 150}};
	calls = connector->BuildCalls(endpoint, route, ManyUpserts(450), auth);
	ASSERT_EQ(calls.size(), 3u);
	EXPECT_EQ(calls[2].changes.size(), 150u);
}

TEST_F(SalesforceTest, DeleteRequestShape)
{
	std::vector<Change> changes = {MakeChange(1, Op::Delete, "C-1", {}, "003A"), MakeChange(2, Op::Delete, "C-2"),
	                               MakeChange(3, Op::Delete, "C-3", {}, "003C")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	EXPECT_EQ(calls[0].request.method, "DELETE");
	EXPECT_EQ(calls[0].request.url,
	          "https://acme.my.salesforce.com/services/data/v59.0/composite/sobjects?ids=003A,003C&allOrNone=false");
	EXPECT_EQ(calls[0].request.headers, Headers({{"Authorization", "Bearer 00Dxx!ACCESSTOKEN"}}));
	EXPECT_EQ(calls[0].request.body, "");
	EXPECT_EQ(SkippedChanges(changes, calls), std::vector<size_t>({1}));

	auto result = connector->ParseResult(calls[0], changes, Answer(200, R"([
	    {"id":"003A","success":true,"errors":[]},
	    {"id":"003C","success":false,"errors":[{"statusCode":"ENTITY_IS_DELETED","message":"entity is deleted","fields":[]}]}])"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[1].outcome, Outcome::Delivered); // already gone: what we wanted

	route.on_delete = "ignore";
	EXPECT_TRUE(connector->BuildCalls(endpoint, route, changes, auth).empty());
}

TEST_F(SalesforceTest, PerRecordResults)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "C-1"), MakeChange(2, Op::Update, "C-2"),
	                               MakeChange(3, Op::Update, "C-3"), MakeChange(4, Op::Update, "C-4")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(calls[0], changes, Answer(200, R"([
	    {"id":"003000000000001","success":true,"created":true,"errors":[]},
	    {"success":false,"created":false,"errors":[{"statusCode":"REQUIRED_FIELD_MISSING",
	        "message":"Required fields are missing: [LastName]","fields":["LastName","Account"]}]},
	    {"success":false,"errors":[{"statusCode":"UNABLE_TO_LOCK_ROW","message":"unable to obtain exclusive access","fields":[]}]}])"));
	EXPECT_EQ(result.http_status, 200);
	EXPECT_EQ(result.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[0].remote_id, "003000000000001");
	EXPECT_EQ(result.results[1].outcome, Outcome::Dead);
	EXPECT_EQ(result.results[1].error,
	          "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (fields: LastName,Account)");
	EXPECT_EQ(result.results[2].outcome, Outcome::Retry);
	EXPECT_EQ(result.results[2].error, "UNABLE_TO_LOCK_ROW: unable to obtain exclusive access");
	EXPECT_EQ(result.results[3].outcome, Outcome::Retry); // no result for it at all
	EXPECT_FALSE(result.refresh_auth);

	result = connector->ParseResult(calls[0], changes, Answer(200, R"({"unexpected":true})"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
}

TEST_F(SalesforceTest, InvalidSessionAsksForANewToken)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "C-1"), MakeChange(2, Op::Update, "C-2")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(
	    calls[0], changes,
	    Answer(401, R"([{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}])"));
	EXPECT_TRUE(result.refresh_auth);
	EXPECT_FALSE(result.endpoint_failure);
	EXPECT_EQ(result.http_status, 401);
	for (const auto &one : result.results)
		EXPECT_EQ(one.outcome, Outcome::Retry);

	result = connector->ParseResult(calls[0], changes, Answer(401, R"([{"message":"nope","errorCode":"OTHER"}])"));
	EXPECT_FALSE(result.refresh_auth);
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
}

TEST_F(SalesforceTest, RequestLimitExceededIsARateLimit)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "C-1")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(
	    calls[0], changes,
	    Answer(403, R"([{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}])",
	           {{"retry-after", "60"}}));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(result.endpoint_failure);
	EXPECT_EQ(result.retry_after_ms, 60000);
	EXPECT_EQ(result.results[0].error, "HTTP 403 REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.");

	result = connector->ParseResult(calls[0], changes,
	                                Answer(403,
	                                       R"([{"message":"insufficient access","errorCode":"INSUFFICIENT_ACCESS"}])"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
}

TEST_F(SalesforceTest, OtherCallLevelErrors)
{
	std::vector<Change> changes = {MakeChange(1, Op::Update, "C-1")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	auto result = connector->ParseResult(
	    calls[0], changes,
	    Answer(
	        400,
	        R"([{"message":"No such column 'Foo__c' on sobject of type Contact","errorCode":"INVALID_FIELD","fields":["Foo__c"]}])"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
	EXPECT_EQ(result.results[0].error,
	          "HTTP 400 INVALID_FIELD: No such column 'Foo__c' on sobject of type Contact (fields: Foo__c)");
	EXPECT_FALSE(result.endpoint_failure);

	result = connector->ParseResult(calls[0], changes,
	                                Answer(503, R"([{"message":"down","errorCode":"SERVER_UNAVAILABLE"}])"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(result.endpoint_failure);

	result = connector->ParseResult(calls[0], changes, HttpResponse());
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(result.endpoint_failure);
}

// ---- webhook -------------------------------------------------------------------------------

class WebhookTest : public ::testing::Test {
protected:
	std::unique_ptr<Connector> connector = MakeConnector("webhook");
	Endpoint endpoint = MakeEndpoint("webhook", "https://hooks.example.com/in/switchboard",
	                                 "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
	Route route = MakeRoute("contact", "", "ignore");
	Auth auth;
};

TEST_F(WebhookTest, StandardWebhooksVector)
{
	EXPECT_EQ(StandardWebhookSignature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
	                                   "1614265330", "{\"test\": 2432232314}"),
	          "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	// Without the prefix the whole secret is the base64 key.
	EXPECT_EQ(StandardWebhookSignature("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
	                                   "{\"test\": 2432232314}"),
	          "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] { StandardWebhookSignature("whsec_not base64!", "i", "1", "b"); }),
	          "webhook secret must be whsec_<base64>");
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] { StandardWebhookSignature("whsec_", "i", "1", "b"); }),
	          "webhook secret must be whsec_<base64>");
}

TEST_F(WebhookTest, RequestShapeAndSignature)
{
	std::vector<Change> changes = {
	    MakeChange(7, Op::Insert, "42", {{"email", "ada@example.com"}, {"score", 97}, {"tags", {"a", "b"}}})};
	changes[0].event_id = "msg_2Lh7uWm";
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 1u);
	const HttpRequest &request = calls[0].request;
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://hooks.example.com/in/switchboard");
	EXPECT_EQ(request.body, R"({"type":"contact.insert","id":"msg_2Lh7uWm","timestamp":"2026-11-24T10:00:00.123Z",)"
	                        R"("data":{"email":"ada@example.com","score":97,"tags":["a","b"]}})");
	std::string key = ReferenceBase64Decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
	std::string expected_signature = ReferenceSignature(key, "msg_2Lh7uWm.1795514400." + request.body);
	EXPECT_EQ(request.headers, Headers({{"Content-Type", "application/json"},
	                                    {"webhook-id", "msg_2Lh7uWm"},
	                                    {"webhook-timestamp", "1795514400"},
	                                    {"webhook-signature", expected_signature}}));
	EXPECT_EQ(calls[0].changes, std::vector<size_t>({0}));

	// A retry re-sends the very same body and webhook-id, signed at its own send time.
	Auth later = auth;
	later.signed_at_ms = 1795514400123 + 3600 * 1000;
	auto again = connector->BuildCalls(endpoint, route, changes, later);
	EXPECT_EQ(again[0].request.body, request.body);
	EXPECT_EQ(again[0].request.headers[1], request.headers[1]);
	EXPECT_EQ(again[0].request.headers[2], Header({"webhook-timestamp", "1795518000"}));
	EXPECT_EQ(again[0].request.headers[3].second, ReferenceSignature(key, "msg_2Lh7uWm.1795518000." + request.body));
}

TEST_F(WebhookTest, OneCallPerChangeAndDeletes)
{
	std::vector<Change> changes = {MakeChange(1, Op::Insert, "1"), MakeChange(2, Op::Delete, "2", {{"email", "x"}}),
	                               MakeChange(3, Op::Update, "3")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 2u);
	EXPECT_EQ(SkippedChanges(changes, calls), std::vector<size_t>({1}));
	EXPECT_EQ(Json::parse(calls[1].request.body)["type"], "contact.update");

	route.on_delete = "delete";
	calls = connector->BuildCalls(endpoint, route, changes, auth);
	ASSERT_EQ(calls.size(), 3u);
	EXPECT_EQ(calls[1].changes, std::vector<size_t>({1}));
	Json body = Json::parse(calls[1].request.body);
	EXPECT_EQ(body["type"], "contact.delete");
	EXPECT_EQ(body["data"]["email"], "x");
	EXPECT_EQ(body["id"], "evt_2");
}

TEST_F(WebhookTest, NoSecretNoSignatureHeaders)
{
	endpoint.secret.clear();
	endpoint.options = {{"headers", {{"Authorization", "Basic dXNlcjpwYXNz"}}}};
	auto calls = connector->BuildCalls(endpoint, route, {MakeChange(1, Op::Insert, "1")}, auth);
	EXPECT_EQ(calls[0].request.headers,
	          Headers({{"Content-Type", "application/json"}, {"Authorization", "Basic dXNlcjpwYXNz"}}));
}

TEST_F(WebhookTest, MaskedPreviewHasNoSecretOrSignature)
{
	std::vector<Change> changes = {MakeChange(1, Op::Insert, "1", {{"a", 1}})};
	std::string real_signature = HeaderValue(connector->BuildCalls(endpoint, route, changes, auth)[0].request.headers,
	                                         "webhook-signature");
	auth.masked = true;
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	std::string wire = WireText(calls[0].request);
	EXPECT_EQ(HeaderValue(calls[0].request.headers, "webhook-signature"), "v1,****");
	EXPECT_EQ(wire.find("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), std::string::npos);
	EXPECT_EQ(wire.find(real_signature.substr(3)), std::string::npos);
	EXPECT_EQ(HeaderValue(calls[0].request.headers, "webhook-id"), "evt_1");
}

TEST_F(WebhookTest, MalformedSecretIsRejected)
{
	endpoint.secret = "whsec_***not-base64***";
	std::string message = ExpectThrows<std::invalid_argument>(
	    [&] { connector->BuildCalls(endpoint, route, {MakeChange(1, Op::Insert, "1")}, auth); });
	EXPECT_EQ(message, "webhook secret must be whsec_<base64>");
}

TEST_F(WebhookTest, Results)
{
	std::vector<Change> changes = {MakeChange(1, Op::Insert, "1")};
	auto calls = connector->BuildCalls(endpoint, route, changes, auth);
	const Call &call = calls[0];
	for (long status : {200L, 201L, 202L, 204L})
		EXPECT_EQ(connector->ParseResult(call, changes, Answer(status, "")).results[0].outcome, Outcome::Delivered);

	auto result = connector->ParseResult(call, changes, Answer(410, "gone"));
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
	EXPECT_TRUE(result.disable_route);
	EXPECT_NE(result.error.find("410"), std::string::npos);

	result = connector->ParseResult(call, changes, Answer(429, "slow down", {{"retry-after", "30"}}));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_EQ(result.results[0].retry_after_ms, 30000);
	EXPECT_TRUE(result.endpoint_failure);

	result = connector->ParseResult(call, changes, Answer(503, ""));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(result.endpoint_failure);
	EXPECT_EQ(result.results[0].error, "HTTP 503");

	result = connector->ParseResult(call, changes, HttpResponse());
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);
	EXPECT_TRUE(result.endpoint_failure);

	result = connector->ParseResult(call, changes, Answer(408, ""));
	EXPECT_EQ(result.results[0].outcome, Outcome::Retry);

	std::string long_body = "invalid payload: " + std::string(1000, 'z');
	result = connector->ParseResult(call, changes, Answer(400, long_body));
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
	EXPECT_FALSE(result.disable_route);
	EXPECT_EQ(result.results[0].error.rfind("HTTP 400: invalid payload: zzz", 0), 0u);
	EXPECT_LE(result.results[0].error.size(), std::string("HTTP 400: ").size() + 200 + 3);
}

// ---- openai --------------------------------------------------------------------------------

TEST(OpenAI, ChatRequestShape)
{
	Endpoint endpoint = MakeEndpoint("openai", "https://api.openai.com", "sk-SECRETKEY", {{"model", "gpt-4o-mini"}});
	Json messages = Json::array({{{"role", "user"}, {"content", "Score this lead"}}});
	HttpRequest request = BuildChatRequest(endpoint, "", messages);
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://api.openai.com/v1/chat/completions");
	EXPECT_EQ(request.headers,
	          Headers({{"Authorization", "Bearer sk-SECRETKEY"}, {"Content-Type", "application/json"}}));
	EXPECT_EQ(request.body, R"({"model":"gpt-4o-mini","messages":[{"content":"Score this lead","role":"user"}],)"
	                        R"("response_format":{"type":"json_object"}})");
	EXPECT_EQ(Json::parse(BuildChatRequest(endpoint, "gpt-4.1", messages).body)["model"], "gpt-4.1");

	HttpRequest masked = BuildChatRequest(endpoint, "", messages, true);
	EXPECT_EQ(WireText(masked).find("SECRETKEY"), std::string::npos);
	EXPECT_EQ(HeaderValue(masked.headers, "authorization"), "Bearer ****");

	endpoint.options = Json::object();
	EXPECT_THROW(BuildChatRequest(endpoint, "", messages), std::invalid_argument);
}

TEST(OpenAI, ChatResults)
{
	ChatResult result = ParseChatResult(Answer(200, R"({"id":"chatcmpl-1","choices":[{"index":0,
	    "message":{"role":"assistant","content":"{\"score\": 87, \"segment\": \"smb\"}"},"finish_reason":"stop"}]})"));
	EXPECT_EQ(result.outcome, Outcome::Delivered);
	EXPECT_EQ(result.output["score"], 87);
	EXPECT_EQ(result.output["segment"], "smb");

	// SPEC §5: content that is not a JSON object is a permanent failure of the step.
	result = ParseChatResult(Answer(200, R"({"choices":[{"message":{"content":"not json"}}]})"));
	EXPECT_EQ(result.outcome, Outcome::Dead);

	result = ParseChatResult(Answer(
	    429,
	    R"({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}})"));
	EXPECT_EQ(result.outcome, Outcome::Dead);
	EXPECT_TRUE(result.stop_endpoint);
	EXPECT_NE(result.error.find("exceeded your current quota"), std::string::npos);

	result = ParseChatResult(
	    Answer(429, R"({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}})",
	           {{"retry-after", "2"}}));
	EXPECT_EQ(result.outcome, Outcome::Retry);
	EXPECT_FALSE(result.stop_endpoint);
	EXPECT_TRUE(result.endpoint_failure);
	EXPECT_EQ(result.retry_after_ms, 2000);

	EXPECT_EQ(ParseChatResult(Answer(500, "")).outcome, Outcome::Retry);
	EXPECT_EQ(ParseChatResult(HttpResponse()).outcome, Outcome::Retry);
	EXPECT_EQ(ParseChatResult(Answer(401, R"({"error":{"message":"Incorrect API key"}})")).outcome, Outcome::Dead);
	EXPECT_EQ(ParseChatResult(Answer(400, R"({"error":{"message":"bad"}})")).outcome, Outcome::Dead);
}

} // namespace
} // namespace switchboard
