#!/usr/bin/env bash
# The many-databases test at full size (issue 13): 200 databases with the extension and a
# route each, switchboard.max_workers = 4; every change delivered, a sleeping database wakes
# within a second of a commit, with the p99 of 30 wake-ups and the process count (the bench
# line of issue 13). CI runs t/071 with 100 databases and 3 wake-ups. As root the test runs as
# an unprivileged user (test/run_tap.sh); PG_CONFIG selects the installation under test.
set -euo pipefail
cd "$(dirname "$0")/.."
SB_MANY_DATABASES="${SB_MANY_DATABASES:-200}" SB_WAKE_SAMPLES="${SB_WAKE_SAMPLES:-30}" bash test/run_tap.sh t/071_many_databases.pl
