-- pg_dump keeps every endpoint, route, mapping and filter; the dump restores without a single
-- error, restoring data does not enqueue it, and capture works in the restored database.
CREATE EXTENSION switchboard;
CREATE SCHEMA app;
CREATE TABLE app.people (id int PRIMARY KEY, email text, status text);
CREATE TABLE zz_last (id int PRIMARY KEY, note text);  -- restored after switchboard's tables
CREATE FUNCTION app.score(p app.people) RETURNS int LANGUAGE sql AS 'SELECT length(p.email)';
INSERT INTO app.people VALUES (1, 'a@x.com', 'open'), (2, 'b@x.com', 'won');
INSERT INTO zz_last VALUES (1, 'x');
INSERT INTO switchboard.secrets VALUES ('hook_key', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options)
VALUES ('hook', 'webhook', 'http://127.0.0.1:9/hook', 'hook_key', '{"timeout_ms": 5000}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('people_hook', 'app.people', 'hook', 'person', 'lower(email)'),
       ('notes_hook', 'zz_last', 'hook', 'note', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('people_hook', 'email', 'email'), ('people_hook', 'score', 'app.score(people)');
INSERT INTO switchboard.filters VALUES ('people_hook', 'open', 'new.status = ''open''');
TRUNCATE switchboard.queue;

\set src_db :DBNAME
\setenv SRC :DBNAME
\! createdb switchboard_restored
\! pg_dump --no-owner "$SRC" > switchboard_dump.sql
\! psql -X -q -v ON_ERROR_STOP=1 -d switchboard_restored -f switchboard_dump.sql 2>&1 | grep -c -E 'ERROR|WARNING'
\! rm -f switchboard_dump.sql
\c switchboard_restored
-- configuration came back
SELECT name, kind, base_url, secret, options FROM switchboard.endpoints;
SELECT name, source, remote_object, match_local, enabled FROM switchboard.routes ORDER BY name;
SELECT * FROM switchboard.mappings ORDER BY route, remote_field;
SELECT * FROM switchboard.filters;
SELECT count(*) FROM switchboard.secrets;
-- the restore itself enqueued nothing, and each capture trigger exists once
SELECT count(*) FROM switchboard.queue;
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgname LIKE 'switchboard%' ORDER BY 1, 2;
-- capture works
INSERT INTO app.people VALUES (3, 'C@x.com', 'open'), (4, 'd@x.com', 'lost');
UPDATE zz_last SET note = 'y';
SELECT route, op, new->>'id' AS id FROM switchboard.queue ORDER BY id;
SELECT switchboard.render(id)->'body'->'data' AS data FROM switchboard.queue WHERE route = 'people_hook';
-- and routes can still be changed
UPDATE switchboard.routes SET enabled = false WHERE name = 'notes_hook';
SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'switchboard_notes_hook%';
-- restored capture triggers belong with the extension: dropping it removes them
DROP EXTENSION switchboard;
SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'switchboard%';
\c :src_db
DROP DATABASE switchboard_restored;
DROP EXTENSION switchboard;
DROP SCHEMA app CASCADE;
DROP TABLE zz_last;
