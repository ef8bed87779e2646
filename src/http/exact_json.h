// Reading JSON that switchboard built itself (a change's mapped fields, as jsonb text from SQL)
// without losing digits.
//
// nlohmann keeps integers of up to 64 bits exactly but reads every other number as a double:
// numeric 12345678901234567.89 would go out as 12345678901234568, an amount silently wrong at
// the remote. A number a double cannot hold exactly (more than 15 significant digits, an
// integer beyond 64 bits, an exponent near a double's limits) is therefore kept as its exact
// text, a JSON string, as APIs send such numbers (and most JSON readers could not read it as a
// number anyway). Every other value is what Json::parse gives.
//
// Plain C++ (no postgres.h).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace switchboard {

using Json = nlohmann::json;

// A discarded value (is_discarded()) when the text is not JSON, or holds a number beyond a
// double's range (1e999).
Json ParseKeepingDigits(const std::string &text);

// Whether a JSON number's text (as the JSON grammar allows it) reads into a double and prints
// back as the same number: at most 15 significant digits, well inside the exponent range.
bool DoubleHoldsExactly(const std::string &number);

} // namespace switchboard
