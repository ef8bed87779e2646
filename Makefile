# PGXS build: make && make install && make installcheck (see README for running as root).
EXTENSION = switchboard
MODULE_big = switchboard
# The version being built is the control file's default_version. Its install script is generated
# from src/sql/*.sql; released versions' install scripts and every upgrade script are frozen in
# versions/ (see docs/releasing.md).
EXTVERSION = $(shell sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\{0,1\}\([^' ]*\)'\{0,1\}.*/\1/p" switchboard.control)
DATA_built = switchboard--$(EXTVERSION).sql
DATA = $(filter-out %/switchboard--$(EXTVERSION).sql, $(sort $(wildcard versions/switchboard--*.sql)))
PG_CONFIG ?= pg_config

# Server-free C++ (no postgres.h): unit-tested on its own by `make unittest`.
CORE_SRCS = $(wildcard src/connectors/*.cpp src/delivery/*.cpp src/http/*.cpp) src/config/host_policy.cpp
# Code that runs inside Postgres.
PG_SRCS = $(filter-out $(CORE_SRCS), $(wildcard src/*.cpp src/*/*.cpp))
OBJS = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)

PG_CPPFLAGS = -Isrc
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-register -Wno-missing-field-initializers -Wno-unused-parameter
SHLIB_LINK = -lcurl -lcrypto -lstdc++
# PGXS's bitcode rules ignore PG_CXXFLAGS; the JIT gains nothing from this code.
override with_llvm = no
# Rebuild objects when a header they include changes.
override autodepend = yes

REGRESS = config capture preview privileges dump security schema_changes
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf --inputdir=. --outputdir=results

EXTRA_CLEAN = results tmp_check build-fuzz test/unit/unit_tests src/*/*.o src/*.o

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

switchboard--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

UNIT_SRCS = $(wildcard test/unit/*.cpp)
test/unit/unit_tests: $(CORE_SRCS) $(UNIT_SRCS) $(wildcard src/*/*.h)
	$(CXX) -std=c++17 -Wall -Wextra -Werror -O1 -Isrc $(CORE_SRCS) $(UNIT_SRCS) -lgtest -lgtest_main -pthread -lcurl -lcrypto -o $@

.PHONY: unittest
unittest: test/unit/unit_tests
	test/unit/unit_tests
