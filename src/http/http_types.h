// The HTTP request and answer as every layer sees them: the client sends and fills them, the
// connectors build and read them, the dispatcher routes them. Nothing here knows a remote.
//
// Plain C++ (no postgres.h).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace switchboard {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
	std::string method;
	std::string url;
	Headers headers;
	std::string body;
};

struct HttpResponse {
	long status = 0;             // 0: no HTTP answer (connect error, timeout, dropped)
	std::string transport_error; // libcurl's text when status == 0
	Headers headers;             // names lower-cased
	std::string body;
	double elapsed_ms = 0;
};

// Case-insensitive header lookup; empty when absent.
std::string HeaderValue(const Headers &headers, const std::string &name);

} // namespace switchboard
