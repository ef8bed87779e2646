// Include this instead of postgres.h in code that runs inside Postgres: standard and
// third-party headers must come first, because port.h redefines snprintf and friends.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

extern "C" {
#include "postgres.h"
#include "fmgr.h"
}

// SQL-callable functions are declared with SB_PG_FUNCTION (pg/boundary.h), which runs them
// through the error boundary; a bare PG_FUNCTION_INFO_V1 would let one skip it.
#undef PG_FUNCTION_INFO_V1
#define PG_FUNCTION_INFO_V1(name) static_assert(false, "declare " #name " with SB_PG_FUNCTION (pg/boundary.h)")
