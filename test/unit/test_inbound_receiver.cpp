// Unit tests for the server-free decisions of the inbound receiver (inbound/receiver.h): the
// listen_addresses syntax with listen_port for entries without a port, the token of a path,
// the URI a HubSpot sender signed, and what a request gets (Decide). The server itself is
// exercised by t/067_inbound_receiver.pl.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "inbound/receiver.h"

namespace switchboard {
namespace {

using namespace inbound;

TEST(ListenAddressesTest, HostsTakeTheDefaultPortUnlessTheyNameTheirOwn)
{
	auto a = ParseListenAddresses("127.0.0.1, [::1], localhost:9000, *, [::1]:9001", 8480);
	ASSERT_EQ(a.size(), 5u);
	EXPECT_EQ(a[0].host, "127.0.0.1");
	EXPECT_EQ(a[0].port, 8480);
	EXPECT_EQ(a[1].host, "::1");
	EXPECT_EQ(a[1].port, 8480);
	EXPECT_EQ(a[2].host, "localhost");
	EXPECT_EQ(a[2].port, 9000);
	EXPECT_EQ(a[3].host, "*");
	EXPECT_EQ(a[3].port, 8480);
	EXPECT_EQ(a[4].host, "::1");
	EXPECT_EQ(a[4].port, 9001);
	EXPECT_TRUE(ParseListenAddresses("", 8480).empty());
	EXPECT_TRUE(ParseListenAddresses("  ", 8480).empty());
}

TEST(ListenAddressesTest, BadEntriesAreRefusedByName)
{
	for (const char *bad : {"127.0.0.1,", ",127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "::1", "[::1",
	                        "[::1]x", ":8480", "a/b", "1*", "host:port"}) {
		try {
			(void) ParseListenAddresses(bad, 8480);
			ADD_FAILURE() << "accepted: " << bad;
		} catch (const std::invalid_argument &e) {
			EXPECT_FALSE(std::string(e.what()).empty()) << bad;
		}
	}
	// Without a default port, an entry must name its own.
	EXPECT_THROW((void) ParseListenAddresses("127.0.0.1", 0), std::invalid_argument);
	EXPECT_EQ(ParseListenAddresses("127.0.0.1:1", 0)[0].port, 1);
}

TEST(ReceiverPathTest, OnlyInboundWithA32CharacterToken)
{
	const std::string token(32, 'a');
	EXPECT_EQ(TokenOfPath("/inbound/" + token), token);
	EXPECT_EQ(TokenOfPath("/inbound/" + token + "/"), "");
	EXPECT_EQ(TokenOfPath("/inbound/" + std::string(31, 'a')), "");
	EXPECT_EQ(TokenOfPath("/inbound/" + std::string(31, 'a') + "-"), "");
	EXPECT_EQ(TokenOfPath("/other/" + token), "");
}

TEST(ReceiverUriTest, TheHostHeaderTheSenderUsedElseTheListenAddress)
{
	EXPECT_EQ(RebuildUri("https", "db.example.com", "127.0.0.1:8480", "/inbound/x?a=1"),
	          "https://db.example.com/inbound/x?a=1");
	EXPECT_EQ(RebuildUri("http", "", "127.0.0.1:8480", "/inbound/x"), "http://127.0.0.1:8480/inbound/x");
	EXPECT_EQ(RebuildUri("http", "evil.com/path", "127.0.0.1:8480", "/inbound/x"), "http://127.0.0.1:8480/inbound/x");
}

TEST(ReceiverDecideTest, RefusalsAndPings)
{
	RouteTarget woo{"customers_woo", Scheme::WooCommerce, "secret"};
	Request request;
	request.method = "POST";
	request.uri = "http://127.0.0.1:8480/inbound/x";
	request.body = R"({"id":7})";
	inbound::Outcome unsigned_request = Decide(woo, request, 0);
	EXPECT_EQ(unsigned_request.status, 401);
	EXPECT_TRUE(unsigned_request.events.empty());
	request.body = "webhook_id=12";
	EXPECT_EQ(Decide(woo, request, 0).status, 200); // WooCommerce's unsigned ping
	EXPECT_TRUE(Decide(woo, request, 0).events.empty());
	RouteTarget no_secret{"r", Scheme::StandardWebhooks, ""};
	EXPECT_EQ(Decide(no_secret, request, 0).status, 401);
	request.body = R"({"id":7})";
	request.headers = {{"X-WC-Webhook-Signature", WooCommerceSignature("secret", request.body)},
	                   {"X-WC-Webhook-Topic", "customer.updated"}};
	inbound::Outcome ok = Decide(woo, request, 0);
	EXPECT_EQ(ok.status, 200);
	ASSERT_EQ(ok.events.size(), 1u);
	EXPECT_EQ(ok.events[0].object_id, "7");
	request.body = "[1]"; // signed, but no resource
	request.headers[0].second = WooCommerceSignature("secret", request.body);
	EXPECT_EQ(Decide(woo, request, 0).status, 400);
}

// What the database cannot store is refused 400 before storage (stored with the other requests
// of its receiver turn, it would fail them all), each with a readable reason.
TEST(ReceiverDecideTest, UnstorableRequestsAre400)
{
	RouteTarget woo{"customers_woo", Scheme::WooCommerce, "secret"};
	auto decide = [&](const std::string &body, const std::string &topic) {
		Request request;
		request.method = "POST";
		request.body = body;
		request.headers = {{"X-WC-Webhook-Signature", WooCommerceSignature("secret", body)},
		                   {"X-WC-Webhook-Topic", topic}};
		return Decide(woo, request, 0);
	};
	EXPECT_EQ(decide(R"({"id":7,"name":"caf\u00e9"})", "customer.updated").status, 200);
	inbound::Outcome nul = decide(R"({"id":7,"name":"a\u0000b"})", "customer.updated");
	EXPECT_EQ(nul.status, 400);
	EXPECT_TRUE(nul.events.empty());
	EXPECT_NE(nul.error.find("\\u0000"), std::string::npos) << nul.error;
	EXPECT_EQ(decide(R"({"id":7,"a\u0000":1})", "customer.updated").status, 400); // in a key
	EXPECT_EQ(decide(R"({"id":7,"a":[{"b":"\u0000"}]})", "x").status, 400);       // nested
	inbound::Outcome topic = decide(R"({"id":7})", "customer.updated\xff");
	EXPECT_EQ(topic.status, 400);
	EXPECT_TRUE(ValidUtf8(topic.error)) << topic.error;
	inbound::Outcome latin1 = decide("{\"id\":7,\"name\":\"caf\xe9\"}", "customer.updated");
	EXPECT_EQ(latin1.status, 400);
	EXPECT_TRUE(ValidUtf8(latin1.error));
	inbound::Outcome not_json = decide("not json \xff\xfe", "customer.updated");
	EXPECT_EQ(not_json.status, 400);
	EXPECT_TRUE(ValidUtf8(not_json.error)) << not_json.error;
}

TEST(ReceiverDecideTest, ValidUtf8AsPostgresTakesIt)
{
	EXPECT_TRUE(ValidUtf8(""));
	EXPECT_TRUE(ValidUtf8("plain ascii"));
	EXPECT_TRUE(ValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
	EXPECT_TRUE(ValidUtf8("\xf4\x8f\xbf\xbf")); // U+10FFFF
	EXPECT_FALSE(ValidUtf8("\xff"));
	EXPECT_FALSE(ValidUtf8("caf\xe9"));          // Latin-1
	EXPECT_FALSE(ValidUtf8("\xc3"));             // cut short
	EXPECT_FALSE(ValidUtf8("\xc0\xaf"));         // overlong
	EXPECT_FALSE(ValidUtf8("\xe0\x80\xaf"));     // overlong
	EXPECT_FALSE(ValidUtf8("\xed\xa0\x80"));     // a surrogate
	EXPECT_FALSE(ValidUtf8("\xf4\x90\x80\x80")); // past U+10FFFF
	EXPECT_FALSE(ValidUtf8("\xe2\x82"));
}

} // namespace
} // namespace switchboard
