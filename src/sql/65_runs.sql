-- Runs (SPEC §7, §8): a captured change of a route with steps becomes a run, executed by the
-- worker step by step; each step's outcome is committed before the next one starts.
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
