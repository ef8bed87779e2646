#include "config/host_policy.h"

#include <algorithm>
#include <cctype>

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

bool
HostAllowed(const std::string &host, const std::string &patterns)
{
	std::string h = Lower(host);
	bool any = false;
	size_t pos = 0;
	while (pos <= patterns.size()) {
		size_t comma = patterns.find(',', pos);
		std::string pattern = Lower(Trim(patterns.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos)));
		pos = comma == std::string::npos ? patterns.size() + 1 : comma + 1;
		if (pattern.empty())
			continue;
		any = true;
		if (pattern == "*")
			return true;
		if (pattern.rfind("*.", 0) == 0) {
			std::string suffix = pattern.substr(1); // ".example.com"
			if (h.size() > suffix.size() && h.compare(h.size() - suffix.size(), suffix.size(), suffix) == 0)
				return true;
		} else if (h == pattern) {
			return true;
		}
	}
	return !any;
}

} // namespace switchboard
