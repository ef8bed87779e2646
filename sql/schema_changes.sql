-- Schema changes and renames: a renamed route keeps its queue, remote ids, pull state and
-- counters; a capture trigger dropped behind switchboard's back shows in route_status.
CREATE EXTENSION switchboard;
CREATE TABLE people (id int PRIMARY KEY, email text, note text);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', 'http://127.0.0.1:9/hook');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('people_hook', 'people', 'hook', 'person', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('people_hook', 'email', 'email');
INSERT INTO switchboard.filters (route, name, predicate) VALUES ('people_hook', 'has_note', 'new.note IS NOT NULL');

INSERT INTO people VALUES (1, 'a@x.com', 'n'), (2, 'b@x.com', 'n');
INSERT INTO switchboard.remote_ids (route, key, remote_id) VALUES ('people_hook', '1', 'R1');
INSERT INTO switchboard.route_stats (route, delivered) VALUES ('people_hook', 7);
-- left behind by an earlier route of the name it will get
INSERT INTO switchboard.route_stats (route, delivered) VALUES ('people_webhook', 99);
SELECT route, capture_triggers, capture FROM switchboard.route_status;

-- renaming carries the queue, the remote ids and the counters; new changes use the new name
UPDATE switchboard.routes SET name = 'people_webhook' WHERE name = 'people_hook';
INSERT INTO people VALUES (3, 'c@x.com', 'n');
SELECT route, count(*) FROM switchboard.queue GROUP BY route ORDER BY route;
SELECT route, key, remote_id FROM switchboard.remote_ids;
SELECT route, pending, delivered, capture_triggers, capture FROM switchboard.route_status;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'people'::regclass ORDER BY tgname;

-- a rename while changes are being delivered is refused (the worker records them by name)
UPDATE switchboard.queue SET state = 'in_flight' WHERE id = (SELECT min(id) FROM switchboard.queue);
UPDATE switchboard.routes SET name = 'people_again' WHERE name = 'people_webhook';
UPDATE switchboard.queue SET state = 'pending';
SELECT name FROM switchboard.routes;
-- nor may it adopt changes left queued under the new name by a deleted route of that name
INSERT INTO switchboard.queue (route, op, new, captured_at, state) VALUES ('gone_route', 'insert', '{"id": 99}', now(), 'dead');
UPDATE switchboard.routes SET name = 'gone_route' WHERE name = 'people_webhook';
SELECT name FROM switchboard.routes;
DELETE FROM switchboard.queue WHERE route = 'gone_route';
-- a new route never inherits the remote ids, cursor or counters of a deleted one of its name
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('people_old', 'people', 'hook', 'person', 'id::text');
INSERT INTO switchboard.remote_ids (route, key, remote_id) VALUES ('people_old', '1', 'OLD1');
INSERT INTO switchboard.route_stats (route, delivered) VALUES ('people_old', 5);
DELETE FROM switchboard.routes WHERE name = 'people_old';
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('people_old', 'people', 'hook', 'person', 'id::text');
SELECT (SELECT count(*) FROM switchboard.remote_ids WHERE route = 'people_old') AS remote_ids,
       (SELECT delivered FROM switchboard.route_status WHERE route = 'people_old') AS delivered;
DELETE FROM switchboard.routes WHERE name = 'people_old';

-- DROP COLUMN ... CASCADE drops the capture triggers whose WHEN clause uses the column: the
-- route no longer looks healthy
ALTER TABLE people DROP COLUMN note CASCADE;
SELECT route, enabled, capture_triggers, capture, last_error FROM switchboard.route_status;
-- repairing the filter re-attaches the triggers
UPDATE switchboard.filters SET predicate = 'new.email IS NOT NULL' WHERE route = 'people_webhook';
SELECT route, enabled, capture_triggers, capture, last_error FROM switchboard.route_status;
-- a disabled route or a pull-only route captures nothing, and says so
UPDATE switchboard.routes SET enabled = false WHERE name = 'people_webhook';
SELECT route, enabled, capture_triggers, capture FROM switchboard.route_status;

-- capture keeps the queue's indexes right when they change under it, and a dropped and
-- re-created extension (new OIDs) in the same session
UPDATE switchboard.routes SET enabled = true WHERE name = 'people_webhook';
INSERT INTO people VALUES (10, 'p@x.com');
CREATE INDEX queue_op_test ON switchboard.queue (op);
INSERT INTO people VALUES (11, 'q@x.com');
SET enable_seqscan = off;
SELECT count(*) FROM switchboard.queue WHERE op = 'insert';
RESET enable_seqscan;
DROP INDEX switchboard.queue_op_test;
INSERT INTO people VALUES (12, 'r@x.com');
DROP EXTENSION switchboard;
CREATE EXTENSION switchboard;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', 'http://127.0.0.1:9/hook');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('people_hook', 'people', 'hook', 'person', 'id::text');
INSERT INTO people VALUES (13, 's@x.com');
SELECT route, op, new->>'id' AS id FROM switchboard.queue;
-- a filter that reads old only inside a sub-query still gets the old image of an update
INSERT INTO switchboard.filters (route, name, predicate)
VALUES ('people_hook', 'email_changed', 'EXISTS (SELECT 1 WHERE old.email IS DISTINCT FROM new.email)');
TRUNCATE switchboard.queue;
UPDATE people SET email = 'changed@x.com' WHERE id = 13;
SELECT op, old->>'email' AS old_email, new->>'email' AS new_email FROM switchboard.queue;
DROP EXTENSION switchboard;
DROP TABLE people;
