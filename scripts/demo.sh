#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine as root:
#   installs what is needed, builds and installs switchboard, starts a throwaway PostgreSQL
#   cluster and the bundled CRM double (HubSpot wire format) on 127.0.0.1, defines a route with
#   a filter and mappings, inserts rows, and shows them delivered, the status views, a dead
#   letter repaired, a record edited "in the CRM" pulled back into the table, an orchestrated
#   lead (create -> score -> route -> notify), and the WooCommerce-to-CRM tutorial: the shop's
#   signed webhooks received by the database and a customer's lifetime value pushed to HubSpot,
#   with timings. Everything it starts is stopped at the end.
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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
listen_port=$(free_port) # the webhook receiver (SPEC §9)
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
shared_preload_libraries = 'switchboard'
switchboard.naptime = '500ms'
switchboard.max_attempts = 3
switchboard.listen_addresses = '127.0.0.1'
switchboard.listen_port = $listen_port
CONF
as_user "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
echo "PostgreSQL on 127.0.0.1:$port, its webhook receiver on 127.0.0.1:$listen_port"

say "the bundled double (HubSpot CRM v3, Salesforce, WooCommerce REST v3 wire formats) on 127.0.0.1"
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

say "WooCommerce to CRM (the seed's tutorial): the shop's webhooks land in tables; customers go to HubSpot with their lifetime value"
psql_ -e <<SQL
INSERT INTO switchboard.secrets VALUES
  ('woo_api', '{"consumer_key": "ck_test", "consumer_secret": "cs_test"}'),
  ('woo_hook', 'shop-webhook-secret');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('shop', 'woocommerce', '$crm', 'woo_api');
CREATE TABLE shop_customers (id bigint PRIMARY KEY, email text, first_name text, last_name text,
                             lifetime_value numeric NOT NULL DEFAULT 0,
                             applied_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE shop_orders (id bigint PRIMARY KEY, customer_id bigint, status text, total numeric,
                          applied_at timestamptz NOT NULL DEFAULT clock_timestamp());
-- lifetime value, computed in SQL: every order written updates its customer's sum
CREATE FUNCTION shop_lifetime_value() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	UPDATE shop_customers c SET lifetime_value = (SELECT coalesce(sum(o.total), 0) FROM shop_orders o
	                                               WHERE o.customer_id = c.id AND o.status <> 'cancelled')
	WHERE c.id = NEW.customer_id;
	RETURN NULL;
END \$\$;
CREATE TRIGGER shop_lifetime_value AFTER INSERT OR UPDATE ON shop_orders FOR EACH ROW EXECUTE FUNCTION shop_lifetime_value();
-- two routes in from the shop (webhooks, with a daily poll as the safety net) ...
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote,
                                direction, pull_interval, inbound_secret) VALUES
  ('customers_from_shop', 'shop_customers', 'shop', 'customers', 'id::text', 'id', 'pull', '1 day', 'woo_hook'),
  ('orders_from_shop', 'shop_orders', 'shop', 'orders', 'id::text', 'id', 'pull', '1 day', 'woo_hook');
INSERT INTO switchboard.mappings (route, remote_field, pull_column, pull_expr) VALUES
  ('customers_from_shop', 'id', 'id', NULL), ('customers_from_shop', 'email', 'email', NULL),
  ('customers_from_shop', 'first_name', 'first_name', NULL), ('customers_from_shop', 'last_name', 'last_name', NULL),
  ('orders_from_shop', 'id', 'id', NULL), ('orders_from_shop', 'customer_id', 'customer_id', NULL),
  ('orders_from_shop', 'status', 'status', NULL), ('orders_from_shop', 'total', 'total', '(value #>> ''{}'')::numeric');
-- ... and one out to the CRM: the customer with the lifetime value the trigger keeps
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('shop_customers_to_hubspot', 'shop_customers', 'hubspot', 'contacts', 'lower(email)', 'email');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('shop_customers_to_hubspot', 'email', 'lower(email)'), ('shop_customers_to_hubspot', 'firstname', 'first_name'),
  ('shop_customers_to_hubspot', 'lastname', 'last_name'), ('shop_customers_to_hubspot', 'lifetime_value', 'lifetime_value');
SQL
hook_url() { echo "http://127.0.0.1:$listen_port/inbound/$(psql_ -A -t -c "SELECT switchboard.inbound_token('$1')")"; }
customers_url=$(hook_url customers_from_shop)
orders_url=$(hook_url orders_from_shop)
echo "webhook URLs (register them in WooCommerce → Settings → Advanced → Webhooks, secret 'shop-webhook-secret'):"
echo "  customer.*  $customers_url"
echo "  order.*     $orders_url"
for _ in $(seq 100); do # the receiver is up once an unknown token answers 404
	[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$listen_port/inbound/none")" = 404 ] && break
	sleep 0.1
done
python3 - "$crm" "$customers_url" "$orders_url" <<'PY'
import json, sys, urllib.request
crm, customers_url, orders_url = sys.argv[1:]
def post(path, body):
    req = urllib.request.Request(crm + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
post("/_control/woocommerce/hooks", {"topic": "customer.*", "delivery_url": customers_url, "secret": "shop-webhook-secret"})
post("/_control/woocommerce/hooks", {"topic": "order.*", "delivery_url": orders_url, "secret": "shop-webhook-secret"})
print("  the shop's webhooks are registered (signed with X-WC-Webhook-Signature)")
PY
wait_sql() { # what, a boolean query: polls it every 10 ms for up to 30 s
	for _ in $(seq 3000); do [ "$(psql_ -A -t -c "$2")" = t ] && return 0; sleep 0.01; done
	echo "timed out waiting for $1" >&2
	return 1
}
hubspot_at() { # email value: when the double first received an upsert of that contact with that
	# lifetime_value (its request log, ms since the epoch), waiting for it up to 30 s
	python3 - "$crm" "$1" "$2" <<'PY'
import json, sys, time, urllib.request
crm, email, want = sys.argv[1:]
for _ in range(3000):
    log = json.load(urllib.request.urlopen(crm + "/_control/requests?path_prefix=/crm/v3/objects/contacts/batch"))
    for r in log["requests"] if isinstance(log, dict) else log:
        for i in (r.get("body") or {}).get("inputs", []) if isinstance(r.get("body"), dict) else []:
            p = i.get("properties", {})
            if str(p.get("email")) == email and float(p.get("lifetime_value", "nan")) == float(want):
                print(r["at_ms"])
                sys.exit(0)
    time.sleep(0.01)
sys.exit("HubSpot never received %s with lifetime_value %s" % (email, want))
PY
}
now_ms() { date +%s%3N; }
applied_ms() { psql_ -A -t -c "SELECT (extract(epoch FROM applied_at) * 1000)::bigint FROM $1 WHERE id = $2"; }
shop() { # path json: the shop admin creates a record in the double (which sends the webhooks); prints its id
	curl -s -X POST -H 'Content-Type: application/json' -d "$2" "$crm/_control/woocommerce/$1" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

echo; echo "a customer registers in the shop:"
t0=$(now_ms)
customer=$(shop customers '{"email": "Mary.Jackson@example.com", "first_name": "Mary", "last_name": "Jackson"}')
wait_sql "the customer" "SELECT EXISTS (SELECT FROM shop_customers WHERE id = $customer)"
t1=$(applied_ms shop_customers "$customer")
t2=$(hubspot_at mary.jackson@example.com 0)
echo "  customer $customer: webhook sent → row in shop_customers $((t1 - t0)) ms → contact in HubSpot $((t2 - t0)) ms"

echo; echo "she places two orders:"
for total in 59.00 120.50; do
	t0=$(now_ms)
	order=$(shop orders "{\"customer_id\": $customer, \"status\": \"processing\", \"total\": \"$total\"}")
	wait_sql "order $order" "SELECT EXISTS (SELECT FROM shop_orders WHERE id = $order)"
	t1=$(applied_ms shop_orders "$order")
	ltv=$(psql_ -A -t -c "SELECT lifetime_value FROM shop_customers WHERE id = $customer")
	t2=$(hubspot_at mary.jackson@example.com "$ltv")
	echo "  order $order ($total): webhook sent → row in shop_orders $((t1 - t0)) ms → lifetime value $ltv in HubSpot $((t2 - t0)) ms"
done
psql_ -c "SELECT id, email, first_name, last_name, lifetime_value FROM shop_customers"
psql_ -c "SELECT id, customer_id, status, total FROM shop_orders ORDER BY id"
echo "what HubSpot holds for her:"
python3 - "$crm" <<'PY'
import json, sys, urllib.request
rec = json.load(urllib.request.urlopen(sys.argv[1] + "/_control/records/hubspot/contacts/mary.jackson@example.com"))
print("  " + json.dumps(rec["properties"], sort_keys=True))
PY

echo; echo "a forged webhook (wrong secret) is refused with 401 and counted; nothing of it is stored:"
python3 - "$orders_url" <<'PY'
import base64, hashlib, hmac, json, sys, urllib.error, urllib.request
body = json.dumps({"id": 9999, "customer_id": 1, "status": "processing", "total": "1000000.00",
                   "date_modified_gmt": "2026-12-07T12:00:00"}).encode()
sig = base64.b64encode(hmac.new(b"guessed-secret", body, hashlib.sha256).digest()).decode()
req = urllib.request.Request(sys.argv[1], data=body, method="POST", headers={
    "Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created", "X-WC-Webhook-Signature": sig})
try:
    urllib.request.urlopen(req)
    print("  accepted?!")
except urllib.error.HTTPError as e:
    print(f"  HTTP {e.code}")
PY
psql_ -c "SELECT route, received, applied, rejected, last_error FROM switchboard.inbound_status ORDER BY route"

say "done: the cluster and the double are stopped and removed"
