// Retry-After: how long a remote asks us to wait before the next request.
//
// Plain C++ (no postgres.h).
#pragma once

#include <cstdint>
#include <string>

#include "http/http_types.h"

namespace switchboard {

// The `retry-after` header (name matched case-insensitively) as milliseconds from now_ms
// (unix ms). Accepts delta-seconds and the three HTTP-date forms of RFC 9110 (IMF-fixdate,
// RFC 850, asctime); a date in the past gives 0. Returns -1 when absent or invalid.
// The result is not capped: BackoffMs (delivery/retry_policy.h) does that.
long ParseRetryAfter(const Headers &headers, int64_t now_ms);

// Same, for one header value.
long ParseRetryAfterValue(const std::string &value, int64_t now_ms);

// Retry-After of a response, in ms from the system clock's now; -1 if none.
long RetryAfterMs(const HttpResponse &response);

} // namespace switchboard
