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
