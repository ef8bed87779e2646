-- Metrics for exporters (contrib/prometheus/switchboard_queries.yaml): one row per route, every
-- value a number. Counters (_total) only grow; state and errors are the route's endpoint's.
-- Queue counts come from route_status, so both views always agree.
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
