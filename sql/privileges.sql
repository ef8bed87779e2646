-- Privileges: secrets readable by no role but the owner, status readable by pg_monitor,
-- configuration writable only by the owner and roles it grants; capture needs no rights.
CREATE EXTENSION switchboard;
CREATE TABLE accounts (id int PRIMARY KEY, name text);
CREATE ROLE sb_app;
CREATE ROLE sb_watcher IN ROLE pg_monitor;
CREATE ROLE sb_integrator;
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO sb_app;
INSERT INTO switchboard.secrets VALUES ('token', 'super-secret-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hs', 'hubspot', 'http://127.0.0.1:9', 'token');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('accounts_hs', 'accounts', 'hs', 'companies', 'id::text', 'external_id');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('accounts_hs', 'name', 'name');

-- no grants on secrets for anyone else
SELECT grantee, privilege_type FROM information_schema.role_table_grants
 WHERE table_schema = 'switchboard' AND table_name = 'secrets' AND grantee <> current_user;

-- the application writes its table; capture needs no privilege on switchboard
SET ROLE sb_app;
INSERT INTO accounts VALUES (1, 'Acme');
UPDATE accounts SET name = 'Acme Inc' WHERE id = 1;
SELECT * FROM switchboard.secrets;
SELECT * FROM switchboard.endpoints;
SELECT * FROM switchboard.queue;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('mine', 'accounts', 'hs', 'companies', 'id::text', 'x');
SELECT switchboard.preview('accounts_hs', '1');
SELECT switchboard.resync('accounts_hs');
SELECT * FROM switchboard.route_status;
RESET ROLE;
SELECT route, op FROM switchboard.queue ORDER BY id;

-- pg_monitor members read the status views, nothing else
SET ROLE sb_watcher;
SELECT route, enabled, pending, dead FROM switchboard.route_status;
SELECT count(*) FROM switchboard.dead_letters;
SELECT * FROM switchboard.secrets;
SELECT * FROM switchboard.routes;
SELECT * FROM switchboard.outbox;
RESET ROLE;

-- a role granted administration configures routes, writes but cannot read secrets
SELECT switchboard.grant_admin('sb_integrator');
GRANT SELECT, TRIGGER ON accounts TO sb_integrator;
SET ROLE sb_integrator;
INSERT INTO switchboard.secrets VALUES ('token2', 'another-secret');
UPDATE switchboard.secrets SET value = 'rotated' WHERE name = 'token2';
SELECT * FROM switchboard.secrets;
SELECT name FROM switchboard.secrets ORDER BY name;
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hs2', 'hubspot', 'http://127.0.0.1:9', 'token2');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('accounts_hs2', 'accounts', 'hs2', 'companies', 'id::text', 'external_id');
SELECT jsonb_pretty(switchboard.preview('accounts_hs2', '1'));
SELECT route, pending FROM switchboard.route_status ORDER BY route;
SELECT switchboard.grant_admin('sb_app');
RESET ROLE;
-- the preview above masked the secret; nothing readable by others carries it
SELECT count(*) FROM switchboard.outbox WHERE request::text LIKE '%super-secret%';

-- runs: row images (new, old) and step outputs only for roles with the privileges of the
-- route's owner; run_queue itself for none of them
INSERT INTO switchboard.run_queue (id, route, key, op, new, captured_at, state, current_step, step_state, last_error)
VALUES (1000, 'accounts_hs', '1', 'insert', '{"name": "Acme"}', now(), 'failed', 'tell',
        '{"calc": {"state": "done", "attempts": 1, "output": {"n": "Acme"}}, "tell": {"state": "failed", "attempts": 1, "error": "boom"}}', 'boom'),
       (1001, 'accounts_hs2', '1', 'insert', '{"name": "Acme"}', now(), 'failed', 'tell',
        '{"calc": {"state": "done", "attempts": 1, "output": {"n": "Acme"}}, "tell": {"state": "failed", "attempts": 1, "error": "boom"}}', 'boom');
SET ROLE sb_integrator;
SELECT count(*) FROM switchboard.run_queue;
SELECT id, route, state, current_step, steps, new, old, last_error FROM switchboard.runs ORDER BY id;
SELECT id, route, last_error, payload FROM switchboard.dead_letters WHERE id >= 1000 ORDER BY id;
RESET ROLE;
SET ROLE sb_watcher;
SELECT count(*) FROM switchboard.run_queue;
SELECT id, route, state, current_step, steps, new, old, last_error FROM switchboard.runs ORDER BY id;
RESET ROLE;
SELECT id, steps->'calc'->'output' AS output, new FROM switchboard.runs ORDER BY id;
DELETE FROM switchboard.run_queue;

-- allowed_hosts: endpoints may only point at listed hosts
ALTER SYSTEM SET switchboard.allowed_hosts = '*.hubapi.com, 127.0.0.1';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW switchboard.allowed_hosts;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('h1', 'hubspot', 'https://api.hubapi.com');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('h2', 'webhook', 'https://evil.example.com/x');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('h3', 'hubspot', 'https://hubapi.com.evil.example');
ALTER SYSTEM RESET switchboard.allowed_hosts;
SELECT pg_reload_conf();

DROP EXTENSION switchboard;
DROP TABLE accounts;
DROP ROLE sb_app;
DROP ROLE sb_watcher;
DROP OWNED BY sb_integrator;
DROP ROLE sb_integrator;
