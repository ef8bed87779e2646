-- Observability: what DBAs read. Readable by pg_monitor (see 90_privileges.sql).

CREATE VIEW switchboard.route_status AS
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

CREATE VIEW switchboard.dead_letters AS
SELECT id, route, op, key, attempts, last_status, last_error,
       payload,  -- the mapped fields only: never the row image (readable by pg_monitor)
       failed_at
  FROM switchboard.queue
 WHERE state = 'dead';
COMMENT ON VIEW switchboard.dead_letters IS 'Changes that will not be delivered without repair; see retry() and discard()';

-- The exact request a queued change becomes, rendered on read (errors included).
CREATE FUNCTION switchboard.render(change_id bigint) RETURNS jsonb
	LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_render';

CREATE VIEW switchboard.outbox AS
SELECT id, route, op, state, attempts, captured_at, next_attempt_at, last_error,
       switchboard.render(id) AS request
  FROM switchboard.queue
 WHERE state <> 'dead';
COMMENT ON VIEW switchboard.outbox IS 'Captured changes waiting for delivery, each with the request it will become';

-- The request a row of a route's source would become now, before anything is queued.
CREATE FUNCTION switchboard.preview(route text, key text, op text DEFAULT 'update') RETURNS jsonb
	LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_preview';
COMMENT ON FUNCTION switchboard.preview(text, text, text) IS
	'The exact request that would be sent for the row with this key now (secrets masked), and whether filters let it through';
