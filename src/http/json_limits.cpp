#include "http/json_limits.h"

#include <utility>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// Exceeded a limit (as opposed to a syntax error).
struct LimitExceeded {
	std::string reason;
};

Json
Parse(const std::string &text)
{
	if (text.size() > kMaxRemoteJsonBytes)
		throw LimitExceeded{"JSON text larger than " + std::to_string(kMaxRemoteJsonBytes) + " bytes"};
	// depth counts the containers around the one starting: 0 for the outermost. Throwing here
	// stops the parser before the value is any deeper; what was built so far is freed.
	auto limit_depth = [](int depth, Json::parse_event_t event, Json &) {
		if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
		    depth >= kMaxRemoteJsonDepth)
			throw LimitExceeded{"JSON nested deeper than " + std::to_string(kMaxRemoteJsonDepth) + " levels"};
		return true;
	};
	return Json::parse(text, limit_depth);
}

} // namespace

Json
ParseRemoteJson(const std::string &text)
{
	try {
		return Parse(text);
	} catch (const LimitExceeded &e) {
		throw RemoteJsonError(e.reason);
	} catch (const Json::exception &e) { // syntax, and out_of_range for a number like 1e999
		throw RemoteJsonError(std::string("not valid JSON: ") + e.what());
	}
}

Json
TryParseRemoteJson(const std::string &text, std::string *refused)
{
	if (refused != nullptr)
		refused->clear();
	try {
		return Parse(text);
	} catch (const LimitExceeded &e) {
		if (refused != nullptr)
			*refused = e.reason;
	} catch (const Json::exception &) {
	}
	return Json(Json::value_t::discarded);
}

} // namespace switchboard
