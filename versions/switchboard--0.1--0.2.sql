-- switchboard 0.1 -> 0.2. Brings a 0.1 install to exactly what switchboard--0.2.sql creates
-- (test/tap/t/020_upgrade.pl compares the two catalogs and names every difference).
\echo Use "ALTER EXTENSION switchboard UPDATE TO '0.2'" to load this file. \quit


-- Owners (SPEC §8 "Who acts"): routes, endpoints and secrets belong to the role that wrote them.
-- In 0.1 any role granted configuration could change any of them, so the configuration was as
-- trusted as the extension's owner: the rows there are become the extension owner's. Reassign
-- routes written by other roles with UPDATE switchboard.routes SET owner = ... (see README).
ALTER TABLE switchboard.secrets ADD COLUMN owner regrole;
ALTER TABLE switchboard.endpoints ADD COLUMN owner regrole;
ALTER TABLE switchboard.routes ADD COLUMN owner regrole;
-- Without their triggers: this is no configuration change, and nothing is to be re-attached.
ALTER TABLE switchboard.endpoints DISABLE TRIGGER USER;
ALTER TABLE switchboard.routes DISABLE TRIGGER USER;
UPDATE switchboard.secrets SET owner = (SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'switchboard')::regrole;
UPDATE switchboard.endpoints SET owner = (SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'switchboard')::regrole;
UPDATE switchboard.routes SET owner = (SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'switchboard')::regrole;
ALTER TABLE switchboard.endpoints ENABLE TRIGGER USER;
ALTER TABLE switchboard.routes ENABLE TRIGGER USER;

-- Deletes are validated too (who may delete), and secrets get the trigger.
DROP TRIGGER validate ON switchboard.endpoints;
DROP TRIGGER validate ON switchboard.routes;
DROP TRIGGER validate ON switchboard.mappings;
DROP TRIGGER validate ON switchboard.filters;
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.endpoints
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.secrets
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.routes
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.mappings
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.filters
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();

-- SECURITY DEFINER functions: search_path pg_catalog, pg_temp, names qualified.

CREATE OR REPLACE FUNCTION switchboard._on_sql_drop() RETURNS event_trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	dropped record;
BEGIN
	FOR dropped IN SELECT d.objid, d.object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() d
		WHERE d.object_type IN ('table', 'partitioned table') LOOP
		UPDATE switchboard.routes
		   SET enabled = false,
		       source = NULL,  -- a dangling OID could name another table after a restore
		       disabled_reason = pg_catalog.format('source table %s was dropped at %s', dropped.object_identity,
		                                           pg_catalog.now())
		 WHERE source = dropped.objid;
	END LOOP;
END $$;

CREATE OR REPLACE FUNCTION switchboard._on_trigger_created() RETURNS event_trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	created record;
BEGIN
	FOR created IN
		SELECT t.oid FROM pg_catalog.pg_event_trigger_ddl_commands() c
		  JOIN pg_catalog.pg_trigger t ON t.oid = c.objid
		   AND c.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
		 WHERE t.tgfoid = 'switchboard.capture()'::pg_catalog.regprocedure
		   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		                    WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
		                      AND d.objid = t.oid
		                      AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass)
	LOOP
		PERFORM switchboard._tie_to_extension(created.oid);
	END LOOP;
END $$;

CREATE OR REPLACE FUNCTION switchboard.retry(route text DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n pg_catalog.int8;
BEGIN
	UPDATE switchboard.queue q
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
	 WHERE q.state = 'dead' AND (retry.route IS NULL OR q.route = retry.route);
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM switchboard.wake();
	RETURN n;
END $$;

CREATE OR REPLACE FUNCTION switchboard.retry(id bigint) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	UPDATE switchboard.queue q
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
	 WHERE q.id = retry.id AND q.state = 'dead';
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	PERFORM switchboard.wake();
	RETURN true;
END $$;

CREATE OR REPLACE FUNCTION switchboard.discard(id bigint) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	gone record;
BEGIN
	DELETE FROM switchboard.queue q WHERE q.id = discard.id AND q.state = 'dead' RETURNING * INTO gone;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	-- session_user: current_user is the owner this function runs as, not who called it.
	INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, error)
	VALUES (gone.route, gone.key, gone.op, gone.id, 'discarded', 'discarded by ' || session_user);
	RETURN true;
END $$;

CREATE OR REPLACE FUNCTION switchboard.wait_idle(timeout interval DEFAULT '30 s') RETURNS boolean
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	horizon bigint;
	deadline timestamptz := pg_catalog.clock_timestamp() + timeout;
BEGIN
	SELECT coalesce(pg_catalog.max(id), 0) INTO horizon FROM switchboard.queue;
	PERFORM switchboard.wake();
	LOOP
		IF NOT EXISTS (SELECT 1 FROM switchboard.queue WHERE id <= horizon AND state <> 'dead') THEN
			RETURN true;
		END IF;
		IF pg_catalog.clock_timestamp() >= deadline THEN
			RETURN false;
		END IF;
		PERFORM pg_catalog.pg_sleep(0.02);
	END LOOP;
END $$;

CREATE OR REPLACE FUNCTION switchboard.pull_now(route text) RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM switchboard.routes r WHERE r.name = pull_now.route AND r.direction IN ('pull', 'both')) THEN
		RAISE EXCEPTION 'route "%" does not exist or does not pull (direction pull or both)', route
			USING ERRCODE = 'undefined_object';
	END IF;
	INSERT INTO switchboard.pull_state AS p (route, next_pull_at) VALUES (pull_now.route, pg_catalog.now())
	ON CONFLICT ON CONSTRAINT pull_state_pkey DO UPDATE SET next_pull_at = pg_catalog.now();
	PERFORM switchboard.wake();
END $$;

CREATE OR REPLACE FUNCTION switchboard.grant_admin(role regrole) RETURNS void
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON switchboard.endpoints, switchboard.routes, '
	               'switchboard.mappings, switchboard.filters, switchboard.steps TO %s', role);
	EXECUTE pg_catalog.format('GRANT INSERT, UPDATE, DELETE, REFERENCES ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT (name, owner) ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT, DELETE ON switchboard.queue TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT ON switchboard.route_status, switchboard.dead_letters, switchboard.outbox, '
	               'switchboard.route_stats, switchboard.remote_ids, switchboard.delivered_marks, switchboard.instance, switchboard.endpoint_status, '
	               'switchboard.deliveries, switchboard.delivery_log, switchboard.endpoint_state, switchboard.pull_status, '
	               'switchboard.pull_state, switchboard.metrics, switchboard.runs, switchboard.ai_usage, '
	               'switchboard.ai_usage_daily TO %s', role);
	EXECUTE pg_catalog.format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION switchboard.grant_admin(regrole) FROM %s', role);
END $$;

-- Dead letters show the mapped fields only.
CREATE OR REPLACE VIEW switchboard.dead_letters AS
SELECT id, route, op, key, attempts, last_status, last_error,
       payload,  -- the mapped fields only: never the row image (readable by pg_monitor)
       failed_at
  FROM switchboard.queue
 WHERE state = 'dead';

-- Roles granted configuration see the owners of secrets too.
DO $$
DECLARE
	grantee text;
BEGIN
	FOR grantee IN SELECT DISTINCT c.grantee FROM information_schema.column_privileges c
	                WHERE c.table_schema = 'switchboard' AND c.table_name = 'secrets' AND c.column_name = 'name'
	                  AND c.privilege_type = 'SELECT' AND c.grantee <> current_user LOOP
		EXECUTE pg_catalog.format('GRANT SELECT (owner) ON switchboard.secrets TO %I', grantee);
	END LOOP;
END $$;

-- Capture triggers again from each route's definition: a filter that may raise (a cast, integer
-- arithmetic, current_setting()) no longer sits in a WHEN clause, where it could fail the
-- application's write. A route that does not load any more keeps its triggers and says why.
DO $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT name FROM switchboard.routes WHERE enabled AND source IS NOT NULL LOOP
		BEGIN
			UPDATE switchboard.routes SET enabled = true WHERE name = r.name;
		EXCEPTION WHEN OTHERS THEN
			RAISE WARNING 'switchboard: capture triggers of route "%" were kept as they were: %', r.name, SQLERRM;
		END;
	END LOOP;
END $$;

-- The database the instance row belongs to: a copy (CREATE DATABASE ... TEMPLATE) is recognised
-- by its worker. Filled in by the worker of this database.
ALTER TABLE switchboard.instance ADD COLUMN database_oid oid;

-- route_status says whether capture is intact (a capture trigger dropped with a column shows
-- as broken, in capture and last_error).
CREATE OR REPLACE VIEW switchboard.route_status AS
SELECT r.name AS route,
       r.enabled,
       coalesce(q.pending, 0) AS pending,
       coalesce(q.in_flight, 0) AS in_flight,
       coalesce(s.delivered, 0) AS delivered,
       coalesce(q.dead, 0) AS dead,
       now() - q.oldest_pending AS oldest_pending_age,
       s.last_delivered_at,
       CASE WHEN NOT r.enabled AND r.disabled_reason IS NOT NULL THEN r.disabled_reason
            WHEN c.capture LIKE 'broken%' THEN 'capture ' || c.capture
            ELSE s.last_error END AS last_error,
       s.last_error_at,
       r.disabled_reason,
       (SELECT count(*) FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = r.source
           AND t.tgname IN ('switchboard_' || r.name || '_insert', 'switchboard_' || r.name || '_update',
                            'switchboard_' || r.name || '_delete')) AS capture_triggers,
       c.capture
  FROM switchboard.routes r
  LEFT JOIN (SELECT route,
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
                    count(*) FILTER (WHERE state = 'dead') AS dead,
                    min(captured_at) FILTER (WHERE state <> 'dead') AS oldest_pending
               FROM switchboard.queue GROUP BY route) q ON q.route = r.name
  LEFT JOIN switchboard.route_stats s ON s.route = r.name
  -- Whether every operation the route captures has its trigger: one dropped behind
  -- switchboard's back (DROP COLUMN ... CASCADE of a column its WHEN clause reads) captures
  -- nothing until the route is repaired, and must not look healthy meanwhile.
  CROSS JOIN LATERAL (
    SELECT CASE WHEN NOT r.enabled OR r.direction = 'pull' THEN 'off'
                WHEN m.missing IS NULL THEN 'ok'
                ELSE 'broken: no capture trigger for ' || m.missing ||
                     ' (dropped with a column or by hand?); fix the route and UPDATE it to attach them again'
           END AS capture
      FROM (SELECT pg_catalog.string_agg(op, ', ' ORDER BY op) AS missing
              FROM pg_catalog.unnest(r.operations) AS op
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid = r.source AND t.tgname = 'switchboard_' || r.name || '_' || op)) m
  ) c;
COMMENT ON VIEW switchboard.route_status IS 'Per route: queue depth, delivered/dead counts, last error, whether capture is intact';

-- src/sql/70_metrics.sql (new in 0.2; after route_status, which it reads)
-- Metrics for exporters (contrib/prometheus/switchboard_queries.yaml): one row per route, every
-- value a number. Counters (_total) only grow; state and errors are the route's endpoint's.
CREATE VIEW switchboard.metrics AS
SELECT r.name AS route,
       r.endpoint,
       e.kind,
       r.direction,
       CASE WHEN r.enabled THEN 1 ELSE 0 END AS enabled,
       rs.pending,
       rs.in_flight,
       rs.dead,
       rs.delivered AS delivered_total,
       coalesce(es.errors, 0) AS errors_total,
       coalesce(es.requests, 0) AS requests_total,
       -- 0 when nothing waits, so that "backlog age" alerts need no NULL handling.
       coalesce(extract(epoch FROM rs.oldest_pending_age)::double precision, 0) AS oldest_pending_seconds,
       CASE WHEN NOT r.enabled OR NOT e.enabled THEN 3
            ELSE CASE coalesce(es.state, 'ok') WHEN 'ok' THEN 0 WHEN 'backing_off' THEN 1 WHEN 'open' THEN 2 ELSE 3 END
       END AS state,
       -- Seconds since the last completed pull; NULL for push-only routes and routes never pulled.
       CASE WHEN r.direction IN ('pull', 'both')
            THEN extract(epoch FROM now() - p.last_pull_at)::double precision END AS pull_lag_seconds,
       coalesce(p.records_pulled, 0) AS pulled_total,
       coalesce(p.records_failed, 0) AS pull_failed_total,
       -- 1 while an enabled route misses a capture trigger (route_status.capture 'broken: ...').
       CASE WHEN rs.capture LIKE 'broken%' THEN 1 ELSE 0 END AS capture_broken
  FROM switchboard.routes r
  JOIN switchboard.route_status rs ON rs.route = r.name
  JOIN switchboard.endpoints e ON e.name = r.endpoint
  LEFT JOIN switchboard.endpoint_state es ON es.endpoint = r.endpoint
  LEFT JOIN switchboard.pull_state p ON p.route = r.name;
COMMENT ON VIEW switchboard.metrics IS
	'Per route, numbers for exporters: queue depth, counters, backlog age, state (0 ok, 1 backing_off, 2 open, 3 disabled), pull lag, capture_broken';
GRANT SELECT ON switchboard.metrics TO pg_monitor;

-- src/sql/20_queue.sql: the newest change delivered per route and key (issue 9 item 7).
-- Per route and key, the newest change that was delivered: a change of the key older than it (a dead letter retried, a change recovered after a crash)
-- is never sent after it, so the remote never goes back to an older state.
CREATE TABLE switchboard.delivered_marks (
	route text NOT NULL,
	key text NOT NULL,
	change_id bigint NOT NULL,
	PRIMARY KEY (route, key)
);
REVOKE ALL ON switchboard.delivered_marks FROM PUBLIC;

-- src/sql/60_pull.sql: what the push delivered, so the pull recognises its echo (issue 10 item 1).
-- Per route (direction both) and key, the fields of the newest change the push delivered: a
-- pulled record carrying exactly these values is the echo of that push, not a remote change.
CREATE TABLE switchboard.pushed_state (
	route text NOT NULL,
	key text NOT NULL,
	change_id bigint NOT NULL,
	fields jsonb NOT NULL,
	PRIMARY KEY (route, key)
);
REVOKE ALL ON switchboard.pushed_state FROM PUBLIC;

-- src/sql/20_queue.sql: the remote version the pull applied last per key, so that reading it
-- again (the overlap window, keyset paging's boundary time) applies nothing (issue 10 item 4).
ALTER TABLE switchboard.remote_ids ADD COLUMN pulled_ms bigint, ADD COLUMN pulled_hash text;

-- src/sql/10_config_tables.sql: steps, orchestration and enrichment (issue 11, SPEC §2 steps, §7).
CREATE TABLE switchboard.steps (
	route text NOT NULL REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE,
	name text NOT NULL,
	position integer NOT NULL,
	kind text NOT NULL,
	endpoint text REFERENCES switchboard.endpoints (name) ON UPDATE CASCADE,
	run_if text,
	input text,
	options jsonb NOT NULL DEFAULT '{}',
	PRIMARY KEY (route, name),
	UNIQUE (route, position)
);
COMMENT ON TABLE switchboard.steps IS 'Orchestration: the steps (enrich, sql, deliver, notify, writeback) a change of a route runs, in position order';
SELECT pg_catalog.pg_extension_config_dump('switchboard.steps', '');
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.steps
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
REVOKE ALL ON switchboard.steps FROM PUBLIC;

-- src/sql/65_runs.sql: runs, ai_usage, failed runs as dead letters, retry/discard/wait_idle of runs (issue 11 item 2, 4).
CREATE TABLE switchboard.run_queue (
	id bigint PRIMARY KEY,   -- the captured change's queue id (commit order per key)
	route text NOT NULL,
	key text,
	op text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
	new json,
	old json,
	captured_at timestamptz NOT NULL,
	state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'waiting', 'done', 'failed')),
	position integer,        -- position of the step to run next (NULL once none is left)
	current_step text,
	attempts integer NOT NULL DEFAULT 0,  -- of the current step
	next_attempt_at timestamptz,
	outputs jsonb NOT NULL DEFAULT '{}',     -- steps.<name> of the steps done so far
	step_state jsonb NOT NULL DEFAULT '{}',  -- per step: state, attempts, output, error, http_status, latency_ms
	last_status integer,
	last_error text,
	started_at timestamptz,
	finished_at timestamptz
);
-- The runs still to execute, per key in commit order.
CREATE INDEX run_queue_active ON switchboard.run_queue (route, key, id) WHERE state NOT IN ('done', 'failed');

-- Model calls and tokens, per route, endpoint and day.
CREATE TABLE switchboard.ai_usage_daily (
	route text NOT NULL,
	endpoint text NOT NULL,
	day date NOT NULL,
	calls bigint NOT NULL DEFAULT 0,
	prompt_tokens bigint NOT NULL DEFAULT 0,
	completion_tokens bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (route, endpoint, day)
);

-- Row data (new, old) and what the steps made of it (their outputs: query results, model
-- answers) only for roles with the privileges of the route's owner, who may read its table; to
-- the others (pg_monitor, other routes' owners) a run shows what dead_letters shows: its state,
-- steps, attempts and errors, never the row.
CREATE VIEW switchboard.runs AS
SELECT q.id, q.route, q.key, q.op, q.state, q.current_step,
       CASE WHEN v.row_data THEN q.step_state
            ELSE (SELECT coalesce(pg_catalog.jsonb_object_agg(s.key, CASE WHEN pg_catalog.jsonb_typeof(s.value) = 'object'
                                                                      THEN s.value - 'output' END), '{}')
                    FROM pg_catalog.jsonb_each(q.step_state) s) END AS steps,
       q.attempts, q.next_attempt_at, q.last_error, q.captured_at, q.started_at, q.finished_at,
       CASE WHEN v.row_data THEN q.new END AS new,
       CASE WHEN v.row_data THEN q.old END AS old
  FROM switchboard.run_queue q
  LEFT JOIN switchboard.routes r ON r.name = q.route
 CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.pg_has_role(CURRENT_USER, r.owner::oid, 'USAGE'), false) AS row_data) v;
COMMENT ON VIEW switchboard.runs IS
	'Runs of routes with steps: state, the current step, and each step''s state, attempts, output, error and latency (outputs, new and old only for roles with the privileges of the route''s owner)';

CREATE VIEW switchboard.ai_usage AS
SELECT route, endpoint, day, calls, prompt_tokens, completion_tokens FROM switchboard.ai_usage_daily;
COMMENT ON VIEW switchboard.ai_usage IS 'Model calls and tokens per route, endpoint and day';

-- A failed run is a dead letter too, named by its step.
CREATE OR REPLACE VIEW switchboard.dead_letters AS
SELECT id, route, op, key, attempts, last_status, last_error,
       payload,  -- the mapped fields only: never the row image (readable by pg_monitor)
       failed_at
  FROM switchboard.queue
 WHERE state = 'dead'
UNION ALL
SELECT id, route, op, key, attempts, last_status, 'step "' || current_step || '": ' || last_error,
       NULL::jsonb, finished_at
  FROM switchboard.run_queue
 WHERE state = 'failed';

CREATE OR REPLACE FUNCTION switchboard.retry(route text DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n pg_catalog.int8;
	runs pg_catalog.int8;
BEGIN
	UPDATE switchboard.queue q
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
	 WHERE q.state = 'dead' AND (retry.route IS NULL OR q.route = retry.route);
	GET DIAGNOSTICS n = ROW_COUNT;
	-- A failed run resumes at the step that failed: the steps done stay done.
	UPDATE switchboard.run_queue r
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, finished_at = NULL
	 WHERE r.state = 'failed' AND (retry.route IS NULL OR r.route = retry.route)
	   AND EXISTS (SELECT 1 FROM switchboard.routes x WHERE x.name = r.route)
	   -- Runs of a key in commit order: not one older than a run of its key that has started.
	   AND NOT EXISTS (SELECT 1 FROM switchboard.run_queue n WHERE n.route = r.route AND n.key = r.key
	                    AND n.id > r.id AND (n.started_at IS NOT NULL OR n.state <> 'pending'));
	GET DIAGNOSTICS runs = ROW_COUNT;
	PERFORM switchboard.wake();
	RETURN n + runs;
END $$;

CREATE OR REPLACE FUNCTION switchboard.retry(id bigint) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	UPDATE switchboard.queue q
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
	 WHERE q.id = retry.id AND q.state = 'dead';
	IF NOT FOUND THEN
		-- A run is executed under its route's definition: none of a route that is gone.
		IF EXISTS (SELECT 1 FROM switchboard.run_queue r WHERE r.id = retry.id AND r.state = 'failed'
		            AND NOT EXISTS (SELECT 1 FROM switchboard.routes x WHERE x.name = r.route)) THEN
			RAISE EXCEPTION 'run % cannot be retried: its route was deleted', id
				USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'switchboard.discard() it.';
		END IF;
		-- Runs of a key in commit order: a newer run of its key has started (or is done), so
		-- running this one now would write older data after newer (in the remote, a writeback).
		IF EXISTS (SELECT 1 FROM switchboard.run_queue r JOIN switchboard.run_queue n ON n.route = r.route
		            AND n.key = r.key AND n.id > r.id AND (n.started_at IS NOT NULL OR n.state <> 'pending')
		            WHERE r.id = retry.id AND r.state = 'failed') THEN
			RAISE EXCEPTION 'run % cannot be retried: a newer run of its key has started', id
				USING ERRCODE = 'object_not_in_prerequisite_state',
				      HINT = 'Running it now would apply older data after newer; switchboard.discard() it, or change the row again.';
		END IF;
		UPDATE switchboard.run_queue r
		   SET state = 'pending', attempts = 0, next_attempt_at = NULL, finished_at = NULL
		 WHERE r.id = retry.id AND r.state = 'failed';
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	PERFORM switchboard.wake();
	RETURN true;
END $$;

CREATE OR REPLACE FUNCTION switchboard.discard(id bigint) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	gone record;
BEGIN
	DELETE FROM switchboard.queue q WHERE q.id = discard.id AND q.state = 'dead'
	RETURNING q.route, q.key, q.op, q.id INTO gone;
	IF NOT FOUND THEN
		DELETE FROM switchboard.run_queue r WHERE r.id = discard.id AND r.state = 'failed'
		RETURNING r.route, r.key, r.op, r.id INTO gone;
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	-- session_user: current_user is the owner this function runs as, not who called it.
	INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, error)
	VALUES (gone.route, gone.key, gone.op, gone.id, 'discarded', 'discarded by ' || session_user);
	RETURN true;
END $$;

-- Final also means: a run done or failed. Runs read through the view: config roles may not
-- read run_queue (row images).
CREATE OR REPLACE FUNCTION switchboard.wait_idle(timeout interval DEFAULT '30 s') RETURNS boolean
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	horizon bigint;
	deadline timestamptz := pg_catalog.clock_timestamp() + timeout;
BEGIN
	SELECT GREATEST(coalesce((SELECT pg_catalog.max(id) FROM switchboard.queue), 0),
	                coalesce((SELECT pg_catalog.max(id) FROM switchboard.runs), 0)) INTO horizon;
	PERFORM switchboard.wake();
	LOOP
		IF NOT EXISTS (SELECT 1 FROM switchboard.queue WHERE id <= horizon AND state <> 'dead')
		   AND NOT EXISTS (SELECT 1 FROM switchboard.runs WHERE id <= horizon AND state NOT IN ('done', 'failed')) THEN
			RETURN true;
		END IF;
		IF pg_catalog.clock_timestamp() >= deadline THEN
			RETURN false;
		END IF;
		PERFORM pg_catalog.pg_sleep(0.02);
	END LOOP;
END $$;

-- route_status counts runs too.
CREATE OR REPLACE VIEW switchboard.route_status AS
SELECT r.name AS route,
       r.enabled,
       coalesce(q.pending, 0) AS pending,
       coalesce(q.in_flight, 0) AS in_flight,
       coalesce(s.delivered, 0) AS delivered,
       coalesce(q.dead, 0) AS dead,
       now() - q.oldest_pending AS oldest_pending_age,
       s.last_delivered_at,
       CASE WHEN NOT r.enabled AND r.disabled_reason IS NOT NULL THEN r.disabled_reason
            WHEN c.capture LIKE 'broken%' THEN 'capture ' || c.capture
            ELSE s.last_error END AS last_error,
       s.last_error_at,
       r.disabled_reason,
       (SELECT count(*) FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = r.source
           AND t.tgname IN ('switchboard_' || r.name || '_insert', 'switchboard_' || r.name || '_update',
                            'switchboard_' || r.name || '_delete')) AS capture_triggers,
       c.capture,
       -- Routes with steps: their runs (SPEC §8).
       coalesce(ru.active, 0) AS runs_active,
       coalesce(ru.done, 0) AS runs_done,
       coalesce(ru.failed, 0) AS runs_failed
  FROM switchboard.routes r
  LEFT JOIN (SELECT route,
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
                    count(*) FILTER (WHERE state = 'dead') AS dead,
                    min(captured_at) FILTER (WHERE state <> 'dead') AS oldest_pending
               FROM switchboard.queue GROUP BY route) q ON q.route = r.name
  LEFT JOIN switchboard.route_stats s ON s.route = r.name
  LEFT JOIN (SELECT route,
                    count(*) FILTER (WHERE state NOT IN ('done', 'failed')) AS active,
                    count(*) FILTER (WHERE state = 'done') AS done,
                    count(*) FILTER (WHERE state = 'failed') AS failed
               FROM switchboard.run_queue GROUP BY route) ru ON ru.route = r.name
  -- Whether every operation the route captures has its trigger: one dropped behind
  -- switchboard's back (DROP COLUMN ... CASCADE of a column its WHEN clause reads) captures
  -- nothing until the route is repaired, and must not look healthy meanwhile.
  CROSS JOIN LATERAL (
    SELECT CASE WHEN NOT r.enabled OR r.direction = 'pull' THEN 'off'
                WHEN m.missing IS NULL THEN 'ok'
                ELSE 'broken: no capture trigger for ' || m.missing ||
                     ' (dropped with a column or by hand?); fix the route and UPDATE it to attach them again'
           END AS capture
      FROM (SELECT pg_catalog.string_agg(op, ', ' ORDER BY op) AS missing
              FROM pg_catalog.unnest(r.operations) AS op
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid = r.source AND t.tgname = 'switchboard_' || r.name || '_' || op)) m
  ) c;

GRANT SELECT ON switchboard.runs, switchboard.ai_usage TO pg_monitor;
REVOKE ALL ON switchboard.run_queue, switchboard.ai_usage_daily, switchboard.runs, switchboard.ai_usage FROM PUBLIC;

-- Queue privileges (2026-12-03): configuration roles no longer read or delete the queue (the
-- row images of every route); retry and discard act for the route's owner only
-- (src/sql/66_repair.sql); dead_letters shows payload only to the owner's roles.
-- What grant_admin granted on the queue before, taken back from every role it went to.
DO $$
DECLARE
	g record;
BEGIN
	FOR g IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
	          WHERE c.oid = 'switchboard.queue'::pg_catalog.regclass AND a.grantee <> c.relowner AND a.grantee <> 0
	LOOP
		EXECUTE pg_catalog.format('REVOKE SELECT, DELETE ON switchboard.queue FROM %s', g.grantee::pg_catalog.regrole);
	END LOOP;
END $$;

-- A failed run is a dead letter too, named by its step. The mapped fields (payload: data of
-- the row, never its image) only for roles with the privileges of the route's owner, as in runs
-- (the key and the error stay visible: what a watcher needs to see that something failed).
CREATE OR REPLACE VIEW switchboard.dead_letters AS
SELECT q.id, q.route, q.op, q.key, q.attempts, q.last_status, q.last_error,
       -- a deleted route's: the extension owner's
       CASE WHEN coalesce(pg_catalog.pg_has_role(CURRENT_USER, coalesce(r.owner::oid,
                 (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'switchboard')), 'USAGE'), false)
            THEN q.payload END AS payload,
       q.failed_at
  FROM switchboard.queue q
  LEFT JOIN switchboard.routes r ON r.name = q.route
 WHERE q.state = 'dead'
UNION ALL
SELECT id, route, op, key, attempts, last_status, 'step "' || current_step || '": ' || last_error,
       NULL::jsonb, finished_at
  FROM switchboard.run_queue
 WHERE state = 'failed';

-- Repair functions: retry and discard dead letters (changes and failed runs), wait until idle.
--
-- retry() and discard() act only for a caller with the privileges of the route's owner, who may
-- read the route's table anyway: a role granted configuration cannot retry, discard or learn
-- anything of another owner's changes. A dead letter whose route was deleted has no owner left;
-- it is the extension owner's (the DBA's). They are C functions: the caller is the current user
-- when they are entered (GetUserId), which is exact whatever called them (SET ROLE, a SECURITY
-- DEFINER function, a route's expression the worker runs as its owner). A SECURITY DEFINER
-- function cannot know its caller, so the work is done by the _retry_*/_discard_* functions
-- below, which run as the extension owner, take the caller from the C function and are
-- executable by the extension owner alone (grant_admin revokes them again).

-- May the caller repair the dead letters of this route?
CREATE FUNCTION switchboard._may_repair(route text, caller oid) RETURNS boolean
	LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT pg_catalog.pg_has_role($2,
	                              coalesce((SELECT r.owner::pg_catalog.oid FROM switchboard.routes r WHERE r.name = $1),
	                                       (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'switchboard')),
	                              'USAGE')
$$;

CREATE FUNCTION switchboard._retry_route(route text, caller oid) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n pg_catalog.int8;
	runs pg_catalog.int8;
BEGIN
	IF _retry_route.route IS NOT NULL THEN
		IF NOT EXISTS (SELECT 1 FROM switchboard.routes x WHERE x.name = _retry_route.route) THEN
			RAISE EXCEPTION 'route "%" does not exist', _retry_route.route USING ERRCODE = 'undefined_object',
				HINT = 'Dead letters of a deleted route cannot be retried; switchboard.discard() them.';
		END IF;
		IF NOT switchboard._may_repair(_retry_route.route, caller) THEN
			RAISE EXCEPTION 'permission denied to retry the dead letters of route "%"', _retry_route.route
				USING ERRCODE = 'insufficient_privilege', HINT = 'It needs the privileges of the route''s owner.';
		END IF;
	END IF;
	-- Without a route: every dead letter the caller may repair, of the routes that exist.
	UPDATE switchboard.queue q
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
	 WHERE q.state = 'dead'
	   AND q.route IN (SELECT x.name FROM switchboard.routes x
	                    WHERE (_retry_route.route IS NULL OR x.name = _retry_route.route) AND switchboard._may_repair(x.name, caller));
	GET DIAGNOSTICS n = ROW_COUNT;
	-- A failed run resumes at the step that failed: the steps done stay done.
	UPDATE switchboard.run_queue r
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, finished_at = NULL
	 WHERE r.state = 'failed'
	   AND r.route IN (SELECT x.name FROM switchboard.routes x
	                    WHERE (_retry_route.route IS NULL OR x.name = _retry_route.route) AND switchboard._may_repair(x.name, caller))
	   -- Runs of a key in commit order: not one older than a run of its key that has started
	   -- (or is done, and maybe pruned since: delivered_marks).
	   AND NOT EXISTS (SELECT 1 FROM switchboard.run_queue n WHERE n.route = r.route AND n.key = r.key
	                    AND n.id > r.id AND (n.started_at IS NOT NULL OR n.state <> 'pending'))
	   AND NOT EXISTS (SELECT 1 FROM switchboard.delivered_marks m WHERE m.route = r.route AND m.key = r.key
	                    AND m.change_id > r.id);
	GET DIAGNOSTICS runs = ROW_COUNT;
	PERFORM switchboard.wake();
	RETURN n + runs;
END $$;

CREATE FUNCTION switchboard._retry_one(id bigint, caller oid) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	of_route text;
	is_run boolean := false;
BEGIN
	SELECT q.route INTO of_route FROM switchboard.queue q WHERE q.id = _retry_one.id AND q.state = 'dead';
	IF NOT FOUND THEN
		SELECT r.route, true INTO of_route, is_run FROM switchboard.run_queue r WHERE r.id = _retry_one.id AND r.state = 'failed';
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	-- Checked before anything else is said of it: another owner's dead letter stays unknown.
	IF NOT switchboard._may_repair(of_route, caller) THEN
		RAISE EXCEPTION 'permission denied to retry dead letter %', id USING ERRCODE = 'insufficient_privilege',
			HINT = 'It needs the privileges of the owner of its route.';
	END IF;
	-- A change or a run is executed under its route's definition: none of a route that is gone.
	IF NOT EXISTS (SELECT 1 FROM switchboard.routes x WHERE x.name = of_route) THEN
		RAISE EXCEPTION 'dead letter % cannot be retried: its route was deleted', id
			USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'switchboard.discard() it.';
	END IF;
	IF NOT is_run THEN
		UPDATE switchboard.queue q
		   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
		 WHERE q.id = _retry_one.id AND q.state = 'dead';
	ELSE
		-- Runs of a key in commit order: a newer run of its key has started (or is done), so
		-- running this one now would write older data after newer (in the remote, a writeback).
		IF EXISTS (SELECT 1 FROM switchboard.run_queue r JOIN switchboard.run_queue n ON n.route = r.route
		            AND n.key = r.key AND n.id > r.id AND (n.started_at IS NOT NULL OR n.state <> 'pending')
		            WHERE r.id = _retry_one.id AND r.state = 'failed')
		   OR EXISTS (SELECT 1 FROM switchboard.run_queue r JOIN switchboard.delivered_marks m ON m.route = r.route
		               AND m.key = r.key AND m.change_id > r.id
		               WHERE r.id = _retry_one.id AND r.state = 'failed') THEN
			RAISE EXCEPTION 'run % cannot be retried: a newer run of its key has started', id
				USING ERRCODE = 'object_not_in_prerequisite_state',
				      HINT = 'Running it now would apply older data after newer; switchboard.discard() it, or change the row again.';
		END IF;
		UPDATE switchboard.run_queue r
		   SET state = 'pending', attempts = 0, next_attempt_at = NULL, finished_at = NULL
		 WHERE r.id = _retry_one.id AND r.state = 'failed';
	END IF;
	PERFORM switchboard.wake();
	RETURN true;
END $$;

CREATE FUNCTION switchboard._discard_one(id bigint, caller oid) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	of_route text;
	gone record;
BEGIN
	SELECT q.route INTO of_route FROM switchboard.queue q WHERE q.id = _discard_one.id AND q.state = 'dead';
	IF NOT FOUND THEN
		SELECT r.route INTO of_route FROM switchboard.run_queue r WHERE r.id = _discard_one.id AND r.state = 'failed';
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	IF NOT switchboard._may_repair(of_route, caller) THEN
		RAISE EXCEPTION 'permission denied to discard dead letter %', id USING ERRCODE = 'insufficient_privilege',
			HINT = 'It needs the privileges of the owner of its route (of the extension, once the route is deleted).';
	END IF;
	DELETE FROM switchboard.queue q WHERE q.id = _discard_one.id AND q.state = 'dead'
	RETURNING q.route, q.key, q.op, q.id INTO gone;
	IF NOT FOUND THEN
		DELETE FROM switchboard.run_queue r WHERE r.id = _discard_one.id AND r.state = 'failed'
		RETURNING r.route, r.key, r.op, r.id INTO gone;
	END IF;
	IF NOT FOUND THEN
		-- Retried or discarded by another session since the check above.
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	-- The acting role by name: current_user is the owner this function runs as.
	INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, error)
	VALUES (gone.route, gone.key, gone.op, gone.id, 'discarded', 'discarded by ' || caller::pg_catalog.regrole::pg_catalog.text);
	RETURN true;
END $$;

-- What DBAs and configuration roles call (see the top of this file).
CREATE OR REPLACE FUNCTION switchboard.retry(route text DEFAULT NULL) RETURNS bigint
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_retry_route';
COMMENT ON FUNCTION switchboard.retry(text) IS
	'Re-queue every dead letter (of one route, or of all routes the caller may repair); returns how many';
CREATE OR REPLACE FUNCTION switchboard.retry(id bigint) RETURNS boolean
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_retry_one';
COMMENT ON FUNCTION switchboard.retry(bigint) IS 'Re-queue one dead letter (a change, or a failed run at its failed step)';
CREATE OR REPLACE FUNCTION switchboard.discard(id bigint) RETURNS boolean
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_discard_one';
COMMENT ON FUNCTION switchboard.discard(bigint) IS 'Drop a dead letter on purpose (recorded in deliveries)';


-- Waits until every change committed before the call is final: delivered, filtered out, a dead
-- letter, a run done or failed. Each check runs with a fresh snapshot (READ COMMITTED). As the
-- extension owner, since the queue is not readable by configuration roles; it tells only
-- whether everything is final.
CREATE OR REPLACE FUNCTION switchboard.wait_idle(timeout interval DEFAULT '30 s') RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	horizon bigint;
	deadline timestamptz := pg_catalog.clock_timestamp() + timeout;
BEGIN
	SELECT GREATEST(coalesce((SELECT pg_catalog.max(id) FROM switchboard.queue), 0),
	                coalesce((SELECT pg_catalog.max(id) FROM switchboard.run_queue), 0)) INTO horizon;
	PERFORM switchboard.wake();
	LOOP
		IF NOT EXISTS (SELECT 1 FROM switchboard.queue WHERE id <= horizon AND state <> 'dead')
		   AND NOT EXISTS (SELECT 1 FROM switchboard.run_queue WHERE id <= horizon AND state NOT IN ('done', 'failed')) THEN
			RETURN true;
		END IF;
		IF pg_catalog.clock_timestamp() >= deadline THEN
			RETURN false;
		END IF;
		PERFORM pg_catalog.pg_sleep(0.02);
	END LOOP;
END $$;
COMMENT ON FUNCTION switchboard.wait_idle(interval) IS
	'Waits until every change committed before the call is delivered, dead, or its run finished; false on timeout';
REVOKE ALL ON FUNCTION switchboard._may_repair(text, oid), switchboard._retry_route(text, oid),
	switchboard._retry_one(bigint, oid), switchboard._discard_one(bigint, oid) FROM PUBLIC;


-- src/sql/10_config_tables.sql and 80_inbound.sql: inbound webhooks (issue 12 items 1-3, SPEC §9).
ALTER TABLE switchboard.routes ADD COLUMN inbound_token text UNIQUE;
ALTER TABLE switchboard.routes ADD COLUMN inbound_secret text REFERENCES switchboard.secrets (name) ON UPDATE CASCADE;
CREATE FUNCTION switchboard._inbound_token() RETURNS trigger
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.direction NOT IN ('pull', 'both') THEN
		NEW.inbound_token := NULL;
	ELSIF NEW.inbound_token IS NULL THEN
		-- gen_random_uuid() draws from pg_strong_random(): 122 random bits in 32 hex digits.
		NEW.inbound_token := pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text, '-', '');
	ELSIF NEW.inbound_token OPERATOR(pg_catalog.!~) '^[A-Za-z0-9]{32}$' THEN
		RAISE EXCEPTION 'switchboard.routes (name)=(%): inbound_token must be 32 letters or digits', NEW.name
			USING ERRCODE = 'check_violation',
			      HINT = 'set it to NULL and a random one is generated';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER inbound_token BEFORE INSERT OR UPDATE ON switchboard.routes
	FOR EACH ROW EXECUTE FUNCTION switchboard._inbound_token();

-- The token, to a role with the privileges of the route's owner (nobody else may read the
-- column: see grant_admin). C, not SECURITY DEFINER: it checks the calling role's privileges.
CREATE FUNCTION switchboard.inbound_token(route text) RETURNS text
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_inbound_token';
COMMENT ON FUNCTION switchboard.inbound_token(text) IS
	'The route''s inbound token (POST /inbound/{token}); needs the privileges of the route''s owner';
CREATE FUNCTION switchboard.rotate_inbound_token(route text) RETURNS text
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_rotate_inbound_token';
COMMENT ON FUNCTION switchboard.rotate_inbound_token(text) IS
	'Gives the route a new inbound token and returns it (the receiver stops taking the old one within 5 s); needs the privileges of the route''s owner';

-- One row per received event. A redelivery of the same event (same route and event_id) is
-- stored once (INSERT ... ON CONFLICT DO NOTHING). The receiver writes every column up to
-- read_back; the apply (the database's worker) only sets applied_at, attempts and last_error:
--   pending: applied_at IS NULL (last_error: why the last attempt did not apply it yet)
--   applied: applied_at set, last_error NULL
--   failed:  applied_at set with last_error (a bad record, recorded and given up on)
CREATE TABLE switchboard.inbound_events (
	id bigserial PRIMARY KEY,
	route text NOT NULL,
	event_id text NOT NULL,          -- what a redelivery repeats (see ParseEvents in src/inbound/verify.h)
	received_at timestamptz NOT NULL DEFAULT now(),
	kind text NOT NULL,              -- signature scheme: hubspot-v3, woocommerce or standard-webhooks
	object_id text,                  -- the remote id the event is about
	type text,                       -- e.g. contact.propertyChange, order.updated
	property text,                   -- HubSpot propertyName
	deleted boolean NOT NULL DEFAULT false,
	occurred_at timestamptz,
	resource jsonb,                  -- the record itself; NULL when it is to be read back (HubSpot)
	read_back boolean NOT NULL DEFAULT false,
	applied_at timestamptz,
	attempts integer NOT NULL DEFAULT 0,
	last_error text,
	UNIQUE (route, event_id)
);
COMMENT ON TABLE switchboard.inbound_events IS
	'Verified webhook events, stored before they were acknowledged; applied_at once the worker applied them';
-- The apply's work: per route, the pending events in the order they arrived.
CREATE INDEX inbound_events_pending ON switchboard.inbound_events (route, id) WHERE applied_at IS NULL;

-- Requests the receiver refused for a known route's token (401 bad signature or stale
-- timestamp, 400 a body it cannot read); nothing of them is stored but this count.
CREATE TABLE switchboard.inbound_rejections (
	route text PRIMARY KEY,
	rejected bigint NOT NULL DEFAULT 0,
	last_rejected_at timestamptz,
	last_error text
);
COMMENT ON TABLE switchboard.inbound_rejections IS 'Per route: webhook requests refused (bad signature, stale, unreadable body)';

CREATE VIEW switchboard.inbound_status AS
SELECT r.name AS route,
       coalesce(e.received, 0) AS received,
       coalesce(e.pending, 0) AS pending,
       coalesce(e.applied, 0) AS applied,
       coalesce(e.failed, 0) AS failed,
       coalesce(j.rejected, 0) AS rejected,
       e.last_received_at,
       e.last_applied_at,
       CASE WHEN j.last_rejected_at IS NOT NULL
                 AND (f.received_at IS NULL OR j.last_rejected_at > f.received_at) THEN j.last_error
            ELSE f.last_error END AS last_error
  FROM switchboard.routes r
  LEFT JOIN (SELECT route,
                    count(*) AS received,
                    count(*) FILTER (WHERE applied_at IS NULL) AS pending,
                    count(*) FILTER (WHERE applied_at IS NOT NULL AND last_error IS NULL) AS applied,
                    count(*) FILTER (WHERE applied_at IS NOT NULL AND last_error IS NOT NULL) AS failed,
                    max(received_at) AS last_received_at,
                    max(applied_at) AS last_applied_at
               FROM switchboard.inbound_events GROUP BY route) e ON e.route = r.name
  LEFT JOIN switchboard.inbound_rejections j ON j.route = r.name
  LEFT JOIN LATERAL (SELECT x.received_at, x.last_error FROM switchboard.inbound_events x
                      WHERE x.route = r.name AND x.last_error IS NOT NULL
                      ORDER BY x.id DESC LIMIT 1) f ON true
 WHERE r.direction IN ('pull', 'both');
COMMENT ON VIEW switchboard.inbound_status IS
	'Per pulling route: webhook events received, pending, applied, failed, requests rejected, last times, last error';

-- The routes that pull already get their token (no configuration change: triggers off).
ALTER TABLE switchboard.routes DISABLE TRIGGER USER;
UPDATE switchboard.routes SET inbound_token = pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text, '-', '')
 WHERE direction IN ('pull', 'both');
ALTER TABLE switchboard.routes ENABLE TRIGGER USER;

REVOKE ALL ON switchboard.inbound_events, switchboard.inbound_rejections, switchboard.inbound_status FROM PUBLIC;
REVOKE ALL ON SEQUENCE switchboard.inbound_events_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION switchboard._inbound_token(), switchboard.inbound_token(text),
	switchboard.rotate_inbound_token(text) FROM PUBLIC;
GRANT SELECT ON switchboard.inbound_status TO pg_monitor;

-- src/sql/90_privileges.sql: grant_admin gives every column of routes but inbound_token.
CREATE OR REPLACE FUNCTION switchboard.grant_admin(role regrole) RETURNS void
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON switchboard.endpoints, '
	               'switchboard.mappings, switchboard.filters, switchboard.steps TO %s', role);
	-- Every column of routes but inbound_token (whoever knows it can post events to the route:
	-- only the owner reads it, through switchboard.inbound_token(route)).
	EXECUTE pg_catalog.format('REVOKE SELECT ON switchboard.routes FROM %s', role);
	EXECUTE pg_catalog.format('GRANT INSERT, UPDATE, DELETE ON switchboard.routes TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT (%s) ON switchboard.routes TO %s',
	               (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
	                  FROM pg_catalog.pg_attribute a
	                 WHERE a.attrelid = 'switchboard.routes'::pg_catalog.regclass AND a.attnum > 0
	                   AND NOT a.attisdropped AND a.attname OPERATOR(pg_catalog.<>) 'inbound_token'), role);
	EXECUTE pg_catalog.format('GRANT INSERT, UPDATE, DELETE, REFERENCES ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT (name, owner) ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT ON switchboard.route_status, switchboard.dead_letters, switchboard.outbox, '
	               'switchboard.route_stats, switchboard.remote_ids, switchboard.delivered_marks, switchboard.instance, switchboard.endpoint_status, '
	               'switchboard.deliveries, switchboard.delivery_log, switchboard.endpoint_state, switchboard.pull_status, '
	               'switchboard.pull_state, switchboard.metrics, switchboard.runs, switchboard.ai_usage, '
	               'switchboard.ai_usage_daily, switchboard.inbound_status, switchboard.inbound_rejections TO %s', role);
	EXECUTE pg_catalog.format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION switchboard.grant_admin(regrole), '
	               'switchboard._retry_route(text, oid), switchboard._retry_one(bigint, oid), '
	               'switchboard._discard_one(bigint, oid) FROM %s', role);
END $$;

-- Roles that could read routes before read every column but inbound_token now (and nothing more).
DO $$
DECLARE
	grantee pg_catalog.regrole;
BEGIN
	FOR grantee IN SELECT DISTINCT a.grantee::pg_catalog.regrole
	                 FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
	                WHERE c.oid = 'switchboard.routes'::pg_catalog.regclass AND a.privilege_type = 'SELECT'
	                  AND a.grantee <> c.relowner AND a.grantee <> 0 LOOP
		EXECUTE pg_catalog.format('REVOKE SELECT ON switchboard.routes FROM %s', grantee);
		EXECUTE pg_catalog.format('GRANT SELECT (%s) ON switchboard.routes TO %s',
		               (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
		                  FROM pg_catalog.pg_attribute a
		                 WHERE a.attrelid = 'switchboard.routes'::pg_catalog.regclass AND a.attnum > 0
		                   AND NOT a.attisdropped AND a.attname OPERATOR(pg_catalog.<>) 'inbound_token'), grantee);
	END LOOP;
END $$;

-- The C functions a role calls (and the triggers on the configuration tables) run their own
-- lookups with the catalog's operators only: under the caller's search_path an operator planted
-- ahead of pg_catalog (=(text,text) in a schema the caller owns) made them read another owner's
-- route or secret as the caller's.
ALTER FUNCTION switchboard._validate() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard._sync_capture() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard._tie_to_extension(oid) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.resync(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.render(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.preview(text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.wake() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard._start_worker() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.retry(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.retry(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.discard(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.inbound_token(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION switchboard.rotate_inbound_token(text) SET search_path = pg_catalog, pg_temp;

-- src/sql/80_inbound.sql: inbound_events.route and inbound_rejections.route follow their route
-- (ON UPDATE CASCADE: a renamed route keeps its pending events; ON DELETE CASCADE: a route
-- re-created under a deleted one's name does not apply its payloads). Rows of routes that are
-- gone already belong to no route: they go first.
DELETE FROM switchboard.inbound_events e
 WHERE NOT EXISTS (SELECT 1 FROM switchboard.routes r WHERE r.name = e.route);
DELETE FROM switchboard.inbound_rejections j
 WHERE NOT EXISTS (SELECT 1 FROM switchboard.routes r WHERE r.name = j.route);
ALTER TABLE switchboard.inbound_events ADD FOREIGN KEY (route)
	REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE;
ALTER TABLE switchboard.inbound_rejections ADD FOREIGN KEY (route)
	REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE;

-- src/sql/66_repair.sql: retry() takes the newer runs of the key locked before it checks that none
-- has started; discard() of a run that had started leaves its delivered_mark; the dead letter's
-- route is found by _dead_letter_route.
CREATE FUNCTION switchboard._dead_letter_route(id bigint, OUT route text, OUT is_run boolean)
	LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT d.route, d.is_run
	  FROM (SELECT q.route, false AS is_run FROM switchboard.queue q WHERE q.id = $1 AND q.state = 'dead'
	        UNION ALL
	        SELECT r.route, true FROM switchboard.run_queue r WHERE r.id = $1 AND r.state = 'failed') d
	 LIMIT 1
$$;
REVOKE ALL ON FUNCTION switchboard._dead_letter_route(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION switchboard._retry_route(route text, caller oid) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n pg_catalog.int8;
	runs pg_catalog.int8;
BEGIN
	IF _retry_route.route IS NOT NULL THEN
		IF NOT EXISTS (SELECT 1 FROM switchboard.routes x WHERE x.name = _retry_route.route) THEN
			RAISE EXCEPTION 'route "%" does not exist', _retry_route.route USING ERRCODE = 'undefined_object',
				HINT = 'Dead letters of a deleted route cannot be retried; switchboard.discard() them.';
		END IF;
		IF NOT switchboard._may_repair(_retry_route.route, caller) THEN
			RAISE EXCEPTION 'permission denied to retry the dead letters of route "%"', _retry_route.route
				USING ERRCODE = 'insufficient_privilege', HINT = 'It needs the privileges of the route''s owner.';
		END IF;
	END IF;
	-- Without a route: every dead letter the caller may repair, of the routes that exist.
	UPDATE switchboard.queue q
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
	 WHERE q.state = 'dead'
	   AND q.route IN (SELECT x.name FROM switchboard.routes x
	                    WHERE (_retry_route.route IS NULL OR x.name = _retry_route.route) AND switchboard._may_repair(x.name, caller));
	GET DIAGNOSTICS n = ROW_COUNT;
	-- The newer runs of their keys locked first, as in _retry_one: a run the worker is starting
	-- is checked below as it committed it.
	PERFORM 1 FROM switchboard.run_queue n
	  WHERE EXISTS (SELECT 1 FROM switchboard.run_queue r
	                 WHERE r.state = 'failed' AND r.route = n.route AND r.key = n.key AND r.id < n.id
	                   AND r.route IN (SELECT x.name FROM switchboard.routes x
	                                    WHERE (_retry_route.route IS NULL OR x.name = _retry_route.route)
	                                      AND switchboard._may_repair(x.name, caller)))
	  ORDER BY n.id FOR UPDATE OF n;
	-- A failed run resumes at the step that failed: the steps done stay done.
	UPDATE switchboard.run_queue r
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, finished_at = NULL
	 WHERE r.state = 'failed'
	   AND r.route IN (SELECT x.name FROM switchboard.routes x
	                    WHERE (_retry_route.route IS NULL OR x.name = _retry_route.route) AND switchboard._may_repair(x.name, caller))
	   -- Runs of a key in commit order: not one older than a run of its key that has started
	   -- (or is done, and maybe pruned since: delivered_marks).
	   AND NOT EXISTS (SELECT 1 FROM switchboard.run_queue n WHERE n.route = r.route AND n.key = r.key
	                    AND n.id > r.id AND (n.started_at IS NOT NULL OR n.state <> 'pending'))
	   AND NOT EXISTS (SELECT 1 FROM switchboard.delivered_marks m WHERE m.route = r.route AND m.key = r.key
	                    AND m.change_id > r.id);
	GET DIAGNOSTICS runs = ROW_COUNT;
	PERFORM switchboard.wake();
	RETURN n + runs;
END $$;

CREATE OR REPLACE FUNCTION switchboard._retry_one(id bigint, caller oid) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	of_route text;
	is_run boolean;
BEGIN
	SELECT d.route, d.is_run INTO of_route, is_run FROM switchboard._dead_letter_route(_retry_one.id) d;
	IF of_route IS NULL THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	-- Checked before anything else is said of it: another owner's dead letter stays unknown.
	IF NOT switchboard._may_repair(of_route, caller) THEN
		RAISE EXCEPTION 'permission denied to retry dead letter %', id USING ERRCODE = 'insufficient_privilege',
			HINT = 'It needs the privileges of the owner of its route.';
	END IF;
	-- A change or a run is executed under its route's definition: none of a route that is gone.
	IF NOT EXISTS (SELECT 1 FROM switchboard.routes x WHERE x.name = of_route) THEN
		RAISE EXCEPTION 'dead letter % cannot be retried: its route was deleted', id
			USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'switchboard.discard() it.';
	END IF;
	IF NOT is_run THEN
		UPDATE switchboard.queue q
		   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
		 WHERE q.id = _retry_one.id AND q.state = 'dead';
	ELSE
		-- Runs of a key in commit order: a newer run of its key has started (or is done), so
		-- running this one now would write older data after newer (in the remote, a writeback).
		-- The newer runs of its key locked first: the worker holds one it is starting (LockRuns)
		-- until it has committed its start, and the check, a statement of its own, then reads
		-- what it committed instead of the snapshot from before.
		PERFORM 1 FROM switchboard.run_queue r JOIN switchboard.run_queue n ON n.route = r.route
		            AND n.key = r.key AND n.id > r.id
		  WHERE r.id = _retry_one.id ORDER BY n.id FOR UPDATE OF n;
		IF EXISTS (SELECT 1 FROM switchboard.run_queue r JOIN switchboard.run_queue n ON n.route = r.route
		            AND n.key = r.key AND n.id > r.id AND (n.started_at IS NOT NULL OR n.state <> 'pending')
		            WHERE r.id = _retry_one.id AND r.state = 'failed')
		   OR EXISTS (SELECT 1 FROM switchboard.run_queue r JOIN switchboard.delivered_marks m ON m.route = r.route
		               AND m.key = r.key AND m.change_id > r.id
		               WHERE r.id = _retry_one.id AND r.state = 'failed') THEN
			RAISE EXCEPTION 'run % cannot be retried: a newer run of its key has started', id
				USING ERRCODE = 'object_not_in_prerequisite_state',
				      HINT = 'Running it now would apply older data after newer; switchboard.discard() it, or change the row again.';
		END IF;
		UPDATE switchboard.run_queue r
		   SET state = 'pending', attempts = 0, next_attempt_at = NULL, finished_at = NULL
		 WHERE r.id = _retry_one.id AND r.state = 'failed';
	END IF;
	PERFORM switchboard.wake();
	RETURN true;
END $$;

CREATE OR REPLACE FUNCTION switchboard._discard_one(id bigint, caller oid) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	of_route text;
	gone record;
BEGIN
	SELECT d.route INTO of_route FROM switchboard._dead_letter_route(_discard_one.id) d;
	IF of_route IS NULL THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	IF NOT switchboard._may_repair(of_route, caller) THEN
		RAISE EXCEPTION 'permission denied to discard dead letter %', id USING ERRCODE = 'insufficient_privilege',
			HINT = 'It needs the privileges of the owner of its route (of the extension, once the route is deleted).';
	END IF;
	DELETE FROM switchboard.queue q WHERE q.id = _discard_one.id AND q.state = 'dead'
	RETURNING q.route, q.key, q.op, q.id, false AS started INTO gone;
	IF NOT FOUND THEN
		DELETE FROM switchboard.run_queue r WHERE r.id = _discard_one.id AND r.state = 'failed'
		RETURNING r.route, r.key, r.op, r.id, r.started_at IS NOT NULL AS started INTO gone;
	END IF;
	IF NOT FOUND THEN
		-- Retried or discarded by another session since the check above.
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	-- A run that had started may have delivered (or written back, or notified) before its step
	-- failed: gone, it still holds back the older changes of its key, as it did while failed
	-- (retry() and the worker read delivered_marks once the run is no more).
	IF gone.started AND gone.key IS NOT NULL THEN
		INSERT INTO switchboard.delivered_marks AS m (route, key, change_id) VALUES (gone.route, gone.key, gone.id)
		ON CONFLICT (route, key) DO UPDATE SET change_id = GREATEST(m.change_id, excluded.change_id);
	END IF;
	-- The acting role by name: current_user is the owner this function runs as.
	INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, error)
	VALUES (gone.route, gone.key, gone.op, gone.id, 'discarded', 'discarded by ' || caller::pg_catalog.regrole::pg_catalog.text);
	RETURN true;
END $$;

-- src/sql/90_privileges.sql: grant_admin revokes _dead_letter_route too.
CREATE OR REPLACE FUNCTION switchboard.grant_admin(role regrole) RETURNS void
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON switchboard.endpoints, '
	               'switchboard.mappings, switchboard.filters, switchboard.steps TO %s', role);
	-- Every column of routes but inbound_token (whoever knows it can post events to the route:
	-- only the owner reads it, through switchboard.inbound_token(route)).
	EXECUTE pg_catalog.format('REVOKE SELECT ON switchboard.routes FROM %s', role);
	EXECUTE pg_catalog.format('GRANT INSERT, UPDATE, DELETE ON switchboard.routes TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT (%s) ON switchboard.routes TO %s',
	               (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
	                  FROM pg_catalog.pg_attribute a
	                 WHERE a.attrelid = 'switchboard.routes'::pg_catalog.regclass AND a.attnum > 0
	                   AND NOT a.attisdropped AND a.attname OPERATOR(pg_catalog.<>) 'inbound_token'), role);
	EXECUTE pg_catalog.format('GRANT INSERT, UPDATE, DELETE, REFERENCES ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT (name, owner) ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT ON switchboard.route_status, switchboard.dead_letters, switchboard.outbox, '
	               'switchboard.route_stats, switchboard.remote_ids, switchboard.delivered_marks, switchboard.instance, switchboard.endpoint_status, '
	               'switchboard.deliveries, switchboard.delivery_log, switchboard.endpoint_state, switchboard.pull_status, '
	               'switchboard.pull_state, switchboard.metrics, switchboard.runs, switchboard.ai_usage, '
	               'switchboard.ai_usage_daily, switchboard.inbound_status, switchboard.inbound_rejections TO %s', role);
	EXECUTE pg_catalog.format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION switchboard.grant_admin(regrole), '
	               'switchboard._retry_route(text, oid), switchboard._retry_one(bigint, oid), '
	               'switchboard._discard_one(bigint, oid), switchboard._dead_letter_route(bigint) FROM %s', role);
END $$;
