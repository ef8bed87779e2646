// Unit tests for inbound webhook verification (inbound/verify.h), server-free: a known vector
// per scheme (the Standard Webhooks one is the specification's own; the HubSpot and
// WooCommerce ones were computed with Python's hmac module, independently of this code),
// forged, stale and future timestamps, missing headers, the constant-time compare, the
// signature header list, and the events each scheme's body names.
#include <gtest/gtest.h>

#include <string>

#include "connectors/pull.h"
#include "fixtures.h"
#include "inbound/verify.h"

namespace switchboard {
namespace {

using namespace inbound;
using test_support::ExpectThrows;

const int64_t kNow = 1795514400000; // 2026-11-24T10:00:00Z

const char kHubSpotSecret[] = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const char kHubSpotBody[] =
    R"([{"eventId":100,"subscriptionId":1,"portalId":9,"occurredAt":1795514400000,"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":123,"propertyName":"email","propertyValue":"a@b.c"}])";
const char kHubSpotSignature[] = "nQMv2tSt53B55rCj5u83KTAz48JDgN9KZFXAl7C2AI8=";

Request
HubSpotRequest(const std::string &timestamp = "1795514400000", const std::string &signature = kHubSpotSignature)
{
	Request request;
	request.method = "POST";
	request.uri = "https://db.example.com/inbound/abc?x=1";
	request.body = kHubSpotBody;
	request.headers = {{"X-HubSpot-Signature-v3", signature},
	                   {"x-hubspot-request-timestamp", timestamp},
	                   {"Content-Type", "application/json"}};
	return request;
}

const char kWooBody[] =
    R"({"id":42,"status":"processing","date_modified_gmt":"2026-11-24T10:00:00","billing":{"email":"a@b.c"}})";
const char kWooSignature[] = "InvYO+/ximjROS++jOxTJc0WcwLz+K6jKWzN2t2WMQE=";

Request
WooRequest(const std::string &signature = kWooSignature)
{
	Request request;
	request.method = "POST";
	request.uri = "https://db.example.com/inbound/abc";
	request.body = kWooBody;
	request.headers = {{"X-WC-Webhook-Signature", signature},
	                   {"X-WC-Webhook-Topic", "order.updated"},
	                   {"X-WC-Webhook-Delivery-ID", "d1"}};
	return request;
}

// The Standard Webhooks specification's test vector.
const char kWhsec[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const int64_t kStandardNow = 1614265330000;

Request
StandardRequest(const std::string &signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                const std::string &timestamp = "1614265330", const std::string &id = "msg_p5jXN8AQM9LWM0D4loKWxJek")
{
	Request request;
	request.method = "POST";
	request.uri = "https://db.example.com/inbound/abc";
	request.body = R"({"test": 2432232314})";
	request.headers = {{"webhook-id", id}, {"webhook-timestamp", timestamp}, {"webhook-signature", signature}};
	return request;
}

// ---- schemes by kind ----------------------------------------------------------------------

TEST(InboundSchemeTest, ByEndpointKind)
{
	EXPECT_EQ(SchemeForKind("hubspot"), Scheme::HubSpotV3);
	EXPECT_EQ(SchemeForKind("woocommerce"), Scheme::WooCommerce);
	EXPECT_EQ(SchemeForKind("webhook"), Scheme::StandardWebhooks);
	EXPECT_EQ(SchemeForKind("salesforce"), Scheme::StandardWebhooks);
	EXPECT_STREQ(SchemeName(Scheme::HubSpotV3), "hubspot-v3");
	EXPECT_STREQ(SchemeName(Scheme::StandardWebhooks), "standard-webhooks");
}

// ---- HubSpot v3 ---------------------------------------------------------------------------

TEST(InboundHubSpotTest, KnownVectorIsAccepted)
{
	EXPECT_EQ(HubSpotV3Signature(kHubSpotSecret, "POST", "https://db.example.com/inbound/abc?x=1", kHubSpotBody,
	                             "1795514400000"),
	          kHubSpotSignature);
	Verdict verdict = Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest(), kNow + 1000);
	EXPECT_TRUE(verdict.ok) << verdict.error;
}

TEST(InboundHubSpotTest, ForgedBodyUriMethodOrSecretIsRefused)
{
	Request request = HubSpotRequest();
	request.body[10] = '9';
	EXPECT_FALSE(Verify(Scheme::HubSpotV3, kHubSpotSecret, request, kNow).ok);
	request = HubSpotRequest();
	request.uri = "https://db.example.com/inbound/abd?x=1";
	EXPECT_FALSE(Verify(Scheme::HubSpotV3, kHubSpotSecret, request, kNow).ok);
	request = HubSpotRequest();
	request.method = "PUT";
	EXPECT_FALSE(Verify(Scheme::HubSpotV3, kHubSpotSecret, request, kNow).ok);
	Verdict verdict = Verify(Scheme::HubSpotV3, "other-secret", HubSpotRequest(), kNow);
	EXPECT_FALSE(verdict.ok);
	EXPECT_EQ(verdict.error, "bad X-HubSpot-Signature-v3");
	// The timestamp is signed: moving it (to look fresh) breaks the signature.
	EXPECT_FALSE(Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest("1795514400001"), kNow).ok);
}

TEST(InboundHubSpotTest, StaleAndFutureTimestampsAreRefused)
{
	Verdict stale = Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest(), kNow + kToleranceMs + 1);
	EXPECT_FALSE(stale.ok);
	EXPECT_NE(stale.error.find("older than 5 minutes"), std::string::npos) << stale.error;
	EXPECT_TRUE(Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest(), kNow + kToleranceMs).ok);
	Verdict future = Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest(), kNow - kToleranceMs - 1);
	EXPECT_FALSE(future.ok);
	EXPECT_NE(future.error.find("future"), std::string::npos);
}

TEST(InboundHubSpotTest, MissingOrMalformedHeadersAreRefused)
{
	EXPECT_FALSE(Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest("", kHubSpotSignature), kNow).ok);
	EXPECT_FALSE(Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest("17955x", kHubSpotSignature), kNow).ok);
	EXPECT_FALSE(
	    Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest("99999999999999999999999", kHubSpotSignature), kNow)
	        .ok);
	Verdict none = Verify(Scheme::HubSpotV3, kHubSpotSecret, HubSpotRequest("1795514400000", ""), kNow);
	EXPECT_FALSE(none.ok);
	EXPECT_EQ(none.error, "no X-HubSpot-Signature-v3 header");
}

TEST(InboundHubSpotTest, DocumentedEscapesAreDecodedBeforeSigning)
{
	EXPECT_EQ(HubSpotDecodeUri("https://h/inbound/a%3Ab%2fc%20d%40e%3b"), "https://h/inbound/a:b/c%20d@e;");
	EXPECT_EQ(HubSpotDecodeUri("%3"), "%3");
	EXPECT_EQ(HubSpotDecodeUri("x%"), "x%");
	// Python: base64(hmac(secret, "POST" + "https://db.example.com/inbound/a:b" + "" + ts)).
	EXPECT_EQ(HubSpotV3Signature(kHubSpotSecret, "POST", "https://db.example.com/inbound/a%3Ab", "", "1795514400000"),
	          "+PXytbWsuc/LHNA227+GMKR3lnbG8CKeFxJWkVCipcA=");
}

// ---- WooCommerce --------------------------------------------------------------------------

TEST(InboundWooCommerceTest, KnownVectorIsAccepted)
{
	EXPECT_EQ(WooCommerceSignature("wc-secret", kWooBody), kWooSignature);
	Verdict verdict = Verify(Scheme::WooCommerce, "wc-secret", WooRequest(), kNow);
	EXPECT_TRUE(verdict.ok) << verdict.error;
}

TEST(InboundWooCommerceTest, ForgedOrMissingSignatureIsRefused)
{
	Request request = WooRequest();
	request.body += " ";
	EXPECT_FALSE(Verify(Scheme::WooCommerce, "wc-secret", request, kNow).ok);
	EXPECT_FALSE(Verify(Scheme::WooCommerce, "wc-secret2", WooRequest(), kNow).ok);
	EXPECT_FALSE(
	    Verify(Scheme::WooCommerce, "wc-secret", WooRequest("InvYO+/ximjROS++jOxTJc0WcwLz+K6jKWzN2t2WMQ="), kNow).ok);
	Verdict none = Verify(Scheme::WooCommerce, "wc-secret", WooRequest(""), kNow);
	EXPECT_EQ(none.error, "no X-WC-Webhook-Signature header");
}

// ---- Standard Webhooks --------------------------------------------------------------------

TEST(InboundStandardTest, SpecificationVectorIsAccepted)
{
	Verdict verdict = Verify(Scheme::StandardWebhooks, kWhsec, StandardRequest(), kStandardNow);
	EXPECT_TRUE(verdict.ok) << verdict.error;
	// Among other entries and versions, as a sender rotating keys sends them.
	Verdict listed = Verify(Scheme::StandardWebhooks, kWhsec,
	                        StandardRequest("v2,abc= v1,Zm9v v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
	                        kStandardNow);
	EXPECT_TRUE(listed.ok) << listed.error;
	// The signer of outgoing webhooks (connectors) agrees.
	EXPECT_EQ(StandardWebhookSignature(kWhsec, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", R"({"test": 2432232314})"),
	          "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST(InboundStandardTest, ForgedStaleFutureAndIncompleteAreRefused)
{
	EXPECT_FALSE(Verify(Scheme::StandardWebhooks, kWhsec,
	                    StandardRequest("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "1614265330", "msg_other"),
	                    kStandardNow)
	                 .ok);
	EXPECT_FALSE(Verify(Scheme::StandardWebhooks, kWhsec,
	                    StandardRequest("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="), kStandardNow)
	                 .ok);
	Verdict stale = Verify(Scheme::StandardWebhooks, kWhsec, StandardRequest(), kStandardNow + kToleranceMs + 1000);
	EXPECT_FALSE(stale.ok);
	EXPECT_NE(stale.error.find("5 minutes"), std::string::npos);
	EXPECT_FALSE(Verify(Scheme::StandardWebhooks, kWhsec, StandardRequest(), kStandardNow - kToleranceMs - 1000).ok);
	EXPECT_FALSE(Verify(Scheme::StandardWebhooks, kWhsec, StandardRequest("v1,x", ""), kStandardNow).ok);
	EXPECT_FALSE(Verify(Scheme::StandardWebhooks, kWhsec, StandardRequest("", "1614265330"), kStandardNow).ok);
	EXPECT_FALSE(Verify(Scheme::StandardWebhooks, kWhsec,
	                    StandardRequest("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "1614265330", ""),
	                    kStandardNow)
	                 .ok);
}

TEST(InboundStandardTest, AMalformedRouteSecretIsNamedWithoutItsValue)
{
	Verdict verdict = Verify(Scheme::StandardWebhooks, "whsec_not base64!", StandardRequest(), kStandardNow);
	EXPECT_FALSE(verdict.ok);
	EXPECT_EQ(verdict.error.find("not base64"), std::string::npos);
	EXPECT_NE(verdict.error.find("whsec_<base64>"), std::string::npos);
}

TEST(InboundStandardTest, SignatureListParsing)
{
	EXPECT_EQ(StandardSignatures("v1,abc"), std::vector<std::string>{"abc"});
	EXPECT_EQ(StandardSignatures("v1,a v2,b  v1,c v1, v1"), (std::vector<std::string>{"a", "c"}));
	EXPECT_TRUE(StandardSignatures("").empty());
	std::string many;
	for (int i = 0; i < 100; ++i)
		many += "v1,x ";
	EXPECT_EQ(StandardSignatures(many).size(), 16u);
}

// ---- shared -------------------------------------------------------------------------------

TEST(InboundVerifyTest, NoSecretReceivesNothing)
{
	EXPECT_FALSE(Verify(Scheme::WooCommerce, "", WooRequest(), kNow).ok);
	EXPECT_FALSE(Verify(Scheme::HubSpotV3, "", HubSpotRequest(), kNow).ok);
	EXPECT_FALSE(Verify(Scheme::StandardWebhooks, "", StandardRequest(), kStandardNow).ok);
}

TEST(InboundVerifyTest, ConstantTimeEquals)
{
	EXPECT_TRUE(ConstantTimeEquals("", ""));
	EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
	EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
	EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
	EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST(InboundVerifyTest, ErrorsNeverCarrySignatures)
{
	Verdict verdict = Verify(Scheme::WooCommerce, "wc-secret", WooRequest("Zm9yZ2Vk"), kNow);
	EXPECT_EQ(verdict.error.find("Zm9yZ2Vk"), std::string::npos);
	EXPECT_EQ(verdict.error.find(kWooSignature), std::string::npos);
	EXPECT_EQ(verdict.error.find("wc-secret"), std::string::npos);
}

// ---- events -------------------------------------------------------------------------------

TEST(InboundEventsTest, HubSpotEventsAreReadBack)
{
	Parsed parsed = ParseEvents(
	    Scheme::HubSpotV3, {},
	    R"([{"eventId":100,"objectId":123,"subscriptionType":"contact.propertyChange","propertyName":"email","occurredAt":1795514400000},
	        {"eventId":"101","objectId":"124","subscriptionType":"contact.deletion","occurredAt":1795514400001}])");
	ASSERT_EQ(parsed.events.size(), 2u);
	EXPECT_EQ(parsed.events[0].event_id, "100");
	EXPECT_EQ(parsed.events[0].object_id, "123");
	EXPECT_EQ(parsed.events[0].property, "email");
	EXPECT_TRUE(parsed.events[0].read_back);
	EXPECT_FALSE(parsed.events[0].deleted);
	EXPECT_EQ(parsed.events[0].occurred_ms, kNow);
	EXPECT_TRUE(parsed.events[1].deleted);
	EXPECT_FALSE(parsed.events[1].read_back);
	EXPECT_NE(ExpectThrows<std::runtime_error>([] {
		          ParseEvents(Scheme::HubSpotV3, {}, R"([{"eventId":1}])");
	          }).find("without eventId or objectId"),
	          std::string::npos);
	ExpectThrows<std::runtime_error>([] { ParseEvents(Scheme::HubSpotV3, {}, "[1]"); });
	ExpectThrows<std::runtime_error>([] { ParseEvents(Scheme::HubSpotV3, {}, "not json"); });
	ExpectThrows<std::runtime_error>([] { ParseEvents(Scheme::HubSpotV3, {}, std::string(100, '[')); });
}

TEST(InboundEventsTest, WooCommerceBodyIsTheResource)
{
	Parsed parsed = ParseEvents(Scheme::WooCommerce, {{"x-wc-webhook-topic", "order.updated"}}, kWooBody);
	ASSERT_EQ(parsed.events.size(), 1u);
	const Event &event = parsed.events[0];
	EXPECT_EQ(event.object_id, "42");
	EXPECT_EQ(event.type, "order.updated");
	EXPECT_EQ(event.event_id, "woocommerce:42@2026-11-24T10:00:00");
	// The topic is not signed: another topic on the same body is the same event, and a live
	// record's body under a deletion topic is no deletion.
	Parsed forged = ParseEvents(Scheme::WooCommerce, {{"x-wc-webhook-topic", "order.deleted"}}, kWooBody);
	EXPECT_EQ(forged.events.at(0).event_id, event.event_id);
	EXPECT_FALSE(forged.events.at(0).deleted);
	EXPECT_EQ(event.occurred_ms, kNow);
	EXPECT_FALSE(event.read_back);
	EXPECT_EQ(event.resource["billing"]["email"], "a@b.c");
	Parsed deleted = ParseEvents(Scheme::WooCommerce, {{"X-WC-Webhook-Topic", "order.deleted"}}, R"({"id":42})");
	EXPECT_TRUE(deleted.events.at(0).deleted);
	EXPECT_TRUE(ParseEvents(Scheme::WooCommerce, {}, "webhook_id=17").ping);
	EXPECT_FALSE(IsWooCommercePing("webhook_id="));
	EXPECT_FALSE(IsWooCommercePing("webhook_id=1x"));
	ExpectThrows<std::runtime_error>([] { ParseEvents(Scheme::WooCommerce, {}, R"({"status":"x"})"); });
	ExpectThrows<std::runtime_error>([] { ParseEvents(Scheme::WooCommerce, {}, "[]"); });
}

TEST(InboundEventsTest, StandardWebhooksDataIsTheResource)
{
	Parsed parsed = ParseEvents(
	    Scheme::StandardWebhooks, {{"webhook-id", "msg_1"}},
	    R"({"type":"contact.updated","timestamp":"2026-11-24T10:00:00Z","data":{"id":7,"x":1}})");
	ASSERT_EQ(parsed.events.size(), 1u);
	EXPECT_EQ(parsed.events[0].event_id, "msg_1");
	EXPECT_EQ(parsed.events[0].object_id, "7");
	EXPECT_EQ(parsed.events[0].occurred_ms, kNow);
	EXPECT_EQ(parsed.events[0].resource["x"], 1);
	EXPECT_TRUE(ParseEvents(Scheme::StandardWebhooks, {{"webhook-id", "m"}}, R"({"type":"a.delete","data":{}})")
	                .events[0]
	                .deleted);
	ExpectThrows<std::runtime_error>([] {
		ParseEvents(Scheme::StandardWebhooks, {{"webhook-id", "m"}}, R"({"type":"a.b"})");
	});
	// Without a time in the body, the signed webhook-timestamp is the event's time; the body's
	// own time wins when it has one.
	Headers signed_at = {{"webhook-id", "m"}, {"webhook-timestamp", "1795514400"}};
	EXPECT_EQ(
	    ParseEvents(Scheme::StandardWebhooks, signed_at, R"({"type":"a.b","data":{"id":1}})").events[0].occurred_ms,
	    kNow);
	EXPECT_EQ(ParseEvents(Scheme::StandardWebhooks, signed_at,
	                      R"({"type":"a.b","timestamp":"2026-11-24T10:00:01Z","data":{"id":1}})")
	              .events[0]
	              .occurred_ms,
	          kNow + 1000);
	EXPECT_EQ(ParseEvents(Scheme::StandardWebhooks, {{"webhook-id", "m"}}, R"({"type":"a.b","data":{"id":1}})")
	              .events[0]
	              .occurred_ms,
	          0);
}

// ---- applied like a pull: records of events, HubSpot read-back ---------------------------

TEST(InboundRecordsTest, ResourceEventsBecomePullRecords)
{
	Parsed woo = ParseEvents(Scheme::WooCommerce, {{"X-WC-Webhook-Topic", "customer.updated"}},
	                         R"({"id":42,"email":"A@b.c","date_modified_gmt":"2026-11-24T10:00:00"})");
	Parsed gone = ParseEvents(Scheme::WooCommerce, {{"X-WC-Webhook-Topic", "customer.deleted"}}, R"({"id":43})");
	woo.events.push_back(gone.events[0]);
	std::vector<RemoteRecord> records = RecordsOf(woo.events, "email");
	ASSERT_EQ(records.size(), 2u);
	EXPECT_EQ(records[0].remote_id, "42");
	EXPECT_EQ(records[0].key, "A@b.c");
	EXPECT_EQ(records[0].modified_ms, kNow);
	EXPECT_EQ(records[0].fields["email"], "A@b.c");
	EXPECT_TRUE(records[1].deleted);
	EXPECT_EQ(RecordsOf(gone.events, "id").at(0).key, "43");
	Parsed hubspot = ParseEvents(Scheme::HubSpotV3, {},
	                             R"([{"eventId":1,"objectId":5,"subscriptionType":"contact.creation"}])");
	EXPECT_TRUE(RecordsOf(hubspot.events, "email").empty()); // read back, not carried
}

TEST(InboundReadBackTest, HubSpotBatchReadByteForByte)
{
	Endpoint endpoint = test_support::MakeEndpoint("hubspot", "https://api.hubapi.com", "pat-SECRET");
	Route route = test_support::MakeRoute("contacts", "email");
	Auth auth;
	auth.bearer = "pat-SECRET";
	HttpRequest request = BuildReadBackRequest(endpoint, route, {"firstname", "email"}, {"5", "6"}, auth);
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://api.hubapi.com/crm/v3/objects/contacts/batch/read");
	EXPECT_EQ(request.body,
	          R"({"properties":["firstname","email","lastmodifieddate"],"inputs":[{"id":"5"},{"id":"6"}]})");
	EXPECT_EQ(HeaderValue(request.headers, "authorization"), "Bearer pat-SECRET");
	ExpectThrows<std::invalid_argument>([&] { BuildReadBackRequest(endpoint, route, {}, {}, auth); });
	ExpectThrows<std::invalid_argument>(
	    [&] { BuildReadBackRequest(test_support::MakeEndpoint("woocommerce", "https://s"), route, {}, {"1"}, auth); });

	std::vector<RemoteRecord> records = ParseReadBackResponse(
	    endpoint, route,
	    test_support::Answer(
	        207,
	        R"({"status":"COMPLETE","results":[{"id":"5","properties":{"email":"a@x.io","firstname":"A","lastmodifieddate":"2026-11-24T10:00:00.000Z"}}],)"
	        R"("numErrors":1,"errors":[{"status":"error","category":"OBJECT_NOT_FOUND","context":{"ids":["6"]}}]})"));
	ASSERT_EQ(records.size(), 1u);
	EXPECT_EQ(records[0].remote_id, "5");
	EXPECT_EQ(records[0].key, "a@x.io");
	EXPECT_EQ(records[0].modified_ms, kNow);
	std::string message = ExpectThrows<std::runtime_error>([&] {
		ParseReadBackResponse(
		    endpoint, route,
		    test_support::Answer(
		        401,
		        R"({"status":"error","message":"Authentication credentials not found.","category":"INVALID_AUTHENTICATION"})"));
	});
	EXPECT_EQ(message,
	          "hubspot read-back failed: HTTP 401 INVALID_AUTHENTICATION: Authentication credentials not found.");
	ExpectThrows<std::runtime_error>([&] { ParseReadBackResponse(endpoint, route, test_support::Answer(200, "[]")); });
}

} // namespace
} // namespace switchboard
