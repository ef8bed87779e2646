#!/usr/bin/env bash
# Runs the pg_regress suite (sql/ + expected/) against a throwaway server started by pg_regress
# itself. The server refuses to run as root, so as root the suite runs as an unprivileged user
# in a copy of the tree. The extension must already be installed (make install).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
pg_config="${PG_CONFIG:-pg_config}"
export PATH="$("$pg_config" --bindir):$PATH"

if [ "$(id -u)" -ne 0 ]; then
	cd "$src"
	exec make -s installcheck PG_CONFIG="$pg_config"
fi

user="${SWITCHBOARD_TEST_USER:-sbtest}"
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
work="$(mktemp -d /tmp/switchboard-regress.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cp -r "$src/Makefile" "$src/build.mk" "$src/sql" "$src/expected" "$src/test" "$src/src" "$src/switchboard.control" "$src/versions" "$work/"
chown -R "$user" "$work"
status=0
runuser -u "$user" -- env PATH="$PATH" make -s -C "$work" installcheck PG_CONFIG="$pg_config" || status=$?
# Keep the results next to the sources for inspection (ignored by git).
rm -rf "$src/results" && cp -r "$work/results" "$src/results" 2>/dev/null || true
if [ $status -ne 0 ] && [ -f "$work/results/regression.diffs" ]; then
	head -c 20000 "$work/results/regression.diffs"
fi
exit $status
