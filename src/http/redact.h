// Masking for error texts that quote remote answers or requests: they end up in status views
// readable by monitoring roles (endpoint_status.last_error, route_status, dead letters) and
// in the server log, and a remote may echo what it was sent. Plain C++, unit-tested.
//
// What is masked: URLs show scheme://host[:port] only (path, query and fragment become "/…",
// user info "****@"), "Bearer <token>" and "Basic <credentials>" become "Bearer ****", and
// the values of access_token, refresh_token, id_token, client_secret, password, passwd,
// api_key and apikey (JSON members, form fields, "key: value") become "****". Known secrets
// of an endpoint are masked by the dispatcher on top of this (Dispatcher::RedactSecrets).
#pragma once

#include <cstddef>
#include <string>

namespace switchboard {

constexpr size_t kDefaultExcerptBytes = 300;

// One URL, for a text that names it ("answered 410 Gone at https://host/…").
std::string MaskUrl(const std::string &url);

// text with every URL, bearer credential and secret value masked; otherwise unchanged.
std::string RedactText(const std::string &text);

// RedactText, then at most max_bytes (control characters flattened to spaces, never cut
// inside a UTF-8 sequence, "..." appended when shortened): for every body excerpt put in an
// error message.
std::string RedactedExcerpt(const std::string &text, size_t max_bytes = kDefaultExcerptBytes);

} // namespace switchboard
