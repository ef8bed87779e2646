#!/usr/bin/env bash
# Runs every test of switchboard on a fresh Debian 12 machine, as root:
#   bash scripts/test.sh
# installs the dependencies, builds and installs with PGXS, runs the unit tests, the pg_regress
# suite, the CRM doubles' tests, the fuzz targets (test/run_fuzz.sh) and the TAP tests (when test/run_tap.sh exists), then builds,
# installs and tests again with CMake (ctest). A failing step does not stop the later ones; the
# last line is "N passed, M failed" over the steps, and the exit status is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PG_CONFIG="${PG_CONFIG:-pg_config}"
jobs="${JOBS:-2}"

passed=0
failed=0
report=()
start_all=$SECONDS

# step NAME COMMAND...: runs one step, records its result. Steps are functions that chain their
# commands with && (errexit does not apply inside an `if` condition).
step() {
	local name="$1"; shift
	local t0=$SECONDS status=0
	echo
	echo "==> $name"
	if "$@"; then status=0; else status=$?; fi
	local took=$((SECONDS - t0))
	if [ $status -eq 0 ]; then
		passed=$((passed + 1)); report+=("  ok    $name (${took}s)")
	else
		failed=$((failed + 1)); report+=("  FAIL  $name (exit $status, ${took}s)")
	fi
	echo "<== $name: $([ $status -eq 0 ] && echo ok || echo "FAILED (exit $status)") in ${took}s"
	return 0
}
# skip NAME REASON: a step that cannot run because an earlier one failed counts as failed.
skip() {
	failed=$((failed + 1)); report+=("  FAIL  $1 (not run: $2)")
	echo; echo "==> $1: not run: $2"
}

deps() {
	if [ "$(id -u)" -eq 0 ]; then
		bash scripts/install-deps.sh
	else
		echo "not root: skipping scripts/install-deps.sh (run it as root once)"
	fi
}
pgxs_build() { make -s clean && make -s -j"$jobs" && make -s install; }
unittest() { make -s unittest; }
regress() { bash test/run_regress.sh; }
crm_double() { python3 test/doubles/test_crm_double.py; }
fuzz() { bash test/run_fuzz.sh; }   # bounded: about 60 s of fuzzing over all targets
tap() { bash test/run_tap.sh; }
cmake_build() {
	cmake -S . -B build -DPG_CONFIG="$PG_CONFIG" &&
		cmake --build build -j"$jobs" &&
		cmake --install build
}
run_ctest() { (cd build && ctest --output-on-failure --timeout 1800); }

step install-deps deps
before=$failed
step pgxs-build pgxs_build
pgxs_ok=$(( failed == before ))
step unittest unittest
if [ $pgxs_ok -eq 1 ]; then step regress regress; else skip regress "PGXS build failed"; fi
step crm_double crm_double
step fuzz fuzz
if [ -f test/run_tap.sh ]; then
	if [ $pgxs_ok -eq 1 ]; then step tap tap; else skip tap "PGXS build failed"; fi
fi
before=$failed
step cmake-build cmake_build
if [ $failed -eq $before ]; then step ctest run_ctest; else skip ctest "CMake build failed"; fi

echo
echo "Summary ($((SECONDS - start_all))s):"
printf '%s\n' "${report[@]}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
