#!/usr/bin/env bash
# switchboard benchmarks, one command (as root on Debian 12, or as a user with the tools):
#   bash bench/run.sh            # full run, ~6 minutes
#   BENCH_QUICK=1 bash bench/run.sh
# Every figure is measured in this run and printed as a ratio against a baseline measured in
# the same run (capture) or against its target (delivery, latency, memory). Results and how to
# read them: docs/benchmarks.md.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
cd "$src"
quick="${BENCH_QUICK:-0}"
secs=$([ "$quick" = 1 ] && echo 5 || echo 15)
rounds=$([ "$quick" = 1 ] && echo 1 || echo 2)
batch_rows=$([ "$quick" = 1 ] && echo 20000 || echo 100000)
event_rows=$([ "$quick" = 1 ] && echo 5000 || echo 20000)
memory_rows=$([ "$quick" = 1 ] && echo 20000 || echo 200000)
pull_rows=$([ "$quick" = 1 ] && echo 5000 || echo 20000)
latency_secs=$([ "$quick" = 1 ] && echo 5 || echo 20)

if [ "$(id -u)" -eq 0 ]; then
	bash scripts/install-deps.sh
	make -s -j2 >/dev/null && make -s install >/dev/null
fi
bindir="$(pg_config --bindir)"
user="${SWITCHBOARD_TEST_USER:-sbtest}"
as_user() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && { id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"; }

work="$(mktemp -d /tmp/switchboard-bench.XXXXXX)"
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown "$user" "$work"
nginx_pid="" double_pid=""
cleanup() {
	as_user "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
	[ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
	[ -n "$double_pid" ] && kill "$double_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- servers -------------------------------------------------------------------------------
port=$(free_port)
as_user "$bindir/initdb" -D "$work/data" -A trust -U postgres >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
shared_preload_libraries = 'switchboard'
synchronous_commit = off
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 30min
autovacuum = off
switchboard.enabled = off
switchboard.naptime = 100ms
CONF
as_user "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null

sink_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_buffer_size 1m;
	keepalive_requests 1000000;
	keepalive_timeout 60s;
	server {
		listen 127.0.0.1:$sink_port;
		location / {
			default_type application/json;
			return 200 '{"status":"COMPLETE","results":[]}';
		}
	}
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
sink="http://127.0.0.1:$sink_port"

python3 test/doubles/crm_double.py --port 0 --port-file "$work/double.port" --request-log-size 200000 >"$work/double.log" 2>&1 &
double_pid=$!
for _ in $(seq 100); do [ -s "$work/double.port" ] && break; sleep 0.1; done
double="http://127.0.0.1:$(cat "$work/double.port")"

psql_() { "$bindir/psql" -X -q -A -t -h "$work" -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 "$@"; }
"$bindir/createdb" -h "$work" -p "$port" -U postgres bench
"$bindir/pgbench" -h "$work" -p "$port" -U postgres -i -s 10 -q bench >/dev/null 2>&1
psql_ <<SQL
CREATE EXTENSION switchboard;
CREATE EXTENSION pgq;
SELECT pgq.create_queue('bench');
CREATE TABLE outbox (id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION outbox_capture() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	INSERT INTO outbox (payload) VALUES (to_jsonb(NEW));
	RETURN NULL;
END \$\$;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('sink_hook', 'webhook', '$sink/hook'),
  ('sink_hs', 'hubspot', '$sink'), ('double_hook', 'webhook', '$double/hooks/latency');
VACUUM ANALYZE;
CHECKPOINT;
SQL

cat >"$work/update.sql" <<'PGB'
\set aid random(1, 1000000)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
PGB

# --- 1. capture overhead ------------------------------------------------------------------------
capture_mode() {
	psql_ <<SQL
DROP TRIGGER IF EXISTS outbox_capture ON pgbench_accounts;
DROP TRIGGER IF EXISTS pgq_capture ON pgbench_accounts;
DELETE FROM switchboard.routes;
SQL
	case "$1" in
	outbox) psql_ -c "CREATE TRIGGER outbox_capture AFTER UPDATE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION outbox_capture()" ;;
	pgq) psql_ -c "CREATE TRIGGER pgq_capture AFTER UPDATE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION pgq.logutriga('bench')" ;;
	switchboard | rejected)
		psql_ -c "INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations) VALUES ('accounts', 'pgbench_accounts', 'sink_hook', 'account', 'aid::text', '{update}')"
		[ "$1" = rejected ] && psql_ -c "INSERT INTO switchboard.filters VALUES ('accounts', 'negative_branch', 'new.bid < 0')"
		;;
	esac
	psql_ -c "TRUNCATE outbox, switchboard.queue" -c "SELECT pgq.maint_rotate_tables_step1('bench')" >/dev/null
	psql_ -c "VACUUM pgbench_accounts" -c "CHECKPOINT"
}
declare -A tps
modes=(none switchboard rejected outbox pgq)
for round in $(seq "$rounds"); do
	for mode in "${modes[@]}"; do
		capture_mode "$mode"
		t=$("$bindir/pgbench" -h "$work" -p "$port" -U postgres -n -c 2 -j 2 -T "$secs" -f "$work/update.sql" bench 2>/dev/null |
			sed -n 's/^tps = \([0-9.]*\).*/\1/p')
		tps[$mode]="${tps[$mode]:-} $t"
		echo "capture round $round: $mode $t tps" >&2
	done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for mode in "${modes[@]}"; do tps[$mode]=$(echo "${tps[$mode]}" | median); done
capture_mode none

# --- 2. delivery throughput (nginx answering 200 is not the bottleneck) -----------------------------
deliver_bench() { # name endpoint rows
	local route=$1 endpoint=$2 rows=$3
	psql_ <<SQL >/dev/null
DROP TABLE IF EXISTS $route;
CREATE TABLE $route (id int PRIMARY KEY, email text, name text, score int);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('$route', '$route', '$endpoint', 'contacts', 'id::text', CASE WHEN '$endpoint' = 'sink_hs' THEN 'external_id' END);
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('$route', 'email', 'email'), ('$route', 'name', 'name'), ('$route', 'score', 'score');
INSERT INTO $route SELECT g, 'user' || g || '@example.com', 'User ' || g, g % 100 FROM generate_series(1, $rows) g;
SQL
	local start end
	start=$(date +%s.%N)
	psql_ -c "ALTER SYSTEM SET switchboard.enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
	psql_ -c "SELECT switchboard.wait_idle('600 s')" >/dev/null
	end=$(date +%s.%N)
	psql_ -c "ALTER SYSTEM SET switchboard.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
	local delivered
	delivered=$(psql_ -c "SELECT delivered FROM switchboard.route_status WHERE route = '$route'")
	[ "$delivered" = "$rows" ] || echo "WARNING: $route delivered $delivered of $rows" >&2
	psql_ -c "DELETE FROM switchboard.routes WHERE name = '$route'" >/dev/null
	python3 -c "print(round($rows / ($end - $start)))"
}
batched=$(deliver_bench leads_batched sink_hs "$batch_rows")
echo "delivery: $batched records/s batched" >&2
unbatched=$(deliver_bench leads_events sink_hook "$event_rows")
echo "delivery: $unbatched events/s one per request" >&2

# --- 3. end-to-end latency at a steady 200 changes/s ---------------------------------------------
psql_ <<SQL >/dev/null
CREATE TABLE events (id bigserial PRIMARY KEY, payload text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('events_hook', 'events', 'double_hook', 'event', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('events_hook', 'payload', 'payload');
ALTER SYSTEM SET switchboard.enabled = on;
SELECT pg_reload_conf();
SQL
echo "INSERT INTO events (payload) VALUES ('x');" >"$work/insert.sql"
curl -s -X DELETE "$double/_control/requests" >/dev/null
"$bindir/pgbench" -h "$work" -p "$port" -U postgres -n -c 1 -R 200 -T "$latency_secs" -f "$work/insert.sql" bench >/dev/null 2>&1
psql_ -c "SELECT switchboard.wait_idle('120 s')" >/dev/null
read -r p50 p99 nevents < <(python3 - "$double" <<'PY'
import json, sys, urllib.request, datetime
events = json.load(urllib.request.urlopen(sys.argv[1] + "/_control/requests?path_prefix=/hooks/latency"))
lat = []
for e in events:
    ts = datetime.datetime.strptime(e["body"]["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    lat.append(e["at_ms"] - ts.timestamp() * 1000)
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"{pick(0.50):.1f} {pick(0.99):.1f} {len(lat)}")
PY
)
echo "latency: p50 $p50 ms, p99 $p99 ms over $nevents events" >&2
psql_ -c "DELETE FROM switchboard.routes WHERE name = 'events_hook'" >/dev/null

# --- 4. worker memory across many deliveries ------------------------------------------------------
worker_rss_kb() {
	local pid
	pid=$(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'bench'")
	awk '/^RssAnon/ {print $2}' "/proc/$pid/status"
}
deliver_bench warmup sink_hs 5000 >/dev/null
psql_ -c "ALTER SYSTEM SET switchboard.enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
rss_before=$(worker_rss_kb)
deliver_bench memory sink_hs "$memory_rows" >/dev/null
psql_ -c "ALTER SYSTEM SET switchboard.enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
rss_after=$(worker_rss_kb)
growth_mb=$(python3 -c "print(round(($rss_after - $rss_before) / 1024, 1))")
echo "memory: worker RSS $rss_before kB -> $rss_after kB after $memory_rows deliveries" >&2

# --- 5. pull throughput: records applied per second from HubSpot search pages -------------------------
python3 - "$double" "$pull_rows" <<'PY'
import json, sys, urllib.request
base, rows = sys.argv[1], int(sys.argv[2])
for start in range(0, rows, 100):
    inputs = [{"idProperty": "email", "id": f"p{n}@example.com",
               "properties": {"email": f"p{n}@example.com", "firstname": f"P{n}", "score": str(n % 100)}}
              for n in range(start, min(rows, start + 100))]
    req = urllib.request.Request(base + "/crm/v3/objects/prospects/batch/upsert", data=json.dumps({"inputs": inputs}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer hs-test-token"})
    urllib.request.urlopen(req).read()
PY
psql_ <<SQL >/dev/null
INSERT INTO switchboard.secrets VALUES ('double_token', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('double_hs', 'hubspot', '$double', 'double_token');
CREATE TABLE prospects (email text PRIMARY KEY, first_name text, score int);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval, enabled)
VALUES ('prospects_pull', 'prospects', 'double_hs', 'prospects', 'email', 'email', 'pull', '1 hour', false);
INSERT INTO switchboard.mappings (route, remote_field, pull_column, pull_expr) VALUES
  ('prospects_pull', 'email', 'email', NULL), ('prospects_pull', 'firstname', 'first_name', NULL),
  ('prospects_pull', 'score', 'score', '(value #>> ''{}'')::int');
ALTER SYSTEM SET switchboard.enabled = on;
SELECT pg_reload_conf();
SQL
start=$(date +%s.%N)
psql_ -c "UPDATE switchboard.routes SET enabled = true WHERE name = 'prospects_pull'" >/dev/null
for _ in $(seq 3000); do
	[ "$(psql_ -c "SELECT count(*) FROM prospects")" -ge "$pull_rows" ] && break
	sleep 0.1
done
end=$(date +%s.%N)
pulled=$(python3 -c "print(round($pull_rows / ($end - $start)))")
echo "pull: $pulled records/s applied" >&2

# --- report ------------------------------------------------------------------------------------
python3 - <<PY
none, sb, rej, outbox, pgq = ${tps[none]}, ${tps[switchboard]}, ${tps[rejected]}, ${tps[outbox]}, ${tps[pgq]}
def over(x): return 1 - x / none
rows = [
  ("capture: UPDATE tps, no trigger (baseline)", f"{none:.0f} tps", "1.00", "", ""),
  ("capture: plpgsql outbox trigger", f"{outbox:.0f} tps", f"{outbox/none:.2f}", f"overhead {over(outbox):.1%}", ""),
  ("capture: PgQ logutriga", f"{pgq:.0f} tps", f"{pgq/none:.2f}", f"overhead {over(pgq):.1%}", ""),
  ("capture: switchboard route", f"{sb:.0f} tps", f"{sb/none:.2f}", f"overhead {over(sb):.1%} = {over(sb)/over(outbox) if over(outbox) > 0 else float('nan'):.2f} x outbox's",
   "<= 0.50 x outbox's", ),
  ("capture: switchboard, filter rejects", f"{rej:.0f} tps", f"{rej/none:.2f}", f"overhead {over(rej):.1%}", "<= 5%"),
  ("delivery: batched (HubSpot format)", "$batched rec/s", f"{$batched/20000:.2f}", "vs target 20,000/s", ">= 1.00"),
  ("delivery: one event per request (webhook)", "$unbatched ev/s", f"{$unbatched/5000:.2f}", "vs target 5,000/s", ">= 1.00"),
  ("latency commit -> received @200/s: p50", "$p50 ms", f"{$p50/10:.2f}", "vs target 10 ms", "<= 1.00"),
  ("latency commit -> received @200/s: p99", "$p99 ms", f"{$p99/50:.2f}", "vs target 50 ms", "<= 1.00"),
  ("worker RSS growth over $memory_rows deliveries", "$growth_mb MB", f"{$growth_mb/10:.2f}", "vs target 10 MB", "<= 1.00"),
  ("pull: records/s applied (HubSpot search pages)", "$pulled rec/s", f"{$pulled/10000:.2f}", "vs target 10,000/s", ">= 1.00"),
]
met = [
  None, None, None,
  over(sb) <= 0.5 * over(outbox),
  over(rej) <= 0.05,
  $batched >= 20000, $unbatched >= 5000, $p50 <= 10, $p99 <= 50, $growth_mb <= 10, $pulled >= 10000,
]
w = [max(len(r[i]) for r in rows) for i in range(5)]
print()
print(f"| {'measure':<{w[0]}} | {'value':<{w[1]}} | {'ratio':<{w[2]}} | {'':<{w[3]}} | target | met |")
print(f"|{'-'*(w[0]+2)}|{'-'*(w[1]+2)}|{'-'*(w[2]+2)}|{'-'*(w[3]+2)}|--------|-----|")
for r, m in zip(rows, met):
    print(f"| {r[0]:<{w[0]}} | {r[1]:<{w[1]}} | {r[2]:<{w[2]}} | {r[3]:<{w[3]}} | {r[4]} | {'' if m is None else ('yes' if m else 'NO')} |")
PY
