-- Configuration tables: every write validated, errors name table, row and reason.
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text, first_name text, last_name text,
                       status text, mrr numeric, score int, props jsonb);
CREATE VIEW contacts_view AS SELECT * FROM contacts;

-- secrets / endpoints
INSERT INTO switchboard.secrets VALUES ('hs_token', 'pat-na1-secret-value');
INSERT INTO switchboard.secrets VALUES ('sf_creds', '{"client_id":"sf-id","client_secret":"sf-secret"}');
INSERT INTO switchboard.secrets VALUES ('hook_key', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret)
VALUES ('hubspot', 'hubspot', 'http://127.0.0.1:9100', 'hs_token'),
       ('salesforce', 'salesforce', 'http://127.0.0.1:9100', 'sf_creds'),
       ('hooks', 'webhook', 'http://127.0.0.1:9100/hooks/crm', 'hook_key'),
       ('ai', 'openai', 'http://127.0.0.1:9100', NULL);
INSERT INTO switchboard.endpoints (name, kind, base_url, options)
VALUES ('hs2', 'hubspot', 'https://api.hubapi.com', '{"batch_size": 50, "rate_limit": "100/10s", "max_concurrency": 4}');
SELECT name, kind, base_url, secret, options, enabled FROM switchboard.endpoints ORDER BY name;
-- unknown kind
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'hubspott', 'http://x.example');
-- not a URL / wrong scheme / credentials in URL
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'webhook', 'example.com/hook');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'webhook', 'ftp://example.com/hook');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'webhook', 'https://user:pw@example.com/hook');
-- a query or fragment (where tokens hide), a link-local or metadata address unless listed
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'webhook', 'https://example.com/hook?token=abc');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'webhook', 'https://example.com/hook#frag');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'webhook', 'http://169.254.169.254/latest/meta-data');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad', 'webhook', 'http://[fd00:ec2::254]/latest');
-- unknown option, option of the wrong type, option of another kind
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('bad', 'hubspot', 'http://x.example', '{"batchsize": 10}');
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('bad', 'hubspot', 'http://x.example', '{"batch_size": "ten"}');
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('bad', 'hubspot', 'http://x.example', '{"batch_size": 500}');
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('bad', 'hubspot', 'http://x.example', '{"rate_limit": "fast"}');
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('bad', 'hubspot', 'http://x.example', '{"api_version": "59.0"}');
-- bad name; unknown secret (foreign key)
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bad name', 'webhook', 'http://x.example');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('bad', 'webhook', 'http://x.example', 'nope');
-- updates are validated too
UPDATE switchboard.endpoints SET kind = 'zapier' WHERE name = 'hs2';

-- routes
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email');
SELECT name, source, endpoint, remote_object, direction, operations, match_local, match_remote,
       on_delete, conflict, pull_interval, enabled FROM switchboard.routes;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts', 'nope', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts', 'ai', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'lower(emial)', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text; DROP TABLE contacts', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text) FROM pg_class --', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'count(*)', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text', 'email', 'sideways');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, direction)
VALUES ('r1', 'contacts', 'hooks', 'contact', 'id::text', 'pull');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, operations)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text', 'email', '{insert,upsert}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, operations)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text', 'email', '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, operations)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text', 'email', '{insert,insert}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, on_delete)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text', 'email', 'archive');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, conflict)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text', 'email', 'oldest');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, pull_interval)
VALUES ('r1', 'contacts', 'hubspot', 'contacts', 'id::text', 'email', '0 seconds');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts_view', 'hubspot', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'switchboard.queue', 'hubspot', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'no_such_table', 'hubspot', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('a route name that is far too long to be part of a trigger name', 'contacts', 'hubspot', 'contacts', 'id::text', 'email');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r1', 'contacts', 'hubspot', '', 'id::text', 'email');
UPDATE switchboard.routes SET match_local = 'nosuch' WHERE name = 'contacts_hs';

-- mappings
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column, pull_expr) VALUES
  ('contacts_hs', 'email', 'lower(email)', 'email', NULL),
  ('contacts_hs', 'firstname', 'first_name', 'first_name', NULL),
  ('contacts_hs', 'fullname', 'first_name || '' '' || last_name', NULL, NULL),
  ('contacts_hs', 'mrr', 'mrr', 'mrr', '(value #>> ''{}'')::numeric'),
  ('contacts_hs', 'lifecyclestage', 'CASE WHEN status = ''qualified'' THEN ''salesqualifiedlead'' ELSE ''lead'' END', NULL, NULL),
  ('contacts_hs', 'company', '(SELECT ''Acme'')', NULL, NULL);
SELECT * FROM switchboard.mappings ORDER BY remote_field;
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('nope', 'x', 'id');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', 'x', 'nosuchcol');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', 'x', 'lower(');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', 'x', 'id) FROM pg_authid --');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', 'x', 'email + 1');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', 'x', 'sum(mrr)');
INSERT INTO switchboard.mappings (route, remote_field) VALUES ('contacts_hs', 'x');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('contacts_hs', 'x', 'nosuchcol');
INSERT INTO switchboard.mappings (route, remote_field, pull_column, pull_expr) VALUES ('contacts_hs', 'x', 'score', 'value->>');
INSERT INTO switchboard.mappings (route, remote_field, pull_column, pull_expr) VALUES ('contacts_hs', 'x', 'score', 'point(1,2)');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_expr) VALUES ('contacts_hs', 'x', 'id', '(value #>> ''{}'')::int');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', '', 'id');
UPDATE switchboard.mappings SET push_expr = 'nosuchcol' WHERE remote_field = 'email';

-- filters
INSERT INTO switchboard.filters VALUES ('contacts_hs', 'qualified', 'new.status = ''qualified''');
INSERT INTO switchboard.filters VALUES ('contacts_hs', 'mrr_moved', 'abs(coalesce(new.mrr, 0) - coalesce(old.mrr, 0)) > 100 OR old.mrr IS NULL');
SELECT * FROM switchboard.filters ORDER BY name;
INSERT INTO switchboard.filters VALUES ('nope', 'f', 'true');
INSERT INTO switchboard.filters VALUES ('contacts_hs', 'f', 'new.status');
INSERT INTO switchboard.filters VALUES ('contacts_hs', 'f', 'status = ''x''');
INSERT INTO switchboard.filters VALUES ('contacts_hs', 'f', 'new.nosuch = 1');
INSERT INTO switchboard.filters VALUES ('contacts_hs', 'f', 'true; DROP TABLE contacts');
INSERT INTO switchboard.filters VALUES ('contacts_hs', 'f', 'new.status = ');

-- the trigger carries the filters that cannot raise in its WHEN clause; the rest the
-- translator evaluates (mrr_moved does arithmetic, which can overflow)
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'contacts'::regclass ORDER BY tgname;
-- operations decide which triggers exist
UPDATE switchboard.routes SET operations = '{update}' WHERE name = 'contacts_hs';
SELECT tgname FROM pg_trigger WHERE tgrelid = 'contacts'::regclass ORDER BY tgname;
-- disabling detaches, enabling attaches again
UPDATE switchboard.routes SET enabled = false WHERE name = 'contacts_hs';
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'contacts'::regclass;
UPDATE switchboard.routes SET enabled = true, operations = '{insert,update,delete}' WHERE name = 'contacts_hs';
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'contacts'::regclass;
-- deleting a filter rewrites the WHEN clauses
DELETE FROM switchboard.filters WHERE name = 'qualified';
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'contacts'::regclass ORDER BY tgname;
-- deleting the route removes its triggers and cascades to mappings and filters
DELETE FROM switchboard.routes WHERE name = 'contacts_hs';
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'contacts'::regclass;
SELECT count(*) FROM switchboard.mappings;
SELECT count(*) FROM switchboard.filters;

-- settings: defaults, units, and that all of them are reloadable (sighup)
SELECT name, boot_val, unit, context FROM pg_settings WHERE name LIKE 'switchboard.%' ORDER BY name;
SET switchboard.no_such_setting = 1;

DROP VIEW contacts_view;
DROP TABLE contacts;
DROP EXTENSION switchboard;
