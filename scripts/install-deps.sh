#!/usr/bin/env bash
# Installs everything switchboard needs to build, test and benchmark, on Debian 12, as root.
# Idempotent: when every package is already installed it does nothing (no apt-get update).
#   scripts/install-deps.sh            # quiet; apt's output is shown only if it fails
set -euo pipefail

packages=(
	# build
	g++ make cmake pkg-config
	postgresql-server-dev-15       # pg_config, server headers, PGXS, pg_regress, the TAP Perl modules
	libcurl4-openssl-dev libssl-dev nlohmann-json3-dev
	libmicrohttpd-dev              # the inbound webhook receiver (src/inbound/receiver.cpp)
	dpkg-dev debhelper postgresql-server-dev-all   # the Debian package (debian/, pg_buildext)
	lintian
	clang-format                   # make format / make format-check (.clang-format; clang-format 14)
	# tests
	postgresql-15                  # the server; also ships /usr/lib/postgresql/15/bin/pgbench
	                               # (Debian 12's postgresql-contrib-15 is only a name postgresql-15 provides)
	libgtest-dev                   # GoogleTest, with the CMake package find_package(GTest) uses
	libipc-run-perl                # TAP tests (PostgreSQL::Test::Cluster)
	python3                        # the CRM test doubles
	clang libclang-rt-14-dev       # test/run_fuzz.sh: libFuzzer, ASan and UBSan runtimes
	prometheus-postgres-exporter   # the metrics test (test/tap/t/021_metrics.pl)
	patroni etcd-server            # the Patroni failover test (test/tap/t/073_patroni.pl), loopback only
	passwd                         # useradd: the suites run the server as an unprivileged user
	# benchmarks
	nginx-light                    # a fast HTTP sink
	postgresql-15-pgq3             # the queue baseline
)

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (apt-get install)" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
	[ "${status:0:2}" = "ii" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#packages[@]} packages already installed"
	exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp /tmp/switchboard-install-deps.XXXXXX.log)"

# Installing a server package would start its service (a postgres cluster on 5432, nginx on
# 80); the tests start their own servers, so keep packages from starting any while we install,
# unless the machine already has a policy of its own.
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
	[ $own_policy -eq 1 ] && rm -f "$policy"
	return 0
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod 755 "$policy"
	own_policy=1
fi

run() {
	if ! "$@" >>"$log" 2>&1; then
		echo "install-deps: FAILED: $*" >&2
		tail -n 60 "$log" >&2
		echo "install-deps: full log in $log" >&2
		exit 1
	fi
}
apt_opts=(-y -q -o Acquire::Retries=3 -o Dpkg::Use-Pty=0 --no-install-recommends)
run apt-get update -q -o Acquire::Retries=3
run apt-get install "${apt_opts[@]}" "${missing[@]}"

# Check the result rather than trust apt's exit status alone.
for p in "${missing[@]}"; do
	status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
	if [ "${status:0:2}" != "ii" ]; then
		echo "install-deps: $p is still not installed (see $log)" >&2
		exit 1
	fi
done
[ -x /usr/lib/postgresql/15/bin/pgbench ] || { echo "install-deps: pgbench missing" >&2; exit 1; }
rm -f "$log"
echo "install-deps: done"
