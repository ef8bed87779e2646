#include "config/host_policy.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {
std::string
Lower(std::string s)
{
	std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
	return s;
}

std::string
Trim(const std::string &s)
{
	size_t b = s.find_first_not_of(" \t");
	size_t e = s.find_last_not_of(" \t");
	return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}
} // namespace

bool
ParseHttpUrl(const std::string &url, UrlParts *parts)
{
	size_t sep = url.find("://");
	if (sep == std::string::npos)
		return false;
	parts->scheme = Lower(url.substr(0, sep));
	if (parts->scheme != "http" && parts->scheme != "https")
		return false;
	size_t start = sep + 3;
	size_t end = url.find_first_of("/?#", start);
	std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
	if (authority.find('@') != std::string::npos || authority.empty())
		return false; // credentials belong in secrets, not in URLs
	std::string host = authority;
	std::string port;
	if (authority[0] == '[') {
		size_t close = authority.find(']');
		if (close == std::string::npos)
			return false;
		host = authority.substr(1, close - 1);
		if (close + 1 < authority.size()) {
			if (authority[close + 1] != ':')
				return false;
			port = authority.substr(close + 2);
		}
	} else {
		size_t colon = authority.rfind(':');
		if (colon != std::string::npos) {
			host = authority.substr(0, colon);
			port = authority.substr(colon + 1);
		}
	}
	if (host.empty())
		return false;
	for (char c : host)
		if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == ':'))
			return false;
	parts->host = Lower(host);
	parts->port = parts->scheme == "https" ? 443 : 80;
	if (!port.empty()) {
		if (port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit))
			return false;
		parts->port = std::stoi(port);
		if (parts->port < 1 || parts->port > 65535)
			return false;
	}
	return true;
}

// ---- addresses ---------------------------------------------------------------------------

std::string
IpAddress::ToString() const
{
	char text[INET6_ADDRSTRLEN] = {0};
	if (inet_ntop(is_v4 ? AF_INET : AF_INET6, bytes, text, sizeof(text)) == nullptr)
		return "?";
	return text;
}

bool
ParseIpAddress(const std::string &text, IpAddress *address)
{
	IpAddress parsed;
	if (inet_pton(AF_INET, text.c_str(), parsed.bytes) == 1) {
		parsed.is_v4 = true;
	} else if (inet_pton(AF_INET6, text.c_str(), parsed.bytes) == 1) {
		static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (std::memcmp(parsed.bytes, kMapped, sizeof(kMapped)) == 0) {
			// ::ffff:a.b.c.d reaches the IPv4 host a.b.c.d: judge it as that address.
			std::memmove(parsed.bytes, parsed.bytes + 12, 4);
			std::memset(parsed.bytes + 4, 0, 12);
			parsed.is_v4 = true;
		} else {
			parsed.is_v4 = false;
		}
	} else {
		return false;
	}
	*address = parsed;
	return true;
}

namespace {

bool
InPrefix(const IpAddress &address, const IpAddress &network, int prefix_bits)
{
	if (address.is_v4 != network.is_v4)
		return false;
	int full = prefix_bits / 8, rest = prefix_bits % 8;
	if (std::memcmp(address.bytes, network.bytes, static_cast<size_t>(full)) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
	return (address.bytes[full] & mask) == (network.bytes[full] & mask);
}

// An IP ("169.254.169.254") or CIDR ("169.254.0.0/16") entry; false for names and junk.
bool
ParseAddressEntry(const std::string &entry, IpAddress *network, int *prefix_bits)
{
	size_t slash = entry.find('/');
	if (!ParseIpAddress(entry.substr(0, slash), network))
		return false;
	int max_bits = network->is_v4 ? 32 : 128;
	if (slash == std::string::npos) {
		*prefix_bits = max_bits;
		return true;
	}
	std::string bits = entry.substr(slash + 1);
	if (bits.empty() || bits.size() > 3 || !std::all_of(bits.begin(), bits.end(), ::isdigit))
		return false;
	*prefix_bits = std::stoi(bits);
	return *prefix_bits <= max_bits;
}

// Calls visit(entry) for every non-empty, trimmed, lower-cased entry; stops when it returns true.
template <typename Visit>
bool
AnyEntry(const std::string &patterns, Visit visit)
{
	size_t pos = 0;
	while (pos <= patterns.size()) {
		size_t comma = patterns.find(',', pos);
		std::string entry = Lower(
		    Trim(patterns.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos)));
		pos = comma == std::string::npos ? patterns.size() + 1 : comma + 1;
		if (!entry.empty() && visit(entry))
			return true;
	}
	return false;
}

bool
ListedExplicitly(const IpAddress &address, const std::string &patterns)
{
	return AnyEntry(patterns, [&](const std::string &entry) {
		IpAddress network;
		int bits = 0;
		return ParseAddressEntry(entry, &network, &bits) && InPrefix(address, network, bits);
	});
}

// Link-local addresses, and with them the metadata services of the clouds (AWS, GCP, Azure
// at 169.254.169.254, AWS's IPv6 fd00:ec2::254): credentials live there.
bool
IsLinkLocalOrMetadata(const IpAddress &address)
{
	IpAddress net;
	if (address.is_v4)
		return ParseIpAddress("169.254.0.0", &net) && InPrefix(address, net, 16);
	if (ParseIpAddress("fe80::", &net) && InPrefix(address, net, 10))
		return true;
	return ParseIpAddress("fd00:ec2::254", &net) && InPrefix(address, net, 128);
}

} // namespace

bool
HostAllowed(const std::string &host, const std::string &patterns)
{
	std::string h = Lower(host);
	IpAddress literal;
	bool is_literal = ParseIpAddress(h, &literal);
	bool any = false;
	bool allowed = AnyEntry(patterns, [&](const std::string &pattern) {
		any = true;
		if (pattern == "*")
			return true;
		IpAddress network;
		int bits = 0;
		if (ParseAddressEntry(pattern, &network, &bits))
			return is_literal && InPrefix(literal, network, bits);
		if (pattern.rfind("*.", 0) == 0) {
			std::string suffix = pattern.substr(1); // ".example.com"
			return h.size() > suffix.size() && h.compare(h.size() - suffix.size(), suffix.size(), suffix) == 0;
		}
		return h == pattern;
	});
	return allowed || !any;
}

namespace {

std::string
UrlProblem(const std::string &url, const std::string &allowed_hosts, bool https_unless_loopback)
{
	size_t sep = url.find("://");
	std::string scheme = Lower(url.substr(0, sep == std::string::npos ? 0 : sep));
	if (sep == std::string::npos || (scheme != "http" && scheme != "https"))
		return "not an absolute http:// or https:// URL";
	size_t start = sep + 3;
	size_t end = url.find_first_of("/?#", start);
	std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
	if (authority.find('@') != std::string::npos)
		return "user info (user:password@) is not allowed in the URL; credentials belong in secrets";
	if (url.find('?') != std::string::npos)
		return "a query string is not allowed in the URL";
	if (url.find('#') != std::string::npos)
		return "a fragment is not allowed in the URL";
	if (authority.empty())
		return "the URL has no host";
	UrlParts parts;
	if (!ParseHttpUrl(url, &parts)) {
		size_t colon = authority.rfind(':');
		if (colon != std::string::npos && authority.find(']', colon) == std::string::npos)
			return "the URL has an invalid host or port";
		return "the URL has an invalid host";
	}
	if (!HostAllowed(parts.host, allowed_hosts))
		return "host \"" + parts.host + "\" is not in switchboard.allowed_hosts";
	IpAddress literal;
	if (ParseIpAddress(parts.host, &literal)) {
		std::string problem = AddressProblem(literal, allowed_hosts);
		if (!problem.empty())
			return problem;
	}
	if (https_unless_loopback && parts.scheme != "https" && !IsLoopbackHost(parts.host))
		return "must be https (plain http only to a loopback host)";
	return std::string();
}

} // namespace

std::string
AddressProblem(const IpAddress &address, const std::string &patterns)
{
	if (IsLinkLocalOrMetadata(address) && !ListedExplicitly(address, patterns))
		return "address " + address.ToString() +
		       " is link-local or a cloud metadata service: refused unless switchboard.allowed_hosts lists it as an IP or CIDR entry";
	return std::string();
}

bool
IsLoopbackHost(const std::string &host)
{
	if (Lower(host) == "localhost")
		return true;
	IpAddress address, net;
	if (!ParseIpAddress(host, &address))
		return false;
	if (address.is_v4)
		return ParseIpAddress("127.0.0.0", &net) && InPrefix(address, net, 8);
	return ParseIpAddress("::1", &net) && InPrefix(address, net, 128);
}

std::string
EndpointUrlProblem(const std::string &url, const std::string &allowed_hosts)
{
	return UrlProblem(url, allowed_hosts, false);
}

std::string
InstanceUrlProblem(const std::string &url, const std::string &allowed_hosts)
{
	return UrlProblem(url, allowed_hosts, true);
}

} // namespace switchboard
