// Unit tests for the masking of error texts built from remote answers (http/redact.h).
#include <gtest/gtest.h>

#include <string>

#include "http/redact.h"

namespace switchboard {
namespace {

TEST(Redact, UrlShowsSchemeAndHostOnly)
{
	EXPECT_EQ(MaskUrl("https://hooks.example.com/services/T000/B000/XXXXSECRET"), "https://hooks.example.com/…");
	EXPECT_EQ(MaskUrl("https://hooks.example.com/in?token=abc#x"), "https://hooks.example.com/…");
	EXPECT_EQ(MaskUrl("http://127.0.0.1:8080/hooks/a"), "http://127.0.0.1:8080/…");
	EXPECT_EQ(MaskUrl("http://[::1]:8080/x"), "http://[::1]:8080/…");
	EXPECT_EQ(MaskUrl("https://api.hubapi.com"), "https://api.hubapi.com");
	EXPECT_EQ(MaskUrl("https://api.hubapi.com/"), "https://api.hubapi.com/");
	EXPECT_EQ(MaskUrl("https://user:pw@host.example/x"), "https://****@host.example/…");
	EXPECT_EQ(MaskUrl("not a url"), "…");
}

TEST(Redact, UrlsInsideTextsAreMasked)
{
	EXPECT_EQ(RedactText("webhook endpoint answered 410 Gone at https://h.example/hook/abc123?sig=s"),
	          "webhook endpoint answered 410 Gone at https://h.example/…");
	EXPECT_EQ(RedactText("see \"https://a.example/p/q\", or http://b.example/x?y."),
	          "see \"https://a.example/…\", or http://b.example/…");
	// JSON-escaped slashes, as a remote echoing its request would write them.
	EXPECT_EQ(RedactText(R"({"url":"https:\/\/a.example\/secret\/path"})"), R"({"url":"https:\/\/a.example/…"})");
	EXPECT_EQ(RedactText("HTTPS://A.example/Secret"), "HTTPS://A.example/…");
	EXPECT_EQ(RedactText("no urls here: a/b?c"), "no urls here: a/b?c");
}

TEST(Redact, BearerTokensAreMasked)
{
	EXPECT_EQ(RedactText("Authorization: Bearer pat-na1-1234-abcd"), "Authorization: Bearer ****");
	EXPECT_EQ(RedactText(R"({"echo":{"authorization":"bearer 00D!xyz.abc"}})"),
	          R"({"echo":{"authorization":"bearer ****"}})");
	EXPECT_EQ(RedactText("Basic dXNlcjpwYXNz and more"), "Basic **** and more");
	EXPECT_EQ(RedactText("the bearer of bad news"), "the bearer **** bad news") << "over-masking is acceptable";
}

TEST(Redact, SecretValuesAreMasked)
{
	EXPECT_EQ(RedactText(R"({"access_token":"00D!abc","instance_url":"x"})"),
	          R"({"access_token":"****","instance_url":"x"})");
	EXPECT_EQ(RedactText(R"({"client_secret" : "s3cr3t", "client_id":"id"})"),
	          R"({"client_secret" : "****", "client_id":"id"})");
	EXPECT_EQ(RedactText(R"({"password":"p\"w","user":"u"})"), R"({"password":"****","user":"u"})");
	EXPECT_EQ(RedactText("grant_type=client_credentials&client_id=sf-id&client_secret=sf-secret&x=1"),
	          "grant_type=client_credentials&client_id=sf-id&client_secret=****&x=1");
	EXPECT_EQ(RedactText("password: hunter2 end"), "password: **** end");
	EXPECT_EQ(RedactText("PASSWORD=hunter2"), "PASSWORD=****");
	EXPECT_EQ(RedactText(R"({"refresh_token": 12345})"), R"({"refresh_token": ****})");
	EXPECT_EQ(RedactText(R"(body: {\"access_token\":\"abc\"})"), R"(body: {\"access_token\":\"****\"})");
	EXPECT_EQ(RedactText(R"({"api_key":"k","apikey":"k2"})"), R"({"api_key":"****","apikey":"****"})");
	// Names that only contain a key word are left alone.
	EXPECT_EQ(RedactText(R"({"password_hint":"blue","my_access_token_count":3})"),
	          R"({"password_hint":"blue","my_access_token_count":3})");
	// A key without a value is harmless.
	EXPECT_EQ(RedactText("missing access_token"), "missing access_token");
	EXPECT_EQ(RedactText("access_token="), "access_token=");
}

TEST(Redact, ExcerptIsMaskedThenCapped)
{
	std::string body = R"({"error":"bad","access_token":")" + std::string(1000, 'A') + "\"}";
	std::string excerpt = RedactedExcerpt(body, 60);
	EXPECT_EQ(excerpt.find("AAAA"), std::string::npos) << excerpt;
	EXPECT_NE(excerpt.find("****"), std::string::npos) << excerpt;
	EXPECT_EQ(RedactedExcerpt(std::string(500, 'x'), 100), std::string(100, 'x') + "...");
	EXPECT_EQ(RedactedExcerpt("line1\nline2\ttab", 100), "line1 line2 tab");
	// Never cut inside a UTF-8 sequence.
	EXPECT_EQ(RedactedExcerpt("ab\xC3\xA9", 3), "ab...");
	EXPECT_EQ(RedactedExcerpt("short"), "short");
	EXPECT_LE(RedactedExcerpt(std::string(10000, 'y')).size(), kDefaultExcerptBytes + 3);
}

TEST(Redact, AdjacentMatchesAndArbitraryBytes)
{
	EXPECT_EQ(RedactText("Bearer abc+https://x.example/y"), "Bearer ****://x.example/…");
	EXPECT_EQ(RedactText("://x/y"), "://x/…");
	EXPECT_EQ(RedactText("password=http://u:p@h.example/x"), "password=****");
	// Any input: no exception, no read past the end, output bounded.
	std::string alphabet = "ab:/\\\"?#@=& password access_token Bearer https://\x01\xC3";
	unsigned seed = 12345;
	for (int n = 0; n < 2000; n++) {
		std::string text;
		for (int k = 0; k < 40; k++) {
			seed = seed * 1103515245 + 12345;
			text += alphabet[(seed >> 16) % alphabet.size()];
		}
		std::string masked = RedactText(text);
		EXPECT_LE(masked.size(), 3 * text.size() + 8) << text;
		EXPECT_LE(RedactedExcerpt(text, 16).size(), 19u) << text;
	}
}

} // namespace
} // namespace switchboard
