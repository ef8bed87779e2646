-- Capture: only committed changes, per operation, filters on new/old, runtime errors kept.
CREATE EXTENSION switchboard;
CREATE TABLE deals (id int PRIMARY KEY, email text, status text, amount numeric, qty int);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', 'http://127.0.0.1:9/hook');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('deals_hook', 'deals', 'hook', 'deal', 'id::text', '{insert,update,delete}');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('deals_hook', 'email', 'lower(email)'),
  ('deals_hook', 'amount', 'amount'),
  ('deals_hook', 'unit_price', 'amount / qty');
CREATE VIEW q AS SELECT id, route, op, new->>'id' AS new_id, old->>'id' AS old_id, state FROM switchboard.queue ORDER BY id;

-- committed changes are queued, in order, one per row and operation
INSERT INTO deals VALUES (1, 'A@x.com', 'open', 100, 2), (2, 'b@x.com', 'open', 50, 5);
UPDATE deals SET status = 'won' WHERE id = 1;
DELETE FROM deals WHERE id = 2;
SELECT * FROM q;
-- a delete carries the old row image, an insert/update the new one
SELECT op, new IS NOT NULL AS has_new, old IS NOT NULL AS has_old FROM switchboard.queue ORDER BY id;

-- rolled back changes never appear, including a rolled-back savepoint
TRUNCATE switchboard.queue;
BEGIN;
INSERT INTO deals VALUES (3, 'c@x.com', 'open', 1, 1);
ROLLBACK;
BEGIN;
INSERT INTO deals VALUES (4, 'd@x.com', 'open', 1, 1);
SAVEPOINT s1;
UPDATE deals SET amount = 2 WHERE id = 4;
ROLLBACK TO SAVEPOINT s1;
COMMIT;
SELECT * FROM q;
-- COPY is captured like INSERT
COPY deals FROM stdin;
5	e@x.com	open	10	1
\.
SELECT * FROM q;

-- operations: only updates
TRUNCATE switchboard.queue;
UPDATE switchboard.routes SET operations = '{update}' WHERE name = 'deals_hook';
INSERT INTO deals VALUES (6, 'f@x.com', 'open', 1, 1);
UPDATE deals SET amount = 3 WHERE id = 6;
DELETE FROM deals WHERE id = 6;
SELECT * FROM q;
UPDATE switchboard.routes SET operations = '{insert,update,delete}' WHERE name = 'deals_hook';

-- filters: a WHEN-safe filter on new and old (evaluated by the trigger)
TRUNCATE switchboard.queue;
INSERT INTO switchboard.filters VALUES ('deals_hook', 'status_changed', 'new.status IS DISTINCT FROM old.status');
UPDATE deals SET amount = amount + 1 WHERE id = 1;   -- status unchanged: not captured
UPDATE deals SET status = 'lost' WHERE id = 1;        -- captured
INSERT INTO deals VALUES (7, 'g@x.com', 'open', 1, 1); -- insert: old is NULL, so captured
SELECT * FROM q;
SELECT tgname, pg_get_triggerdef(oid) ~ 'WHEN' AS has_when FROM pg_trigger WHERE tgrelid = 'deals'::regclass ORDER BY tgname;
DELETE FROM switchboard.filters WHERE name = 'status_changed';
-- a comparison of a numeric column with a literal cannot raise either: in WHEN
INSERT INTO switchboard.filters VALUES ('deals_hook', 'positive', 'new.amount > 0');
SELECT tgname, pg_get_triggerdef(oid) ~ 'WHEN' AS has_when FROM pg_trigger WHERE tgrelid = 'deals'::regclass ORDER BY tgname;
DELETE FROM switchboard.filters WHERE name = 'positive';

-- a filter that could raise (arithmetic) is not in WHEN: the change is queued with its old
-- image and the translator decides; a rejected change renders as filtered
TRUNCATE switchboard.queue;
INSERT INTO switchboard.filters VALUES ('deals_hook', 'big_move', 'abs(new.amount - old.amount) >= 10');
UPDATE deals SET amount = amount + 1 WHERE id = 1;
UPDATE deals SET amount = amount + 50 WHERE id = 1;
SELECT id, op, old IS NOT NULL AS has_old, switchboard.render(id) - 'url' - 'body' - 'method' - 'headers' AS verdict FROM switchboard.queue ORDER BY id;
DELETE FROM switchboard.filters WHERE name = 'big_move';

-- a filter that raises at run time never fails the write; the change shows the error
TRUNCATE switchboard.queue;
INSERT INTO switchboard.filters VALUES ('deals_hook', 'per_unit', 'new.amount / new.qty > 1');
INSERT INTO deals VALUES (8, 'h@x.com', 'open', 10, 0);
SELECT id, state, switchboard.render(id) AS rendered FROM switchboard.queue ORDER BY id;
DELETE FROM switchboard.filters WHERE name = 'per_unit';

-- a mapping that raises at run time never fails the write either
TRUNCATE switchboard.queue;
INSERT INTO deals VALUES (9, 'i@x.com', 'open', 10, 0);
SELECT count(*) FROM deals WHERE id = 9;
SELECT id, op, switchboard.render(id) AS rendered FROM switchboard.queue ORDER BY id;
SELECT route, request FROM switchboard.outbox ORDER BY id;

-- resync: existing rows, optionally narrowed, through the route's filters
TRUNCATE switchboard.queue;
SELECT switchboard.resync('deals_hook');
SELECT count(*), min(op), max(op) FROM switchboard.queue;
TRUNCATE switchboard.queue;
SELECT switchboard.resync('deals_hook', 'id >= 7');
SELECT new->>'id' AS id FROM switchboard.queue ORDER BY 1;
INSERT INTO switchboard.filters VALUES ('deals_hook', 'open_only', 'new.status = ''open''');
TRUNCATE switchboard.queue;
SELECT switchboard.resync('deals_hook');
SELECT new->>'id' AS id, new->>'status' AS status FROM switchboard.queue ORDER BY 1;
SELECT switchboard.resync('deals_hook', 'nosuch > 1');
SELECT switchboard.resync('deals_hook', 'id');
SELECT switchboard.resync('deals_hook', 'true; DELETE FROM deals');
SELECT switchboard.resync('no_route');
DELETE FROM switchboard.filters WHERE name = 'open_only';

-- a partitioned source table: changes in any partition are captured
CREATE TABLE events (id int, region text, payload text) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('events_hook', 'events', 'hook', 'event', 'id::text');
TRUNCATE switchboard.queue;
INSERT INTO events VALUES (1, 'eu', 'a'), (2, 'us', 'b');
SELECT route, op, new->>'region' AS region FROM switchboard.queue ORDER BY id;
-- resync reads every partition
TRUNCATE switchboard.queue;
SELECT switchboard.resync('events_hook');
SELECT route, op, new->>'region' AS region FROM switchboard.queue ORDER BY id;

-- route_status counts the real queue
SELECT route, enabled, pending, in_flight, delivered, dead, oldest_pending_age IS NOT NULL AS has_age, last_error, capture_triggers
  FROM switchboard.route_status ORDER BY route;

-- dropping the source table disables its routes, with the reason; nothing else breaks
INSERT INTO deals VALUES (10, 'j@x.com', 'open', 1, 1);
DROP TABLE deals CASCADE;
SELECT route, enabled, capture_triggers, last_error ~ '^source table public.deals was dropped' AS says_why,
       (SELECT source FROM switchboard.routes WHERE name = route) AS source
  FROM switchboard.route_status ORDER BY route;
SELECT route, op, switchboard.render(id) AS rendered FROM switchboard.queue WHERE route = 'deals_hook' LIMIT 1;
-- it cannot be enabled again while its table is gone
UPDATE switchboard.routes SET enabled = true WHERE name = 'deals_hook';
-- other routes go on capturing
INSERT INTO events VALUES (3, 'eu', 'c');
SELECT count(*) FROM switchboard.queue WHERE route = 'events_hook';

-- dropping the extension removes the capture triggers it attached
DROP VIEW q;
DROP EXTENSION switchboard;
SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'switchboard%';
INSERT INTO events VALUES (4, 'us', 'd');
DROP TABLE events;
