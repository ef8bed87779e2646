// A connector kind that exists only in this file, registered through the registry's test hook
// (ScopedConnectorKind) and run through validation, the Dispatcher (Deliver and Fetch) and
// the pull against the loopback server. It proves that a new kind needs nothing outside its
// own file and one registry entry: no other source names it.
//
// The "ledger" remote: POST /token answers {"token": "..."}; POST /items takes
// {"items": [{"key", "fields"}]} with "Authorization: Token <token>" and answers
// {"ids": [...]} in request order; 401 {"error": "expired"} means the token expired;
// GET /changes?since=N answers {"rows": [{"ref", "key", "at", ...}], "next": N}.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "connectors/pull.h"
#include "delivery/dispatcher.h"
#include "fixtures.h"
#include "test_server.h"

namespace switchboard {
namespace {

using namespace test_support;

const char *const kKind = "ledger";

class LedgerConnector : public Connector {
public:
	size_t BulkLimit() const override { return 2; }
	std::vector<std::string> ExtraOptions() const override { return {"region"}; }
	void ValidateOption(const std::string &name, const Json &value) const override
	{
		if (name == "region" && !(value == "eu" || value == "us"))
			throw std::invalid_argument("option \"region\" must be \"eu\" or \"us\"");
	}
	std::string MatchRemoteHint() const override { return "the ledger field holding the key"; }
	int DefaultConcurrency() const override { return 1; }
	bool RebuildAtSend() const override { return true; } // the current token at send time

	std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &, const std::vector<Change> &changes,
	                             const Auth &auth) const override
	{
		std::vector<Call> calls;
		for (size_t start = 0; start < changes.size(); start += MaxBatch(endpoint)) {
			Call call;
			Json items = Json::array();
			for (size_t i = start; i < std::min(changes.size(), start + MaxBatch(endpoint)); ++i) {
				items.push_back({{"key", changes[i].key}, {"fields", changes[i].fields}});
				call.changes.push_back(i);
			}
			call.request.method = "POST";
			call.request.url = JoinUrl(endpoint.base_url, "/items");
			call.request.headers = {{"Authorization", "Token " + auth.bearer}, {"Content-Type", "application/json"}};
			call.request.body = Json{{"items", items}}.dump();
			calls.push_back(std::move(call));
		}
		return calls;
	}

	CallResult ParseResult(const Call &call, const std::vector<Change> &, const HttpResponse &response) const override
	{
		CallResult result;
		if (response.status == 200) {
			result = UniformResult(call, Outcome::Delivered, "");
			Json body = Json::parse(response.body, nullptr, false);
			for (size_t p = 0; p < result.results.size() && body.is_object() && p < body["ids"].size(); ++p)
				result.results[p].remote_id = body["ids"][p].get<std::string>();
		} else {
			result = UniformResult(call, Outcome::Retry, "HTTP " + std::to_string(response.status),
			                       RetryAfterMs(response));
		}
		MarkAnswer(ClassifyAnswer(response), &result);
		result.http_status = response.status;
		return result;
	}

	AnswerClass ClassifyAnswer(const HttpResponse &response) const override
	{
		AnswerClass answer = Connector::ClassifyAnswer(response);
		answer.token_expired = response.status == 401 && response.body.find("expired") != std::string::npos;
		return answer;
	}

	bool UsesToken() const override { return true; }
	HttpRequest BuildTokenRequest(const Endpoint &endpoint) const override
	{
		return HttpRequest{"POST", JoinUrl(endpoint.base_url, "/token"), {}, "secret=" + endpoint.secret};
	}
	AuthToken ParseTokenResponse(const HttpResponse &response, const std::string &) const override
	{
		Json body = Json::parse(response.body, nullptr, false);
		if (response.status != 200 || !body.is_object() || !body.contains("token"))
			throw std::runtime_error("no token (HTTP " + std::to_string(response.status) + ")");
		return AuthToken{body["token"].get<std::string>(), ""};
	}

	bool CanPull() const override { return true; }
	PullCursor InitialPullCursor() const override { return PullCursor{"0", ""}; }
	HttpRequest BuildPullRequest(const Endpoint &endpoint, const Route &, const std::vector<std::string> &, PullPhase,
	                             const PullCursor &cursor, const Auth &auth) const override
	{
		return HttpRequest{"GET",
		                   JoinUrl(endpoint.base_url, "/changes?since=" + UrlEncode(cursor.since)),
		                   {{"Authorization", "Token " + auth.bearer}},
		                   ""};
	}
	PullPage ParsePullPage(const Endpoint &, const Route &route, PullPhase phase, const PullCursor &cursor,
	                       const HttpResponse &response, const Json &body) const override
	{
		pull::RecordShape shape;
		shape.array = "rows";
		shape.id = "ref";
		shape.answer = "ledger answer";
		shape.record = "ledger row";
		shape.must_be_object = true;
		shape.fields = [](const Json &item) { return item; };
		shape.modified = [](const Json &item, const Json &) { return pull::TimeMs(item.value("at", Json())); };
		PullPage page;
		page.records = pull::ReadRecords(body, shape, route, phase == PullPhase::Deletions, response);
		page.next.since = pull::SinceAfter(cursor, std::stoll(cursor.since), pull::NewestModified(page.records),
		                                   [](int64_t ms) { return std::to_string(ms); });
		return page;
	}
};

class FakeConnectorTest : public ::testing::Test {
protected:
	static void SetUpTestSuite()
	{
		std::string error;
		ASSERT_TRUE(HttpGlobalInit(&error)) << error;
	}

	FakeConnectorTest() : kind_(kKind, [] { return std::make_unique<LedgerConnector>(); }) {}

	ServerReply JsonReply(int status, const Json &body)
	{
		ServerReply reply;
		reply.status = status;
		reply.body = body.dump();
		return reply;
	}

	// The token endpoint: "t1", "t2", ... one per request.
	void ServeTokens()
	{
		server.On("/token", [this](const ServerRequest &) {
			return JsonReply(200, {{"token", "t" + std::to_string(++tokens_issued)}});
		});
	}

	ScopedConnectorKind kind_; // first: registered before and unregistered after everything else
	ScriptedServer server;
	HttpClient client;
	std::atomic<int> tokens_issued{0};
};

TEST_F(FakeConnectorTest, RegistryKnowsTheKindOnlyWhileRegistered)
{
	EXPECT_TRUE(IsKnownKind(kKind));
	EXPECT_EQ(BulkLimit(kKind), 2u);
	EXPECT_TRUE(CanPull(kKind));
	EXPECT_EQ(InitialPullCursor(kKind).since, "0");
	EXPECT_NO_THROW(ValidateOptions(kKind, {{"region", "eu"}, {"batch_size", 2}, {"headers", {{"X-A", "b"}}}}));
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions(kKind, {{"region", "mars"}});
	          }),
	          "option \"region\" must be \"eu\" or \"us\"");
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions(kKind, {{"batch_size", 3}});
	          }).find("between 1 and 2"),
	          std::string::npos);
	EXPECT_EQ(ExpectThrows<std::invalid_argument>([] {
		          ValidateOptions(kKind, {{"model", "x"}});
	          }),
	          "unknown option \"model\" for kind ledger (known: batch_size, max_concurrency, rate_limit, timeout_ms, "
	          "headers, region)");
	EXPECT_NE(ExpectThrows<std::invalid_argument>([] { MakeConnector("nope"); }).find("ledger"), std::string::npos);
	EXPECT_THROW(RegisterConnectorKind(kKind, [] { return std::make_unique<LedgerConnector>(); }),
	             std::invalid_argument);
	{
		ScopedConnectorKind other("ledger2", [] { return std::make_unique<LedgerConnector>(); });
		EXPECT_TRUE(IsKnownKind("ledger2"));
	}
	EXPECT_FALSE(IsKnownKind("ledger2"));
}

TEST_F(FakeConnectorTest, DeliversInBulkWithATokenAndRefreshesItOnce)
{
	ServeTokens();
	std::atomic<int> posts{0};
	server.On("/items", [&](const ServerRequest &request) {
		// The first call finds its token expired; everything after succeeds.
		if (++posts == 1)
			return JsonReply(401, {{"error", "expired"}});
		if (request.headers.at("authorization") != "Token t2")
			return JsonReply(403, {{"error", "wrong token " + request.headers.at("authorization")}});
		Json ids = Json::array();
		const Json body = Json::parse(request.body); // named: the loop must not outlive it
		for (const auto &item : body["items"])
			ids.push_back("L-" + item["key"].get<std::string>());
		return JsonReply(200, {{"ids", ids}});
	});
	Endpoint endpoint = MakeEndpoint(kKind, server.Url(""), "s3cret");
	RouteBatch batch;
	batch.endpoint = endpoint;
	batch.route = MakeRoute("items", "key");
	for (int i = 1; i <= 3; ++i) {
		Change change;
		change.id = i;
		change.key = "k" + std::to_string(i);
		change.fields = {{"n", i}};
		batch.changes.push_back(change);
	}
	Dispatcher dispatcher(&client);
	std::vector<RouteAction> actions;
	auto deliveries = dispatcher.Deliver(
	    {batch}, DispatchOptions(), [] { return false; }, &actions);
	ASSERT_EQ(deliveries.size(), 3u);
	for (const auto &delivery : deliveries) {
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
		EXPECT_EQ(delivery.remote_id, "L-" + delivery.key);
	}
	// Bulk limit 2: two calls, plus the one resent after the refresh; two tokens.
	EXPECT_EQ(server.RequestsTo("/items").size(), 3u);
	EXPECT_EQ(tokens_issued.load(), 2);
	EXPECT_EQ(server.RequestsTo("/token")[0].body, "secret=s3cret");
	// DefaultConcurrency 1: never two calls at once.
	EXPECT_EQ(server.MaxConcurrent(), 1);
}

TEST_F(FakeConnectorTest, EndpointFailuresMoveTheBreakerAndTokenFailuresAreReported)
{
	server.On("/token", [this](const ServerRequest &) { return JsonReply(500, {{"error", "down"}}); });
	Endpoint endpoint = MakeEndpoint(kKind, server.Url(""), "s3cret");
	RouteBatch batch;
	batch.endpoint = endpoint;
	batch.route = MakeRoute("items", "key");
	Change change;
	change.id = 1;
	change.key = "k1";
	batch.changes.push_back(change);
	Dispatcher dispatcher(&client);
	std::vector<RouteAction> actions;
	auto deliveries = dispatcher.Deliver(
	    {batch}, DispatchOptions(), [] { return false; }, &actions);
	ASSERT_EQ(deliveries.size(), 1u);
	EXPECT_EQ(deliveries[0].outcome, Outcome::Retry);
	EXPECT_FALSE(deliveries[0].attempted); // the token endpoint failed, not the change's request
	EXPECT_EQ(deliveries[0].error.rfind("ledger token: no token (HTTP 500)", 0), 0u) << deliveries[0].error;
	EXPECT_TRUE(server.RequestsTo("/items").empty());
	EXPECT_GT(dispatcher.EndpointReadyAt(endpoint.name), 0);
}

TEST_F(FakeConnectorTest, PullsThroughFetchAndTheConnectorsPageParser)
{
	ServeTokens();
	server.On("/changes", [this](const ServerRequest &request) {
		if (request.headers.at("authorization") != "Token t1")
			return JsonReply(401, {{"error", "bad"}});
		return JsonReply(200, {{"rows",
		                        {{{"ref", "r1"}, {"key", "k1"}, {"at", 1700000000000}, {"n", 1}},
		                         {{"ref", "r2"}, {"key", "k2"}, {"at", 1700000000500}}}}});
	});
	Endpoint endpoint = MakeEndpoint(kKind, server.Url(""), "s3cret");
	Route route = MakeRoute("items", "key", "ignore");
	PullCursor cursor = InitialPullCursor(kKind);
	Dispatcher dispatcher(&client);
	HttpResponse response = dispatcher.Fetch(
	    endpoint,
	    [&](const Auth &auth) { return BuildPullRequest(endpoint, route, {}, PullPhase::Changes, cursor, auth); }, 5000,
	    1000, [] { return false; });
	ASSERT_EQ(response.status, 200) << response.transport_error;
	PullPage page = ParsePullResponse(endpoint, route, PullPhase::Changes, cursor, response);
	ASSERT_EQ(page.records.size(), 2u);
	EXPECT_EQ(page.records[0].remote_id, "r1");
	EXPECT_EQ(page.records[0].key, "k1");
	EXPECT_EQ(page.records[0].fields["n"], 1);
	EXPECT_EQ(page.next.since, "1700000000500");
	EXPECT_EQ(server.RequestsTo("/changes")[0].path, "/changes?since=0");

	// A 503 is an endpoint failure by the connector's (default) judgement: the breaker opens.
	server.On("/changes", [this](const ServerRequest &) { return JsonReply(503, {{"error", "busy"}}); });
	response = dispatcher.Fetch(
	    endpoint,
	    [&](const Auth &auth) { return BuildPullRequest(endpoint, route, {}, PullPhase::Changes, cursor, auth); }, 5000,
	    1000, [] { return false; });
	EXPECT_EQ(response.status, 503);
	EXPECT_NE(ExpectThrows<std::runtime_error>([&] {
		          ParsePullResponse(endpoint, route, PullPhase::Changes, cursor, response);
	          }).find("ledger pull failed: HTTP 503"),
	          std::string::npos);
	EXPECT_GT(dispatcher.EndpointReadyAt(endpoint.name), 0);
}

} // namespace
} // namespace switchboard
