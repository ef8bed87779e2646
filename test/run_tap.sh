#!/usr/bin/env bash
# Integration tests (TAP, PostgreSQL::Test::Cluster): real servers, the real worker, the CRM
# double on 127.0.0.1. As root they run as an unprivileged user in a copy of the tree, since
# the server refuses root. The extension must be installed first (make install).
# Usage: test/run_tap.sh [t/NNN_name.pl ...]
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
pg_config="${PG_CONFIG:-pg_config}"
bindir="$("$pg_config" --bindir)"
pgxs="$(cd "$(dirname "$("$pg_config" --pgxs)")/../.." && pwd)"
export PATH="$bindir:$PATH"
export PG_REGRESS="$pgxs/src/test/regress/pg_regress"
perl_lib="$pgxs/src/test/perl"
tests=("$@")

run() {
	local dir="$1"
	cd "$dir/test/tap"
	if [ ${#tests[@]} -eq 0 ]; then
		tests=(t/*.pl)
	fi
	TESTDIR="$dir/test/tap" prove -I "$perl_lib" -I . "${tests[@]}"
}

if [ "$(id -u)" -ne 0 ]; then
	run "$src"
	exit
fi

user="${SWITCHBOARD_TEST_USER:-sbtest}"
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
work="$(mktemp -d /tmp/switchboard-tap.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/test"
cp -r "$src/test/tap" "$src/test/doubles" "$work/test/"
cp -r "$src/contrib" "$work/"    # the exporter's queries file (t/021_metrics.pl)
rm -rf "$work/test/tap/tmp_check"
chown -R "$user" "$work"
status=0
runuser -u "$user" -- env PATH="$PATH" PG_REGRESS="$PG_REGRESS" SB_MANY_DATABASES="${SB_MANY_DATABASES:-}" SB_WAKE_SAMPLES="${SB_WAKE_SAMPLES:-}" bash -c "$(declare -f run); tests=(${tests[*]+"${tests[*]}"}); perl_lib='$perl_lib'; run '$work'" || status=$?
rm -rf "$src/test/tap/tmp_check" && cp -r "$work/test/tap/tmp_check" "$src/test/tap/tmp_check" 2>/dev/null || true
exit $status
