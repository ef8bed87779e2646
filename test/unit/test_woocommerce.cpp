// Unit tests for the WooCommerce connector (connectors/woocommerce.cpp), server-free: batch
// requests byte for byte (create / update / delete, the key under match_remote, Basic auth,
// masking, 100 objects a call), every answer shape (all good, per-object errors in each list,
// a short answer, an unreadable one, the error format, 401, 429, 5xx, transport errors), and
// the pull: request, page walking by X-WP-TotalPages, the cursor, malformed answers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "connectors/connector.h"
#include "connectors/crypto.h"
#include "connectors/pull.h"
#include "fixtures.h"

namespace switchboard {
namespace {

using namespace test_support;

const char kSecret[] = R"({"consumer_key":"ck_KEY","consumer_secret":"cs_SECRET"})";

std::string
ExpectedBasic()
{
	return "Basic " + Base64Encode("ck_KEY:cs_SECRET");
}

Auth
SecretAuth(bool masked = false)
{
	Auth auth;
	auth.bearer = masked ? "****" : kSecret;
	auth.masked = masked;
	return auth;
}

Endpoint
Shop(Json options = Json::object())
{
	return MakeEndpoint("woocommerce", "https://shop.example/", kSecret, std::move(options));
}

Change
MakeChange(int64_t id, Op op, const std::string &key, Json fields, const std::string &remote_id = "")
{
	Change change;
	change.id = id;
	change.op = op;
	change.key = key;
	change.fields = std::move(fields);
	change.remote_id = remote_id;
	change.event_id = "ev" + std::to_string(id);
	return change;
}

std::vector<Change>
MixedChanges()
{
	return {MakeChange(1, Op::Insert, "a@x.io", {{"first_name", "Ann"}}),
	        MakeChange(2, Op::Update, "b@x.io", {{"first_name", "Bob"}, {"id", 999}}, "17"),
	        MakeChange(3, Op::Delete, "c@x.io", Json::object(), "18"),
	        MakeChange(4, Op::Delete, "d@x.io", Json::object()), // no remote id: skipped
	        MakeChange(5, Op::Insert, "e@x.io", {{"first_name", "Eve"}, {"email", "E@x.io"}})};
}

const Connector &
Woo()
{
	static std::unique_ptr<Connector> connector = MakeConnector("woocommerce");
	return *connector;
}

// ---- push: requests -----------------------------------------------------------------------

TEST(WooCommercePushTest, BatchRequestByteForByte)
{
	Route route = MakeRoute("customers", "email", "delete");
	std::vector<Change> changes = MixedChanges();
	std::vector<Call> calls = Woo().BuildCalls(Shop(), route, changes, SecretAuth());
	ASSERT_EQ(calls.size(), 1u);
	const HttpRequest &request = calls[0].request;
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://shop.example/wp-json/wc/v3/customers/batch");
	EXPECT_EQ(HeaderValue(request.headers, "authorization"), ExpectedBasic());
	EXPECT_EQ(HeaderValue(request.headers, "content-type"), "application/json");
	EXPECT_EQ(request.body,
	          R"({"create":[{"first_name":"Ann","email":"a@x.io"},{"email":"E@x.io","first_name":"Eve"}],)"
	          R"("update":[{"id":17,"first_name":"Bob","email":"b@x.io"}],"delete":[18]})");
	// Request order: creates, updates, deletes; change 4 (a delete without remote id) is skipped.
	EXPECT_EQ(calls[0].changes, (std::vector<size_t>{0, 4, 1, 2}));
	EXPECT_EQ(SkippedChanges(changes, calls), (std::vector<size_t>{3}));
}

TEST(WooCommercePushTest, DeletesNeedOnDeleteDeleteAndIdAsKeyIsNotRepeated)
{
	Route route = MakeRoute("products", "id");
	std::vector<Call> calls = Woo().BuildCalls(Shop(), route, MixedChanges(), SecretAuth());
	ASSERT_EQ(calls.size(), 1u);
	EXPECT_EQ(calls[0].request.body.find("delete"), std::string::npos);
	EXPECT_EQ(calls[0].request.body.find("a@x.io"), std::string::npos);
	EXPECT_EQ(calls[0].request.url, "https://shop.example/wp-json/wc/v3/products/batch");
}

TEST(WooCommercePushTest, AtMostOneHundredObjectsPerCall)
{
	std::vector<Change> changes;
	for (int i = 0; i < 250; ++i)
		changes.push_back(MakeChange(i + 1, Op::Insert, "k" + std::to_string(i), {{"name", "p"}}));
	std::vector<Call> calls = Woo().BuildCalls(Shop(), MakeRoute("products", "sku"), changes, SecretAuth());
	ASSERT_EQ(calls.size(), 3u);
	EXPECT_EQ(calls[0].changes.size(), 100u);
	EXPECT_EQ(calls[2].changes.size(), 50u);
	EXPECT_EQ(Woo().BulkLimit(), 100u);
	std::vector<Call> small = Woo().BuildCalls(Shop({{"batch_size", 10}}), MakeRoute("products", "sku"), changes,
	                                           SecretAuth());
	EXPECT_EQ(small.size(), 25u);
	EXPECT_NO_THROW(ValidateOptions("woocommerce", {{"batch_size", 100}}));
	EXPECT_THROW(ValidateOptions("woocommerce", {{"batch_size", 101}}), std::invalid_argument);
}

TEST(WooCommercePushTest, MaskedCallsCarryNoSecretAndABadSecretIsNamedNotQuoted)
{
	std::vector<Call> calls = Woo().BuildCalls(Shop(), MakeRoute("customers", "email"), MixedChanges(),
	                                           SecretAuth(true));
	ASSERT_EQ(calls.size(), 1u);
	EXPECT_EQ(HeaderValue(calls[0].request.headers, "authorization"), "Basic ****");
	std::string wire = WireText(calls[0].request);
	EXPECT_EQ(wire.find("cs_SECRET"), std::string::npos);
	EXPECT_EQ(wire.find(Base64Encode("ck_KEY:cs_SECRET")), std::string::npos);
	Auth bad;
	bad.bearer = "ck_plain:cs_leaked";
	std::string message = ExpectThrows<std::invalid_argument>(
	    [&] { Woo().BuildCalls(Shop(), MakeRoute("customers", "email"), MixedChanges(), bad); });
	EXPECT_NE(message.find("consumer_key"), std::string::npos);
	EXPECT_EQ(message.find("cs_leaked"), std::string::npos);
}

// ---- push: answers ------------------------------------------------------------------------

std::vector<Call>
MixedCalls(std::vector<Change> *changes)
{
	*changes = MixedChanges();
	return Woo().BuildCalls(Shop(), MakeRoute("customers", "email", "delete"), *changes, SecretAuth());
}

TEST(WooCommerceResultTest, EveryObjectDeliveredWithItsRemoteId)
{
	std::vector<Change> changes;
	std::vector<Call> calls = MixedCalls(&changes);
	CallResult result = Woo().ParseResult(
	    calls[0], changes,
	    Answer(200, R"({"create":[{"id":31,"email":"a@x.io"},{"id":32}],"update":[{"id":17}],"delete":[{"id":18}]})"));
	ASSERT_EQ(result.results.size(), 4u);
	for (const auto &r : result.results)
		EXPECT_EQ(r.outcome, Outcome::Delivered) << r.error;
	EXPECT_EQ(result.results[0].remote_id, "31");
	EXPECT_EQ(result.results[1].remote_id, "32");
	EXPECT_EQ(result.results[2].remote_id, "17");
	EXPECT_EQ(result.results[3].remote_id, "18");
	EXPECT_FALSE(result.endpoint_failure);
	EXPECT_EQ(result.http_status, 200);
}

TEST(WooCommerceResultTest, PerObjectErrorsAreDeadTheOthersDelivered)
{
	std::vector<Change> changes;
	std::vector<Call> calls = MixedCalls(&changes);
	CallResult result = Woo().ParseResult(
	    calls[0], changes,
	    Answer(
	        200,
	        R"({"create":[{"id":0,"error":{"code":"registration-error-email-exists","message":"An account is already registered with your email address.","data":{"status":400}}},{"id":32}],)"
	        R"("update":[{"id":17,"error":{"code":"woocommerce_rest_invalid_id","message":"Invalid ID."}}],"delete":[{"id":18}]})"));
	ASSERT_EQ(result.results.size(), 4u);
	EXPECT_EQ(result.results[0].outcome, Outcome::Dead);
	EXPECT_EQ(result.results[0].error,
	          "registration-error-email-exists: An account is already registered with your email address.");
	EXPECT_EQ(result.results[1].outcome, Outcome::Delivered);
	EXPECT_EQ(result.results[2].outcome, Outcome::Dead);
	EXPECT_EQ(result.results[2].error, "woocommerce_rest_invalid_id: Invalid ID.");
	EXPECT_EQ(result.results[3].outcome, Outcome::Delivered);
}

TEST(WooCommerceResultTest, ShortOrUnreadableAnswersAreRetried)
{
	std::vector<Change> changes;
	std::vector<Call> calls = MixedCalls(&changes);
	CallResult short_answer = Woo().ParseResult(calls[0], changes,
	                                            Answer(200, R"({"create":[{"id":31}],"update":[{"id":17}]})"));
	EXPECT_EQ(short_answer.results[0].outcome, Outcome::Delivered);
	EXPECT_EQ(short_answer.results[1].outcome, Outcome::Retry);
	EXPECT_EQ(short_answer.results[2].outcome, Outcome::Delivered);
	EXPECT_EQ(short_answer.results[3].outcome, Outcome::Retry);
	EXPECT_NE(short_answer.results[3].error.find("no delete result"), std::string::npos);
	for (const char *body : {"", "<html>", "[]", R"({"create":"x"})"}) {
		CallResult result = Woo().ParseResult(calls[0], changes, Answer(200, body));
		ASSERT_EQ(result.results.size(), 4u) << body;
		EXPECT_EQ(result.results[1].outcome, Outcome::Retry) << body;
	}
}

TEST(WooCommerceResultTest, CallLevelAnswers)
{
	std::vector<Change> changes;
	std::vector<Call> calls = MixedCalls(&changes);
	CallResult unauthorized = Woo().ParseResult(
	    calls[0], changes,
	    Answer(
	        401,
	        R"({"code":"woocommerce_rest_cannot_create","message":"Sorry, you are not allowed to create resources.","data":{"status":401}})"));
	EXPECT_EQ(unauthorized.results[0].outcome, Outcome::Dead);
	EXPECT_EQ(unauthorized.results[0].error, "authentication failed: HTTP 401 woocommerce_rest_cannot_create: Sorry, "
	                                         "you are not allowed to create resources.");
	EXPECT_FALSE(unauthorized.split);

	CallResult bad = Woo().ParseResult(
	    calls[0], changes, Answer(400, R"({"code":"rest_invalid_param","message":"Invalid parameter(s): create"})"));
	EXPECT_EQ(bad.results[2].outcome, Outcome::Dead);
	EXPECT_TRUE(bad.split);
	EXPECT_EQ(bad.results[2].error, "HTTP 400 rest_invalid_param: Invalid parameter(s): create");

	CallResult busy = Woo().ParseResult(calls[0], changes, Answer(429, "slow down", {{"retry-after", "7"}}));
	EXPECT_EQ(busy.results[0].outcome, Outcome::Retry);
	EXPECT_EQ(busy.results[0].retry_after_ms, 7000);
	EXPECT_TRUE(busy.endpoint_failure);

	CallResult down = Woo().ParseResult(calls[0], changes, Answer(503, ""));
	EXPECT_EQ(down.results[3].outcome, Outcome::Retry);
	EXPECT_EQ(down.results[3].error, "HTTP 503");
	EXPECT_TRUE(down.endpoint_failure);

	HttpResponse dropped;
	dropped.transport_error = "Connection refused";
	CallResult transport = Woo().ParseResult(calls[0], changes, dropped);
	EXPECT_EQ(transport.results[0].outcome, Outcome::Retry);
	EXPECT_EQ(transport.results[0].error, "transport error: Connection refused");
	EXPECT_TRUE(transport.endpoint_failure);
}

// ---- pull ---------------------------------------------------------------------------------

TEST(WooCommercePullTest, RequestByteForByte)
{
	PullCursor cursor = InitialPullCursor("woocommerce");
	EXPECT_EQ(cursor.since, "1970-01-01T00:00:00");
	EXPECT_TRUE(CanPull("woocommerce"));
	HttpRequest request = BuildPullRequest(Shop(), MakeRoute("orders", "id"), {"status"}, PullPhase::Changes, cursor,
	                                       SecretAuth());
	EXPECT_EQ(request.method, "GET");
	EXPECT_EQ(request.url, "https://shop.example/wp-json/wc/v3/orders?modified_after=1970-01-01T00%3A00%3A00"
	                       "&dates_are_gmt=true&orderby=modified&order=asc&per_page=100&page=1");
	EXPECT_EQ(HeaderValue(request.headers, "Authorization"), ExpectedBasic());
	HttpRequest next = BuildPullRequest(Shop(), MakeRoute("coupons", "code"), {}, PullPhase::Deletions,
	                                    PullCursor{"2026-11-24T10:00:00", "3"}, SecretAuth(true));
	EXPECT_EQ(next.url, "https://shop.example/wp-json/wc/v3/coupons?modified_after=2026-11-24T10%3A00%3A00"
	                    "&dates_are_gmt=true&orderby=modified&order=asc&per_page=100&page=3&status=trash");
	EXPECT_EQ(HeaderValue(next.headers, "Authorization"), "Basic ****");
	for (const PullCursor &bad : {PullCursor{"yesterday", ""}, PullCursor{"2026-11-24T10:00:00Z&x=1", ""},
	                              PullCursor{"2026-11-24T10:00:00", "x"}, PullCursor{"2026-11-24T10:00:00", "0"}})
		ExpectThrows<std::invalid_argument>(
		    [&] { BuildPullRequest(Shop(), MakeRoute("orders", "id"), {}, PullPhase::Changes, bad, SecretAuth()); });
}

TEST(WooCommercePullTest, PagesAreWalkedThenTheCursorMovesToTheNewest)
{
	Route route = MakeRoute("orders", "number");
	PullCursor cursor{"2026-11-24T09:00:00", ""};
	const char *body = R"([{"id":5,"number":"1005","date_modified_gmt":"2026-11-24T10:00:00","status":"processing"},
	                       {"id":6,"number":"1006","date_modified_gmt":"2026-11-24T10:00:02"}])";
	PullPage first = ParsePullResponse(Shop(), route, PullPhase::Changes, cursor,
	                                   Answer(200, body, {{"x-wp-totalpages", "2"}, {"x-wp-total", "4"}}));
	ASSERT_EQ(first.records.size(), 2u);
	EXPECT_EQ(first.records[0].remote_id, "5");
	EXPECT_EQ(first.records[0].key, "1005");
	EXPECT_EQ(first.records[0].fields["status"], "processing");
	EXPECT_EQ(first.records[0].modified_ms, 1795514400000);
	EXPECT_TRUE(first.more);
	EXPECT_EQ(first.next.since, "2026-11-24T09:00:00");
	EXPECT_EQ(first.next.after, "2");

	PullPage last = ParsePullResponse(Shop(), route, PullPhase::Changes, first.next,
	                                  Answer(200, body, {{"x-wp-totalpages", "2"}}));
	EXPECT_FALSE(last.more);
	EXPECT_EQ(last.next.since, "2026-11-24T10:00:02");
	EXPECT_EQ(last.next.after, "");

	// No header, an empty page, or records older than the cursor: the cursor never goes back.
	PullPage none = ParsePullResponse(Shop(), route, PullPhase::Changes, cursor, Answer(200, "[]"));
	EXPECT_FALSE(none.more);
	EXPECT_EQ(none.next.since, cursor.since);
	PullPage old = ParsePullResponse(Shop(), route, PullPhase::Changes, PullCursor{"2027-01-01T00:00:00", ""},
	                                 Answer(200, body, {{"X-WP-TotalPages", "1"}}));
	EXPECT_EQ(old.next.since, "2027-01-01T00:00:00");
	PullPage deleted = ParsePullResponse(Shop(), route, PullPhase::Deletions, cursor, Answer(200, body));
	EXPECT_TRUE(deleted.records[1].deleted);
}

TEST(WooCommercePullTest, EndlessPagesAreCappedAndMalformedAnswersRefused)
{
	Route route = MakeRoute("orders", "id");
	const char *body = R"([{"id":5,"date_modified_gmt":"2026-11-24T10:00:00"}])";
	PullPage capped = ParsePullResponse(Shop(), route, PullPhase::Changes, PullCursor{"2026-11-24T09:00:00", "1000"},
	                                    Answer(200, body, {{"x-wp-totalpages", "999999999"}}));
	EXPECT_EQ(capped.next.after, "");
	EXPECT_EQ(capped.next.since, "2026-11-24T10:00:00");
	EXPECT_TRUE(capped.more);
	PullCursor cursor = InitialPullCursor("woocommerce");
	for (const char *bad : {R"({"id":5})", R"([{"name":"no id"}])", "[1]", "\"x\""})
		ExpectThrows<std::runtime_error>(
		    [&] { ParsePullResponse(Shop(), route, PullPhase::Changes, cursor, Answer(200, bad)); });
	ExpectThrows<std::runtime_error>([&] {
		ParsePullResponse(Shop(), route, PullPhase::Changes, cursor, Answer(200, body, {{"x-wp-totalpages", "two"}}));
	});
	std::string message = ExpectThrows<std::runtime_error>([&] {
		ParsePullResponse(
		    Shop(), route, PullPhase::Changes, cursor,
		    Answer(
		        401,
		        R"({"code":"woocommerce_rest_cannot_view","message":"Sorry, you cannot list resources.","data":{"status":401}})"));
	});
	EXPECT_EQ(message,
	          "woocommerce pull failed: HTTP 401 woocommerce_rest_cannot_view: Sorry, you cannot list resources.");
}

} // namespace
} // namespace switchboard
