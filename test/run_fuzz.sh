#!/usr/bin/env bash
# Fuzzes every parser of remote input (test/fuzz/fuzz_*.cpp) with libFuzzer under ASan and
# UBSan, for a bounded time: FUZZ_SECONDS per target (default 12, about 60 s for all).
# Builds with Debian's clang (clang, libclang-rt-14-dev: see scripts/install-deps.sh) and links
# only the server-free sources, as `make unittest` does. Exits non-zero on any finding; the
# input that caused it is left in $FUZZ_OUT (default build-fuzz/) as crash-*/leak-*/timeout-*.
#   bash test/run_fuzz.sh                 # all targets
#   bash test/run_fuzz.sh fuzz_pull_page  # one
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-12}"
out="${FUZZ_OUT:-build-fuzz}"
cxx="${FUZZ_CXX:-clang++}"
jobs="${JOBS:-2}"
command -v "$cxx" >/dev/null || { echo "run_fuzz.sh: $cxx not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -Isrc -Itest/fuzz
	-fsanitize=address,undefined -fno-sanitize-recover=undefined -Wall -Wextra -Werror)
mkdir -p "$out/obj"

# The server-free core (build.mk's CORE_DIRS and CORE_FILES, as `make unittest`), instrumented
# for coverage.
mk() { sed -n "s/^$1[[:space:]]*=[[:space:]]*//p" build.mk; }
core=()
for d in $(mk CORE_DIRS); do core+=("$d"/*.cpp); done
read -r -a files <<<"$(mk CORE_FILES)"
core+=("${files[@]}")
printf '%s\n' "${core[@]}" | xargs -P "$jobs" -I{} sh -c '
	o="$0/obj/$(echo "{}" | tr / _).o"
	if [ ! -e "$o" ] || [ "{}" -nt "$o" ] || [ -n "$(find src -name "*.h" -newer "$o" | head -1)" ]; then
		'"$cxx ${flags[*]}"' -fsanitize=fuzzer-no-link -c "{}" -o "$o"
	fi' "$out"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	targets=()
	for f in test/fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi

failed=()
for t in "${targets[@]}"; do
	echo "==> $t (${seconds}s)"
	"$cxx" "${flags[@]}" -fsanitize=fuzzer "test/fuzz/$t.cpp" "$out"/obj/*.o -lcurl -lcrypto -lmicrohttpd -o "$out/$t"
	# A copy of the seeds: new inputs libFuzzer finds go there, not into the tree.
	mkdir -p "$out/corpus/$t"
	[ -d "test/fuzz/corpus/$t" ] && cp -n test/fuzz/corpus/"$t"/* "$out/corpus/$t/" 2>/dev/null || true
	if ! UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
		"$out/$t" -max_total_time="$seconds" -max_len=300000 -timeout=20 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$out/" "$out/corpus/$t" 2>"$out/$t.log"; then
		tail -n 60 "$out/$t.log" >&2
		failed+=("$t")
	else
		grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$out/$t.log" | tail -n 2 || true
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "run_fuzz.sh: findings in: ${failed[*]} (inputs in $out/)" >&2
	exit 1
fi
echo "run_fuzz.sh: ${#targets[@]} targets, no findings"
