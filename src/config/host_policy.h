// Which URLs an endpoint may point at (switchboard.allowed_hosts). Plain C++, unit-tested.
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

// patterns: comma list of host patterns ("api.hubapi.com", "*.salesforce.com", "127.0.0.1");
// an empty list allows any host. "*.example.com" matches subdomains, not example.com itself.
bool HostAllowed(const std::string &host, const std::string &patterns);

} // namespace switchboard
