// Fixtures the unit tests share: endpoint and route rows, canned answers, the wire text of a
// request, and "this must throw" checks. Header-only (inline), like test_server.h.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

#include "connectors/connector.h"

namespace switchboard {
namespace test_support {

// One row of switchboard.endpoints with its secret resolved; named kind + "_test" unless a
// name is given (the dispatcher keys its state by name).
inline Endpoint
MakeEndpoint(const std::string &kind, const std::string &base_url, const std::string &secret = std::string(),
             Json options = Json::object(), const std::string &name = std::string())
{
	Endpoint endpoint;
	endpoint.name = name.empty() ? kind + "_test" : name;
	endpoint.kind = kind;
	endpoint.base_url = base_url;
	endpoint.secret = secret;
	endpoint.options = std::move(options);
	return endpoint;
}

inline Route
MakeRoute(const std::string &remote_object, const std::string &match_remote, const std::string &on_delete = "ignore",
          const std::string &name = "r1")
{
	Route route;
	route.name = name;
	route.remote_object = remote_object;
	route.match_remote = match_remote;
	route.on_delete = on_delete;
	return route;
}

// An HTTP answer as the client would hand it over (status 0: no answer).
inline HttpResponse
Answer(long status, const std::string &body, Headers headers = {})
{
	HttpResponse response;
	response.status = status;
	response.body = body;
	response.headers = std::move(headers);
	return response;
}

inline HttpResponse
Answer(const Json &body)
{
	return Answer(200, body.dump());
}

// Everything a request would put on the wire, for "no secret anywhere" checks.
inline std::string
WireText(const HttpRequest &request)
{
	std::string text = request.method + " " + request.url + "\n";
	for (const auto &header : request.headers)
		text += header.first + ": " + header.second + "\n";
	return text + request.body;
}

// The message of the E that action throws; a test failure when it throws nothing or
// something else.
template <typename E>
std::string
ExpectThrows(const std::function<void()> &action)
{
	try {
		action();
	} catch (const E &e) {
		return e.what();
	} catch (const std::exception &e) {
		ADD_FAILURE() << "wrong exception type: " << e.what();
		return e.what();
	}
	ADD_FAILURE() << "expected an exception";
	return std::string();
}

} // namespace test_support
} // namespace switchboard
