#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine as root:
#   installs what is needed, builds and installs switchboard, starts a throwaway PostgreSQL
#   cluster and the bundled CRM double (HubSpot wire format) on 127.0.0.1, defines a route with
#   a filter and mappings, inserts rows, and shows them delivered, the status views, a dead
#   letter repaired, and a record edited "in the CRM" pulled back into the table. Everything it
#   starts is stopped at the end.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
cd "$src"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then
	bash scripts/install-deps.sh
	make -s -j2 >/dev/null
	make -s install >/dev/null
fi
bindir="$(pg_config --bindir)"

user="${SWITCHBOARD_DEMO_USER:-sbtest}"
as_user() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
if [ "$(id -u)" -eq 0 ]; then
	id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
fi

work="$(mktemp -d /tmp/switchboard-demo.XXXXXX)"
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown "$user" "$work"
double_pid=""
cleanup() {
	as_user "$bindir/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
	[ -n "$double_pid" ] && kill "$double_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

say "a throwaway cluster with switchboard preloaded"
as_user "$bindir/initdb" -D "$work/data" -A trust -U postgres >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
shared_preload_libraries = 'switchboard'
switchboard.naptime = '500ms'
switchboard.max_attempts = 3
CONF
as_user "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
echo "PostgreSQL on 127.0.0.1:$port"

say "the bundled CRM double (HubSpot CRM v3 wire format) on 127.0.0.1"
python3 test/doubles/crm_double.py --port 0 --port-file "$work/double.port" >"$work/double.log" 2>&1 &
double_pid=$!
for _ in $(seq 100); do [ -s "$work/double.port" ] && break; sleep 0.1; done
crm="http://127.0.0.1:$(cat "$work/double.port")"
echo "HubSpot double at $crm"

psql_() { "$bindir/psql" -X -q -h "$work" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

say "configure: an endpoint, a route with a filter, mappings (all plain SQL)"
psql_ -e <<SQL
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text, first_name text, last_name text,
                       status text, mrr numeric);
INSERT INTO switchboard.secrets VALUES ('hubspot_token', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret)
VALUES ('hubspot', 'hubspot', '$crm', 'hubspot_token');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote,
                                direction, pull_interval)
VALUES ('contacts_to_hubspot', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'both', '1 minute');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column, pull_expr) VALUES
  ('contacts_to_hubspot', 'email', 'lower(email)', 'email', NULL),
  ('contacts_to_hubspot', 'firstname', 'first_name', 'first_name', NULL),
  ('contacts_to_hubspot', 'lastname', 'last_name', 'last_name', NULL),
  ('contacts_to_hubspot', 'mrr', 'mrr', 'mrr', '(value #>> ''{}'')::numeric');
INSERT INTO switchboard.filters (route, name, predicate)
VALUES ('contacts_to_hubspot', 'qualified_only', 'new.status = ''qualified''');
SQL

say "an invalid mapping is rejected when written, naming the row and the problem"
psql_ -e -v ON_ERROR_STOP=0 -c "INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_to_hubspot', 'phone', 'phone_number')" 2>&1 || true

say "the application writes; the filter lets only qualified contacts through"
psql_ -e <<'SQL'
INSERT INTO contacts (email, first_name, last_name, status, mrr) VALUES
  ('Ada@Example.com', 'Ada', 'Lovelace', 'qualified', 1200),
  ('grace@example.com', 'Grace', 'Hopper', 'qualified', 800),
  ('linus@example.com', 'Linus', 'Torvalds', 'lead', 0),
  ('not-an-email', 'Bad', 'Address', 'qualified', 10);
SQL

say "preview: the exact request a row becomes (secret masked)"
psql_ -c "SELECT jsonb_pretty(switchboard.preview('contacts_to_hubspot', 'ada@example.com'))"

say "delivered by the background worker (wait_idle waits for it)"
psql_ -c "SELECT switchboard.wait_idle('30 s') AS idle"
psql_ -c "SELECT route, enabled, pending, in_flight, delivered, dead, last_error FROM switchboard.route_status"
psql_ -c "SELECT route, key, op, outcome, http_status, round(latency_ms::numeric, 1) AS ms, error FROM switchboard.deliveries ORDER BY at"

say "what the CRM now holds"
python3 - "$crm" <<'PY'
import json, sys, urllib.request
records = json.load(urllib.request.urlopen(sys.argv[1] + "/_control/records/hubspot/contacts"))
for r in records:
    print(f"  {r['id']}  {r['key']:<22} {json.dumps(r['properties'], sort_keys=True)}")
PY

say "the record HubSpot rejected is a dead letter, with the remote's reason"
psql_ -c "SELECT id, route, key, attempts, last_status, last_error FROM switchboard.dead_letters"

say "repair with SQL: fix the row, then the fix flows; discard the dead letter"
psql_ -e <<'SQL'
UPDATE contacts SET email = 'bad.address@example.com' WHERE email = 'not-an-email';
SELECT switchboard.wait_idle('30 s') AS idle;
SELECT switchboard.discard(id) FROM switchboard.dead_letters;
SQL
psql_ -c "SELECT route, pending, delivered, dead FROM switchboard.route_status"
psql_ -c "SELECT endpoint, state, requests, errors FROM switchboard.endpoint_status"

say "a sales rep edits Ada in the CRM; the edit flows back into the table"
python3 - "$crm" <<'PY'
import json, sys, urllib.request
body = json.dumps({"properties": {"firstname": "Augusta Ada", "mrr": "1500"}}).encode()
req = urllib.request.Request(sys.argv[1] + "/_control/records/hubspot/contacts/ada@example.com", data=body,
                             method="PUT", headers={"Content-Type": "application/json"})
urllib.request.urlopen(req)
print("  edited in the CRM: ada@example.com firstname='Augusta Ada' mrr='1500'")
PY
psql_ -e <<'SQL'
SELECT switchboard.pull_now('contacts_to_hubspot');
DO $$ BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT first_name FROM contacts WHERE lower(email) = 'ada@example.com') = 'Augusta Ada';
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SQL
psql_ -c "SELECT id, email, first_name, last_name, mrr FROM contacts ORDER BY id"
psql_ -c "SELECT route, cursor, last_pull_at, records_pulled, last_error FROM switchboard.pull_status"
psql_ -c "SELECT switchboard.wait_idle('30 s') AS idle"
psql_ -c "SELECT route, op, outcome, count(*) FROM switchboard.deliveries GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"

say "orchestration (SPEC §7): a lead is created in HubSpot, scored by the model, routed, written back; only the hot lead is notified"
psql_ -e <<SQL
CREATE TABLE leads (id serial PRIMARY KEY, email text, region text, score int, owner_name text);
INSERT INTO switchboard.secrets VALUES ('openai_key', 'sk-demo');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options) VALUES
  ('model', 'openai', '$crm', 'openai_key', '{"model": "gpt-4o-mini", "max_concurrency": 8}'),
  ('sales', 'webhook', '$crm/hooks/sales', NULL, '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, operations)
VALUES ('leads', 'leads', 'hubspot', 'contacts', 'lower(email)', 'email', '{insert}');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('leads', 'email', 'lower(email)');
-- the double's model answers {"score": length of the prompt}: long addresses are hot leads
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, run_if, input, options) VALUES
  ('leads', 'create', 10, 'deliver', NULL, NULL, NULL, '{}'),
  ('leads', 'score', 20, 'enrich', 'model', NULL, 'new.email', '{"system": "Score the lead 0-100."}'),
  ('leads', 'route', 30, 'sql', NULL, NULL,
   \$\$CASE WHEN (steps->'score'->>'score')::int >= 30 THEN 'ae-' || new.region ELSE 'sdr-pool' END\$\$, '{}'),
  ('leads', 'save', 40, 'writeback', NULL, NULL,
   \$\$jsonb_build_object('score', (steps->'score'->>'score')::int, 'owner_name', steps->>'route')\$\$, '{}'),
  ('leads', 'alert', 50, 'notify', 'sales', \$\$(steps->'score'->>'score')::int >= 30\$\$,
   \$\$jsonb_build_object('email', new.email, 'owner', steps->>'route')\$\$, '{}');
INSERT INTO leads (email, region) VALUES ('grace.hopper.enterprise.buyer@example.com', 'emea'), ('bob@x.io', 'us');
SELECT switchboard.wait_idle('30 s') AS idle;
SQL
psql_ -c "SELECT email, score, owner_name FROM leads ORDER BY id"
psql_ -c "SELECT key, state, steps->'score'->'output' AS score, steps->'alert'->>'state' AS alert FROM switchboard.runs ORDER BY id"
psql_ -c "SELECT route, endpoint, day, calls, prompt_tokens, completion_tokens FROM switchboard.ai_usage"
python3 - "$crm" <<'PY'
import json, sys, urllib.request
events = json.load(urllib.request.urlopen(sys.argv[1] + "/_control/requests?path_prefix=/hooks/sales"))
events = events["requests"] if isinstance(events, dict) else events
for e in events:
    print("  notified:", json.dumps(e.get("body", {}).get("data")))
PY

say "done: the cluster and the double are stopped and removed"
