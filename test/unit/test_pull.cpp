// Unit tests for pulling (connectors/pull.h), server-free: the request of every kind and phase
// byte for byte (masking and paging included), and the parsing of answers into records and the
// next cursor: re-anchoring at HubSpot's 10,000-result cap, a cursor that never moves
// backwards, Salesforce nextRecordsUrl paging, key extraction, deleted flags, malformed bodies.
#include <gtest/gtest.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "connectors/pull.h"
#include "fixtures.h"

namespace switchboard {
namespace {

using namespace test_support;

// ---- helpers -----------------------------------------------------------------------------

using PullHeader = std::pair<std::string, std::string>;

const int64_t kNov24 = 1795514400123; // 2026-11-24T10:00:00.123Z

Auth
BearerAuth(const std::string &bearer, const std::string &instance_url = "", bool masked = false)
{
	Auth auth;
	auth.bearer = bearer;
	auth.instance_url = instance_url;
	auth.masked = masked;
	return auth;
}

// Independent of UrlEncode: decodes %XX (and nothing else, as UrlEncode never emits '+').
std::string
PercentDecode(const std::string &text)
{
	std::string out;
	for (size_t i = 0; i < text.size(); ++i) {
		if (text[i] == '%' && i + 2 < text.size()) {
			out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
			i += 2;
		} else {
			out += text[i];
		}
	}
	return out;
}

// The SOQL of a Salesforce query URL.
std::string
SoqlOf(const HttpRequest &request)
{
	auto q = request.url.find("?q=");
	if (q == std::string::npos)
		return std::string();
	return PercentDecode(request.url.substr(q + 3));
}

// A HubSpot search/listing result.
Json
HubSpotResult(const std::string &id, Json properties, const std::string &updated_at = "2026-11-24T10:00:00.000Z")
{
	return Json{{"id", id},
	            {"properties", std::move(properties)},
	            {"createdAt", "2026-01-01T00:00:00.000Z"},
	            {"updatedAt", updated_at},
	            {"archived", false}};
}

// A Salesforce query record.
Json
SalesforceRecord(const std::string &id, const std::string &modstamp, Json fields = Json::object())
{
	Json record = {{"attributes", {{"type", "Contact"}, {"url", "/services/data/v59.0/sobjects/Contact/" + id}}},
	               {"Id", id},
	               {"SystemModstamp", modstamp}};
	for (const auto &field : fields.items())
		record[field.key()] = field.value();
	return record;
}

// ---- cursors and kinds -------------------------------------------------------------------

TEST(PullCursorTest, InitialCursorsPerKind)
{
	PullCursor hubspot = InitialPullCursor("hubspot");
	EXPECT_EQ(hubspot.since, "0");
	EXPECT_EQ(hubspot.after, "");
	PullCursor salesforce = InitialPullCursor("salesforce");
	EXPECT_EQ(salesforce.since, "1970-01-01T00:00:00.000Z");
	EXPECT_EQ(salesforce.after, "");
	EXPECT_EQ(InitialPullCursor("webhook").since, "");
	EXPECT_TRUE(CanPull("hubspot"));
	EXPECT_TRUE(CanPull("salesforce"));
	EXPECT_FALSE(CanPull("webhook"));
	EXPECT_FALSE(CanPull("openai"));
}

TEST(PullCursorTest, WebhookAndOpenAIEndpointsCannotBePulled)
{
	for (const char *kind : {"webhook", "openai"}) {
		Endpoint endpoint = MakeEndpoint(kind, "https://example.com/hook", "k");
		std::string message = ExpectThrows<std::invalid_argument>([&] {
			BuildPullRequest(endpoint, MakeRoute("contact", "id", "delete"), {}, PullPhase::Changes,
			                 PullCursor{"0", ""}, BearerAuth("k"));
		});
		EXPECT_EQ(message, std::string(kind) + " endpoints cannot be pulled");
		ExpectThrows<std::invalid_argument>([&] {
			ParsePullResponse(endpoint, MakeRoute("contact", "id", "delete"), PullPhase::Changes, PullCursor{"0", ""},
			                  Answer(Json::object()));
		});
	}
	ExpectThrows<std::invalid_argument>([&] {
		BuildPullRequest(MakeEndpoint("ftp", "x", ""), MakeRoute("a", "b", "delete"), {}, PullPhase::Changes,
		                 PullCursor{}, BearerAuth(""));
	});
}

// ---- HubSpot requests --------------------------------------------------------------------

TEST(PullHubSpotRequestTest, ContactsSearchByteForByte)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com/", "pat-SECRET",
	                                 {{"headers", {{"X-Team", "crm"}}}});
	// Duplicates (email twice, the modification field among the mapped ones) are sent once,
	// in first-seen order, with match_remote and the modification field appended.
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("contacts", "email", "delete"),
	                                       {"firstname", "email", "lastmodifieddate", "firstname"}, PullPhase::Changes,
	                                       PullCursor{"1795514400123", ""}, BearerAuth("pat-SECRET"));
	EXPECT_EQ(request.method, "POST");
	EXPECT_EQ(request.url, "https://api.hubapi.com/crm/v3/objects/contacts/search");
	EXPECT_EQ(request.headers, (Headers{{"Authorization", "Bearer pat-SECRET"},
	                                    {"Content-Type", "application/json"},
	                                    {"X-Team", "crm"}}));
	EXPECT_EQ(
	    request.body,
	    R"({"filterGroups":[{"filters":[{"propertyName":"lastmodifieddate","operator":"GT","value":"1795514400123"}]}],)"
	    R"("sorts":[{"propertyName":"lastmodifieddate","direction":"ASCENDING"}],)"
	    R"("properties":["firstname","email","lastmodifieddate"],"limit":200})");
}

TEST(PullHubSpotRequestTest, OtherObjectsUseHsLastModifiedDateAndPageWithAfter)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat-SECRET");
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("companies", "domain", "delete"), {"name"},
	                                       PullPhase::Changes, PullCursor{"1000", "400"}, BearerAuth("pat-SECRET"));
	EXPECT_EQ(request.url, "https://api.hubapi.com/crm/v3/objects/companies/search");
	Json body = Json::parse(request.body);
	EXPECT_EQ(body["filterGroups"][0]["filters"][0],
	          (Json{{"propertyName", "hs_lastmodifieddate"}, {"operator", "GT"}, {"value", "1000"}}));
	EXPECT_EQ(body["sorts"][0], (Json{{"propertyName", "hs_lastmodifieddate"}, {"direction", "ASCENDING"}}));
	EXPECT_EQ(body["properties"], (Json{"name", "domain", "hs_lastmodifieddate"}));
	EXPECT_EQ(body["limit"], kHubSpotSearchLimit);
	EXPECT_EQ(body["after"], "400");
}

TEST(PullHubSpotRequestTest, MaskedRequestsCarryNoSecret)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat-SECRET");
	for (PullPhase phase : {PullPhase::Changes, PullPhase::Deletions}) {
		HttpRequest request = BuildPullRequest(endpoint, MakeRoute("contacts", "email", "delete"), {"firstname"}, phase,
		                                       PullCursor{"0", ""}, BearerAuth("pat-SECRET", "", true));
		EXPECT_EQ(request.headers[0], PullHeader("Authorization", "Bearer ****"));
		EXPECT_EQ(WireText(request).find("pat-SECRET"), std::string::npos) << WireText(request);
	}
}

TEST(PullHubSpotRequestTest, ArchivedListingByteForByte)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat-SECRET");
	HttpRequest first = BuildPullRequest(endpoint, MakeRoute("contacts", "email", "delete"), {"firstname"},
	                                     PullPhase::Deletions, PullCursor{"0", ""}, BearerAuth("pat-SECRET"));
	EXPECT_EQ(first.method, "GET");
	EXPECT_EQ(first.url, "https://api.hubapi.com/crm/v3/objects/contacts?archived=true&limit=100&properties=email");
	EXPECT_EQ(first.headers, (Headers{{"Authorization", "Bearer pat-SECRET"}}));
	EXPECT_EQ(first.body, "");
	HttpRequest next = BuildPullRequest(endpoint, MakeRoute("p_custom", "ext id", "delete"), {}, PullPhase::Deletions,
	                                    PullCursor{"0", "MTIz=="}, BearerAuth("pat-SECRET"));
	EXPECT_EQ(
	    next.url,
	    "https://api.hubapi.com/crm/v3/objects/p_custom?archived=true&limit=100&properties=ext%20id&after=MTIz%3D%3D");
}

TEST(PullHubSpotRequestTest, CursorThatIsNotEpochMillisecondsIsRejected)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat-SECRET");
	for (const char *since : {"", "abc", "2026-11-24T10:00:00Z", "-5"}) {
		std::string message = ExpectThrows<std::invalid_argument>([&] {
			BuildPullRequest(endpoint, MakeRoute("contacts", "email", "delete"), {}, PullPhase::Changes,
			                 PullCursor{since, ""}, BearerAuth("pat-SECRET"));
		});
		EXPECT_NE(message.find("epoch milliseconds"), std::string::npos) << message;
	}
}

// ---- Salesforce requests -----------------------------------------------------------------

TEST(PullSalesforceRequestTest, QueryByteForByte)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com",
	                                 R"({"client_id":"a","client_secret":"b"})", {{"api_version", "61.0"}});
	// Case-insensitive duplicates of Id, SystemModstamp and the key are selected once.
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("Contact", "Email__c", "delete"),
	                                       {"FirstName", "email__c", "ID", "LastName", "systemmodstamp"},
	                                       PullPhase::Changes, PullCursor{"2026-11-24T10:00:00.123Z", ""},
	                                       BearerAuth("00Dtoken!", "https://acme.my.salesforce.com"));
	EXPECT_EQ(request.method, "GET");
	EXPECT_EQ(request.url,
	          "https://acme.my.salesforce.com/services/data/v61.0/query?q="
	          "SELECT%20Id%2C%20SystemModstamp%2C%20Email__c%2C%20FirstName%2C%20LastName%20FROM%20Contact%20"
	          "WHERE%20SystemModstamp%20%3E%202026-11-24T10%3A00%3A00.123Z%20ORDER%20BY%20SystemModstamp%20ASC");
	EXPECT_EQ(SoqlOf(request), "SELECT Id, SystemModstamp, Email__c, FirstName, LastName FROM Contact "
	                           "WHERE SystemModstamp > 2026-11-24T10:00:00.123Z ORDER BY SystemModstamp ASC");
	EXPECT_EQ(request.headers, (Headers{{"Authorization", "Bearer 00Dtoken!"}}));
	EXPECT_EQ(request.body, "");
}

TEST(PullSalesforceRequestTest, DefaultVersionLoginHostBeforeTheFirstTokenAndMasking)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com/",
	                                 R"({"client_id":"a","client_secret":"b"})");
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("Lead", "Ext__c", "delete"), {}, PullPhase::Changes,
	                                       InitialPullCursor("salesforce"), BearerAuth("00Dtoken!", "", true));
	EXPECT_EQ(request.url.rfind("https://login.salesforce.com/services/data/v59.0/query?q=", 0), 0u) << request.url;
	EXPECT_EQ(SoqlOf(request), "SELECT Id, SystemModstamp, Ext__c FROM Lead "
	                           "WHERE SystemModstamp > 1970-01-01T00:00:00.000Z ORDER BY SystemModstamp ASC");
	EXPECT_EQ(request.headers[0], PullHeader("Authorization", "Bearer ****"));
	EXPECT_EQ(WireText(request).find("00Dtoken!"), std::string::npos);
}

TEST(PullSalesforceRequestTest, NextRecordsUrlIsFollowedOnTheInstance)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	for (PullPhase phase : {PullPhase::Changes, PullPhase::Deletions}) {
		HttpRequest request = BuildPullRequest(endpoint, MakeRoute("Contact", "Email__c", "delete"), {"FirstName"},
		                                       phase,
		                                       PullCursor{"2026-11-24T10:00:00.123Z",
		                                                  "/services/data/v59.0/query/01gXX-2000"},
		                                       BearerAuth("tok", "https://acme.my.salesforce.com"));
		EXPECT_EQ(request.method, "GET");
		EXPECT_EQ(request.url, "https://acme.my.salesforce.com/services/data/v59.0/query/01gXX-2000");
		EXPECT_EQ(request.headers, (Headers{{"Authorization", "Bearer tok"}}));
	}
}

TEST(PullSalesforceRequestTest, DeletionsUseQueryAllAndSelectOnlyTheKey)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("Contact", "Email__c", "delete"),
	                                       {"FirstName", "LastName"}, PullPhase::Deletions,
	                                       PullCursor{"2026-11-24T10:00:00.123+0000", ""},
	                                       BearerAuth("tok", "https://acme.my.salesforce.com"));
	EXPECT_EQ(request.url.rfind("https://acme.my.salesforce.com/services/data/v59.0/queryAll?q=", 0), 0u)
	    << request.url;
	EXPECT_EQ(SoqlOf(request), "SELECT Id, SystemModstamp, Email__c FROM Contact WHERE IsDeleted = true AND "
	                           "SystemModstamp > 2026-11-24T10:00:00.123+0000 ORDER BY SystemModstamp ASC");
}

TEST(PullSalesforceRequestTest, NothingButNamesAndDatetimesReachesSoqlOrTheUrl)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	Auth auth = BearerAuth("tok", "https://acme.my.salesforce.com");
	const PullCursor good{"2026-11-24T10:00:00.123Z", ""};
	auto build = [&](const Route &route, std::vector<std::string> fields, const PullCursor &cursor) {
		return [=] { BuildPullRequest(endpoint, route, fields, PullPhase::Changes, cursor, auth); };
	};
	ExpectThrows<std::invalid_argument>(build(MakeRoute("Contact", "Email__c", "delete"), {"Name FROM User --"}, good));
	ExpectThrows<std::invalid_argument>(build(MakeRoute("Contact WHERE", "Email__c", "delete"), {}, good));
	ExpectThrows<std::invalid_argument>(build(MakeRoute("Contact", "", "delete"), {}, good));
	ExpectThrows<std::invalid_argument>(
	    build(MakeRoute("Contact", "Email__c", "delete"), {}, PullCursor{"2026-11-24T10:00:00Z OR Id != null", ""}));
	ExpectThrows<std::invalid_argument>(
	    build(MakeRoute("Contact", "Email__c", "delete"), {}, PullCursor{"1795514400123", ""}));
	// The token follows the cursor's URL: only a path on the instance is accepted.
	for (const char *after :
	     {"https://evil.example/services/data/v59.0/query/x", "@evil.example/services/data/", "/services/apexrest/x"})
		ExpectThrows<std::invalid_argument>(
		    build(MakeRoute("Contact", "Email__c", "delete"), {}, PullCursor{good.since, after}));
	// Relationship fields are names too.
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("Contact", "Email__c", "delete"), {"Account.Name"},
	                                       PullPhase::Changes, good, auth);
	EXPECT_NE(SoqlOf(request).find(", Account.Name FROM"), std::string::npos);
}

// ---- HubSpot answers ---------------------------------------------------------------------

TEST(PullHubSpotParseTest, RecordsKeysAndModificationTimes)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	Json body = {{"total", 4},
	             {"results",
	              {HubSpotResult("101", {{"email", "a@x.io"},
	                                     {"firstname", "Ann"},
	                                     {"lastmodifieddate", "2026-11-24T10:00:00.123Z"}}),
	               HubSpotResult("102", {{"email", nullptr}, {"lastmodifieddate", "1795514400200"}}),
	               HubSpotResult("103", {{"firstname", "NoKey"}}, "2026-11-24T10:00:00.300Z"),
	               Json{{"id", 104},
	                    {"properties", {{"email", "d@x.io"}, {"lastmodifieddate", nullptr}}},
	                    {"updatedAt", "2026-11-24T10:00:00.400Z"}}}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Changes,
	                                  PullCursor{"1000", ""}, Answer(body));
	ASSERT_EQ(page.records.size(), 4u);
	EXPECT_EQ(page.records[0].remote_id, "101");
	EXPECT_EQ(page.records[0].key, "a@x.io");
	EXPECT_EQ(page.records[0].fields,
	          (Json{{"email", "a@x.io"}, {"firstname", "Ann"}, {"lastmodifieddate", "2026-11-24T10:00:00.123Z"}}));
	EXPECT_EQ(page.records[0].modified_ms, kNov24);
	EXPECT_FALSE(page.records[0].deleted);
	EXPECT_EQ(page.records[1].key, "");
	EXPECT_EQ(page.records[1].modified_ms, kNov24 + 77); // an epoch-ms string
	EXPECT_EQ(page.records[2].key, "");
	EXPECT_EQ(page.records[2].modified_ms, kNov24 + 177); // updatedAt when the property is absent
	EXPECT_EQ(page.records[3].remote_id, "104");
	EXPECT_EQ(page.records[3].modified_ms, kNov24 + 277); // and when it is null
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.since, std::to_string(kNov24 + 277));
	EXPECT_EQ(page.next.after, "");
}

TEST(PullHubSpotParseTest, OtherObjectsReadHsLastModifiedDate)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	Json body = {{"results",
	              {HubSpotResult("7", {{"domain", "x.io"},
	                                   {"hs_lastmodifieddate", "2026-11-24T10:00:01.000Z"},
	                                   {"lastmodifieddate", "2000-01-01T00:00:00.000Z"}})}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("companies", "domain", "delete"), PullPhase::Changes,
	                                  PullCursor{"0", ""}, Answer(body));
	ASSERT_EQ(page.records.size(), 1u);
	EXPECT_EQ(page.records[0].key, "x.io");
	EXPECT_EQ(page.records[0].modified_ms, kNov24 - 123 + 1000);
	EXPECT_EQ(page.next.since, std::to_string(kNov24 - 123 + 1000));
	// A key property named in another case still finds the value.
	page = ParsePullResponse(endpoint, MakeRoute("companies", "Domain", "delete"), PullPhase::Changes,
	                         PullCursor{"0", ""}, Answer(body));
	EXPECT_EQ(page.records[0].key, "x.io");
}

TEST(PullHubSpotParseTest, PagingKeepsSinceAndFollowsAfter)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	Json body = {{"results", {HubSpotResult("1", {{"email", "a@x.io"}, {"lastmodifieddate", "1795514400500"}})}},
	             {"paging", {{"next", {{"after", "9600"}, {"link", "https://api.hubapi.com/..."}}}}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Changes,
	                                  PullCursor{"1000", "9400"}, Answer(body));
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, "1000"); // the query is still being paged
	EXPECT_EQ(page.next.after, "9600");
	// The next request carries it.
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("contacts", "email", "delete"), {}, PullPhase::Changes,
	                                       page.next, BearerAuth("pat"));
	EXPECT_EQ(Json::parse(request.body)["after"], "9600");
}

TEST(PullHubSpotParseTest, ReanchorsBelowTheNewestTimeAtTheCap)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	Json body = {{"results",
	              {HubSpotResult("1", {{"email", "a@x.io"}, {"lastmodifieddate", "1795514400500"}}),
	               HubSpotResult("2", {{"email", "b@x.io"}, {"lastmodifieddate", "1795514400900"}})}},
	             {"paging", {{"next", {{"after", "9800"}}}}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Changes,
	                                  PullCursor{"1000", "9600"}, Answer(body));
	EXPECT_TRUE(page.more);
	// A new query starting just below the newest time: records sharing it come again.
	EXPECT_EQ(page.next.since, "1795514400899");
	EXPECT_EQ(page.next.after, "");
	EXPECT_EQ(page.records.size(), 2u);
	// The request of the new query has no after.
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("contacts", "email", "delete"), {}, PullPhase::Changes,
	                                       page.next, BearerAuth("pat"));
	Json sent = Json::parse(request.body);
	EXPECT_FALSE(sent.contains("after"));
	EXPECT_EQ(sent["filterGroups"][0]["filters"][0]["value"], "1795514400899");
}

TEST(PullHubSpotParseTest, AWindowOfOneMillisecondIsWalkedByIdNotLoopedOn)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	const Route route = MakeRoute("contacts", "email", "delete");
	// Every record of this page carries the millisecond right after since: newest - 1 == since,
	// so re-anchoring on time would fetch the same 10,000 results again, forever. And one whose
	// time is unreadable (0) must not drag the cursor to the epoch.
	Json body = {{"results",
	              {HubSpotResult("1", {{"lastmodifieddate", "5001"}}),
	               HubSpotResult("2", {{"lastmodifieddate", "junk"}}, "junk")}},
	             {"paging", {{"next", {{"after", "10000"}}}}}};
	PullPage page = ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"5000", "9800"}, Answer(body));
	EXPECT_EQ(page.records[1].modified_ms, 0);
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, "5000");
	EXPECT_EQ(page.next.after, "ms:5001:0");
	// That millisecond, by id.
	Json sent = Json::parse(
	    BuildPullRequest(endpoint, route, {}, PullPhase::Changes, page.next, BearerAuth("pat")).body);
	EXPECT_EQ(sent["filterGroups"][0]["filters"],
	          Json::parse(R"([{"propertyName":"lastmodifieddate","operator":"EQ","value":"5001"},
	                          {"propertyName":"hs_object_id","operator":"GT","value":"0"}])"));
	EXPECT_EQ(sent["sorts"][0]["propertyName"], "hs_object_id");
	EXPECT_FALSE(sent.contains("after"));
	Json tie = {{"results", {HubSpotResult("7", {{"lastmodifieddate", "5001"}}), HubSpotResult("9", {})}},
	            {"paging", {{"next", {{"after", "200"}}}}}};
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next, Answer(tie));
	EXPECT_EQ(page.next.after, "ms:5001:9");
	EXPECT_EQ(page.next.since, "5000");
	// Exhausted: past that millisecond, back to the usual query.
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next,
	                         Answer(Json{{"results", {HubSpotResult("11", {})}}}));
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, "5001");
	EXPECT_EQ(page.next.after, "");

	// A window with no time past since: an error, never a loop, and the cursor stays.
	Json older = {{"results", {HubSpotResult("1", {{"lastmodifieddate", "3000"}})}},
	              {"paging", {{"next", {{"after", "9900"}}}}}};
	std::string error = ExpectThrows<std::runtime_error>([&] {
		ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"5000", "9700"}, Answer(older));
	});
	EXPECT_NE(error.find("cannot move"), std::string::npos) << error;
}

TEST(PullHubSpotParseTest, LastPageAdvancesSinceButNeverBackwards)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	Json body = {
	    {"results",
	     {HubSpotResult("1", {{"lastmodifieddate", "7000"}}), HubSpotResult("2", {{"lastmodifieddate", "8000"}})}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Changes,
	                                  PullCursor{"5000", "400"}, Answer(body));
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.since, "8000");
	EXPECT_EQ(page.next.after, "");

	page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Changes,
	                         PullCursor{"9000", ""}, Answer(body));
	EXPECT_EQ(page.next.since, "9000");
}

TEST(PullHubSpotParseTest, EmptyResultsKeepTheCursor)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	PullPage page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Changes,
	                                  PullCursor{"5000", ""}, Answer(Json{{"total", 0}, {"results", Json::array()}}));
	EXPECT_TRUE(page.records.empty());
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.since, "5000");
	EXPECT_EQ(page.next.after, "");
}

TEST(PullHubSpotParseTest, ArchivedRecordsAreDeletionsAndTheListingIsWalkedWhole)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	Json first = {{"results",
	               {Json{{"id", "11"},
	                     {"properties", {{"email", "gone@x.io"}, {"hs_object_id", "11"}}},
	                     {"archived", true},
	                     {"archivedAt", "2026-11-24T10:00:00.123Z"},
	                     {"updatedAt", "2020-01-01T00:00:00.000Z"}},
	                Json{{"id", "12"},
	                     {"properties", {{"hs_object_id", "12"}}},
	                     {"archived", true},
	                     {"updatedAt", "2026-11-24T10:00:00.000Z"}}}},
	              {"paging", {{"next", {{"after", "12"}}}}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Deletions,
	                                  PullCursor{"0", ""}, Answer(first));
	ASSERT_EQ(page.records.size(), 2u);
	EXPECT_TRUE(page.records[0].deleted);
	EXPECT_TRUE(page.records[1].deleted);
	EXPECT_EQ(page.records[0].remote_id, "11");
	EXPECT_EQ(page.records[0].key, "gone@x.io");
	EXPECT_EQ(page.records[0].modified_ms, kNov24); // archivedAt
	EXPECT_EQ(page.records[1].key, "");
	EXPECT_EQ(page.records[1].modified_ms, kNov24 - 123); // updatedAt without archivedAt
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, "0");
	// HubSpot's after, and the newest archivedAt of the walk so far.
	EXPECT_EQ(page.next.after, "12|" + std::to_string(kNov24));

	page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Deletions, page.next,
	                         Answer(Json{{"results", Json::array()}}));
	EXPECT_FALSE(page.more);
	// The walk is over: the cursor moves to its newest archivedAt, less a margin for late arrivals.
	EXPECT_EQ(page.next.since, std::to_string(kNov24 - 5 * 60 * 1000));
	EXPECT_EQ(page.next.after, ""); // the next cycle walks the listing from the start
}

TEST(PullHubSpotParseTest, ArchivedRecordsOlderThanTheCursorAreNoDeletions)
{
	// A contact archived last month is in every walk of the listing: it deletes nothing again.
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	Json body = {
	    {"results",
	     {Json{{"id", "11"}, {"properties", {{"email", "old@x.io"}}}, {"archivedAt", "2026-10-24T10:00:00.000Z"}},
	      Json{{"id", "12"}, {"properties", {{"email", "new@x.io"}}}, {"archivedAt", "2026-11-24T10:00:00.123Z"}},
	      Json{{"id", "13"}, {"properties", {{"email", "when@x.io"}}}}}},
	    {"paging", {{"next", {{"after", "14"}}}}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Deletions,
	                                  PullCursor{std::to_string(kNov24 - 1000), "11|5"}, Answer(body));
	ASSERT_EQ(page.records.size(), 2u);
	EXPECT_EQ(page.records[0].remote_id, "12");
	EXPECT_EQ(page.records[1].remote_id, "13"); // no time: kept, the remote id decides
	EXPECT_EQ(page.next.after, "14|" + std::to_string(kNov24));
	HttpRequest next = BuildPullRequest(endpoint, MakeRoute("contacts", "email", "delete"), {}, PullPhase::Deletions,
	                                    page.next, BearerAuth("pat"));
	EXPECT_NE(next.url.find("&after=14"), std::string::npos) << next.url;
	EXPECT_EQ(next.url.find('|'), std::string::npos) << next.url;
}

TEST(PullHubSpotParseTest, MalformedBodiesAndErrorAnswersThrow)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	auto parse = [&](const HttpResponse &response) {
		return ExpectThrows<std::runtime_error>([&] {
			ParsePullResponse(endpoint, MakeRoute("contacts", "email", "delete"), PullPhase::Changes,
			                  PullCursor{"0", ""}, response);
		});
	};
	std::string message = parse(Answer(200, "<html>Bad gateway</html>"));
	EXPECT_NE(message.find("not a JSON object"), std::string::npos) << message;
	EXPECT_NE(message.find("<html>Bad gateway</html>"), std::string::npos) << message;
	message = parse(Answer(200, std::string(1000, 'x')));
	EXPECT_LT(message.size(), 300u) << "a snippet, not the whole body";
	EXPECT_NE(parse(Answer(Json{{"status", "COMPLETE"}})).find("without a results array"), std::string::npos);
	EXPECT_NE(parse(Answer(Json{{"results", {{{"properties", Json::object()}}}}})).find("without an id"),
	          std::string::npos);
	EXPECT_NE(parse(Answer(Json{{"results", {{{"id", "1"}, {"properties", "x"}}}}})).find("not an object"),
	          std::string::npos);
	EXPECT_NE(
	    parse(Answer(Json{{"results", Json::array()}, {"paging", {{"next", Json::object()}}}})).find("without after"),
	    std::string::npos);
	message = parse(Answer(
	    400,
	    R"({"status":"error","message":"There was a problem with the request.","category":"VALIDATION_ERROR","correlationId":"c-1"})"));
	EXPECT_EQ(message, "hubspot pull failed: HTTP 400 VALIDATION_ERROR: There was a problem with the request.");
	HttpResponse transport;
	transport.transport_error = "Connection refused";
	EXPECT_EQ(parse(transport), "hubspot pull failed: transport error: Connection refused");
}

// ---- Salesforce answers ------------------------------------------------------------------

TEST(PullSalesforceParseTest, RecordsKeysAndFields)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	Json body = {{"totalSize", 4},
	             {"done", true},
	             {"records",
	              {SalesforceRecord("003A", "2026-11-24T10:00:00.123+0000",
	                                {{"Email__c", "a@x.io"}, {"FirstName", "Ann"}}),
	               SalesforceRecord("003B", "2026-11-24T10:00:00.200Z", {{"Email__c", 42}}),
	               SalesforceRecord("003C", "2026-11-24T11:00:00.300+0100", {{"Email__c", nullptr}}),
	               SalesforceRecord("003D", "2026-11-24T10:00:00.000+0000")}}};
	// The route names the key field in another case: Salesforce answers with its own spelling.
	PullPage page = ParsePullResponse(endpoint, MakeRoute("Contact", "email__c", "delete"), PullPhase::Changes,
	                                  PullCursor{"1970-01-01T00:00:00.000Z", ""}, Answer(body));
	ASSERT_EQ(page.records.size(), 4u);
	EXPECT_EQ(page.records[0].remote_id, "003A");
	EXPECT_EQ(page.records[0].key, "a@x.io");
	EXPECT_EQ(page.records[0].fields, (Json{{"Id", "003A"},
	                                        {"SystemModstamp", "2026-11-24T10:00:00.123+0000"},
	                                        {"Email__c", "a@x.io"},
	                                        {"FirstName", "Ann"}}));
	EXPECT_FALSE(page.records[0].fields.contains("attributes"));
	EXPECT_EQ(page.records[0].modified_ms, kNov24);
	EXPECT_FALSE(page.records[0].deleted);
	EXPECT_EQ(page.records[1].key, "42");
	EXPECT_EQ(page.records[1].modified_ms, kNov24 + 77);
	EXPECT_EQ(page.records[2].key, "");
	EXPECT_EQ(page.records[2].modified_ms, kNov24 + 177); // +0100 is an hour ahead of UTC
	EXPECT_EQ(page.records[3].key, "");
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.since, "2026-11-24T10:00:00.300Z");
	EXPECT_EQ(page.next.after, "");
	// And the next query starts there.
	HttpRequest request = BuildPullRequest(endpoint, MakeRoute("Contact", "email__c", "delete"), {}, PullPhase::Changes,
	                                       page.next, BearerAuth("tok", "https://acme.my.salesforce.com"));
	EXPECT_NE(SoqlOf(request).find("WHERE SystemModstamp > 2026-11-24T10:00:00.300Z ORDER BY"), std::string::npos);
}

TEST(PullSalesforceParseTest, NextRecordsUrlPagesUntilDone)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	Json first = {{"totalSize", 3},
	              {"done", false},
	              {"nextRecordsUrl", "/services/data/v59.0/query/01gD0000002HU6KIAW-2000"},
	              {"records", {SalesforceRecord("003A", "2026-11-24T10:00:00.123+0000")}}};
	const PullCursor start{"2026-01-01T00:00:00.000Z", ""};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes, start,
	                                  Answer(first));
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, start.since);
	EXPECT_EQ(page.next.after, "/services/data/v59.0/query/01gD0000002HU6KIAW-2000");

	Json last = {{"totalSize", 3},
	             {"done", true},
	             {"records", {SalesforceRecord("003C", "2026-11-24T10:00:05.000+0000")}}};
	page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes, page.next,
	                         Answer(last));
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.since, "2026-11-24T10:00:05.000Z");
	EXPECT_EQ(page.next.after, "");

	// done: true wins over a stray nextRecordsUrl.
	Json done = {{"done", true}, {"nextRecordsUrl", "/services/data/v59.0/query/x-1"}, {"records", Json::array()}};
	page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes, start,
	                         Answer(done));
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.after, "");
}

TEST(PullSalesforceParseTest, SinceNeverMovesBackwards)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	const PullCursor cursor{"2026-11-24T12:00:00.000+0000", ""};
	Json older = {{"done", true}, {"records", {SalesforceRecord("003A", "2026-11-24T10:00:00.123+0000")}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes, cursor,
	                                  Answer(older));
	EXPECT_EQ(page.next.since, cursor.since);
	page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes, cursor,
	                         Answer(Json{{"totalSize", 0}, {"done", true}, {"records", Json::array()}}));
	EXPECT_EQ(page.next.since, cursor.since);
	EXPECT_FALSE(page.more);
}

TEST(PullSalesforceParseTest, DeletedRecordsFromQueryAll)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	Json body = {{"done", true},
	             {"records",
	              {SalesforceRecord("003A", "2026-11-24T10:00:00.123+0000",
	                                {{"Email__c", "gone@x.io"}, {"IsDeleted", true}})}}};
	PullPage page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "delete"), PullPhase::Deletions,
	                                  PullCursor{"1970-01-01T00:00:00.000Z", ""}, Answer(body));
	ASSERT_EQ(page.records.size(), 1u);
	EXPECT_TRUE(page.records[0].deleted);
	EXPECT_EQ(page.records[0].key, "gone@x.io");
	EXPECT_EQ(page.records[0].remote_id, "003A");
	EXPECT_EQ(page.next.since, "2026-11-24T10:00:00.123Z");
}

TEST(PullSalesforceParseTest, MalformedBodiesAndErrorAnswersThrow)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	auto parse = [&](const HttpResponse &response) {
		return ExpectThrows<std::runtime_error>([&] {
			ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "delete"), PullPhase::Changes,
			                  PullCursor{"1970-01-01T00:00:00.000Z", ""}, response);
		});
	};
	EXPECT_NE(parse(Answer(200, "")).find("(empty body)"), std::string::npos);
	EXPECT_NE(parse(Answer(200, "[1,2]")).find("not a JSON object"), std::string::npos);
	EXPECT_NE(parse(Answer(Json{{"done", true}})).find("without a records array"), std::string::npos);
	EXPECT_NE(parse(Answer(Json{{"done", true}, {"records", {1}}})).find("not an object"), std::string::npos);
	EXPECT_NE(parse(Answer(Json{{"done", true}, {"records", {{{"Name", "x"}}}}})).find("without an Id"),
	          std::string::npos);
	EXPECT_NE(
	    parse(Answer(Json{{"done", false}, {"nextRecordsUrl", "https://evil.example/x"}, {"records", Json::array()}}))
	        .find("nextRecordsUrl"),
	    std::string::npos);
	std::string message = parse(
	    Answer(400, R"([{"message":"No such column 'Foo__c' on entity 'Contact'.","errorCode":"INVALID_FIELD"}])"));
	EXPECT_EQ(message, "salesforce pull failed: HTTP 400 INVALID_FIELD: No such column 'Foo__c' on entity 'Contact'.");
}

TEST(PullSalesforceParseTest, AnExpiredQueryLocatorStartsTheQueryAgain)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	const std::string since = "2026-11-24T10:00:00.000Z";
	HttpResponse expired = Answer(400, R"([{"message":"invalid query locator","errorCode":"INVALID_QUERY_LOCATOR"}])");
	PullCursor paging{since, "/services/data/v59.0/query/01gXX-2000"};
	EXPECT_TRUE(PullQueryExpired(endpoint, paging, expired));
	PullPage page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "ignore"), PullPhase::Changes, paging,
	                                  expired);
	EXPECT_TRUE(page.records.empty());
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, since);
	EXPECT_EQ(page.next.after, "") << "the query starts again from its since";
	// Not for a first page (no locator to drop), another error, or another kind.
	EXPECT_FALSE(PullQueryExpired(endpoint, PullCursor{since, ""}, expired));
	EXPECT_FALSE(PullQueryExpired(endpoint, paging, Answer(400, R"([{"message":"x","errorCode":"INVALID_FIELD"}])")));
	EXPECT_FALSE(PullQueryExpired(MakeEndpoint("hubspot", "https://api.hubapi.com", "pat"), paging, expired));
}

} // namespace
} // namespace switchboard
