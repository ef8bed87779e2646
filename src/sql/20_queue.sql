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
	pulled_ms bigint,   -- the remote version the pull applied last for the key (its time) ...
	pulled_hash text,   -- ... and its fields' hash: reading that version again applies nothing
	PRIMARY KEY (route, key)
);

-- Per route and key, the newest change that was delivered: a change of the key older than it (a dead letter retried, a change recovered after a crash)
-- is never sent after it, so the remote never goes back to an older state.
CREATE TABLE switchboard.delivered_marks (
	route text NOT NULL,
	key text NOT NULL,
	change_id bigint NOT NULL,
	PRIMARY KEY (route, key)
);

-- The capture trigger (C): AFTER ROW, one trigger per captured operation, attached by
-- switchboard itself. Arguments: route name, and 'old' when the old image is needed.
CREATE FUNCTION switchboard.capture() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_capture';

-- A dropped source table disables its routes with a reason instead of breaking anything.
-- SECURITY DEFINER functions search pg_catalog first and the caller's temporary schema last
-- (never first, where a temp table or domain could stand in for a catalog or a type; Postgres
-- never looks up functions or operators there), and qualify tables and functions besides.
CREATE FUNCTION switchboard._on_sql_drop() RETURNS event_trigger
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
CREATE EVENT TRIGGER switchboard_source_dropped ON sql_drop
	EXECUTE FUNCTION switchboard._on_sql_drop();

-- Every capture trigger, whether attached by switchboard or recreated by a restore, is tied to
-- the extension (an automatic dependency), so DROP EXTENSION removes it.
CREATE FUNCTION switchboard._tie_to_extension(trigger_oid oid) RETURNS void
	LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_tie_to_extension';
CREATE FUNCTION switchboard._on_trigger_created() RETURNS event_trigger
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
CREATE EVENT TRIGGER switchboard_capture_created ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
	EXECUTE FUNCTION switchboard._on_trigger_created();

-- Queues the rows that exist already, as capture would have (C).
CREATE FUNCTION switchboard.resync(route text, where_clause text DEFAULT NULL) RETURNS bigint
	LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_resync';
COMMENT ON FUNCTION switchboard.resync(text, text) IS
	'Enqueue the current state of existing rows of the route''s source (all, or those matching where_clause) that pass its filters';
