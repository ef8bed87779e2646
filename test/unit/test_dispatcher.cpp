// Unit tests for the Dispatcher against a scripted HTTP server on 127.0.0.1: batching,
// per-record and call-level failures, circuit breaker, Retry-After, rate limit, concurrency,
// Salesforce tokens, webhook 410 and signing time, skipped deletes, shutdown, transport errors.
// Every test also checks the one invariant the worker relies on: exactly one Delivery per
// input change.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "connectors/pull.h"
#include "delivery/dispatcher.h"
#include "fixtures.h"
#include "test_server.h"

namespace switchboard {
namespace {

using namespace test_support;
using test_support::ScriptedServer;
using test_support::ServerReply;
using test_support::ServerRequest;
using SteadyClock = std::chrono::steady_clock;

long
MsSince(SteadyClock::time_point start)
{
	return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count());
}

int64_t
UnixMsNow()
{
	return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
	    .count();
}

Change
MakeChange(int64_t id, const std::string &key, Op op = Op::Update, const std::string &remote_id = "")
{
	Change change;
	change.id = id;
	change.op = op;
	change.key = key;
	change.fields = Json{{"email", key}, {"score", id}};
	change.remote_id = remote_id;
	change.event_id = "ev-" + std::to_string(id);
	change.occurred_at_ms = 1700000000000;
	return change;
}

std::vector<Change>
MakeChanges(int64_t first_id, size_t count)
{
	std::vector<Change> changes;
	for (size_t i = 0; i < count; ++i) {
		int64_t id = first_id + static_cast<int64_t>(i);
		changes.push_back(MakeChange(id, "user" + std::to_string(id) + "@example.com"));
	}
	return changes;
}

RouteBatch
MakeBatch(const Endpoint &endpoint, const Route &route, std::vector<Change> changes)
{
	RouteBatch batch;
	batch.endpoint = endpoint;
	batch.route = route;
	batch.changes = std::move(changes);
	return batch;
}

// The worker's invariant: exactly one Delivery per input change, carrying its route and key.
void
ExpectOnePerChange(const std::vector<RouteBatch> &batches, const std::vector<Delivery> &deliveries)
{
	std::map<std::pair<std::string, int64_t>, std::string> wanted;
	for (const auto &batch : batches)
		for (const auto &change : batch.changes)
			wanted[{batch.route.name, change.id}] = change.key;
	std::set<std::pair<std::string, int64_t>> seen;
	for (const auto &delivery : deliveries) {
		auto id = std::make_pair(delivery.route, delivery.change_id);
		EXPECT_TRUE(wanted.count(id)) << "delivery for an unknown change " << delivery.route << "/"
		                              << delivery.change_id;
		EXPECT_TRUE(seen.insert(id).second) << "two deliveries for " << delivery.route << "/" << delivery.change_id;
		if (wanted.count(id)) {
			EXPECT_EQ(delivery.key, wanted[id]);
		}
	}
	EXPECT_EQ(seen.size(), wanted.size());
	EXPECT_EQ(deliveries.size(), wanted.size());
}

std::map<int64_t, Delivery>
ById(const std::vector<Delivery> &deliveries)
{
	std::map<int64_t, Delivery> out;
	for (const auto &delivery : deliveries)
		out[delivery.change_id] = delivery;
	return out;
}

const EndpointStatus *
StatusOf(const std::vector<EndpointStatus> &statuses, const std::string &name)
{
	for (const auto &status : statuses)
		if (status.endpoint == name)
			return &status;
	return nullptr;
}

ServerReply
JsonReply(int status, const Json &body, std::vector<std::pair<std::string, std::string>> headers = {})
{
	ServerReply reply;
	reply.status = status;
	reply.body = body.dump();
	reply.headers = std::move(headers);
	reply.headers.emplace_back("Content-Type", "application/json");
	return reply;
}

// HubSpot batch upsert that accepts every input and echoes its idProperty value.
ServerReply
HubSpotUpsertOk(const ServerRequest &request)
{
	Json body = Json::parse(request.body);
	Json results = Json::array();
	for (const auto &input : body["inputs"])
		results.push_back({{"id", "r-" + input["id"].get<std::string>()}, {"properties", {{"email", input["id"]}}}});
	return JsonReply(200, {{"status", "COMPLETE"}, {"results", results}});
}

// HubSpot batch upsert as strict as the real one: the whole batch gets 400 VALIDATION_ERROR
// when an input has an empty id or two ids are equal ignoring case; results come back in
// reverse order (HubSpot does not promise input order), echoing the idProperty value.
ServerReply
HubSpotUpsertStrict(const ServerRequest &request)
{
	Json body = Json::parse(request.body);
	std::set<std::string> seen;
	for (const auto &input : body["inputs"]) {
		const std::string id = input["id"].get<std::string>();
		if (id.empty() || !seen.insert(Lower(id)).second)
			return JsonReply(400,
			                 {{"status", "error"},
			                  {"category", "VALIDATION_ERROR"},
			                  {"message", id.empty() ? std::string("inputs[].id is required for upsert")
			                                         : "Duplicate IDs found in batch input: [" + Lower(id) + "]"}});
	}
	Json results = Json::array();
	for (const auto &input : body["inputs"])
		results.insert(results.begin(),
		               Json{{"id", "r-" + input["id"].get<std::string>()}, {"properties", {{"email", input["id"]}}}});
	return JsonReply(200, {{"status", "COMPLETE"}, {"results", results}});
}

// Salesforce composite upsert that accepts every record.
ServerReply
SalesforceUpsertOk(const ServerRequest &request)
{
	Json body = Json::parse(request.body);
	Json results = Json::array();
	for (size_t i = 0; i < body["records"].size(); ++i)
		results.push_back(
		    {{"id", "003" + std::to_string(i)}, {"success", true}, {"created", true}, {"errors", Json::array()}});
	return JsonReply(200, results);
}

std::function<bool()>
Never()
{
	return [] { return false; };
}

class DispatcherTest : public ::testing::Test {
protected:
	static void SetUpTestSuite()
	{
		std::string error;
		ASSERT_TRUE(HttpGlobalInit(&error)) << error;
	}

	std::vector<Delivery> Deliver(Dispatcher &dispatcher, const std::vector<RouteBatch> &batches,
	                              DispatchOptions options = DispatchOptions(),
	                              std::function<bool()> should_stop = Never(),
	                              std::vector<RouteAction> *actions = nullptr)
	{
		std::vector<RouteAction> ignored;
		auto deliveries = dispatcher.Deliver(batches, options, should_stop, actions ? actions : &ignored);
		ExpectOnePerChange(batches, deliveries);
		return deliveries;
	}

	ScriptedServer server;
	HttpClient client;
};

// ---------------------------------------------------------------------------------------
// HubSpot

TEST_F(DispatcherTest, HubSpotBatchesInCallsOfAtMost100)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", HubSpotUpsertOk);
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), MakeChanges(1, 250))};

	auto deliveries = Deliver(dispatcher, batches);

	auto requests = server.Requests();
	ASSERT_EQ(requests.size(), 3u);
	std::vector<size_t> sizes;
	for (const auto &request : requests) {
		EXPECT_EQ(request.method, "POST");
		EXPECT_EQ(request.headers.at("authorization"), "Bearer hs-secret");
		sizes.push_back(Json::parse(request.body)["inputs"].size());
	}
	std::sort(sizes.begin(), sizes.end());
	EXPECT_EQ(sizes, (std::vector<size_t>{50, 100, 100}));
	for (const auto &delivery : deliveries) {
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
		EXPECT_TRUE(delivery.attempted);
		EXPECT_EQ(delivery.http_status, 200);
		EXPECT_EQ(delivery.remote_id, "r-" + delivery.key);
		EXPECT_EQ(delivery.route, "contacts");
		EXPECT_GT(delivery.latency_ms, 0.0);
	}
	auto statuses = dispatcher.EndpointStatuses();
	const EndpointStatus *status = StatusOf(statuses, "hs");
	ASSERT_NE(status, nullptr);
	EXPECT_EQ(status->state, "ok");
	EXPECT_EQ(status->next_attempt_at_ms, 0);
	EXPECT_EQ(status->requests, 3u);
	EXPECT_EQ(status->errors, 0u);
}

TEST_F(DispatcherTest, HubSpot207FailsOnlyTheNamedInput)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", [](const ServerRequest &) {
		Json error = {{"status", "error"},
		              {"category", "VALIDATION_ERROR"},
		              {"message", "Property values were not valid: bad email"},
		              {"context", {{"objectWriteTraceId", {"ev-2"}}}}};
		return JsonReply(207, {{"status", "COMPLETE"}, {"results", Json::array()}, {"errors", {error}}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), MakeChanges(1, 3))};

	auto by_id = ById(Deliver(dispatcher, batches));

	EXPECT_EQ(by_id[1].outcome, Outcome::Delivered);
	EXPECT_EQ(by_id[3].outcome, Outcome::Delivered);
	EXPECT_EQ(by_id[2].outcome, Outcome::Dead);
	EXPECT_NE(by_id[2].error.find("bad email"), std::string::npos) << by_id[2].error;
	for (auto &entry : by_id) {
		EXPECT_TRUE(entry.second.attempted);
		EXPECT_EQ(entry.second.http_status, 207);
	}
	// A record rejected inside a 207 says nothing about the endpoint's health.
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "hs")->state, "ok");
	EXPECT_EQ(dispatcher.EndpointReadyAt("hs"), 0);
}

TEST_F(DispatcherTest, HubSpotWholeBatch400IsSplitUntilTheBadInputIsAlone)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", HubSpotUpsertStrict);
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	std::vector<Change> changes = MakeChanges(1, 50);
	changes[20].key = ""; // change 21: an empty match_local value
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), changes)};

	auto by_id = ById(Deliver(dispatcher, batches));

	for (auto &entry : by_id) {
		EXPECT_TRUE(entry.second.attempted) << entry.first;
		if (entry.first == 21) {
			EXPECT_EQ(entry.second.outcome, Outcome::Dead);
			EXPECT_EQ(entry.second.http_status, 400);
			EXPECT_NE(entry.second.error.find("id is required"), std::string::npos) << entry.second.error;
			continue;
		}
		EXPECT_EQ(entry.second.outcome, Outcome::Delivered) << entry.first << ": " << entry.second.error;
		// Matched by the echoed id although the results came back reversed.
		EXPECT_EQ(entry.second.remote_id, "r-" + entry.second.key);
	}
	// Bisection: the refused batch, then two calls per level down to the culprit alone.
	EXPECT_LE(server.RequestCount(), 1u + 2u * 6u);
	// A refused input says nothing about the endpoint's health.
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "hs")->state, "ok");
}

TEST_F(DispatcherTest, HubSpotKeysDifferingOnlyInCaseAreSentApart)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", HubSpotUpsertStrict);
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	std::vector<Change> changes = MakeChanges(1, 8);
	changes[6].key = "USER2@example.com"; // the same HubSpot contact as change 2
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), changes)};

	auto by_id = ById(Deliver(dispatcher, batches));

	for (auto &entry : by_id) {
		EXPECT_EQ(entry.second.outcome, Outcome::Delivered) << entry.first << ": " << entry.second.error;
		EXPECT_EQ(entry.second.remote_id, "r-" + entry.second.key);
	}
	for (const auto &request : server.Requests())
		EXPECT_LE(Json::parse(request.body)["inputs"].size(), 8u);
}

TEST_F(DispatcherTest, SplitHalvesLeftForTheNextRoundCountTheirAttempt)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", HubSpotUpsertStrict);
	Dispatcher dispatcher(&client);
	// One request per 10 s: the halves of the refused batch cannot go out in this round.
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", {{"rate_limit", "1/10s"}}, "hs");
	std::vector<Change> changes = MakeChanges(1, 4);
	changes[1].key = "";
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), changes)};
	DispatchOptions options;
	options.max_wait_ms = 100;

	auto deliveries = Deliver(dispatcher, batches, options);

	EXPECT_EQ(server.RequestCount(), 1u);
	for (const auto &delivery : deliveries) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry) << delivery.change_id;
		// They were sent (in the refused batch): else the refused batch could be resent forever.
		EXPECT_TRUE(delivery.attempted) << delivery.change_id;
		EXPECT_NE(delivery.error.find("refused whole"), std::string::npos) << delivery.error;
	}
}

TEST_F(DispatcherTest, ServerErrorBacksOffAndDefersTheRest)
{
	server.On("/crm/", [](const ServerRequest &) {
		return JsonReply(503, {{"status", "error"}, {"message", "service down"}, {"category", "UNAVAILABLE"}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", {{"batch_size", 1}, {"max_concurrency", 1}},
	                                "hs");
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), MakeChanges(1, 3))};

	int64_t before = UnixMsNow();
	auto by_id = ById(Deliver(dispatcher, batches));

	ASSERT_EQ(server.RequestCount(), 1u);
	int sent = 0;
	for (auto &entry : by_id) {
		const Delivery &delivery = entry.second;
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		if (delivery.attempted) {
			sent++;
			EXPECT_EQ(delivery.http_status, 503);
			EXPECT_NE(delivery.error.find("service down"), std::string::npos) << delivery.error;
			EXPECT_GE(delivery.retry_after_ms, 900); // the breaker's first pause is 1 s
		} else {
			EXPECT_EQ(delivery.http_status, 0);
			EXPECT_NE(delivery.error.find("endpoint hs is backing off after 1 failures: HTTP 503"), std::string::npos)
			    << delivery.error;
			EXPECT_GT(delivery.retry_after_ms, 0);
			EXPECT_LE(delivery.retry_after_ms, 1000);
		}
	}
	EXPECT_EQ(sent, 1);

	auto statuses = dispatcher.EndpointStatuses();
	const EndpointStatus *status = StatusOf(statuses, "hs");
	ASSERT_NE(status, nullptr);
	EXPECT_EQ(status->state, "backing_off");
	EXPECT_GE(status->next_attempt_at_ms, before + 1000);
	EXPECT_EQ(status->requests, 1u);
	EXPECT_EQ(status->errors, 1u);
	EXPECT_NE(status->last_error.find("503"), std::string::npos);
	EXPECT_GE(status->last_error_at_ms, before);
	EXPECT_GT(dispatcher.EndpointReadyAt("hs"), before);

	// While the breaker is open nothing is sent, and nothing counts as an attempt.
	for (const auto &delivery : Deliver(dispatcher, batches)) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_FALSE(delivery.attempted);
		EXPECT_GT(delivery.retry_after_ms, 0);
	}
	EXPECT_EQ(server.RequestCount(), 1u);

	// ForgetEndpoint drops the breaker with the rest of the endpoint's state.
	dispatcher.ForgetEndpoint("hs");
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "hs"), nullptr);
	EXPECT_EQ(dispatcher.EndpointReadyAt("hs"), 0);
}

TEST_F(DispatcherTest, TooManyRequestsHonoursRetryAfterAndPenalizesTheLimiter)
{
	std::atomic<int> calls{0};
	server.On("/crm/", [&](const ServerRequest &request) {
		if (calls++ == 0)
			return JsonReply(429,
			                 {{"status", "error"},
			                  {"message", "You have reached your ten_secondly_rolling limit."},
			                  {"errorType", "RATE_LIMIT"},
			                  {"policyName", "TEN_SECONDLY_ROLLING"}},
			                 {{"Retry-After", "2"}});
		// Answered after the 429, so the breaker is back to ok while the penalty still runs.
		ServerReply reply = HubSpotUpsertOk(request);
		reply.delay_ms = 300;
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", {{"batch_size", 1}, {"max_concurrency", 2}},
	                                "hs");
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), MakeChanges(1, 2))};

	auto deliveries = Deliver(dispatcher, batches);
	int limited = 0;
	for (const auto &delivery : deliveries) {
		EXPECT_TRUE(delivery.attempted);
		if (delivery.http_status == 429) {
			limited++;
			EXPECT_EQ(delivery.outcome, Outcome::Retry);
			EXPECT_GE(delivery.retry_after_ms, 1000);
			EXPECT_LE(delivery.retry_after_ms, 2000);
			EXPECT_NE(delivery.error.find("TEN_SECONDLY_ROLLING"), std::string::npos) << delivery.error;
		} else {
			EXPECT_EQ(delivery.outcome, Outcome::Delivered);
		}
	}
	EXPECT_EQ(limited, 1);
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "hs")->state, "ok");
	// Only the limiter's penalty can hold the endpoint now.
	EXPECT_GE(dispatcher.EndpointReadyAt("hs"), UnixMsNow() + 1000);

	DispatchOptions options;
	options.max_wait_ms = 100;
	for (const auto &delivery : Deliver(dispatcher, batches, options)) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_FALSE(delivery.attempted);
		EXPECT_GE(delivery.retry_after_ms, 1000);
		EXPECT_NE(delivery.error.find("Retry-After"), std::string::npos) << delivery.error;
	}
	EXPECT_EQ(server.RequestCount(), 2u);
}

TEST_F(DispatcherTest, DailyQuotaStopsTheEndpointForAnHour)
{
	server.On("/crm/", [](const ServerRequest &) {
		return JsonReply(429, {{"status", "error"}, {"message", "daily limit reached"}, {"policyName", "DAILY"}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", {{"batch_size", 1}, {"max_concurrency", 1}},
	                                "hs");
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), MakeChanges(1, 3))};

	auto deliveries = Deliver(dispatcher, batches);
	EXPECT_EQ(server.RequestCount(), 1u);
	int attempted = 0;
	for (const auto &delivery : deliveries) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		attempted += delivery.attempted;
		EXPECT_GE(delivery.retry_after_ms, 3500L * 1000);
		if (!delivery.attempted) {
			EXPECT_NE(delivery.error.find("daily limit reached"), std::string::npos) << delivery.error;
		}
	}
	EXPECT_EQ(attempted, 1);
	EXPECT_GE(dispatcher.EndpointReadyAt("hs"), UnixMsNow() + 3500L * 1000);
}

// ---------------------------------------------------------------------------------------
// Rate limit and concurrency

TEST_F(DispatcherTest, RateLimitNeverExceededWithinAWindow)
{
	server.On("/hook", [](const ServerRequest &) { return ServerReply(); });
	Dispatcher dispatcher(&client);
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), "", {{"rate_limit", "5/1s"}}, "wh");
	std::vector<RouteBatch> batches = {
	    MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 12))};

	auto start = SteadyClock::now();
	auto deliveries = Deliver(dispatcher, batches);
	long elapsed = MsSince(start);

	for (const auto &delivery : deliveries)
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
	auto requests = server.Requests();
	ASSERT_EQ(requests.size(), 12u);
	std::vector<SteadyClock::time_point> at;
	for (const auto &request : requests)
		at.push_back(request.at);
	std::sort(at.begin(), at.end());
	// Six requests within one second would break "5 in any 1 s window". Grants are exact on
	// the client's millisecond clock; the slack covers loopback delivery jitter only.
	for (size_t i = 0; i + 5 < at.size(); ++i)
		EXPECT_GE(std::chrono::duration_cast<std::chrono::milliseconds>(at[i + 5] - at[i]).count(), 985) << i;
	// 12 requests at 5 per second: the 11th cannot go before 2 s (ms truncation aside).
	EXPECT_GE(elapsed, 1995);
}

TEST_F(DispatcherTest, RateLimitDefersWhatCannotBeSentWithinMaxWait)
{
	server.On("/hook", [](const ServerRequest &) { return ServerReply(); });
	Dispatcher dispatcher(&client);
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), "", {{"rate_limit", "5/1s"}}, "wh");
	std::vector<RouteBatch> batches = {
	    MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 12))};
	DispatchOptions options;
	options.max_wait_ms = 200;

	auto start = SteadyClock::now();
	auto deliveries = Deliver(dispatcher, batches, options);
	EXPECT_LT(MsSince(start), 900);

	int delivered = 0, deferred = 0;
	for (const auto &delivery : deliveries) {
		if (delivery.outcome == Outcome::Delivered) {
			delivered++;
			continue;
		}
		deferred++;
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_FALSE(delivery.attempted);
		EXPECT_GT(delivery.retry_after_ms, 0);
		// One window after the first answers came back, plus the limiter's 10 ms guard.
		EXPECT_LE(delivery.retry_after_ms, 1000 + 10 + 100);
		EXPECT_NE(delivery.error.find("rate limit 5/1s"), std::string::npos) << delivery.error;
	}
	EXPECT_EQ(delivered, 5);
	EXPECT_EQ(deferred, 7);
	EXPECT_EQ(server.RequestCount(), 5u);
}

TEST_F(DispatcherTest, MaxConcurrencyBoundsRequestsInFlight)
{
	server.On("/hook", [](const ServerRequest &) {
		ServerReply reply;
		reply.delay_ms = 120;
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), "", {{"max_concurrency", 2}}, "wh");
	std::vector<RouteBatch> batches = {
	    MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 6))};

	auto start = SteadyClock::now();
	for (const auto &delivery : Deliver(dispatcher, batches))
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
	EXPECT_GE(MsSince(start), 3 * 120);
	EXPECT_EQ(server.RequestCount(), 6u);
	EXPECT_EQ(server.MaxConcurrent(), 2);
}

// ---------------------------------------------------------------------------------------
// Salesforce

class DispatcherSalesforceTest : public DispatcherTest {
protected:
	const std::string kSecret = R"({"client_id":"cid-1","client_secret":"s3cr3t-value"})";
	const std::string kDataPath = "/inst/services/data/v59.0/composite/sobjects/Contact/Email__c";

	Endpoint SalesforceEndpoint()
	{
		return MakeEndpoint("salesforce", server.Url("/login"), kSecret, Json::object(), "sf");
	}

	std::vector<RouteBatch> Batches()
	{
		return {MakeBatch(SalesforceEndpoint(), MakeRoute("Contact", "Email__c", "ignore", "sf_contacts"),
		                  MakeChanges(1, 3))};
	}

	// Tokens "tok-1", "tok-2", ... in order of request.
	void ServeTokens()
	{
		server.On("/login/services/oauth2/token", [this](const ServerRequest &) {
			int n = ++tokens_issued;
			return JsonReply(200, {{"access_token", "tok-" + std::to_string(n)},
			                       {"instance_url", server.Url("/inst/")},
			                       {"token_type", "Bearer"}});
		});
	}

	std::atomic<int> tokens_issued{0};
};

TEST_F(DispatcherSalesforceTest, TokenFetchedOnceAndCachedAcrossRounds)
{
	ServeTokens();
	server.On(kDataPath, SalesforceUpsertOk);
	Dispatcher dispatcher(&client);

	for (int round = 0; round < 2; ++round)
		for (const auto &delivery : Deliver(dispatcher, Batches())) {
			EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
			EXPECT_FALSE(delivery.remote_id.empty());
		}

	auto tokens = server.RequestsTo("/login/services/oauth2/token");
	ASSERT_EQ(tokens.size(), 1u);
	EXPECT_EQ(tokens[0].method, "POST");
	EXPECT_NE(tokens[0].body.find("grant_type=client_credentials"), std::string::npos);
	EXPECT_NE(tokens[0].body.find("client_id=cid-1"), std::string::npos);
	auto data = server.RequestsTo(kDataPath);
	ASSERT_EQ(data.size(), 2u);
	for (const auto &request : data) {
		EXPECT_EQ(request.method, "PATCH");
		EXPECT_EQ(request.headers.at("authorization"), "Bearer tok-1");
		EXPECT_EQ(Json::parse(request.body)["records"].size(), 3u);
	}
	// The token request counts as a request to the endpoint, like the data calls.
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "sf")->requests, 3u);
}

TEST_F(DispatcherSalesforceTest, InvalidSessionRefreshesTheTokenOnceAndResends)
{
	ServeTokens();
	server.On(kDataPath, [](const ServerRequest &request) {
		if (request.headers.at("authorization") == "Bearer tok-1")
			return JsonReply(401, Json::array({{{"message", "Session expired or invalid"},
			                                    {"errorCode", "INVALID_SESSION_ID"}}}));
		return SalesforceUpsertOk(request);
	});
	Dispatcher dispatcher(&client);

	for (const auto &delivery : Deliver(dispatcher, Batches())) {
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
		EXPECT_TRUE(delivery.attempted);
		EXPECT_EQ(delivery.http_status, 200);
	}
	EXPECT_EQ(server.RequestsTo("/login/").size(), 2u);
	auto data = server.RequestsTo(kDataPath);
	ASSERT_EQ(data.size(), 2u);
	EXPECT_EQ(data[0].body, data[1].body); // the same changes, resent
	EXPECT_EQ(data[1].headers.at("authorization"), "Bearer tok-2");
}

TEST_F(DispatcherSalesforceTest, InvalidSessionAgainAfterRefreshIsRetried)
{
	ServeTokens();
	server.On(kDataPath, [](const ServerRequest &) {
		return JsonReply(401, Json::array(
		                          {{{"message", "Session expired or invalid"}, {"errorCode", "INVALID_SESSION_ID"}}}));
	});
	Dispatcher dispatcher(&client);

	for (const auto &delivery : Deliver(dispatcher, Batches())) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_TRUE(delivery.attempted);
		EXPECT_EQ(delivery.http_status, 401);
		EXPECT_NE(delivery.error.find("INVALID_SESSION_ID"), std::string::npos) << delivery.error;
	}
	// Exactly one refresh and one resend per round, never a loop.
	EXPECT_EQ(server.RequestsTo("/login/").size(), 2u);
	EXPECT_EQ(server.RequestsTo(kDataPath).size(), 2u);
}

TEST_F(DispatcherSalesforceTest, TokenFailureRetriesEveryChangeWithoutTheSecret)
{
	// A hostile or careless login server echoes the credentials back in its error.
	server.On("/login/services/oauth2/token", [](const ServerRequest &request) {
		ServerReply reply;
		reply.status = 400;
		reply.body = "bad request: " + request.body;
		return reply;
	});
	Dispatcher dispatcher(&client);

	for (const auto &delivery : Deliver(dispatcher, Batches())) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_TRUE(delivery.attempted);
		EXPECT_EQ(delivery.error.rfind("salesforce token: ", 0), 0u) << delivery.error;
		EXPECT_NE(delivery.error.find("HTTP 400"), std::string::npos) << delivery.error;
		EXPECT_EQ(delivery.error.find("s3cr3t-value"), std::string::npos) << delivery.error;
	}
	EXPECT_EQ(server.RequestsTo(kDataPath).size(), 0u);
	auto statuses = dispatcher.EndpointStatuses();
	const EndpointStatus *status = StatusOf(statuses, "sf");
	ASSERT_NE(status, nullptr);
	EXPECT_EQ(status->state, "backing_off");
	EXPECT_EQ(status->errors, 1u);
	EXPECT_EQ(status->last_error.find("s3cr3t-value"), std::string::npos);
	EXPECT_EQ(status->last_error.rfind("salesforce token: ", 0), 0u);
}

TEST_F(DispatcherSalesforceTest, TokenEndpointOutageCostsTheChangesNoAttempt)
{
	// The changes' own requests were never sent: a login outage must not dead-letter them.
	server.On("/login/services/oauth2/token", [](const ServerRequest &) {
		ServerReply reply;
		reply.status = 503;
		reply.body = "down for maintenance";
		return reply;
	});
	Dispatcher dispatcher(&client);
	auto deliveries = Deliver(dispatcher, Batches());
	ASSERT_EQ(deliveries.size(), 3u);
	for (const auto &delivery : deliveries) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_FALSE(delivery.attempted) << delivery.error;
		EXPECT_EQ(delivery.error.rfind("salesforce token: ", 0), 0u) << delivery.error;
		EXPECT_GT(delivery.retry_after_ms, 0) << "waits for the breaker";
	}
	EXPECT_EQ(server.RequestsTo(kDataPath).size(), 0u);
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "sf")->state, "backing_off");
}

// ---------------------------------------------------------------------------------------
// Webhooks

TEST_F(DispatcherTest, Webhook410KillsTheChangeAndDisablesTheRoute)
{
	server.On("/hook", [](const ServerRequest &) {
		ServerReply reply;
		reply.status = 410;
		return reply;
	});
	Dispatcher dispatcher(&client);
	// Webhook URLs often carry their credential in the path.
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook/T0KEN-in-path"), "", {{"max_concurrency", 1}}, "wh");
	std::vector<RouteBatch> batches = {
	    MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 3))};
	std::vector<RouteAction> actions;

	auto deliveries = Deliver(dispatcher, batches, DispatchOptions(), Never(), &actions);

	EXPECT_EQ(server.RequestCount(), 1u);
	int dead = 0;
	for (const auto &delivery : deliveries) {
		if (delivery.outcome == Outcome::Dead) {
			dead++;
			EXPECT_TRUE(delivery.attempted);
			EXPECT_EQ(delivery.http_status, 410);
		} else {
			EXPECT_EQ(delivery.outcome, Outcome::Retry);
			EXPECT_FALSE(delivery.attempted);
			EXPECT_NE(delivery.error.find("being disabled"), std::string::npos) << delivery.error;
		}
	}
	EXPECT_EQ(dead, 1);
	ASSERT_EQ(actions.size(), 1u);
	EXPECT_EQ(actions[0].route, "events");
	// The reason is shown in route_status and the log: scheme and host only.
	EXPECT_EQ(actions[0].reason, "webhook endpoint answered 410 Gone at " + server.Url("") + "/\u2026");
	EXPECT_EQ(actions[0].reason.find("T0KEN"), std::string::npos);
	// 410 speaks about one subscription, not about the endpoint's health.
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "wh")->state, "ok");
}

TEST_F(DispatcherTest, WebhookIsSignedAtSendTimeWithAStableId)
{
	server.On("/hook", [](const ServerRequest &) { return ServerReply(); });
	std::atomic<int64_t> now{1700000000123};
	Dispatcher dispatcher(&client, [&] { return now.load(); });
	const std::string secret = "whsec_c3dpdGNoYm9hcmQtZGlzcGF0Y2hlci10ZXN0LWtleSE=";
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), secret, Json::object(), "wh");
	Change change = MakeChange(7, "k7");
	change.occurred_at_ms = 1700000000123 - 3600 * 1000; // captured an hour before sending
	std::vector<RouteBatch> batches = {MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), {change})};

	EXPECT_EQ(Deliver(dispatcher, batches)[0].outcome, Outcome::Delivered);
	now = 1700000100456; // the retry, 100 s later
	EXPECT_EQ(Deliver(dispatcher, batches)[0].outcome, Outcome::Delivered);

	auto requests = server.Requests();
	ASSERT_EQ(requests.size(), 2u);
	const char *expected_timestamps[] = {"1700000000", "1700000100"};
	for (size_t i = 0; i < 2; ++i) {
		const ServerRequest &request = requests[i];
		EXPECT_EQ(request.headers.at("webhook-id"), "ev-7");
		EXPECT_EQ(request.headers.at("webhook-timestamp"), expected_timestamps[i]);
		EXPECT_EQ(request.headers.at("webhook-signature"),
		          StandardWebhookSignature(secret, "ev-7", expected_timestamps[i], request.body));
		Json body = Json::parse(request.body);
		EXPECT_EQ(body["id"], "ev-7");
		EXPECT_EQ(body["timestamp"], IsoTimestampUtc(change.occurred_at_ms));
	}
	EXPECT_EQ(requests[0].body, requests[1].body);
}

// ---------------------------------------------------------------------------------------
// Skipped deletes, shutdown, transport errors

TEST_F(DispatcherTest, DeletesThatAreNotSentAreSkipped)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", HubSpotUpsertOk);
	server.On("/crm/v3/objects/contacts/batch/archive", [](const ServerRequest &) {
		ServerReply reply;
		reply.status = 204;
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	std::vector<RouteBatch> batches = {
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "keep"),
	              {MakeChange(1, "a@x.com"), MakeChange(2, "b@x.com", Op::Delete, "55")}),
	    MakeBatch(hubspot, MakeRoute("contacts", "email", "delete", "mirror"),
	              {MakeChange(3, "c@x.com", Op::Delete), MakeChange(4, "d@x.com", Op::Delete, "77")}),
	};

	auto by_id = ById(Deliver(dispatcher, batches));

	EXPECT_EQ(by_id[1].outcome, Outcome::Delivered);
	EXPECT_EQ(by_id[2].outcome, Outcome::Skipped);
	EXPECT_EQ(by_id[2].error, "delete not sent: on_delete is ignore");
	EXPECT_FALSE(by_id[2].attempted);
	EXPECT_EQ(by_id[3].outcome, Outcome::Skipped);
	EXPECT_EQ(by_id[3].error, "delete not sent: remote id of this key is unknown");
	EXPECT_EQ(by_id[4].outcome, Outcome::Delivered) << by_id[4].error;
	EXPECT_EQ(by_id[4].http_status, 204);
	auto archives = server.RequestsTo("/crm/v3/objects/contacts/batch/archive");
	ASSERT_EQ(archives.size(), 1u);
	EXPECT_EQ(Json::parse(archives[0].body), Json::parse(R"({"inputs":[{"id":"77"}]})"));
	EXPECT_EQ(server.RequestCount(), 2u);
}

TEST_F(DispatcherTest, ShouldStopAbandonsWhatIsInFlightAndDefersTheRest)
{
	server.On("/hook", [](const ServerRequest &) {
		ServerReply reply;
		reply.delay_ms = 3000;
		return reply;
	});
	server.On("/fast", [](const ServerRequest &) { return ServerReply(); });
	Dispatcher dispatcher(&client);
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), "", {{"max_concurrency", 1}}, "wh");
	std::vector<RouteBatch> batches = {
	    MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 4))};
	std::atomic<int> stop_checks{0};
	auto should_stop = [&] {
		stop_checks++;
		return server.RequestCount() >= 1; // the shutdown request comes while the first call is out
	};

	auto start = SteadyClock::now();
	auto deliveries = Deliver(dispatcher, batches, DispatchOptions(), should_stop);
	long elapsed = MsSince(start);

	// The slow answer is not awaited: a shutdown (or a DROP DATABASE) must not wait for it.
	EXPECT_LT(elapsed, 1000);
	EXPECT_GE(stop_checks.load(), 2);
	EXPECT_EQ(server.RequestCount(), 1u);
	EXPECT_EQ(client.InFlight(), 0u);
	for (const auto &delivery : deliveries) {
		// Sent again later, without losing an attempt.
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_FALSE(delivery.attempted);
		EXPECT_NE(delivery.error.find("stopping"), std::string::npos) << delivery.error;
	}
	// The next round on the same client is not confused by the abandoned transfer.
	Endpoint fast = MakeEndpoint("webhook", server.Url("/fast"), "", Json::object(), "fast");
	std::vector<RouteBatch> next = {MakeBatch(fast, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 2))};
	for (const auto &delivery : Deliver(dispatcher, next)) {
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
		EXPECT_EQ(delivery.http_status, 200);
	}
}

TEST_F(DispatcherTest, DroppedConnectionAndTimeoutAreRetriedWithStatusZero)
{
	server.On("/drop", [](const ServerRequest &) {
		ServerReply reply;
		reply.drop = true;
		return reply;
	});
	server.On("/slow", [](const ServerRequest &) {
		ServerReply reply;
		reply.delay_ms = 5000;
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint dropper = MakeEndpoint("webhook", server.Url("/drop"), "", Json::object(), "dropper");
	Endpoint sleeper = MakeEndpoint("webhook", server.Url("/slow"), "", {{"timeout_ms", 300}}, "sleeper");
	std::vector<RouteBatch> batches = {
	    MakeBatch(dropper, MakeRoute("contact", "id", "ignore", "dropped"), {MakeChange(1, "k1")}),
	    MakeBatch(sleeper, MakeRoute("contact", "id", "ignore", "slow"), {MakeChange(2, "k2")}),
	};

	auto start = SteadyClock::now();
	auto by_id = ById(Deliver(dispatcher, batches));
	EXPECT_LT(MsSince(start), 2500);

	for (int64_t id : {1, 2}) {
		const Delivery &delivery = by_id[id];
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_TRUE(delivery.attempted);
		EXPECT_EQ(delivery.http_status, 0);
		EXPECT_NE(delivery.error.find("transport error"), std::string::npos) << delivery.error;
	}
	auto statuses = dispatcher.EndpointStatuses();
	for (const char *name : {"dropper", "sleeper"}) {
		const EndpointStatus *status = StatusOf(statuses, name);
		ASSERT_NE(status, nullptr) << name;
		EXPECT_EQ(status->state, "backing_off") << name;
		EXPECT_EQ(status->errors, 1u) << name;
		EXPECT_FALSE(status->last_error.empty()) << name;
	}
}

TEST_F(DispatcherTest, EmptyInputReturnsNothing)
{
	Dispatcher dispatcher(&client);
	EXPECT_TRUE(Deliver(dispatcher, {}).empty());
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), "", Json::object(), "wh");
	EXPECT_TRUE(Deliver(dispatcher, {MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), {})}).empty());
	EXPECT_EQ(server.RequestCount(), 0u);
}

// ---------------------------------------------------------------------------------------
// Fetch: one request outside a delivery round (pull pages)

// A GET of url signed with the Auth Fetch hands over; Salesforce URLs are relative to the
// token's instance.
std::function<HttpRequest(const Auth &)>
SignedGet(const std::string &url_or_path, bool on_instance = false)
{
	return [url_or_path, on_instance](const Auth &auth) {
		HttpRequest request;
		request.method = "GET";
		request.url = on_instance ? auth.instance_url + url_or_path : url_or_path;
		request.headers.emplace_back("Authorization", "Bearer " + auth.bearer);
		return request;
	};
}

std::function<HttpRequest(const Auth &)>
SignedSearch(const std::string &url)
{
	return [url](const Auth &auth) {
		HttpRequest request;
		request.method = "POST";
		request.url = url;
		request.headers.emplace_back("Authorization", "Bearer " + auth.bearer);
		request.headers.emplace_back("Content-Type", "application/json");
		request.body = R"({"limit":200})";
		return request;
	};
}

// should_stop that turns true after ms.
std::function<bool()>
StopAfter(long ms)
{
	auto until = SteadyClock::now() + std::chrono::milliseconds(ms);
	return [until] { return SteadyClock::now() >= until; };
}

TEST_F(DispatcherTest, FetchSendsWithTheEndpointSecretAndCountsRequests)
{
	server.On("/crm/v3/objects/contacts", [](const ServerRequest &) {
		return JsonReply(200, {{"results", Json::array()}});
	});
	server.On("/crm/v3/objects/nothing", [](const ServerRequest &) {
		return JsonReply(404, {{"message", "no such object"}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	const int64_t before = UnixMsNow();
	Auth seen;
	auto build = [&](const Auth &auth) {
		seen = auth;
		return SignedGet(server.Url("/crm/v3/objects/contacts?archived=true"))(auth);
	};

	HttpResponse response = dispatcher.Fetch(hubspot, build, 5000, 1000, Never());
	EXPECT_EQ(response.status, 200) << response.transport_error;
	EXPECT_EQ(Json::parse(response.body), (Json{{"results", Json::array()}}));
	EXPECT_EQ(seen.bearer, "hs-secret");
	EXPECT_FALSE(seen.masked);
	EXPECT_GE(seen.signed_at_ms, before);
	auto requests = server.Requests();
	ASSERT_EQ(requests.size(), 1u);
	EXPECT_EQ(requests[0].path, "/crm/v3/objects/contacts?archived=true");
	EXPECT_EQ(requests[0].headers.at("authorization"), "Bearer hs-secret");

	// A 4xx is an answer, not an endpoint failure: counted as an error, the breaker stays ok.
	response = dispatcher.Fetch(hubspot, SignedGet(server.Url("/crm/v3/objects/nothing")), 5000, 1000, Never());
	EXPECT_EQ(response.status, 404);
	auto statuses = dispatcher.EndpointStatuses();
	const EndpointStatus *status = StatusOf(statuses, "hs");
	ASSERT_NE(status, nullptr);
	EXPECT_EQ(status->requests, 2u);
	EXPECT_EQ(status->errors, 1u);
	EXPECT_EQ(status->state, "ok");
	EXPECT_EQ(status->last_error.rfind("HTTP 404", 0), 0u) << status->last_error;
	EXPECT_GT(status->last_error_at_ms, 0);
}

TEST_F(DispatcherTest, FetchHonoursTheBreakerWithoutSending)
{
	// A careless server echoes the credential in its error page.
	server.On("/crm/", [](const ServerRequest &request) {
		ServerReply reply;
		reply.status = 503;
		reply.body = "overloaded, your " + request.headers.at("authorization");
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");

	HttpResponse first = dispatcher.Fetch(hubspot, SignedGet(server.Url("/crm/v3/objects/contacts")), 5000, 1000,
	                                      Never());
	EXPECT_EQ(first.status, 503);
	auto started = SteadyClock::now();
	HttpResponse second = dispatcher.Fetch(hubspot, SignedGet(server.Url("/crm/v3/objects/contacts")), 5000, 1000,
	                                       Never());
	EXPECT_LT(MsSince(started), 200) << "a backing-off endpoint is refused at once, not waited for";
	EXPECT_EQ(second.status, 0);
	EXPECT_EQ(second.transport_error.rfind("endpoint hs is backing off: HTTP 503", 0), 0u) << second.transport_error;
	EXPECT_EQ(second.transport_error.find("hs-secret"), std::string::npos) << second.transport_error;
	EXPECT_EQ(server.RequestCount(), 1u);
	EXPECT_GT(dispatcher.EndpointReadyAt("hs"), UnixMsNow());

	auto statuses = dispatcher.EndpointStatuses();
	const EndpointStatus *status = StatusOf(statuses, "hs");
	ASSERT_NE(status, nullptr);
	EXPECT_EQ(status->state, "backing_off");
	EXPECT_EQ(status->requests, 1u);
	EXPECT_EQ(status->errors, 1u);
	EXPECT_NE(status->last_error.find("HTTP 503"), std::string::npos);
	EXPECT_EQ(status->last_error.find("hs-secret"), std::string::npos) << status->last_error;
}

// Four calls in flight together that all fail are one round: one breaker step, a 1 s pause.
TEST_F(DispatcherTest, ConcurrentFailuresAreOneBreakerStep)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", [](const ServerRequest &) {
		ServerReply reply;
		reply.status = 503;
		reply.delay_ms = 50; // all four are in flight before the first answer
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", {{"max_concurrency", 4}}, "hs");
	std::vector<RouteBatch> batches;
	for (int i = 0; i < 4; i++)
		batches.push_back(MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "r" + std::to_string(i)),
		                            MakeChanges(1 + i, 1)));
	const int64_t before = UnixMsNow();
	auto deliveries = Deliver(dispatcher, batches);
	EXPECT_EQ(server.RequestCount(), 4u);
	const std::vector<EndpointStatus> statuses = dispatcher.EndpointStatuses(); // status points into it
	const EndpointStatus *status = StatusOf(statuses, "hs");
	ASSERT_NE(status, nullptr);
	EXPECT_EQ(status->state, "backing_off");
	// One step: 1 s after the failures (four steps would be 8 s).
	EXPECT_LE(status->next_attempt_at_ms, UnixMsNow() + 1000);
	EXPECT_GE(status->next_attempt_at_ms, before + 1000);
	for (const auto &delivery : deliveries) {
		EXPECT_TRUE(delivery.attempted);
		EXPECT_LE(delivery.retry_after_ms, 1000);
	}
}

// A 429 with Retry-After pauses the endpoint for that long; the breaker stays ok and the
// changes come back after the Retry-After, not after a breaker interval.
TEST_F(DispatcherTest, TooManyRequestsWithRetryAfterDoesNotTripTheBreaker)
{
	server.On("/crm/v3/objects/contacts/batch/upsert", [](const ServerRequest &) {
		return JsonReply(429, {{"status", "error"}, {"policyName", "TEN_SECONDLY_ROLLING"}}, {{"Retry-After", "1"}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", {{"max_concurrency", 1}}, "hs");
	for (int round = 0; round < 3; round++) {
		std::vector<RouteBatch> batches = {
		    MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), MakeChanges(1, 2))};
		DispatchOptions options;
		options.max_wait_ms = 0; // one request per round
		std::vector<RouteAction> actions;
		for (const auto &delivery : dispatcher.Deliver(batches, options, nullptr, &actions)) {
			if (delivery.attempted)
				EXPECT_EQ(delivery.retry_after_ms, 1000) << round;
			else
				EXPECT_LE(delivery.retry_after_ms, 1000) << round;
		}
		EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "hs")->state, "ok") << round;
		std::this_thread::sleep_for(std::chrono::milliseconds(1000));
	}
}

TEST_F(DispatcherTest, FetchTooManyRequestsHonoursRetryAfter)
{
	server.On("/crm/", [](const ServerRequest &) {
		return JsonReply(429,
		                 {{"status", "error"},
		                  {"message", "You have reached your secondly limit."},
		                  {"policyName", "TEN_SECONDLY_ROLLING"}},
		                 {{"Retry-After", "3"}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");

	HttpResponse response = dispatcher.Fetch(hubspot, SignedGet(server.Url("/crm/v3/objects/contacts")), 5000, 1000,
	                                         Never());
	EXPECT_EQ(response.status, 429);
	EXPECT_GE(dispatcher.EndpointReadyAt("hs"), UnixMsNow() + 2500);
	response = dispatcher.Fetch(hubspot, SignedGet(server.Url("/crm/v3/objects/contacts")), 5000, 1000, Never());
	EXPECT_EQ(response.status, 0);
	// A 429 with Retry-After pauses the endpoint (its limiter) without escalating the breaker.
	EXPECT_EQ(response.transport_error.rfind("rate limited: a Retry-After pause of endpoint hs", 0), 0u)
	    << response.transport_error;
	EXPECT_EQ(server.RequestCount(), 1u);
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "hs")->state, "ok");
}

TEST_F(DispatcherTest, FetchWaitsForTheRateLimitOrGivesUp)
{
	server.On("/crm/", [](const ServerRequest &) { return JsonReply(200, {{"results", Json::array()}}); });
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", {{"rate_limit", "2/1s"}}, "hs");
	auto get = SignedGet(server.Url("/crm/v3/objects/contacts"));

	EXPECT_EQ(dispatcher.Fetch(hubspot, get, 5000, 3000, Never()).status, 200);
	EXPECT_EQ(dispatcher.Fetch(hubspot, get, 5000, 3000, Never()).status, 200);
	// The next slot is about a second away: more than this caller may wait.
	auto started = SteadyClock::now();
	HttpResponse refused = dispatcher.Fetch(hubspot, get, 5000, 100, Never());
	EXPECT_LT(MsSince(started), 300);
	EXPECT_EQ(refused.status, 0);
	EXPECT_EQ(refused.transport_error.rfind("rate limited: rate limit 2/1s of endpoint hs", 0), 0u)
	    << refused.transport_error;
	EXPECT_EQ(server.RequestCount(), 2u);
	// Stopping while waiting for the slot returns promptly, nothing sent.
	started = SteadyClock::now();
	HttpResponse stopped = dispatcher.Fetch(hubspot, get, 5000, 3000, StopAfter(100));
	EXPECT_LT(MsSince(started), 500);
	EXPECT_EQ(stopped.status, 0);
	EXPECT_NE(stopped.transport_error.find("stopping"), std::string::npos) << stopped.transport_error;
	EXPECT_EQ(server.RequestCount(), 2u);
	// Within its budget the caller waits for the slot.
	EXPECT_EQ(dispatcher.Fetch(hubspot, get, 5000, 3000, Never()).status, 200);
	auto requests = server.Requests();
	ASSERT_EQ(requests.size(), 3u);
	auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(requests[2].at - requests[0].at).count();
	EXPECT_GE(gap, 950) << "never more than 2 requests in any second";
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "hs")->requests, 3u);
}

TEST_F(DispatcherTest, FetchPacesHubSpotSearchesButNotOtherRequests)
{
	server.On("/crm/", [](const ServerRequest &) { return JsonReply(200, {{"results", Json::array()}}); });
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");

	auto started = SteadyClock::now();
	for (int i = 0; i < 5; ++i)
		EXPECT_EQ(dispatcher
		              .Fetch(hubspot, SignedGet(server.Url("/crm/v3/objects/contacts?archived=true")), 5000, 3000,
		                     Never())
		              .status,
		          200);
	EXPECT_LT(MsSince(started), 800) << "listing requests are not search requests";

	started = SteadyClock::now();
	for (int i = 0; i < 5; ++i)
		EXPECT_EQ(dispatcher
		              .Fetch(hubspot, SignedSearch(server.Url("/crm/v3/objects/contacts/search")), 5000, 3000, Never())
		              .status,
		          200);
	EXPECT_GE(MsSince(started), 950);
	auto searches = server.RequestsTo("/crm/v3/objects/contacts/search");
	ASSERT_EQ(searches.size(), 5u);
	auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(searches[4].at - searches[0].at).count();
	EXPECT_GE(gap, 950) << "at most 4 searches in any second";

	// Over budget: refused with the reason, nothing sent.
	HttpResponse refused = dispatcher.Fetch(hubspot, SignedSearch(server.Url("/crm/v3/objects/contacts/search")), 5000,
	                                        50, Never());
	HttpResponse again = dispatcher.Fetch(hubspot, SignedSearch(server.Url("/crm/v3/objects/contacts/search")), 5000,
	                                      50, Never());
	HttpResponse third = dispatcher.Fetch(hubspot, SignedSearch(server.Url("/crm/v3/objects/contacts/search")), 5000,
	                                      50, Never());
	HttpResponse fourth = dispatcher.Fetch(hubspot, SignedSearch(server.Url("/crm/v3/objects/contacts/search")), 5000,
	                                       50, Never());
	int refusals = 0;
	for (const auto *response : {&refused, &again, &third, &fourth}) {
		if (response->status == 0) {
			++refusals;
			EXPECT_EQ(response->transport_error.rfind("rate limited: the HubSpot search limit (4/s) of endpoint hs", 0),
			          0u)
			    << response->transport_error;
		}
	}
	EXPECT_GE(refusals, 1);
	EXPECT_EQ(server.RequestsTo("/crm/v3/objects/contacts/search").size(), 5u + 4u - static_cast<size_t>(refusals));
}

TEST_F(DispatcherTest, FetchShouldStopAbandonsTheRequestAndLaterCallsIgnoreItsAnswer)
{
	server.On("/slow", [](const ServerRequest &) {
		ServerReply reply = JsonReply(200, {{"from", "slow"}});
		reply.delay_ms = 400;
		return reply;
	});
	server.On("/fast", [](const ServerRequest &) {
		ServerReply reply = JsonReply(200, {{"from", "fast"}});
		reply.delay_ms = 700; // the abandoned answer arrives meanwhile
		return reply;
	});
	server.On("/crm/v3/objects/contacts/batch/upsert", HubSpotUpsertOk);
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");

	auto started = SteadyClock::now();
	HttpResponse abandoned = dispatcher.Fetch(hubspot, SignedGet(server.Url("/slow")), 5000, 1000, StopAfter(100));
	EXPECT_LT(MsSince(started), 350);
	EXPECT_EQ(abandoned.status, 0);
	EXPECT_NE(abandoned.transport_error.find("stopping"), std::string::npos) << abandoned.transport_error;

	HttpResponse fast = dispatcher.Fetch(hubspot, SignedGet(server.Url("/fast")), 5000, 1000, Never());
	EXPECT_EQ(fast.status, 200);
	EXPECT_EQ(Json::parse(fast.body)["from"], "fast");

	HttpResponse not_sent = dispatcher.Fetch(hubspot, SignedGet(server.Url("/fast")), 5000, 1000, [] { return true; });
	EXPECT_EQ(not_sent.status, 0);
	EXPECT_EQ(server.RequestsTo("/fast").size(), 1u);

	// Deliver on the same client is unaffected.
	for (const auto &delivery :
	     Deliver(dispatcher,
	             {MakeBatch(hubspot, MakeRoute("contacts", "email", "ignore", "contacts"), MakeChanges(1, 2))}))
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
}

TEST_F(DispatcherSalesforceTest, FetchUsesTheCachedTokenAndItsInstance)
{
	ServeTokens();
	server.On("/inst/services/data/v59.0/query", [](const ServerRequest &) {
		return JsonReply(200, {{"totalSize", 0}, {"done", true}, {"records", Json::array()}});
	});
	server.On(kDataPath, SalesforceUpsertOk);
	Dispatcher dispatcher(&client);
	Endpoint salesforce = SalesforceEndpoint();

	for (int i = 0; i < 2; ++i) {
		HttpResponse response = dispatcher.Fetch(salesforce,
		                                         SignedGet("/services/data/v59.0/query?q=SELECT+Id+FROM+Contact", true),
		                                         5000, 1000, Never());
		EXPECT_EQ(response.status, 200) << response.transport_error;
	}
	// Deliver shares the token.
	for (const auto &delivery : Deliver(dispatcher, Batches()))
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;

	EXPECT_EQ(server.RequestsTo("/login/services/oauth2/token").size(), 1u);
	auto queries = server.RequestsTo("/inst/services/data/v59.0/query");
	ASSERT_EQ(queries.size(), 2u);
	for (const auto &request : queries)
		EXPECT_EQ(request.headers.at("authorization"), "Bearer tok-1");
	EXPECT_EQ(server.RequestsTo(kDataPath).at(0).headers.at("authorization"), "Bearer tok-1");
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "sf")->requests, 4u);
}

TEST_F(DispatcherSalesforceTest, FetchRefreshesTheTokenOnceOnInvalidSession)
{
	ServeTokens();
	server.On("/inst/services/data/v59.0/query", [](const ServerRequest &request) {
		if (request.headers.at("authorization") == "Bearer tok-1")
			return JsonReply(401, Json::array({{{"message", "Session expired or invalid"},
			                                    {"errorCode", "INVALID_SESSION_ID"}}}));
		return JsonReply(200, {{"done", true}, {"records", Json::array()}});
	});
	Dispatcher dispatcher(&client);

	HttpResponse response = dispatcher.Fetch(SalesforceEndpoint(), SignedGet("/services/data/v59.0/query?q=x", true),
	                                         5000, 1000, Never());
	EXPECT_EQ(response.status, 200) << response.body;
	EXPECT_EQ(server.RequestsTo("/login/").size(), 2u);
	auto queries = server.RequestsTo("/inst/services/data/v59.0/query");
	ASSERT_EQ(queries.size(), 2u);
	EXPECT_EQ(queries[1].headers.at("authorization"), "Bearer tok-2");
	const std::vector<EndpointStatus> statuses = dispatcher.EndpointStatuses(); // status points into it
	const EndpointStatus *status = StatusOf(statuses, "sf");
	EXPECT_EQ(status->requests, 4u);
	EXPECT_EQ(status->errors, 1u); // the 401
	EXPECT_EQ(status->state, "ok");
	EXPECT_EQ(status->last_error.find("tok-1"), std::string::npos);
}

TEST_F(DispatcherSalesforceTest, FetchInvalidSessionAfterRefreshIsReturned)
{
	ServeTokens();
	server.On("/inst/services/data/v59.0/query", [](const ServerRequest &) {
		return JsonReply(401, Json::array(
		                          {{{"message", "Session expired or invalid"}, {"errorCode", "INVALID_SESSION_ID"}}}));
	});
	Dispatcher dispatcher(&client);

	HttpResponse response = dispatcher.Fetch(SalesforceEndpoint(), SignedGet("/services/data/v59.0/query?q=x", true),
	                                         5000, 1000, Never());
	EXPECT_EQ(response.status, 401);
	EXPECT_NE(response.body.find("INVALID_SESSION_ID"), std::string::npos);
	// Exactly one refresh and one resend, never a loop.
	EXPECT_EQ(server.RequestsTo("/login/").size(), 2u);
	EXPECT_EQ(server.RequestsTo("/inst/").size(), 2u);
}

TEST_F(DispatcherSalesforceTest, FetchTokenFailureIsStatusZeroWithoutTheSecret)
{
	server.On("/login/services/oauth2/token", [](const ServerRequest &request) {
		ServerReply reply;
		reply.status = 400;
		reply.body = "bad request: " + request.body;
		return reply;
	});
	Dispatcher dispatcher(&client);

	HttpResponse response = dispatcher.Fetch(SalesforceEndpoint(), SignedGet("/services/data/v59.0/query?q=x", true),
	                                         5000, 1000, Never());
	EXPECT_EQ(response.status, 0);
	EXPECT_EQ(response.transport_error.rfind("salesforce token: ", 0), 0u) << response.transport_error;
	EXPECT_NE(response.transport_error.find("HTTP 400"), std::string::npos) << response.transport_error;
	EXPECT_EQ(response.transport_error.find("s3cr3t-value"), std::string::npos) << response.transport_error;
	EXPECT_EQ(server.RequestsTo("/inst/").size(), 0u);

	// The endpoint backs off: the next Fetch does not even ask for a token.
	HttpResponse again = dispatcher.Fetch(SalesforceEndpoint(), SignedGet("/services/data/v59.0/query?q=x", true), 5000,
	                                      1000, Never());
	EXPECT_EQ(again.transport_error.rfind("endpoint sf is backing off: salesforce token: ", 0), 0u)
	    << again.transport_error;
	EXPECT_EQ(again.transport_error.find("s3cr3t-value"), std::string::npos);
	EXPECT_EQ(server.RequestsTo("/login/").size(), 1u);
	const std::vector<EndpointStatus> statuses = dispatcher.EndpointStatuses(); // status points into it
	const EndpointStatus *status = StatusOf(statuses, "sf");
	EXPECT_EQ(status->state, "backing_off");
	EXPECT_EQ(status->requests, 1u);
	EXPECT_EQ(status->errors, 1u);
	EXPECT_EQ(status->last_error.find("s3cr3t-value"), std::string::npos);
	EXPECT_EQ(dispatcher.RedactSecrets(SalesforceEndpoint(), "client_secret=s3cr3t-value"), "client_secret=****");
	EXPECT_EQ(dispatcher.RedactSecrets(SalesforceEndpoint(), ""), "");
}

TEST_F(DispatcherTest, FetchPullsAHubSpotSearchPageByPage)
{
	// Two pages of a search, then the cursor rests after the newest record. The second is a new
	// search from the newest time of the first (keyset, never HubSpot's offset), which reads the
	// records stamped with that time again.
	auto record = [](const char *id, const char *email, const char *ms) {
		return Json{{"id", id}, {"properties", {{"email", email}, {"lastmodifieddate", ms}}}};
	};
	server.On("/crm/v3/objects/contacts/search", [&](const ServerRequest &request) {
		Json body = Json::parse(request.body);
		bool second = body["filterGroups"][0]["filters"][0]["value"] != "0";
		if (!second)
			return JsonReply(200, Json{{"results", Json::array({record("1", "a@x.io", "1795514400100"),
			                                                    record("3", "c@x.io", "1795514400150")})},
			                           {"paging", {{"next", {{"after", "1"}}}}}});
		return JsonReply(200, Json{{"results", Json::array({record("3", "c@x.io", "1795514400150"),
		                                                    record("2", "b@x.io", "1795514400200")})}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	Route route = MakeRoute("contacts", "email", "ignore", "contacts");

	PullCursor cursor = InitialPullCursor("hubspot");
	std::vector<std::string> keys;
	for (int page_number = 0; page_number < 5; ++page_number) {
		HttpResponse response = dispatcher.Fetch(
		    hubspot,
		    [&](const Auth &auth) {
			    return BuildPullRequest(hubspot, route, {"firstname"}, PullPhase::Changes, cursor, auth);
		    },
		    5000, 3000, Never());
		PullPage page = ParsePullResponse(hubspot, route, PullPhase::Changes, cursor, response);
		for (const auto &record : page.records)
			keys.push_back(record.key);
		cursor = page.next;
		if (!page.more)
			break;
	}
	EXPECT_EQ(keys, (std::vector<std::string>{"a@x.io", "c@x.io", "c@x.io", "b@x.io"}));
	EXPECT_EQ(cursor.since, "1795514400200");
	EXPECT_EQ(cursor.after, "");
	auto searches = server.RequestsTo("/crm/v3/objects/contacts/search");
	ASSERT_EQ(searches.size(), 2u);
	EXPECT_EQ(searches[0].headers.at("authorization"), "Bearer hs-secret");
	Json second = Json::parse(searches[1].body);
	EXPECT_FALSE(second.contains("after"));
	// Past the first page's newest time, or at it and not the record read at it.
	EXPECT_EQ(second["filterGroups"][0]["filters"][0],
	          (Json{{"propertyName", "lastmodifieddate"}, {"operator", "GT"}, {"value", "1795514400150"}}));
	EXPECT_EQ(second["filterGroups"][1]["filters"][1]["operator"], "NOT_IN");
}

// ---------------------------------------------------------------------------------------
// Redirects, masking, allowed_hosts (issue 7)

TEST_F(DispatcherTest, WebhookRedirectToAnotherHostIsNotFollowedAndFails)
{
	ScriptedServer other;
	other.On("/", [](const ServerRequest &) { return JsonReply(200, Json::object()); });
	server.On("/hook", [&other](const ServerRequest &) {
		ServerReply reply;
		reply.status = 302;
		reply.headers.emplace_back("Location", other.Url("/collect?stolen=1"));
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	                                Json::object(), "wh");
	std::vector<RouteBatch> batches = {
	    MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 2))};

	for (const auto &delivery : Deliver(dispatcher, batches)) {
		EXPECT_NE(delivery.outcome, Outcome::Delivered);
		EXPECT_EQ(delivery.http_status, 302);
		EXPECT_NE(delivery.error.find("302"), std::string::npos) << delivery.error;
	}
	EXPECT_EQ(server.RequestCount(), 2u);
	EXPECT_EQ(other.RequestCount(), 0u) << "the redirect target got a request";
}

TEST_F(DispatcherTest, EchoedCredentialsAndUrlsInErrorsAreMasked)
{
	server.On("/hook", [](const ServerRequest &) {
		ServerReply reply;
		reply.status = 400;
		reply.body = R"({"error":"rejected","echo":{"headers":{"authorization":"Bearer foreign-token-123"},)"
		             R"("access_token":"leak-access","password":"leak-pw","client_secret":"leak-cs"},)"
		             R"("see":"https://internal.example/private/path?key=leak-key"})";
		return reply;
	});
	Dispatcher dispatcher(&client);
	Endpoint webhook = MakeEndpoint("webhook", server.Url("/hook"), "", Json::object(), "wh");
	std::vector<RouteBatch> batches = {
	    MakeBatch(webhook, MakeRoute("contact", "id", "ignore", "events"), MakeChanges(1, 1))};

	auto deliveries = Deliver(dispatcher, batches);
	ASSERT_EQ(deliveries.size(), 1u);
	const std::vector<EndpointStatus> statuses = dispatcher.EndpointStatuses(); // status points into it
	const EndpointStatus *status = StatusOf(statuses, "wh");
	ASSERT_NE(status, nullptr);
	for (const std::string &text : {deliveries[0].error, status->last_error}) {
		EXPECT_NE(text.find("HTTP 400"), std::string::npos) << text;
		for (const char *leak : {"foreign-token-123", "leak-access", "leak-pw", "leak-cs", "private/path", "leak-key"})
			EXPECT_EQ(text.find(leak), std::string::npos) << leak << " in " << text;
		EXPECT_NE(text.find("https://internal.example/"), std::string::npos) << text;
	}
}

TEST_F(DispatcherTest, FetchErrorBodyIsMasked)
{
	server.On("/crm/", [](const ServerRequest &) {
		return JsonReply(500, {{"message", "oops"}, {"access_token", "leak-access"}});
	});
	Dispatcher dispatcher(&client);
	Endpoint hubspot = MakeEndpoint("hubspot", server.Url(""), "hs-secret", Json::object(), "hs");
	HttpResponse response = dispatcher.Fetch(
	    hubspot,
	    [&](const Auth &) {
		    return HttpRequest{"GET", server.Url("/crm/v3/objects/contacts"), {}, ""};
	    },
	    5000, 1000, Never());
	EXPECT_EQ(response.status, 500);
	const std::string last_error = StatusOf(dispatcher.EndpointStatuses(), "hs")->last_error;
	EXPECT_EQ(last_error.find("leak-access"), std::string::npos) << last_error;
}

class DispatcherInstanceUrlTest : public DispatcherTest {
protected:
	const std::string kSecret = R"({"client_id":"cid-1","client_secret":"s3cr3t-value"})";

	// allowed_hosts lets the login host through; "evil.test" resolves to the same test server,
	// so a request that ignored the policy would show up there.
	HttpClient Policed(const std::string &allowed)
	{
		HttpClientOptions options;
		options.allowed_hosts = allowed;
		options.resolve = {"evil.test:" + Port() + ":127.0.0.1", "sf.example.com:" + Port() + ":127.0.0.1"};
		return HttpClient(options);
	}
	std::string Port() { return server.Url("").substr(std::string("http://127.0.0.1:").size()); }
	Endpoint Salesforce() { return MakeEndpoint("salesforce", server.Url("/login"), kSecret, Json::object(), "sf"); }
	void ServeToken(const std::string &instance_url)
	{
		server.On("/login/services/oauth2/token", [instance_url](const ServerRequest &) {
			return JsonReply(200, {{"access_token", "tok-live"}, {"instance_url", instance_url}});
		});
		server.On("/inst/", SalesforceUpsertOk);
	}
};

TEST_F(DispatcherInstanceUrlTest, InstanceOutsideAllowedHostsIsATokenFailure)
{
	ServeToken("http://evil.test:" + Port() + "/inst");
	HttpClient policed = Policed("127.0.0.1");
	Dispatcher dispatcher(&policed);
	std::vector<RouteBatch> batches = {
	    MakeBatch(Salesforce(), MakeRoute("Contact", "Email__c", "ignore", "c"), MakeChanges(1, 2))};
	std::vector<RouteAction> ignored;
	auto deliveries = dispatcher.Deliver(batches, DispatchOptions(), Never(), &ignored);
	ExpectOnePerChange(batches, deliveries);
	for (const auto &delivery : deliveries) {
		EXPECT_EQ(delivery.outcome, Outcome::Retry);
		EXPECT_EQ(delivery.error.rfind("salesforce token: ", 0), 0u) << delivery.error;
		EXPECT_NE(delivery.error.find("instance_url"), std::string::npos) << delivery.error;
		EXPECT_NE(delivery.error.find("allowed_hosts"), std::string::npos) << delivery.error;
		EXPECT_EQ(delivery.error.find("tok-live"), std::string::npos) << delivery.error;
	}
	EXPECT_EQ(server.RequestsTo("/inst/").size(), 0u);
	EXPECT_EQ(StatusOf(dispatcher.EndpointStatuses(), "sf")->state, "backing_off");

	Dispatcher fetcher(&policed);
	HttpResponse response = fetcher.Fetch(
	    Salesforce(),
	    [&](const Auth &auth) {
		    return HttpRequest{"GET", auth.instance_url + "/inst/q", {}, ""};
	    },
	    5000, 1000, Never());
	EXPECT_EQ(response.status, 0);
	EXPECT_NE(response.transport_error.find("instance_url"), std::string::npos) << response.transport_error;
	EXPECT_EQ(server.RequestsTo("/inst/").size(), 0u);
}

TEST_F(DispatcherInstanceUrlTest, InstanceMustBeHttpsUnlessLoopback)
{
	ServeToken("http://sf.example.com:" + Port() + "/inst");
	HttpClient policed = Policed("*");
	Dispatcher dispatcher(&policed);
	std::vector<RouteBatch> batches = {
	    MakeBatch(Salesforce(), MakeRoute("Contact", "Email__c", "ignore", "c"), MakeChanges(1, 1))};
	std::vector<RouteAction> ignored;
	auto deliveries = dispatcher.Deliver(batches, DispatchOptions(), Never(), &ignored);
	ASSERT_EQ(deliveries.size(), 1u);
	EXPECT_NE(deliveries[0].error.find("https"), std::string::npos) << deliveries[0].error;
	EXPECT_EQ(server.RequestsTo("/inst/").size(), 0u);
}

TEST_F(DispatcherInstanceUrlTest, LoopbackInstanceInsideAllowedHostsIsUsed)
{
	ServeToken(server.Url("/inst"));
	HttpClient policed = Policed("127.0.0.1");
	Dispatcher dispatcher(&policed);
	std::vector<RouteBatch> batches = {
	    MakeBatch(Salesforce(), MakeRoute("Contact", "Email__c", "ignore", "c"), MakeChanges(1, 1))};
	std::vector<RouteAction> ignored;
	for (const auto &delivery : dispatcher.Deliver(batches, DispatchOptions(), Never(), &ignored))
		EXPECT_EQ(delivery.outcome, Outcome::Delivered) << delivery.error;
	EXPECT_EQ(server.RequestsTo("/inst/").size(), 1u);
}

} // namespace
} // namespace switchboard
