// Which URLs an endpoint may point at (switchboard.allowed_hosts), and which addresses the
// worker may connect to. Plain C++, unit-tested.
//
// The policy is a comma list of entries: a host name ("api.hubapi.com"), a suffix pattern
// ("*.salesforce.com": subdomains, not salesforce.com itself), "*", an IP address
// ("127.0.0.1", "::1") or a CIDR block ("10.0.0.0/8", "fd00:ec2::/32"). It is applied twice:
//  - to the URL's host, by name (HostAllowed): when an endpoint row is written and again
//    before every request, so a reload that narrows the list takes effect at once;
//  - to every address the host resolves to, just before connecting (AddressProblem):
//    link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254) are
//    refused unless an IP or CIDR entry lists them explicitly; no name pattern, not even "*",
//    lets them through, since any name can be made to resolve to them.
// An empty policy allows any host, with that same exception.
#pragma once

#include <string>

namespace switchboard {

struct UrlParts {
	std::string scheme; // http | https
	std::string host;   // lower-cased, without brackets for IPv6
	int port = 0;
};

// Accepts only absolute http(s) URLs with a host; false otherwise.
bool ParseHttpUrl(const std::string &url, UrlParts *parts);

// patterns: the policy above; an empty list allows any host. IP and CIDR entries match a
// host that is an address literal; name entries match names (and literals textually).
bool HostAllowed(const std::string &host, const std::string &patterns);

// An IPv4 or IPv6 address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is held as IPv4.
struct IpAddress {
	bool is_v4 = true;
	unsigned char bytes[16] = {0}; // IPv4: the first 4
	std::string ToString() const;
};

// A numeric address (inet_pton forms, no brackets, no zone); false for anything else.
bool ParseIpAddress(const std::string &text, IpAddress *address);

// "" when the worker may connect to this (resolved) address under patterns, else why not.
std::string AddressProblem(const IpAddress &address, const std::string &patterns);

// localhost, 127.0.0.0/8, ::1 (tests talk plain http to doubles on loopback).
bool IsLoopbackHost(const std::string &host);

// "" when url is acceptable as an endpoint base_url under allowed_hosts, else the reason:
// not http(s), no host, a query, a fragment, user info, a bad port, a host not allowed, a
// literal link-local/metadata address not listed.
std::string EndpointUrlProblem(const std::string &url, const std::string &allowed_hosts);

// As EndpointUrlProblem, and https unless the host is loopback: for a URL a remote hands us
// (the Salesforce token answer's instance_url).
std::string InstanceUrlProblem(const std::string &url, const std::string &allowed_hosts);

} // namespace switchboard
