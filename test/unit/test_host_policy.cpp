// Unit tests for switchboard.allowed_hosts: URL parsing, host patterns, CIDR entries, the
// link-local/metadata rule applied to resolved addresses, and what an endpoint URL may carry.
#include <gtest/gtest.h>

#include <string>

#include "config/host_policy.h"

namespace switchboard {
namespace {

IpAddress
Ip(const std::string &text)
{
	IpAddress address;
	EXPECT_TRUE(ParseIpAddress(text, &address)) << text;
	return address;
}

TEST(HostPolicy, ParseHttpUrlKeepsWorking)
{
	UrlParts parts;
	ASSERT_TRUE(ParseHttpUrl("https://API.HubApi.com/crm", &parts));
	EXPECT_EQ(parts.scheme, "https");
	EXPECT_EQ(parts.host, "api.hubapi.com");
	EXPECT_EQ(parts.port, 443);
	ASSERT_TRUE(ParseHttpUrl("http://[::1]:8080/x", &parts));
	EXPECT_EQ(parts.host, "::1");
	EXPECT_EQ(parts.port, 8080);
	EXPECT_FALSE(ParseHttpUrl("ftp://x/", &parts));
	EXPECT_FALSE(ParseHttpUrl("http://user:pw@x/", &parts));
	EXPECT_FALSE(ParseHttpUrl("http:///x", &parts));
}

TEST(HostPolicy, HostPatterns)
{
	EXPECT_TRUE(HostAllowed("anything.example", ""));
	EXPECT_TRUE(HostAllowed("api.hubapi.com", "api.hubapi.com"));
	EXPECT_TRUE(HostAllowed("API.hubapi.com", " x.org , api.hubapi.com "));
	EXPECT_FALSE(HostAllowed("evil.com", "api.hubapi.com"));
	EXPECT_TRUE(HostAllowed("a.my.salesforce.com", "*.salesforce.com"));
	EXPECT_FALSE(HostAllowed("salesforce.com", "*.salesforce.com"));
	EXPECT_FALSE(HostAllowed("evilsalesforce.com", "*.salesforce.com"));
	EXPECT_TRUE(HostAllowed("whatever", "*"));
}

TEST(HostPolicy, CidrAndIpEntriesMatchAddressHosts)
{
	EXPECT_TRUE(HostAllowed("10.1.2.3", "10.0.0.0/8"));
	EXPECT_FALSE(HostAllowed("11.1.2.3", "10.0.0.0/8"));
	EXPECT_TRUE(HostAllowed("::1", "0:0::1"));
	EXPECT_TRUE(HostAllowed("fd00:ec2::254", "fd00:ec2::/32"));
	EXPECT_FALSE(HostAllowed("fd01::1", "fd00:ec2::/32"));
	// A CIDR entry never matches a name: names are matched by name patterns only.
	EXPECT_FALSE(HostAllowed("ten.example", "10.0.0.0/8"));
	// Malformed CIDR entries match nothing.
	EXPECT_FALSE(HostAllowed("10.1.2.3", "10.0.0.0/33"));
	EXPECT_FALSE(HostAllowed("10.1.2.3", "10.0.0.0/x"));
}

TEST(HostPolicy, ParseIpAddress)
{
	IpAddress a;
	EXPECT_TRUE(ParseIpAddress("169.254.169.254", &a));
	EXPECT_TRUE(ParseIpAddress("::ffff:169.254.169.254", &a));
	EXPECT_TRUE(a.is_v4) << "an IPv4-mapped address is treated as the IPv4 address";
	EXPECT_FALSE(ParseIpAddress("evil.test", &a));
	EXPECT_FALSE(ParseIpAddress("", &a));
	EXPECT_EQ(Ip("::ffff:127.0.0.1").ToString(), "127.0.0.1");
}

TEST(HostPolicy, LinkLocalAndMetadataRefusedUnlessListedExplicitly)
{
	for (const char *address :
	     {"169.254.169.254", "169.254.0.1", "fe80::1", "febf::1", "fd00:ec2::254", "::ffff:169.254.169.254"}) {
		EXPECT_FALSE(AddressProblem(Ip(address), "").empty()) << address;
		// Not even "*" nor a name pattern lets them through.
		EXPECT_FALSE(AddressProblem(Ip(address), "*").empty()) << address;
		EXPECT_FALSE(AddressProblem(Ip(address), "*.example.com, metadata.google.internal").empty()) << address;
	}
	EXPECT_EQ(AddressProblem(Ip("169.254.169.254"), "169.254.169.254"), "");
	EXPECT_EQ(AddressProblem(Ip("169.254.10.20"), "x.org, 169.254.0.0/16"), "");
	EXPECT_EQ(AddressProblem(Ip("fd00:ec2::254"), "fd00:ec2::254"), "");
	EXPECT_EQ(AddressProblem(Ip("fe80::1234"), "fe80::/10"), "");
	EXPECT_FALSE(AddressProblem(Ip("169.254.169.254"), "169.254.169.253").empty());
	// Other addresses: the host was already checked by name; any address is fine.
	for (const char *address : {"127.0.0.1", "::1", "10.0.0.1", "8.8.8.8", "fd00:ec2::253", "fec0::1"})
		EXPECT_EQ(AddressProblem(Ip(address), "api.hubapi.com"), "") << address;
	EXPECT_NE(AddressProblem(Ip("169.254.169.254"), "").find("169.254.169.254"), std::string::npos);
}

TEST(HostPolicy, LoopbackHosts)
{
	for (const char *host : {"localhost", "LOCALHOST", "127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"})
		EXPECT_TRUE(IsLoopbackHost(host)) << host;
	for (const char *host : {"localhost.evil.com", "128.0.0.1", "::2", "example.com", ""})
		EXPECT_FALSE(IsLoopbackHost(host)) << host;
}

TEST(HostPolicy, EndpointUrlProblem)
{
	EXPECT_EQ(EndpointUrlProblem("https://api.hubapi.com", ""), "");
	EXPECT_EQ(EndpointUrlProblem("https://api.hubapi.com/", "api.hubapi.com"), "");
	EXPECT_EQ(EndpointUrlProblem("http://127.0.0.1:8080/hooks/a", "127.0.0.1"), "");
	EXPECT_EQ(EndpointUrlProblem("http://[::1]:8080/hooks/a", "::1"), "");

	auto has = [](const std::string &url, const std::string &allowed, const std::string &word) {
		std::string problem = EndpointUrlProblem(url, allowed);
		EXPECT_NE(problem.find(word), std::string::npos) << url << " -> \"" << problem << "\"";
	};
	has("ftp://api.hubapi.com/", "", "http");
	has("file:///etc/passwd", "", "http");
	has("api.hubapi.com", "", "http");
	has("https:///x", "", "host");
	has("https://hooks.example.com/a?token=abc", "", "query");
	has("https://hooks.example.com/a#frag", "", "fragment");
	has("https://hooks.example.com?x", "", "query");
	has("https://user:pw@hooks.example.com/a", "", "user");
	has("https://user@hooks.example.com/a", "", "user");
	has("https://evil.com/a", "api.hubapi.com", "allowed_hosts");
	// A literal metadata address is refused at write time too, unless listed.
	has("http://169.254.169.254/latest/meta-data", "", "link-local");
	EXPECT_EQ(EndpointUrlProblem("http://169.254.169.254/latest", "169.254.169.254"), "");
	has("http://exa mple.com/", "", "host");
	has("http://example.com:99999/", "", "port");
	EXPECT_NE(EndpointUrlProblem("http://example.com\\@evil.com/", ""), "");
}

TEST(HostPolicy, InstanceUrlMustBeHttpsUnlessLoopback)
{
	EXPECT_EQ(InstanceUrlProblem("https://acme.my.salesforce.com", "*.my.salesforce.com"), "");
	EXPECT_EQ(InstanceUrlProblem("http://127.0.0.1:5000", "127.0.0.1"), "");
	EXPECT_EQ(InstanceUrlProblem("http://localhost:5000", ""), "");
	EXPECT_NE(InstanceUrlProblem("http://acme.my.salesforce.com", "*.my.salesforce.com").find("https"),
	          std::string::npos);
	EXPECT_NE(InstanceUrlProblem("https://evil.com", "*.my.salesforce.com").find("allowed_hosts"), std::string::npos);
	EXPECT_NE(InstanceUrlProblem("https://169.254.169.254", "").find("link-local"), std::string::npos);
	EXPECT_NE(InstanceUrlProblem("https://acme.my.salesforce.com?x=1", "").find("query"), std::string::npos);
}

} // namespace
} // namespace switchboard
