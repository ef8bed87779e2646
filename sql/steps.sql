-- steps (SPEC §2 steps, §7): every write validated, errors name the row and the reason; kept
-- by pg_dump like the other configuration tables.
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text, region text, company text, score int, owner_name text);
CREATE TABLE nokey (id int, email text);
CREATE FUNCTION assign_owner(region text, score int) RETURNS text LANGUAGE sql
	AS $$ SELECT CASE WHEN score >= 80 THEN 'ae-' || region ELSE 'sdr-pool' END $$;
INSERT INTO switchboard.secrets VALUES ('hs_token', 'pat-na1-secret'), ('ai_key', 'sk-secret'),
	('hook_key', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options) VALUES
	('hubspot', 'hubspot', 'http://127.0.0.1:9100', 'hs_token', '{}'),
	('ai', 'openai', 'http://127.0.0.1:9100', 'ai_key', '{"model": "gpt-4o-mini"}'),
	('ai_nomodel', 'openai', 'http://127.0.0.1:9100', 'ai_key', '{}'),
	('clearbit', 'http', 'http://127.0.0.1:9100/enrich', NULL, '{"timeout_ms": 2000}'),
	('slack', 'webhook', 'http://127.0.0.1:9100/hooks/slack', 'hook_key', '{}');
-- an http endpoint is no route target
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('bad', 'leads', 'clearbit', 'x', 'id::text');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('leads', 'leads', 'hubspot', 'contacts', 'lower(email)', 'email'),
       ('nokey', 'nokey', 'hubspot', 'contacts', 'lower(email)', 'email');

-- the seed's flow: create in HubSpot, score, route, write back, notify hot leads
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, run_if, input, options) VALUES
	('leads', 'create', 10, 'deliver', NULL, NULL, NULL, '{"max_attempts": 5}'),
	('leads', 'score', 20, 'enrich', 'ai', NULL,
	 $$'Score this lead 0-100: ' || new.email || ' at ' || coalesce(new.company, 'unknown')$$,
	 '{"system": "Answer {\"score\": n, \"reason\": text}", "temperature": 0, "json_schema": {"type": "object", "properties": {"score": {"type": "integer"}}}}'),
	('leads', 'firmo', 25, 'enrich', 'clearbit', NULL, $$jsonb_build_object('email', new.email)$$, '{}'),
	('leads', 'route', 30, 'sql', NULL, NULL, $$assign_owner(new.region, (steps->'score'->>'score')::int)$$, '{}'),
	('leads', 'save', 40, 'writeback', NULL, NULL,
	 $$jsonb_build_object('score', (steps->'score'->>'score')::int, 'owner_name', steps->>'route')$$, '{}'),
	('leads', 'alert', 50, 'notify', 'slack', $$(steps #>> '{score,score}')::int >= 80$$,
	 $$jsonb_build_object('email', new.email, 'owner', steps->>'route', 'why', steps->'score'->'reason')$$, '{}');
SELECT route, name, position, kind, endpoint FROM switchboard.steps ORDER BY route, position;
-- a mapping of a route with steps may read steps, but only those before its first deliver step
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('leads', 'email', 'lower(email)');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('leads', 'company', $$coalesce(steps->'firmo'->>'company', company)$$);
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('leads', 'hs_lead_score', $$steps->'nope'->>'score'$$);

-- bad definitions: each names the row and the reason
-- unknown kind, bad name, no position
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'transform', '1');
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'bad name', 60, 'sql', '1');
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', NULL, 'sql', '1');
-- unknown route (foreign key), position taken
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('nope', 'x', 60, 'sql', '1');
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 20, 'sql', '1');
-- endpoints of the wrong kind, or where none belongs
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'enrich', 'hubspot', $$new.email$$);
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'enrich', NULL, $$new.email$$);
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'notify', 'ai', $$'{}'::jsonb$$);
INSERT INTO switchboard.steps (route, name, position, kind, endpoint) VALUES ('leads', 'x', 60, 'deliver', 'ai');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'sql', 'ai', '1');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'enrich', 'nowhere', $$new.email$$);
-- openai without a model anywhere; unknown and ill-typed options
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'enrich', 'ai_nomodel', $$new.email$$);
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options) VALUES ('leads', 'x', 60, 'enrich', 'ai', $$new.email$$, '{"modle": "gpt-4o"}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options) VALUES ('leads', 'x', 60, 'enrich', 'ai', $$new.email$$, '{"temperature": "hot"}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options) VALUES ('leads', 'x', 60, 'enrich', 'clearbit', $$to_jsonb(new)$$, '{"model": "gpt-4o"}');
INSERT INTO switchboard.steps (route, name, position, kind, input, options) VALUES ('leads', 'x', 60, 'sql', '1', '{"max_attempts": 0}');
INSERT INTO switchboard.steps (route, name, position, kind, input, options) VALUES ('leads', 'x', 60, 'sql', '1', '[1]');
-- expressions that do not parse or type-check, wrong types
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'sql', $$new.emial$$);
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'sql', $$1); DROP TABLE leads; SELECT (1$$);
INSERT INTO switchboard.steps (route, name, position, kind, run_if, input) VALUES ('leads', 'x', 60, 'sql', $$new.score$$, '1');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'enrich', 'clearbit', $$new.email$$);
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'enrich', 'ai', $$new.score$$);
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 'x', 60, 'notify', 'slack', $$new.email$$);
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'writeback', $$'score'$$);
INSERT INTO switchboard.steps (route, name, position, kind) VALUES ('leads', 'x', 60, 'sql');
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'deliver', $$new.email$$);
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'sql', $$count(*)$$);
-- only earlier steps: a later one, itself, an unknown one, steps read whole
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 15, 'sql', $$steps->'route'$$);
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'sql', $$steps->'x'$$);
INSERT INTO switchboard.steps (route, name, position, kind, run_if, input) VALUES ('leads', 'x', 60, 'sql', $$steps ? 'score'$$, '1');
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'x', 60, 'sql', $$steps->(new.region)$$);
-- moving a step before the one it reads
UPDATE switchboard.steps SET position = 5 WHERE route = 'leads' AND name = 'route';
-- writeback needs a primary key
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('nokey', 'save', 10, 'writeback', $$jsonb_build_object('email', 'x')$$);
-- fine: steps of another route are its own
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('nokey', 'score', 10, 'sql', $$length(new.email)$$);
SELECT route, name, position, kind FROM switchboard.steps ORDER BY route, position;

-- only the route's owner (or a role with its privileges) may change its steps
CREATE ROLE steps_other;
SELECT switchboard.grant_admin('steps_other');
SET ROLE steps_other;
CREATE FUNCTION pg_temp.denied(stmt text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
	EXECUTE stmt;
	RETURN 'allowed';
EXCEPTION WHEN insufficient_privilege THEN
	RETURN regexp_replace(SQLERRM, 'role \S+', 'role <owner>');
END $f$;
SELECT pg_temp.denied($$UPDATE switchboard.steps SET options = '{}' WHERE route = 'leads' AND name = 'route'$$);
SELECT pg_temp.denied($$DELETE FROM switchboard.steps WHERE route = 'leads'$$);
SELECT pg_temp.denied($$INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('leads', 'y', 70, 'sql', '1')$$);
RESET ROLE;

-- preview shows every step: whether it would run, the exact request, sql steps evaluated (and
-- rolled back), outputs not known before the run marked as such
INSERT INTO leads VALUES (1, 'Ada@Example.com', 'emea', 'Acme', NULL, NULL);
SELECT jsonb_pretty(switchboard.preview('leads', 'ada@example.com'));
CREATE TABLE preview_side (n int);
CREATE FUNCTION side_effect(e text) RETURNS int LANGUAGE sql AS $$ INSERT INTO preview_side VALUES (1) RETURNING length(e) $$;
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES ('nokey', 'side', 20, 'sql', $$side_effect(new.email)$$);
INSERT INTO switchboard.steps (route, name, position, kind, run_if, input) VALUES
	('nokey', 'big', 30, 'sql', $$(steps->>'score')::int > 3$$, $$'big'$$),
	('nokey', 'small', 40, 'sql', $$(steps->>'score')::int <= 3$$, $$'small'$$);
-- a mapping may read the steps before the route's deliver step
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
	('nokey', 'email', 'lower(email)'), ('nokey', 'hs_score', $$steps->>'score'$$);
INSERT INTO switchboard.steps (route, name, position, kind) VALUES ('nokey', 'push', 50, 'deliver');
-- a deliver step before a step its mappings read
INSERT INTO switchboard.steps (route, name, position, kind) VALUES ('nokey', 'early', 5, 'deliver');
INSERT INTO nokey VALUES (1, 'x@y.zz');
SELECT jsonb_pretty(switchboard.preview('nokey', 'x@y.zz')->'steps');
SELECT count(*) AS side_effects_left FROM preview_side;

-- kept by pg_dump
TRUNCATE switchboard.queue;
\setenv SRC :DBNAME
\set src_db :DBNAME
\! createdb switchboard_steps_restored
\! pg_dump --no-owner "$SRC" > switchboard_steps_dump.sql
\! psql -X -q -v ON_ERROR_STOP=1 -d switchboard_steps_restored -f switchboard_steps_dump.sql 2>&1 | grep -c -E 'ERROR|WARNING'
\! rm -f switchboard_steps_dump.sql
\c switchboard_steps_restored
SELECT route, name, position, kind, endpoint, run_if, options FROM switchboard.steps ORDER BY route, position;
\c :src_db
DROP DATABASE switchboard_steps_restored;
DROP EXTENSION switchboard;
DROP OWNED BY steps_other;
DROP ROLE steps_other;

