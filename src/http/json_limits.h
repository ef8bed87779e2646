// Parsing JSON that came from a remote (HTTP answers): bounded in depth and size.
//
// nlohmann::json copies, compares and dumps recursively, so a value nested 100,000 levels
// deep overflows the worker's stack in the first copy after parsing. Every answer a remote
// sends is therefore parsed here, never with Json::parse directly: nesting deeper than
// kMaxRemoteJsonDepth is refused while parsing, before such a value exists.
//
// Plain C++ (no postgres.h).
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace switchboard {

using Json = nlohmann::json; // the same alias connectors/connector.h declares

// No remote documents anything near this deep (HubSpot and Salesforce answers nest < 10).
constexpr int kMaxRemoteJsonDepth = 64;
// The HTTP client's own cap (HttpClientOptions::max_response_bytes) is the same; this one
// also covers text that did not come straight from it (e.g. a model's answer in a string).
constexpr size_t kMaxRemoteJsonBytes = 8 * 1024 * 1024;

// Why a remote text was refused: "JSON nested deeper than 64 levels",
// "JSON text larger than 8388608 bytes", or nlohmann's syntax error.
class RemoteJsonError : public std::runtime_error {
public:
	using std::runtime_error::runtime_error;
};

// Throws RemoteJsonError (and only std::bad_alloc otherwise).
Json ParseRemoteJson(const std::string &text);

// The drop-in for Json::parse(text, nullptr, false): a discarded value when the text is not
// JSON or is refused. *refused (when given) says why a text was refused for its depth or size;
// it is empty when the text parsed, and when it simply is not JSON.
Json TryParseRemoteJson(const std::string &text, std::string *refused = nullptr);

} // namespace switchboard
