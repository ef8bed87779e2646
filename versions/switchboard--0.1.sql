-- switchboard install script. Built by concatenating src/sql/*.sql in name order.
\echo Use "CREATE EXTENSION switchboard" to load this file. \quit

-- One row: identity of this installation. Event ids are prefixed with it so that a
-- restored or recreated database never reuses an event id a consumer has seen.
CREATE TABLE switchboard.instance (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	id text NOT NULL DEFAULT substr(md5(gen_random_uuid()::text), 1, 10),
	created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO switchboard.instance DEFAULT VALUES;
-- Configuration: every row is validated when written (see the _validate_* triggers below).

CREATE TABLE switchboard.secrets (
	name text PRIMARY KEY,
	value text NOT NULL
);
COMMENT ON TABLE switchboard.secrets IS 'Credentials referenced by endpoints.secret; readable only by the extension owner';

CREATE TABLE switchboard.endpoints (
	name text PRIMARY KEY,
	kind text NOT NULL,
	base_url text NOT NULL,
	secret text REFERENCES switchboard.secrets (name) ON UPDATE CASCADE,
	options jsonb NOT NULL DEFAULT '{}',
	enabled boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE switchboard.endpoints IS 'One row per outside system (hubspot, salesforce, webhook, openai)';

CREATE TABLE switchboard.routes (
	name text PRIMARY KEY,
	source regclass,          -- NULL once the table was dropped (see disabled_reason)
	endpoint text NOT NULL REFERENCES switchboard.endpoints (name) ON UPDATE CASCADE,
	remote_object text NOT NULL,
	direction text NOT NULL DEFAULT 'push',
	operations text[] NOT NULL DEFAULT '{insert,update,delete}',
	match_local text NOT NULL,
	match_remote text,
	on_delete text NOT NULL DEFAULT 'ignore',
	conflict text NOT NULL DEFAULT 'newest',
	pull_interval interval NOT NULL DEFAULT '1 minute',
	enabled boolean NOT NULL DEFAULT true,
	-- Set by switchboard when it disables a route itself (source dropped, webhook 410).
	disabled_reason text
);
COMMENT ON TABLE switchboard.routes IS 'One row per flow between a local table and a remote object';

CREATE TABLE switchboard.mappings (
	route text NOT NULL REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE,
	remote_field text NOT NULL,
	push_expr text,
	pull_column text,
	pull_expr text,
	PRIMARY KEY (route, remote_field)
);
COMMENT ON TABLE switchboard.mappings IS 'Field translation: one row per remote field of a route';

CREATE TABLE switchboard.filters (
	route text NOT NULL REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE,
	name text NOT NULL,
	predicate text NOT NULL,
	PRIMARY KEY (route, name)
);
COMMENT ON TABLE switchboard.filters IS 'Predicates over new/old; a change is captured only when all filters of its route hold';

-- pg_dump keeps configuration (not the queue: a restored database starts with an empty one).
SELECT pg_catalog.pg_extension_config_dump('switchboard.secrets', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.routes', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.mappings', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.filters', '');

-- Validation at write time (C): the error names the table, the row and the reason.
CREATE FUNCTION switchboard._validate() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_validate';
-- Attach/detach capture triggers after a route or one of its filters changes (C).
CREATE FUNCTION switchboard._sync_capture() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_sync_capture';

CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON switchboard.endpoints
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON switchboard.routes
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON switchboard.mappings
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON switchboard.filters
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER sync_capture AFTER INSERT OR UPDATE OR DELETE ON switchboard.routes
	FOR EACH ROW EXECUTE FUNCTION switchboard._sync_capture();
CREATE TRIGGER sync_capture AFTER INSERT OR UPDATE OR DELETE ON switchboard.filters
	FOR EACH ROW EXECUTE FUNCTION switchboard._sync_capture();
-- The queue: one row per captured change, written by the capture trigger in the writer's
-- transaction (so only committed changes exist) and consumed by the worker.
-- The trigger forms these tuples directly: keep the column order in sync with
-- src/capture/queue_layout.h.
CREATE SEQUENCE switchboard.queue_id_seq;
CREATE TABLE switchboard.queue (
	id bigint NOT NULL DEFAULT nextval('switchboard.queue_id_seq'),
	route text NOT NULL,
	op text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
	new json,                -- row image after the change (insert, update)
	old json,                -- row image before it (delete; update when a filter needs old)
	captured_at timestamptz NOT NULL,
	state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'in_flight', 'dead')),
	attempts integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz,
	key text,                -- match_local, filled in when translated
	last_status integer,     -- HTTP status of the last attempt (0: no answer)
	last_error text,
	failed_at timestamptz,
	payload jsonb            -- translated fields, kept for dead letters
);
ALTER SEQUENCE switchboard.queue_id_seq OWNED BY switchboard.queue.id;
CREATE UNIQUE INDEX queue_pkey ON switchboard.queue (id);
-- Changes already translated (waiting for a retry, or dead) by key: coalescing and conflict
-- checks look them up. Partial, so capture (which never knows the key) does not pay for it.
CREATE INDEX queue_route_key ON switchboard.queue (route, key) WHERE key IS NOT NULL;
-- A queue table churns: vacuum it often.
ALTER TABLE switchboard.queue SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
	autovacuum_analyze_scale_factor = 0.02);

-- Per-route counters the worker maintains (delivered count survives queue pruning).
CREATE TABLE switchboard.route_stats (
	route text PRIMARY KEY,
	delivered bigint NOT NULL DEFAULT 0,
	last_delivered_at timestamptz,
	last_error text,
	last_error_at timestamptz
);

-- Remote record ids returned by upserts, needed to archive/delete remote records.
CREATE TABLE switchboard.remote_ids (
	route text NOT NULL,
	key text NOT NULL,
	remote_id text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (route, key)
);

-- The capture trigger (C): AFTER ROW, one trigger per captured operation, attached by
-- switchboard itself. Arguments: route name, and 'old' when the old image is needed.
CREATE FUNCTION switchboard.capture() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_capture';

-- A dropped source table disables its routes with a reason instead of breaking anything.
CREATE FUNCTION switchboard._on_sql_drop() RETURNS event_trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	dropped record;
BEGIN
	FOR dropped IN SELECT * FROM pg_event_trigger_dropped_objects()
		WHERE object_type IN ('table', 'partitioned table') LOOP
		UPDATE switchboard.routes
		   SET enabled = false,
		       source = NULL,  -- a dangling OID could name another table after a restore
		       disabled_reason = format('source table %s was dropped at %s', dropped.object_identity, now())
		 WHERE source = dropped.objid;
	END LOOP;
END $$;
CREATE EVENT TRIGGER switchboard_source_dropped ON sql_drop
	EXECUTE FUNCTION switchboard._on_sql_drop();

-- Every capture trigger, whether attached by switchboard or recreated by a restore, is tied to
-- the extension (an automatic dependency), so DROP EXTENSION removes it.
CREATE FUNCTION switchboard._tie_to_extension(trigger_oid oid) RETURNS void
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_tie_to_extension';
CREATE FUNCTION switchboard._on_trigger_created() RETURNS event_trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	created record;
BEGIN
	FOR created IN
		SELECT t.oid FROM pg_event_trigger_ddl_commands() c
		  JOIN pg_trigger t ON t.oid = c.objid AND c.classid = 'pg_trigger'::regclass
		 WHERE t.tgfoid = 'switchboard.capture()'::regprocedure
		   AND NOT EXISTS (SELECT 1 FROM pg_depend d
		                    WHERE d.classid = 'pg_trigger'::regclass AND d.objid = t.oid
		                      AND d.refclassid = 'pg_extension'::regclass)
	LOOP
		PERFORM switchboard._tie_to_extension(created.oid);
	END LOOP;
END $$;
CREATE EVENT TRIGGER switchboard_capture_created ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
	EXECUTE FUNCTION switchboard._on_trigger_created();
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
            ELSE s.last_error END AS last_error,
       s.last_error_at,
       r.disabled_reason,
       (SELECT count(*) FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = r.source AND t.tgname LIKE 'switchboard_' || r.name || '_%') AS capture_triggers
  FROM switchboard.routes r
  LEFT JOIN (SELECT route,
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
                    count(*) FILTER (WHERE state = 'dead') AS dead,
                    min(captured_at) FILTER (WHERE state <> 'dead') AS oldest_pending
               FROM switchboard.queue GROUP BY route) q ON q.route = r.name
  LEFT JOIN switchboard.route_stats s ON s.route = r.name;
COMMENT ON VIEW switchboard.route_status IS 'Per route: queue depth, delivered/dead counts, last error';

CREATE VIEW switchboard.dead_letters AS
SELECT id, route, op, key, attempts, last_status, last_error,
       coalesce(payload, to_jsonb(coalesce(new, old))) AS payload,
       failed_at
  FROM switchboard.queue
 WHERE state = 'dead';
COMMENT ON VIEW switchboard.dead_letters IS 'Changes that will not be delivered without repair; see retry() and discard()';

-- The exact request a queued change becomes, rendered on read (errors included).
CREATE FUNCTION switchboard.render(change_id bigint) RETURNS jsonb
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_render';

CREATE VIEW switchboard.outbox AS
SELECT id, route, op, state, attempts, captured_at, next_attempt_at, last_error,
       switchboard.render(id) AS request
  FROM switchboard.queue
 WHERE state <> 'dead';
COMMENT ON VIEW switchboard.outbox IS 'Captured changes waiting for delivery, each with the request it will become';
CREATE FUNCTION switchboard.preview(route text, key text, op text DEFAULT 'update') RETURNS jsonb
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_preview';
COMMENT ON FUNCTION switchboard.preview(text, text, text) IS
	'The exact request that would be sent for the row with this key now (secrets masked), and whether filters let it through';

CREATE FUNCTION switchboard.resync(route text, where_clause text DEFAULT NULL) RETURNS bigint
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_resync';
COMMENT ON FUNCTION switchboard.resync(text, text) IS
	'Enqueue the current state of existing rows of the route''s source (all, or those matching where_clause) that pass its filters';
-- Delivery: history, endpoint health, and the repair functions DBAs use.

-- Recent attempts, kept switchboard.history_retention (the worker prunes older rows).
CREATE TABLE switchboard.delivery_log (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	route text NOT NULL,
	key text,
	op text,
	change_id bigint,
	outcome text NOT NULL,   -- delivered | retry | dead | skipped | pulled
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

-- retry/discard run as the extension owner: EXECUTE on them (grant_admin) is what permits them.

-- Nudges this database's worker (at commit of the calling transaction).
CREATE FUNCTION switchboard.wake() RETURNS void
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_wake';

CREATE FUNCTION switchboard.retry(route text DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	n bigint;
BEGIN
	UPDATE switchboard.queue q
	   SET state = 'pending', attempts = 0, next_attempt_at = NULL, failed_at = NULL
	 WHERE q.state = 'dead' AND (retry.route IS NULL OR q.route = retry.route);
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM switchboard.wake();
	RETURN n;
END $$;
COMMENT ON FUNCTION switchboard.retry(text) IS 'Re-queue every dead letter (of one route, or all); returns how many';

CREATE FUNCTION switchboard.retry(id bigint) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
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
COMMENT ON FUNCTION switchboard.retry(bigint) IS 'Re-queue one dead letter';

CREATE FUNCTION switchboard.discard(id bigint) RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	gone record;
BEGIN
	DELETE FROM switchboard.queue q WHERE q.id = discard.id AND q.state = 'dead' RETURNING * INTO gone;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no dead letter with id %', id USING ERRCODE = 'no_data_found';
	END IF;
	INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, error)
	VALUES (gone.route, gone.key, gone.op, gone.id, 'discarded', 'discarded by ' || current_user);
	RETURN true;
END $$;
COMMENT ON FUNCTION switchboard.discard(bigint) IS 'Drop a dead letter on purpose (recorded in deliveries)';

-- Waits until every change committed before the call is final: delivered, filtered out,
-- or a dead letter. Each check runs with a fresh snapshot (READ COMMITTED).
CREATE FUNCTION switchboard.wait_idle(timeout interval DEFAULT '30 s') RETURNS boolean
	LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
	horizon bigint;
	deadline timestamptz := clock_timestamp() + timeout;
BEGIN
	SELECT coalesce(max(id), 0) INTO horizon FROM switchboard.queue;
	PERFORM switchboard.wake();
	LOOP
		IF NOT EXISTS (SELECT 1 FROM switchboard.queue WHERE id <= horizon AND state <> 'dead') THEN
			RETURN true;
		END IF;
		IF clock_timestamp() >= deadline THEN
			RETURN false;
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END $$;
COMMENT ON FUNCTION switchboard.wait_idle(interval) IS
	'Waits until every change committed before the call is delivered or dead; false on timeout';

-- Called by the extension script: start this database's worker once CREATE EXTENSION commits.
CREATE FUNCTION switchboard._start_worker() RETURNS void
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_start_worker';
SELECT switchboard._start_worker();
-- Pull: for routes with direction pull or both, the worker pages through remote records changed
-- since the route's cursor and upserts them into the source table. The cursor advances in the
-- same transaction as the page it covers.
CREATE TABLE switchboard.pull_state (
	route text PRIMARY KEY,
	phase text NOT NULL DEFAULT 'changes' CHECK (phase IN ('changes', 'deletions')),
	cursor_since text,          -- remote modification time the next query starts after
	cursor_after text,          -- paging position inside the current query
	deletions_since text,
	deletions_after text,
	next_pull_at timestamptz,   -- NULL: due now
	last_pull_at timestamptz,
	records_pulled bigint NOT NULL DEFAULT 0,
	records_deleted bigint NOT NULL DEFAULT 0,
	records_skipped bigint NOT NULL DEFAULT 0,  -- a pending local change won the conflict
	records_failed bigint NOT NULL DEFAULT 0,   -- bad remote records (recorded in deliveries)
	last_error text,
	last_error_at timestamptz
);

CREATE VIEW switchboard.pull_status AS
SELECT r.name AS route, r.direction, r.enabled,
       p.cursor_since AS cursor,
       p.last_pull_at,
       coalesce(p.records_pulled, 0) AS records_pulled,
       coalesce(p.records_deleted, 0) AS records_deleted,
       coalesce(p.records_skipped, 0) AS records_skipped,
       coalesce(p.records_failed, 0) AS records_failed,
       p.next_pull_at,
       p.last_error, p.last_error_at
  FROM switchboard.routes r
  LEFT JOIN switchboard.pull_state p ON p.route = r.name
 WHERE r.direction IN ('pull', 'both');
COMMENT ON VIEW switchboard.pull_status IS 'Per pulling route: cursor, last pull, records pulled, deleted, skipped, failed, last error';

CREATE FUNCTION switchboard.pull_now(route text) RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM switchboard.routes r WHERE r.name = pull_now.route AND r.direction IN ('pull', 'both')) THEN
		RAISE EXCEPTION 'route "%" does not exist or does not pull (direction pull or both)', route
			USING ERRCODE = 'undefined_object';
	END IF;
	INSERT INTO switchboard.pull_state AS p (route, next_pull_at) VALUES (pull_now.route, now())
	ON CONFLICT ON CONSTRAINT pull_state_pkey DO UPDATE SET next_pull_at = now();
	PERFORM switchboard.wake();
END $$;
COMMENT ON FUNCTION switchboard.pull_now(text) IS 'Poll the route''s endpoint at once instead of at the next pull_interval';
-- Configuration and the queue belong to the extension owner (and roles it grants).
REVOKE ALL ON ALL TABLES IN SCHEMA switchboard FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA switchboard FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA switchboard FROM PUBLIC;
GRANT USAGE ON SCHEMA switchboard TO pg_monitor;
GRANT SELECT ON switchboard.route_status, switchboard.dead_letters, switchboard.endpoint_status,
	switchboard.deliveries, switchboard.pull_status TO pg_monitor;

-- One call lets a role configure and watch switchboard: write every configuration table,
-- write (but never read) secrets, read the queue and status, and use every function.
CREATE FUNCTION switchboard.grant_admin(role regrole) RETURNS void
	LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
	EXECUTE format('GRANT USAGE ON SCHEMA switchboard TO %s', role);
	EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON switchboard.endpoints, switchboard.routes, '
	               'switchboard.mappings, switchboard.filters TO %s', role);
	EXECUTE format('GRANT INSERT, UPDATE, DELETE, REFERENCES ON switchboard.secrets TO %s', role);
	EXECUTE format('GRANT SELECT (name) ON switchboard.secrets TO %s', role);
	EXECUTE format('GRANT SELECT, DELETE ON switchboard.queue TO %s', role);
	EXECUTE format('GRANT SELECT ON switchboard.route_status, switchboard.dead_letters, switchboard.outbox, '
	               'switchboard.route_stats, switchboard.remote_ids, switchboard.instance, switchboard.endpoint_status, '
	               'switchboard.deliveries, switchboard.delivery_log, switchboard.endpoint_state, switchboard.pull_status, '
	               'switchboard.pull_state TO %s', role);
	EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA switchboard TO %s', role);
	EXECUTE format('REVOKE EXECUTE ON FUNCTION switchboard.grant_admin(regrole) FROM %s', role);
END $$;
COMMENT ON FUNCTION switchboard.grant_admin(regrole) IS
	'Lets a role configure and monitor switchboard (secrets stay write-only for it)';
REVOKE ALL ON FUNCTION switchboard.grant_admin(regrole) FROM PUBLIC;
