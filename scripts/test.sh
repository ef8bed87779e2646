#!/usr/bin/env bash
# Runs every test of switchboard on a fresh Debian 12 machine, as root:
#   bash scripts/test.sh
# installs the dependencies, checks the C++ layout (make format-check), builds and installs with
# PGXS, runs the unit tests (plain, then under ASan + UBSan), the pg_regress suite, the CRM
# doubles' tests, the fuzz targets (test/run_fuzz.sh) and the TAP tests (when test/run_tap.sh
# exists), checks the release rules (scripts/check_versions.sh), builds the Debian package and
# runs the regress suite against it, then builds with CMake, checks that its install equals the
# PGXS one and runs its unit tests (ctest). Each suite runs once. A failing step does not stop
# the later ones; the last line is "N passed, M failed" over the steps, and the exit status is
# non-zero if any failed.
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
format_check() { make -s format-check; }
unittest() { make -s unittest; }
unittest_sanitize() { make -s -j"$jobs" unittest-sanitize; }
regress() { bash test/run_regress.sh; }
crm_double() { python3 test/doubles/test_crm_double.py; }
fuzz() { bash test/run_fuzz.sh; }   # bounded: about 60 s of fuzzing over all targets
tap() { bash test/run_tap.sh; }
versions() { bash scripts/check_versions.sh; }
# The Debian package, built in a copy of the tree (dpkg-buildpackage writes into debian/ and ..),
# linted, installed with apt in place of the PGXS install, and tested with the regress suite;
# purged again at the end so that the CMake steps install into a clean tree.
debian_package() {
	local work status=0 deb f pkg=postgresql-15-switchboard
	work="$(mktemp -d /tmp/switchboard-deb.XXXXXX)"
	mkdir "$work/src"
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
			[ -e "$f" ] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$work/src"
	else
		tar -c --exclude=./build --exclude=./results --exclude='./test/tap/tmp_check' . | tar -x -C "$work/src"
	fi
	echo "dpkg-buildpackage in $work/src (log: $work/build.log)"
	if ! (cd "$work/src" && MAKEFLAGS="-j$jobs" dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
		tail -n 60 "$work/build.log"; return 1
	fi
	deb="$(ls "$work"/${pkg}_[0-9]*.deb)"
	lintian --fail-on error,warning "$work"/switchboard_*.changes || status=$?
	# The PGXS install would hide a file the package misses: remove it first.
	[ $status -eq 0 ] && make -s uninstall || status=1
	[ $status -eq 0 ] && apt-get install -y -q --no-install-recommends "$deb" || status=1
	if [ $status -eq 0 ]; then
		for f in "$("$PG_CONFIG" --pkglibdir)/switchboard.so" "$("$PG_CONFIG" --sharedir)"/extension/switchboard*; do
			dpkg -S "$f" >/dev/null 2>&1 || { echo "$f is not from $pkg"; status=1; }
		done
		for f in switchboard.control versions/*.sql; do
			[ -e "$("$PG_CONFIG" --sharedir)/extension/$(basename "$f")" ] || { echo "$pkg lacks $(basename "$f")"; status=1; }
		done
		dpkg -L "$pkg" | grep -E '/(switchboard\.so|switchboard--.*\.sql|switchboard\.control)$'
	fi
	[ $status -eq 0 ] && bash test/run_regress.sh || status=1
	apt-get purge -y -q "$pkg" >/dev/null 2>&1 || true
	rm -rf "$work"
	return $status
}
# The CMake build of the same sources (build.mk): installed into a scratch DESTDIR, which must
# hold exactly the files `make install` installs, with the same SQL and control file; then its
# unit tests. The suites that need a server ran above, once, against the PGXS install.
cmake_build() {
	local work status=0
	work="$(mktemp -d /tmp/switchboard-cmake.XXXXXX)"
	cmake -S . -B build -DPG_CONFIG="$PG_CONFIG" &&
		cmake --build build -j"$jobs" &&
		DESTDIR="$work/cmake" cmake --install build >/dev/null &&
		make -s install DESTDIR="$work/pgxs" &&
		diff -r -x switchboard.so "$work/pgxs" "$work/cmake" &&
		[ -f "$work/cmake$("$PG_CONFIG" --pkglibdir)/switchboard.so" ] || status=1
	rm -rf "$work"
	return $status
}
run_ctest() { (cd build && ctest --output-on-failure -j"$jobs" --timeout 600); }

step install-deps deps
step format-check format_check
before=$failed
step pgxs-build pgxs_build
pgxs_ok=$(( failed == before ))
step unittest unittest
step unittest-sanitize unittest_sanitize
if [ $pgxs_ok -eq 1 ]; then step regress regress; else skip regress "PGXS build failed"; fi
step crm_double crm_double
step fuzz fuzz
if [ -f test/run_tap.sh ]; then
	if [ $pgxs_ok -eq 1 ]; then step tap tap; else skip tap "PGXS build failed"; fi
fi
step versions versions
# After the suites that use the PGXS install.
if [ $pgxs_ok -eq 1 ]; then step debian-package debian_package; else skip debian-package "PGXS build failed"; fi
before=$failed
step cmake-build cmake_build
if [ $failed -eq $before ]; then step ctest run_ctest; else skip ctest "CMake build failed"; fi

echo
echo "Summary ($((SECONDS - start_all))s):"
printf '%s\n' "${report[@]}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
