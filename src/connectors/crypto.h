// Small crypto helpers the connectors need (webhook signatures). Plain C++ over OpenSSL's
// libcrypto; no Postgres headers, nothing allocated that outlives a call.
#pragma once

#include <string>

namespace switchboard {

// Standard base64 (RFC 4648, with padding).
std::string Base64Encode(const std::string &bytes);
// Strict decode of standard base64: padding optional, whitespace and any other character
// rejected. Returns false (out untouched) on invalid input.
bool Base64Decode(const std::string &text, std::string *out);
// Raw 32-byte HMAC-SHA256 of message under key.
std::string HmacSha256(const std::string &key, const std::string &message);

} // namespace switchboard
