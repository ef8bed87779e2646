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

# Sources, warning flags and SQL pieces: build.mk (shared with CMakeLists.txt).
include $(dir $(lastword $(MAKEFILE_LIST)))build.mk

# Server-free C++ (no postgres.h): unit-tested on its own by `make unittest`.
CORE_SRCS = $(sort $(wildcard $(addsuffix /*.cpp,$(CORE_DIRS)))) $(CORE_FILES)
# Code that runs inside Postgres.
PG_SRCS = $(filter-out $(CORE_SRCS), $(sort $(wildcard $(SRC_GLOBS))))
OBJS = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)

PG_CPPFLAGS = -Isrc
PG_CXXFLAGS = -std=$(CXX_STD) $(WARN_FLAGS)
SHLIB_LINK = -lcurl -lcrypto -lmicrohttpd -lstdc++
# PGXS's bitcode rules ignore PG_CXXFLAGS; the JIT gains nothing from this code.
override with_llvm = no
# Rebuild objects when a header they include changes.
override autodepend = yes

REGRESS = config capture preview privileges dump security schema_changes steps
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf --inputdir=. --outputdir=results

EXTRA_CLEAN = results tmp_check build-fuzz build-san test/unit/unit_tests test/unit/unit_tests_san src/*/*.o src/*.o

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Only the Postgres side needs PG_WARN_FLAGS (PGXS has fixed CXXFLAGS by now: append per target).
$(PG_SRCS:.cpp=.o): override CXXFLAGS += $(PG_WARN_FLAGS)

switchboard--$(EXTVERSION).sql: $(sort $(wildcard $(SQL_PARTS)))
	cat $^ > $@

# Unit tests: the core and test/unit/ in one binary, nothing of Postgres.
UNIT_SRCS = $(sort $(wildcard $(UNIT_GLOBS)))
UNIT_DEPS = $(CORE_SRCS) $(UNIT_SRCS) $(wildcard src/*/*.h test/unit/*.h)
UNIT_CXXFLAGS = -std=$(CXX_STD) $(WARN_FLAGS) -O1 -Isrc
UNIT_LIBS = -lgtest -lgtest_main -pthread -lcurl -lcrypto -lmicrohttpd
test/unit/unit_tests: $(UNIT_DEPS)
	$(CXX) $(UNIT_CXXFLAGS) $(CORE_SRCS) $(UNIT_SRCS) $(UNIT_LIBS) -o $@
# The sanitizer build compiles one object per source under build-san/, so that -j and rebuilds help.
SAN_OBJS = $(patsubst %.cpp,build-san/%.o,$(CORE_SRCS) $(UNIT_SRCS))
build-san/%.o: %.cpp $(wildcard src/*/*.h test/unit/*.h)
	@mkdir -p $(@D)
	$(CXX) $(UNIT_CXXFLAGS) $(SANITIZE_FLAGS) -c $< -o $@
test/unit/unit_tests_san: $(SAN_OBJS)
	$(CXX) $(SANITIZE_FLAGS) $^ $(UNIT_LIBS) -o $@

.PHONY: unittest unittest-sanitize format format-check
unittest: test/unit/unit_tests
	test/unit/unit_tests
# Any ASan or UBSan report fails the run (leaks included).
unittest-sanitize: test/unit/unit_tests_san
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 test/unit/unit_tests_san

# clang-format over the C++ (style: .clang-format). format rewrites; format-check fails on a diff.
CLANG_FORMAT ?= clang-format
FORMAT_FILES = $(sort $(wildcard $(FORMAT_GLOBS)))
format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)
format-check:
	$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES)
