// Shared by the libFuzzer targets: turning fuzzer bytes into an HTTP answer, and fixtures.
// Every target feeds one remote-input parser; anything but a clean result or a
// std::exception (the parsers' documented errors) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "connectors/connector.h"

namespace switchboard {
namespace fuzz {

// The first byte picks the HTTP status (so that error paths are fuzzed too), the rest is the body.
inline HttpResponse
ResponseFrom(const uint8_t *data, size_t size)
{
	static const long kStatuses[] = {200, 200, 200, 200, 201, 204, 207, 400, 401, 403,
	                                 404, 408, 409, 410, 423, 429, 500, 502, 503, 0};
	HttpResponse response;
	if (size == 0)
		return response;
	response.status = kStatuses[data[0] % (sizeof kStatuses / sizeof kStatuses[0])];
	response.body.assign(reinterpret_cast<const char *>(data) + 1, size - 1);
	if (response.status == 0)
		response.transport_error = response.body;
	if (data[0] & 0x80)
		response.headers.emplace_back("retry-after", response.body.substr(0, 8));
	return response;
}

inline Endpoint
FuzzEndpoint(const std::string &kind)
{
	Endpoint endpoint;
	endpoint.name = kind + "_fuzz";
	endpoint.kind = kind;
	endpoint.base_url = "https://remote.example";
	endpoint.secret = kind == "salesforce"    ? R"({"client_id":"id","client_secret":"secret"})"
	                  : kind == "woocommerce" ? R"({"consumer_key":"ck","consumer_secret":"cs"})"
	                                          : "token";
	return endpoint;
}

inline Route
FuzzRoute(const std::string &object, const std::string &match_remote)
{
	Route route;
	route.name = "fuzz";
	route.remote_object = object;
	route.match_remote = match_remote;
	route.on_delete = "delete";
	return route;
}

} // namespace fuzz
} // namespace switchboard
