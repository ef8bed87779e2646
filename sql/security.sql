-- Security (SPEC §8 "Who acts"): every attack below is run as the unprivileged role it names
-- and must fail; hijack_log records who ran the attacker's code, and must never show a
-- superuser.
CREATE EXTENSION switchboard;
CREATE ROLE sb_dba SUPERUSER;  -- the DBA (a role of its own, so that its name is known)
CREATE ROLE sb_plain;    -- no grant at all (TEMP on the database, like every role by default)
CREATE ROLE sb_config;   -- granted switchboard's configuration
SELECT switchboard.grant_admin('sb_config');
CREATE SCHEMA plain AUTHORIZATION sb_plain;
CREATE SCHEMA cfg AUTHORIZATION sb_config;
SET ROLE sb_dba;
CREATE TABLE hijack_log (who name, at text);
GRANT INSERT ON hijack_log TO PUBLIC;
-- The attacker's code: records the role it runs as, and tries to make sb_plain superuser.
CREATE FUNCTION public.hijack(anyelement) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.hijack_log VALUES (current_user, 'hijack');
	BEGIN
		EXECUTE 'ALTER ROLE sb_plain SUPERUSER';
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	RETURN true;
END $$;
CREATE FUNCTION public.plain_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TABLE customers (id int PRIMARY KEY, email text, ssn text);
CREATE TABLE readable (id int PRIMARY KEY, email text);
GRANT SELECT, TRIGGER ON readable TO sb_config;
INSERT INTO customers VALUES (1, 'a@example.com', '123-45-6789');
INSERT INTO readable VALUES (1, 'a@example.com');
INSERT INTO switchboard.secrets VALUES ('owner_token', 'dba-only-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('dba_hs', 'hubspot', 'http://127.0.0.1:9', 'owner_token');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('open_hs', 'hubspot', 'http://127.0.0.1:9');
SET ROLE sb_config;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('cfg_hs', 'hubspot', 'http://127.0.0.1:9');
SET ROLE sb_dba;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('dba_route', 'customers', 'dba_hs', 'contacts', 'id::text', 'email');
SELECT name, owner FROM switchboard.routes;
SELECT name, owner FROM switchboard.secrets;

-- 1. The caller's temporary schema never stands in for a catalog or a type in switchboard's
--    SECURITY DEFINER functions: temp tables and temp domains named like catalogs and types.
SET ROLE sb_plain;
CREATE TABLE plain.plain_t (id int);
CREATE TEMP TABLE pg_trigger (oid oid, tgfoid oid);
CREATE TEMP TABLE pg_class (oid oid, relname name);
CREATE TEMP TABLE pg_depend (classid oid, objid oid, refclassid oid);
CREATE TEMP TABLE pg_event_trigger_ddl_commands (classid oid, objid oid);
CREATE DOMAIN pg_temp.regclass AS pg_catalog.regclass CHECK (public.hijack(VALUE));
CREATE DOMAIN pg_temp.regprocedure AS pg_catalog.regprocedure CHECK (public.hijack(VALUE));
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (public.hijack(VALUE));
CREATE DOMAIN pg_temp.int8 AS pg_catalog.int8 CHECK (public.hijack(VALUE));
CREATE DOMAIN pg_temp.oid AS pg_catalog.oid CHECK (public.hijack(VALUE));
-- _on_trigger_created runs on every CREATE TRIGGER, by anyone; _on_sql_drop on every DROP
CREATE TRIGGER plain_trg AFTER INSERT ON plain.plain_t FOR EACH ROW EXECUTE FUNCTION public.plain_noop();
DROP TABLE plain.plain_t;
-- the same temp objects (this session's temp schema) against the repair functions, as a
-- role granted them
SET ROLE sb_dba;
SET ROLE sb_config;
CREATE TEMP TABLE queue (id bigint, state text);
SELECT switchboard.retry();
SELECT switchboard.retry(424242);
SELECT switchboard.discard(424242);
SELECT switchboard.pull_now('dba_route');
SELECT switchboard.wait_idle('10 ms');
-- _tie_to_extension takes capture triggers only: nothing else can be made to vanish with it
CREATE TABLE cfg.plain_t2 (id int);
CREATE TRIGGER plain_trg2 AFTER INSERT ON cfg.plain_t2 FOR EACH ROW EXECUTE FUNCTION public.plain_noop();
SELECT switchboard._tie_to_extension((SELECT oid FROM pg_catalog.pg_trigger WHERE tgname = 'plain_trg2'));
-- nor can anyone feed another route's queue from a table of its own
CREATE TRIGGER feed AFTER INSERT ON cfg.plain_t2 FOR EACH ROW EXECUTE FUNCTION switchboard.capture('dba_route');
DROP TABLE cfg.plain_t2;
SET ROLE sb_dba;
DISCARD TEMP;
SELECT who, count(*) FROM hijack_log GROUP BY who ORDER BY who;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN ('sb_plain', 'sb_config') ORDER BY 1;
DELETE FROM hijack_log;

-- 2. Routes only over what their owner may touch; system catalogs and other extensions'
--    tables never.
SET ROLE sb_config;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote)
VALUES ('escalate', 'pg_catalog.pg_authid', 'cfg_hs', 'contacts', 'pull', 'rolname::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('steal', 'customers', 'cfg_hs', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote)
VALUES ('pull_ro', 'readable', 'cfg_hs', 'contacts', 'pull', 'id::text', 'email');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('pull_ro', 'email', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote, on_delete)
VALUES ('pull_del', 'readable', 'cfg_hs', 'contacts', 'pull', 'id::text', 'email', 'delete');
-- a push route over a table it may read is fine, and it owns it
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('mine', 'readable', 'cfg_hs', 'contacts', 'id::text', 'email');
SELECT name, owner FROM switchboard.routes ORDER BY name;
-- ... but cannot hand it to a role it does not have, nor touch another role's route
UPDATE switchboard.routes SET owner = 'sb_dba' WHERE name = 'mine';
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, owner)
VALUES ('mine2', 'readable', 'cfg_hs', 'contacts', 'id::text', 'email', 'sb_dba');
UPDATE switchboard.routes SET endpoint = 'cfg_hs' WHERE name = 'dba_route';
-- ... nor route through another role's endpoint (its credentials, its account), nor preview
-- another role's route (which reads rows as that role)
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('borrow', 'readable', 'dba_hs', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('borrow', 'readable', 'open_hs', 'contacts', 'id::text', 'email');
SELECT switchboard.preview('dba_route', '1');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('dba_route', 'ssn', 'ssn');
INSERT INTO switchboard.filters (route, name, predicate) VALUES ('dba_route', 'f', 'true');
DELETE FROM switchboard.routes WHERE name = 'dba_route';
SELECT switchboard.resync('dba_route');
-- a pull column of a push route is never written; switching the route to pull checks it
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column) VALUES ('mine', 'email', 'email', 'email');
UPDATE switchboard.routes SET direction = 'both' WHERE name = 'mine';
SET ROLE sb_dba;
-- another extension's tables are not a route's source either
CREATE EXTENSION pgq;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote)
VALUES ('ext', 'pgq.queue', 'cfg_hs', 'contacts', 'pull', 'queue_name::text', 'email');
DROP EXTENSION pgq;

-- preview() runs a route's expressions as its owner, not as the DBA who reads it
SET ROLE sb_config;
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('mine', 'who', 'public.hijack(id)');
SET ROLE sb_dba;
SELECT switchboard.preview('mine', '1') ->> 'key' AS previewed;
SELECT who, count(*) FROM hijack_log GROUP BY who ORDER BY who;
DELETE FROM hijack_log;
-- a route whose owner lost its privilege is not used, whoever asks
REVOKE SELECT ON readable FROM sb_config;
SELECT switchboard.preview('mine', '1');
GRANT SELECT ON readable TO sb_config;

-- 3. check_function_bodies = off (a restore) skips the write-time checks of what is valid,
--    but never who may write, and nothing uses such a definition before it is checked.
SET ROLE sb_config;
SET check_function_bodies = off;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, owner)
VALUES ('sneak', 'readable', 'cfg_hs', 'contacts', 'id::text', 'email', 'sb_dba');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('sneak', 'customers', 'cfg_hs', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.mappings (route, remote_field, push_expr)
VALUES ('mine', 'smuggled', '1); INSERT INTO public.hijack_log VALUES (current_user, ''smuggled''); SELECT (1');
RESET check_function_bodies;
SELECT switchboard.preview('sneak', '1');
SELECT switchboard.preview('mine', '1');
SELECT switchboard.resync('mine');
SET ROLE sb_dba;
SELECT who, at FROM hijack_log;
DELETE FROM switchboard.mappings WHERE remote_field IN ('smuggled', 'who');
DELETE FROM switchboard.routes WHERE name = 'sneak';
-- a restored owner that does not exist here is not guessed: the row has none, nobody but a
-- superuser may take it over, and it is not used
SET check_function_bodies = off;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, owner)
VALUES ('orphan', 'readable', 'cfg_hs', 'contacts', 'id::text', 'email', '999999');
RESET check_function_bodies;
SELECT name, owner FROM switchboard.routes WHERE name = 'orphan';
SET ROLE sb_config;
UPDATE switchboard.routes SET owner = 'sb_config' WHERE name = 'orphan';
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('orphan', 'x', 'email');
SET ROLE sb_dba;
SELECT switchboard.preview('orphan', '1');
DELETE FROM switchboard.routes WHERE name = 'orphan';

-- 2. Expressions resolve names in the owner's schema and public: when a role without the
--    owner's privileges may create objects there (and so plant lower(varchar) beside
--    pg_catalog.lower(text)), the route is not used.
GRANT CREATE ON SCHEMA public TO sb_plain;
SELECT switchboard.preview('dba_route', '1');
REVOKE CREATE ON SCHEMA public FROM sb_plain;
SELECT switchboard.preview('dba_route', '1') ->> 'key' AS previewed;

-- 8. A role that cannot read a secret cannot make it be sent elsewhere.
SET ROLE sb_config;
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('exfil', 'hubspot', 'http://127.0.0.1:8', 'owner_token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('exfil', 'webhook', 'http://127.0.0.1:8/sign', 'owner_token');
UPDATE switchboard.endpoints SET base_url = 'http://127.0.0.1:8' WHERE name = 'dba_hs';
UPDATE switchboard.endpoints SET secret = 'owner_token' WHERE name = 'open_hs';
UPDATE switchboard.secrets SET value = 'replaced' WHERE name = 'owner_token';
DELETE FROM switchboard.secrets WHERE name = 'owner_token';
-- nor change or remove another role's endpoint in any way (swap in its own secret, drop the
-- secret, point a secret-less endpoint elsewhere)
INSERT INTO switchboard.secrets (name, value) VALUES ('my_token', 'config-token');
UPDATE switchboard.endpoints SET secret = 'my_token' WHERE name = 'dba_hs';
UPDATE switchboard.endpoints SET secret = NULL WHERE name = 'dba_hs';
UPDATE switchboard.endpoints SET base_url = 'http://127.0.0.1:8/elsewhere' WHERE name = 'open_hs';
DELETE FROM switchboard.endpoints WHERE name = 'open_hs';
-- its own secret on its own endpoint it may use
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('mine_hs', 'hubspot', 'http://127.0.0.1:8', 'my_token');
SELECT name, owner FROM switchboard.endpoints ORDER BY name;
SELECT name, owner FROM switchboard.secrets ORDER BY name;
SET ROLE sb_dba;

-- 7. The WHEN clause holds only what cannot raise: these filters are evaluated by the worker
--    and never fail the application's write.
CREATE TABLE orders (id int PRIMARY KEY, amount int, status text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('orders_hs', 'orders', 'open_hs', 'deals', 'id::text', 'order_id');
INSERT INTO switchboard.filters (route, name, predicate) VALUES
  ('orders_hs', 'min_amount', 'new.amount > current_setting(''app.min'')::int'),
  ('orders_hs', 'constant', '100 / 0 = 1'),
  ('orders_hs', 'cast', 'new.status::int > 0'),
  ('orders_hs', 'plain', 'new.status = ''open''');
SELECT tgname, pg_get_triggerdef(oid) LIKE '%WHEN%' AS has_when,
       pg_get_triggerdef(oid) LIKE '%current_setting%' OR pg_get_triggerdef(oid) LIKE '%100 / 0%'
       OR pg_get_triggerdef(oid) LIKE '%::integer > 0%' AS raising_in_when
  FROM pg_trigger WHERE tgrelid = 'orders'::regclass ORDER BY tgname;
INSERT INTO orders VALUES (1, 50, 'open');
UPDATE orders SET amount = 60 WHERE id = 1;
SELECT op FROM switchboard.queue WHERE route = 'orders_hs' ORDER BY id;

-- 9. Dead letters show mapped fields only, never the row image, and those only to roles with
--    the privileges of the route's owner. The queue (every route's row images) is readable by
--    no configuration role; retry() and discard() act only for the route's owner, and
--    discard() names who did it.
UPDATE switchboard.queue SET state = 'dead', last_error = 'test', payload = '{"amount": 60}' WHERE route = 'orders_hs';
INSERT INTO switchboard.queue (route, op, new, captured_at, state, key, last_error, payload)
VALUES ('mine', 'update', '{"id": 1, "email": "a@example.com"}', now(), 'dead', '1', 'test', '{"email": "a@example.com"}'),
       ('gone', 'update', '{"id": 1, "email": "a@example.com"}', now(), 'dead', '1', 'test', '{"email": "a@example.com"}');
SELECT route, op, payload FROM switchboard.dead_letters ORDER BY id;
SET ROLE sb_config;
SELECT count(*) FROM switchboard.queue;
DELETE FROM switchboard.queue;
SELECT route, op, payload FROM switchboard.dead_letters ORDER BY id;
-- another owner's dead letters: neither retried nor discarded, by id or by route
SELECT switchboard.discard(min(id)) FROM switchboard.dead_letters WHERE route = 'orders_hs';
SELECT switchboard.retry(min(id)) FROM switchboard.dead_letters WHERE route = 'orders_hs';
SELECT switchboard.retry('orders_hs');
-- nor those of a deleted route (the DBA's now)
SELECT switchboard.discard(min(id)) FROM switchboard.dead_letters WHERE route = 'gone';
SELECT switchboard.retry('gone');
-- retry() of all retries its own only
SELECT switchboard.retry();
SELECT switchboard.render(min(id)) FROM switchboard.dead_letters WHERE route = 'orders_hs';
-- nor through its route's expressions, which others (the DBA's preview, the worker) run as
-- the route's owner: there retry() and discard() are refused outright
SET check_function_bodies = off;
INSERT INTO switchboard.mappings (route, remote_field, push_expr)
VALUES ('mine', 'sneaky', '(SELECT count(*) FROM switchboard.dead_letters d WHERE switchboard.discard(d.id))');
RESET check_function_bodies;
SET ROLE sb_dba;
SELECT switchboard.preview('mine', '1')->>'error' AS error;
SELECT route, count(*) FROM switchboard.dead_letters GROUP BY route ORDER BY route;
DELETE FROM switchboard.mappings WHERE remote_field = 'sneaky';
SELECT route, state FROM switchboard.queue WHERE route IN ('orders_hs', 'mine', 'gone') ORDER BY id;
SELECT switchboard.retry(min(id)) FROM switchboard.dead_letters WHERE route = 'gone';
SELECT switchboard.discard(min(id)) FROM switchboard.dead_letters WHERE route = 'gone';
SELECT switchboard.discard(min(id)) FROM switchboard.dead_letters WHERE route = 'orders_hs';
RESET ROLE;
SELECT route, outcome, error FROM switchboard.deliveries WHERE outcome = 'discarded' ORDER BY route;

-- 10. switchboard's own statements run as the extension's owner look nothing up in public: an
--     operator planted there (by a role with CREATE on public) that fits their arguments better
--     than pg_catalog's is never run by them.
GRANT CREATE ON SCHEMA public TO sb_plain;
SET ROLE sb_plain;
CREATE FUNCTION public.evil_mul(numeric, integer) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.hijack_log VALUES (current_user, 'operator');
	RETURN $1 OPERATOR(pg_catalog.*) $2;
END $$;
CREATE OPERATOR public.* (FUNCTION = public.evil_mul, LEFTARG = numeric, RIGHTARG = integer);
RESET ROLE;
INSERT INTO switchboard.queue (route, op, new, captured_at, state)
VALUES ('ghost', 'insert', '{"id": 1}', now(), 'pending');
SET ROLE sb_config;
SELECT switchboard.render(id) FROM switchboard.outbox WHERE route = 'ghost';
RESET ROLE;
SELECT who, at FROM hijack_log WHERE at = 'operator';
DELETE FROM switchboard.queue WHERE route = 'ghost';
DROP OPERATOR public.* (numeric, integer);
DROP FUNCTION public.evil_mul(numeric, integer);
REVOKE CREATE ON SCHEMA public FROM sb_plain;
DELETE FROM switchboard.queue WHERE route = 'mine';

-- 11. Inbound webhooks (SPEC §9): a route's token is readable only with its owner's privileges
--     (whoever knows it may post events), its inbound secret only attachable by the secret's owner.
SET ROLE sb_dba;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote)
VALUES ('dba_in', 'customers', 'dba_hs', 'contacts', 'pull', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote)
VALUES ('dba_push', 'customers', 'dba_hs', 'contacts', 'push', 'id::text', 'email');
SELECT name, inbound_token ~ '^[0-9a-f]{32}$' AS has_token FROM switchboard.routes WHERE name IN ('dba_in', 'dba_push') ORDER BY name;
SET ROLE sb_config;
CREATE TABLE cfg.inb (id int PRIMARY KEY, email text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote)
VALUES ('cfg_in', 'cfg.inb', 'cfg_hs', 'contacts', 'pull', 'id::text', 'email');
SELECT inbound_token FROM switchboard.routes WHERE name = 'cfg_in';
SELECT * FROM switchboard.routes;
SELECT count(*) FROM switchboard.routes WHERE inbound_token LIKE 'a%';
UPDATE switchboard.routes SET enabled = enabled WHERE name = 'cfg_in' RETURNING inbound_token;
SELECT length(switchboard.inbound_token('cfg_in')) AS own_token_length;
SELECT switchboard.inbound_token('dba_in');
SELECT switchboard.rotate_inbound_token('dba_in');
CREATE TEMP TABLE old_token AS SELECT switchboard.inbound_token('cfg_in') AS t;
SELECT switchboard.rotate_inbound_token('cfg_in') <> (SELECT t FROM old_token) AS rotated;
SELECT switchboard.inbound_token('cfg_in') <> (SELECT t FROM old_token) AS new_token_kept;
UPDATE switchboard.routes SET inbound_token = 'guessable' WHERE name = 'cfg_in';
UPDATE switchboard.routes SET inbound_secret = 'owner_token' WHERE name = 'cfg_in';
INSERT INTO switchboard.secrets (name, value) VALUES ('cfg_whsec', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
UPDATE switchboard.routes SET inbound_secret = 'cfg_whsec' WHERE name = 'cfg_in';
SELECT route, received, pending, rejected FROM switchboard.inbound_status ORDER BY route;
UPDATE switchboard.routes SET direction = 'push' WHERE name = 'cfg_in';
SELECT switchboard.inbound_token('cfg_in');
SET ROLE sb_plain;
SELECT switchboard.inbound_token('cfg_in');
SELECT * FROM switchboard.inbound_events;
SET ROLE sb_dba;
SELECT name, inbound_token IS NULL AS no_token, inbound_secret FROM switchboard.routes WHERE name = 'cfg_in';
DELETE FROM switchboard.routes WHERE name IN ('dba_in', 'dba_push', 'cfg_in');
RESET ROLE;

DROP EXTENSION switchboard;
DROP TABLE customers, readable, orders, hijack_log, cfg.inb;
DROP FUNCTION public.hijack(anyelement), public.plain_noop();
DROP SCHEMA plain, cfg CASCADE;
DROP OWNED BY sb_config;
DROP OWNED BY sb_plain;
DROP ROLE sb_config;
DROP ROLE sb_plain;
DROP ROLE sb_dba;
