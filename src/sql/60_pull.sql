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

-- Per route (direction both) and key, the fields of the newest change the push delivered: a
-- pulled record carrying exactly these values is the echo of that push, not a remote change.
CREATE TABLE switchboard.pushed_state (
	route text NOT NULL,
	key text NOT NULL,
	change_id bigint NOT NULL,
	fields jsonb NOT NULL,
	PRIMARY KEY (route, key)
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
COMMENT ON FUNCTION switchboard.pull_now(text) IS 'Poll the route''s endpoint at once instead of at the next pull_interval';
