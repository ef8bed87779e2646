-- Delivery history and endpoint health: written by the worker, read by DBAs.

-- Recent attempts, kept switchboard.history_retention (the worker prunes older rows).
CREATE TABLE switchboard.delivery_log (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	route text NOT NULL,
	key text,
	op text,
	change_id bigint,
	outcome text NOT NULL,   -- delivered | retry | dead | skipped | discarded | expired | pulled ...
	http_status integer,
	latency_ms double precision,
	error text
);
CREATE INDEX delivery_log_at ON switchboard.delivery_log (at);

CREATE VIEW switchboard.deliveries AS
SELECT route, key, op, outcome, http_status, latency_ms, error, at, change_id
  FROM switchboard.delivery_log;
COMMENT ON VIEW switchboard.deliveries IS 'Recent delivery attempts (kept switchboard.history_retention)';

-- Written by the worker: circuit breaker state and counters per endpoint.
CREATE TABLE switchboard.endpoint_state (
	endpoint text PRIMARY KEY,
	state text NOT NULL DEFAULT 'ok',
	next_attempt_at timestamptz,
	requests bigint NOT NULL DEFAULT 0,
	errors bigint NOT NULL DEFAULT 0,
	last_error text,
	last_error_at timestamptz,
	updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW switchboard.endpoint_status AS
SELECT e.name AS endpoint, e.kind, e.enabled,
       CASE WHEN NOT e.enabled THEN 'disabled' ELSE coalesce(s.state, 'ok') END AS state,
       s.next_attempt_at,
       coalesce(s.requests, 0) AS requests,
       coalesce(s.errors, 0) AS errors,
       s.last_error, s.last_error_at
  FROM switchboard.endpoints e
  LEFT JOIN switchboard.endpoint_state s ON s.endpoint = e.name;
COMMENT ON VIEW switchboard.endpoint_status IS 'Per endpoint: ok, backing_off or open (circuit breaker), request and error counts';
