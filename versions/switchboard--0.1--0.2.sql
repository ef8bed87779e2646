-- switchboard 0.1 -> 0.2. Brings a 0.1 install to exactly what switchboard--0.2.sql creates
-- (test/tap/t/020_upgrade.pl compares the two catalogs and names every difference).
\echo Use "ALTER EXTENSION switchboard UPDATE TO '0.2'" to load this file. \quit

-- src/sql/70_metrics.sql (new in 0.2)
-- Metrics for exporters (contrib/prometheus/switchboard_queries.yaml): one row per route, every
-- value a number. Counters (_total) only grow; state and errors are the route's endpoint's.
CREATE VIEW switchboard.metrics AS
SELECT r.name AS route,
       r.endpoint,
       e.kind,
       r.direction,
       CASE WHEN r.enabled THEN 1 ELSE 0 END AS enabled,
       coalesce(q.pending, 0) AS pending,
       coalesce(q.in_flight, 0) AS in_flight,
       coalesce(q.dead, 0) AS dead,
       coalesce(s.delivered, 0) AS delivered_total,
       coalesce(es.errors, 0) AS errors_total,
       coalesce(es.requests, 0) AS requests_total,
       -- 0 when nothing waits, so that "backlog age" alerts need no NULL handling.
       coalesce(extract(epoch FROM now() - q.oldest_pending)::double precision, 0) AS oldest_pending_seconds,
       CASE WHEN NOT r.enabled OR NOT e.enabled THEN 3
            ELSE CASE coalesce(es.state, 'ok') WHEN 'ok' THEN 0 WHEN 'backing_off' THEN 1 WHEN 'open' THEN 2 ELSE 3 END
       END AS state,
       -- Seconds since the last completed pull; NULL for push-only routes and routes never pulled.
       CASE WHEN r.direction IN ('pull', 'both')
            THEN extract(epoch FROM now() - p.last_pull_at)::double precision END AS pull_lag_seconds,
       coalesce(p.records_pulled, 0) AS pulled_total,
       coalesce(p.records_failed, 0) AS pull_failed_total
  FROM switchboard.routes r
  JOIN switchboard.endpoints e ON e.name = r.endpoint
  LEFT JOIN (SELECT route,
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
                    count(*) FILTER (WHERE state = 'dead') AS dead,
                    min(captured_at) FILTER (WHERE state <> 'dead') AS oldest_pending
               FROM switchboard.queue GROUP BY route) q ON q.route = r.name
  LEFT JOIN switchboard.route_stats s ON s.route = r.name
  LEFT JOIN switchboard.endpoint_state es ON es.endpoint = r.endpoint
  LEFT JOIN switchboard.pull_state p ON p.route = r.name;
COMMENT ON VIEW switchboard.metrics IS
	'Per route, numbers for exporters: queue depth, counters, backlog age, state (0 ok, 1 backing_off, 2 open, 3 disabled), pull lag';
GRANT SELECT ON switchboard.metrics TO pg_monitor;
