# What the build is made of, defined once: the Makefile includes this file and CMakeLists.txt
# reads it (file(STRINGS)), so both builds compile the same sources with the same warnings and
# concatenate the same SQL. Keep to plain `NAME = value` lines: no make functions, no line
# continuations, no comments after a value. Values are space-separated words; paths are relative
# to the top of the tree; patterns are shell globs over one folder level.

# C++ standard of every source.
CXX_STD = c++17

# Server-free C++ (never includes postgres.h): linked into the extension and, alone, into the
# unit tests and the fuzz targets. Every .cpp in these folders, plus these single files.
CORE_DIRS = src/connectors src/delivery src/http src/inbound
CORE_FILES = src/config/host_policy.cpp

# Every C++ source of the extension; whatever is not core runs inside Postgres.
SRC_GLOBS = src/*.cpp src/*/*.cpp

# The unit tests (GoogleTest) of the core.
UNIT_GLOBS = test/unit/*.cpp

# Warnings of every source (core, Postgres side, unit tests): warnings are errors.
WARN_FLAGS = -Wall -Wextra -Werror
# Added for sources that include Postgres' headers, which use `register`, leave struct fields to
# their zero default, and give every SQL function an fcinfo it may not read.
PG_WARN_FLAGS = -Wno-register -Wno-missing-field-initializers -Wno-unused-parameter

# The unit tests again under AddressSanitizer and UndefinedBehaviorSanitizer
# (`make unittest-sanitize`).
SANITIZE_FLAGS = -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# The install script of default_version: these files concatenated in byte order of their names.
SQL_PARTS = src/sql/*.sql

# What `make format` / `make format-check` (clang-format, .clang-format) cover.
FORMAT_GLOBS = src/*.cpp src/*.h src/*/*.cpp src/*/*.h test/unit/*.cpp test/unit/*.h test/fuzz/*.cpp test/fuzz/*.h
