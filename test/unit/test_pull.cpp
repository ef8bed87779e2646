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
	    // A cycle starts a minute before the cursor (records that became visible late).
	    R"({"filterGroups":[{"filters":[{"propertyName":"lastmodifieddate","operator":"GTE","value":"1795514340123"}]}],)"
	    R"("sorts":[{"propertyName":"lastmodifieddate","direction":"ASCENDING"}],)"
	    R"("properties":["firstname","email","lastmodifieddate"],"limit":200})");
}

TEST(PullHubSpotRequestTest, OtherObjectsUseHsLastModifiedDateAndPageByKeyset)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat-SECRET");
	auto body_for = [&](const std::string &after) {
		HttpRequest request = BuildPullRequest(endpoint, MakeRoute("companies", "domain", "delete"), {"name"},
		                                       PullPhase::Changes, PullCursor{"1000", after}, BearerAuth("pat-SECRET"));
		EXPECT_EQ(request.url, "https://api.hubapi.com/crm/v3/objects/companies/search");
		return Json::parse(request.body);
	};
	auto filter = [](const char *name, const char *op, const char *value) {
		return Json{{"propertyName", name}, {"operator", op}, {"value", value}};
	};
	auto sorts = [](const char *name) { return Json::array({{{"propertyName", name}, {"direction", "ASCENDING"}}}); };
	// Never HubSpot's offset (after), always one filter group and one sort rule (HubSpot
	// applies only one).
	Json start = body_for("");
	EXPECT_EQ(start["filterGroups"], Json::array({{{"filters", {filter("hs_lastmodifieddate", "GTE", "0")}}}}));
	EXPECT_EQ(start["sorts"], sorts("hs_lastmodifieddate"));
	EXPECT_EQ(start["properties"], (Json{"name", "domain", "hs_lastmodifieddate"}));
	EXPECT_EQ(start["limit"], kHubSpotSearchLimit);
	EXPECT_FALSE(start.contains("after"));
	// An offset stored by an older version starts the cycle again.
	EXPECT_EQ(body_for("400"), start);
	Json from = body_for("t:5000");
	EXPECT_EQ(from["filterGroups"], Json::array({{{"filters", {filter("hs_lastmodifieddate", "GTE", "5000")}}}}));
	EXPECT_EQ(from["sorts"], sorts("hs_lastmodifieddate"));
	Json tie = body_for("ms:5000:17");
	EXPECT_EQ(tie["filterGroups"],
	          Json::array(
	              {{{"filters", {filter("hs_lastmodifieddate", "EQ", "5000"), filter("hs_object_id", "GT", "17")}}}}));
	EXPECT_EQ(tie["sorts"], sorts("hs_object_id"));
	Json past = body_for("gt:5000");
	EXPECT_EQ(past["filterGroups"], Json::array({{{"filters", {filter("hs_lastmodifieddate", "GT", "5000")}}}}));
	EXPECT_EQ(past["sorts"], sorts("hs_lastmodifieddate"));
	for (const Json &body : {start, from, tie, past})
		EXPECT_FALSE(body.contains("after"));
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
	          "WHERE%20SystemModstamp%20%3E%3D%202026-11-24T09%3A59%3A00.123Z%20"
	          "ORDER%20BY%20SystemModstamp%20ASC%2C%20Id%20ASC%20LIMIT%202000");
	// A cycle starts a minute before the cursor: SystemModstamp has one-second resolution, and
	// a record stamped in the cursor's second may become visible after the cycle that set it.
	EXPECT_EQ(SoqlOf(request), "SELECT Id, SystemModstamp, Email__c, FirstName, LastName FROM Contact "
	                           "WHERE SystemModstamp >= 2026-11-24T09:59:00.123Z "
	                           "ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000");
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
	                           "WHERE SystemModstamp >= 1970-01-01T00:00:00.000Z "
	                           "ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000");
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
	                           "SystemModstamp >= 2026-11-24T09:59:00.123Z "
	                           "ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000");
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

TEST(PullHubSpotParseTest, PagesByKeysetFromTheNewestTimeOfThePage)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	const Route route = MakeRoute("contacts", "email", "delete");
	// HubSpot's paging.next.after (an offset) is never followed: a record modified between two
	// pages moves to the end of the results and an offset would skip another one for good.
	Json body = {{"results",
	              {HubSpotResult("1", {{"email", "a@x.io"}, {"lastmodifieddate", "1795514400500"}}),
	               HubSpotResult("2", {{"email", "b@x.io"}, {"lastmodifieddate", "1795514400900"}})}},
	             {"paging", {{"next", {{"after", "9800"}, {"link", "https://api.hubapi.com/..."}}}}}};
	PullPage page = ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"1000", ""}, Answer(body));
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.records.size(), 2u);
	EXPECT_EQ(page.next.since, "1000"); // the cycle is still being paged
	// Past the newest time of the page, or at it and not one of the ids read at it (their
	// order is unknown; none is read again).
	EXPECT_EQ(page.next.after, "n:1795514400900:2");
	Json sent = Json::parse(
	    BuildPullRequest(endpoint, route, {}, PullPhase::Changes, page.next, BearerAuth("pat")).body);
	EXPECT_FALSE(sent.contains("after"));
	EXPECT_EQ(sent["filterGroups"], Json::parse(R"([
	    {"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": "1795514400900"}]},
	    {"filters": [{"propertyName": "lastmodifieddate", "operator": "EQ", "value": "1795514400900"},
	                 {"propertyName": "hs_object_id", "operator": "NOT_IN", "values": ["2"]}]}])"));
	EXPECT_EQ(sent["sorts"][0]["propertyName"], "lastmodifieddate");
	// Far past HubSpot's 10,000-result cap, each page is the first of a new search.
	Json next = {{"results",
	              {HubSpotResult("2", {{"email", "b@x.io"}, {"lastmodifieddate", "1795514400900"}}),
	               HubSpotResult("3", {{"email", "c@x.io"}, {"lastmodifieddate", "1795514400950"}})}},
	             {"paging", {{"next", {{"after", "2"}}}}}};
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next, Answer(next));
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, "1000");
	EXPECT_EQ(page.next.after, "n:1795514400950:3");
	// The last page: the cycle ends at the newest time seen, even when the page is empty.
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next,
	                         Answer(Json{{"total", 0}, {"results", Json::array()}}));
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.since, "1795514400950");
	EXPECT_EQ(page.next.after, "");
}

TEST(PullHubSpotParseTest, TheIdsReadAtTheNewestTimeAreKeptAcrossPagesUpToTheNotInLimit)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	const Route route = MakeRoute("contacts", "email", "delete");
	auto full = [](Json results) {
		return Json{{"results", std::move(results)}, {"paging", {{"next", {{"after", "200"}}}}}};
	};
	// A page ending amid a batch stamped 5000 (ids 7 and 9 read), then one more of it (11) and a
	// record of 4000 (out of order: one sort rule, a remote's own order within a time): the ids
	// at 5000 accumulate, so neither 7 nor 9 is asked for again.
	PullPage page = ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"1000", ""},
	                                  Answer(full({HubSpotResult("3", {{"lastmodifieddate", "4000"}}),
	                                               HubSpotResult("9", {{"lastmodifieddate", "5000"}}),
	                                               HubSpotResult("7", {{"lastmodifieddate", "5000"}})})));
	EXPECT_EQ(page.next.after, "n:5000:7,9");
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next,
	                         Answer(full({HubSpotResult("11", {{"lastmodifieddate", "5000"}})})));
	EXPECT_EQ(page.next.after, "n:5000:7,9,11");
	// A newer time: only its own ids.
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next,
	                         Answer(full({HubSpotResult("12", {{"lastmodifieddate", "5000"}}),
	                                      HubSpotResult("5", {{"lastmodifieddate", "6000"}})})));
	EXPECT_EQ(page.next.after, "n:6000:5");
	// A remote that ignores the NOT_IN answers the same records: an error, never a loop.
	std::string error = ExpectThrows<std::runtime_error>([&] {
		ParsePullResponse(endpoint, route, PullPhase::Changes, page.next,
		                  Answer(full({HubSpotResult("5", {{"lastmodifieddate", "6000"}})})));
	});
	EXPECT_NE(error.find("cannot move"), std::string::npos) << error;
	// More ids at one time than one NOT_IN carries: that time is read again from its start
	// (t:), or, when the page holds nothing older, walked by id.
	Json many = Json::array({HubSpotResult("1", {{"lastmodifieddate", "100"}})});
	for (int id = 1000; id < 1101; id++)
		many.push_back(HubSpotResult(std::to_string(id), {{"lastmodifieddate", "7000"}}));
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"0", ""}, Answer(full(many)));
	EXPECT_EQ(page.next.after, "t:7000");
	many.erase(many.begin());
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"0", ""}, Answer(full(many)));
	EXPECT_EQ(page.next.after, "ms:7000:0");
	// An id that is not a number at the newest time: read again from that time.
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"0", ""},
	                         Answer(full({HubSpotResult("1", {{"lastmodifieddate", "100"}}),
	                                      HubSpotResult("x", {{"lastmodifieddate", "200"}}, "x")})));
	EXPECT_EQ(page.next.after, "t:200");
	// A position with more ids than allowed, or junk, starts the cycle again (never a filter of
	// unbounded size).
	std::string ids;
	for (int id = 0; id < 101; id++)
		ids += (id ? "," : "") + std::to_string(id);
	for (const std::string &after :
	     {"n:5000:" + ids, std::string("n:5000:"), std::string("n:5000:1,,2"), std::string("n:x:1")}) {
		Json sent = Json::parse(
		    BuildPullRequest(endpoint, route, {}, PullPhase::Changes, PullCursor{"1000", after}, BearerAuth("pat"))
		        .body);
		EXPECT_EQ(sent["filterGroups"].size(), 1u) << after;
		EXPECT_EQ(sent["filterGroups"][0]["filters"][0]["operator"], "GTE") << after;
	}
}

TEST(PullHubSpotParseTest, AWindowOfOneMillisecondIsWalkedByIdNotLoopedOn)
{
	Endpoint endpoint = MakeEndpoint("hubspot", "https://api.hubapi.com", "pat");
	const Route route = MakeRoute("contacts", "email", "delete");
	// Every record of this full page carries one millisecond: a search from it would answer the
	// same page again, forever. And one whose time is unreadable (0) must not drag the cursor
	// to the epoch.
	Json body = {{"results",
	              {HubSpotResult("1", {{"lastmodifieddate", "5001"}}),
	               HubSpotResult("2", {{"lastmodifieddate", "junk"}}, "junk")}},
	             {"paging", {{"next", {{"after", "10000"}}}}}};
	PullPage page = ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"5000", ""}, Answer(body));
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
	// Exhausted: past that millisecond, back to the search by time.
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next,
	                         Answer(Json{{"results", {HubSpotResult("11", {})}}}));
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, "5001"); // everything up to that millisecond was read
	EXPECT_EQ(page.next.after, "gt:5001");
	sent = Json::parse(BuildPullRequest(endpoint, route, {}, PullPhase::Changes, page.next, BearerAuth("pat")).body);
	EXPECT_EQ(sent["filterGroups"][0]["filters"],
	          Json::parse(R"([{"propertyName":"lastmodifieddate","operator":"GT","value":"5001"}])"));
	EXPECT_EQ(sent["sorts"][0]["propertyName"], "lastmodifieddate");
	// And nothing later: the cycle ends at that millisecond.
	page = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next,
	                         Answer(Json{{"results", {HubSpotResult("12", {{"lastmodifieddate", "junk"}}, "junk")}}}));
	EXPECT_FALSE(page.more);
	EXPECT_EQ(page.next.since, "5001");
	EXPECT_EQ(page.next.after, "");

	// Full pages with no readable time, or none past where the search started (a remote that
	// ignores the filter), or ids that do not move: an error, never a loop.
	auto full = [](Json results) {
		return Json{{"results", std::move(results)}, {"paging", {{"next", {{"after", "200"}}}}}};
	};
	for (const auto &[after, results] : std::vector<std::pair<std::string, Json>>{
	         {"t:5000", Json::array({HubSpotResult("1", {{"lastmodifieddate", "3000"}})})},
	         {"gt:5000", Json::array({HubSpotResult("1", {{"lastmodifieddate", "5000"}})})},
	         {"", Json::array({HubSpotResult("1", {{"lastmodifieddate", "junk"}}, "junk")})},
	         {"ms:5000:9", Json::array({HubSpotResult("8", {{"lastmodifieddate", "5000"}})})},
	         {"ms:5000:9", Json::array()}}) {
		std::string error = ExpectThrows<std::runtime_error>([&] {
			ParsePullResponse(endpoint, route, PullPhase::Changes, PullCursor{"5000", after}, Answer(full(results)));
		});
		EXPECT_NE(error.find("cannot move"), std::string::npos) << after << ": " << error;
	}
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
	EXPECT_NE(SoqlOf(request).find("WHERE SystemModstamp >= 2026-11-24T09:59:00.300Z ORDER BY"), std::string::npos)
	    << SoqlOf(request);
}

TEST(PullSalesforceParseTest, AFullPageIsFollowedByAQueryAfterItsLastTimeAndId)
{
	Endpoint endpoint = MakeEndpoint("salesforce", "https://login.salesforce.com", "{}");
	const Route route = MakeRoute("Contact", "Email__c", "delete");
	const Auth auth = BearerAuth("tok", "https://acme.my.salesforce.com");
	// totalSize reached the LIMIT: more may follow, from the last (SystemModstamp, Id) pair.
	Json full = {{"totalSize", 2000},
	             {"done", true},
	             {"records",
	              {SalesforceRecord("003A", "2026-11-24T10:00:00.000+0000"),
	               SalesforceRecord("003B", "2026-11-24T10:00:01.000+0000")}}};
	const PullCursor start{"2026-11-24T09:00:00.000Z", ""};
	PullPage page = ParsePullResponse(endpoint, route, PullPhase::Changes, start, Answer(full));
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, start.since);
	EXPECT_EQ(page.next.after, "k:" + std::to_string(kNov24 - 123 + 1000) + ":003B");
	for (PullPhase phase : {PullPhase::Changes, PullPhase::Deletions}) {
		std::string soql = SoqlOf(BuildPullRequest(endpoint, route, {}, phase, page.next, auth));
		EXPECT_NE(soql.find(
		              "(SystemModstamp > 2026-11-24T10:00:01.000Z OR (SystemModstamp = "
		              "2026-11-24T10:00:01.000Z AND Id > '003B')) ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000"),
		          std::string::npos)
		    << soql;
	}
	// The last page of the cycle: since moves to its newest time (or the keyset's, when empty).
	Json last = {{"totalSize", 0}, {"done", true}, {"records", Json::array()}};
	PullPage end = ParsePullResponse(endpoint, route, PullPhase::Changes, page.next, Answer(last));
	EXPECT_FALSE(end.more);
	EXPECT_EQ(end.next.since, "2026-11-24T10:00:01.000Z");
	EXPECT_EQ(end.next.after, "");
	// A full page whose last record is the keyset's own (or has no time): an error, never a loop.
	Json stuck = {{"totalSize", 2000},
	              {"done", true},
	              {"records", {SalesforceRecord("003B", "2026-11-24T10:00:01.000+0000")}}};
	std::string error = ExpectThrows<std::runtime_error>(
	    [&] { ParsePullResponse(endpoint, route, PullPhase::Changes, page.next, Answer(stuck)); });
	EXPECT_NE(error.find("cannot move"), std::string::npos) << error;
	// Only an Id goes into SOQL: a cursor with anything else is not a keyset.
	ExpectThrows<std::invalid_argument>([&] {
		BuildPullRequest(endpoint, route, {}, PullPhase::Changes, PullCursor{start.since, "k:1000:0' OR Id != '"},
		                 auth);
	});
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
	// The URL, and the keyset position this batch reached (its last record).
	EXPECT_EQ(page.next.after,
	          "/services/data/v59.0/query/01gD0000002HU6KIAW-2000 k:" + std::to_string(kNov24) + ":003A");
	HttpRequest followed = BuildPullRequest(endpoint, MakeRoute("Contact", "Email__c", "delete"), {},
	                                        PullPhase::Changes, page.next,
	                                        BearerAuth("tok", "https://acme.my.salesforce.com"));
	EXPECT_EQ(followed.url, "https://acme.my.salesforce.com/services/data/v59.0/query/01gD0000002HU6KIAW-2000");

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
	// Batches followed so far reached a keyset position: a new query starts after it.
	PullCursor positioned{since, "/services/data/v59.0/query/01gXX-2000 k:1795514400000:003B"};
	EXPECT_TRUE(PullQueryExpired(endpoint, positioned, expired));
	page = ParsePullResponse(endpoint, MakeRoute("Contact", "Email__c", "ignore"), PullPhase::Changes, positioned,
	                         expired);
	EXPECT_TRUE(page.more);
	EXPECT_EQ(page.next.since, since);
	EXPECT_EQ(page.next.after, "k:1795514400000:003B");
	// Not for a first page (no locator to drop), another error, or another kind.
	EXPECT_FALSE(PullQueryExpired(endpoint, PullCursor{since, ""}, expired));
	EXPECT_FALSE(PullQueryExpired(endpoint, paging, Answer(400, R"([{"message":"x","errorCode":"INVALID_FIELD"}])")));
	EXPECT_FALSE(PullQueryExpired(MakeEndpoint("hubspot", "https://api.hubapi.com", "pat"), paging, expired));
}

} // namespace
} // namespace switchboard
