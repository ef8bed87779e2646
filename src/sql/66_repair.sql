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

-- The route of dead letter id (a dead change, or a failed run: is_run); NULLs when there is none.
CREATE FUNCTION switchboard._dead_letter_route(id bigint, OUT route text, OUT is_run boolean)
	LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT d.route, d.is_run
	  FROM (SELECT q.route, false AS is_run FROM switchboard.queue q WHERE q.id = $1 AND q.state = 'dead'
	        UNION ALL
	        SELECT r.route, true FROM switchboard.run_queue r WHERE r.id = $1 AND r.state = 'failed') d
	 LIMIT 1
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

CREATE FUNCTION switchboard._retry_one(id bigint, caller oid) RETURNS boolean
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

CREATE FUNCTION switchboard._discard_one(id bigint, caller oid) RETURNS boolean
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

-- What DBAs and configuration roles call (see the top of this file).
CREATE FUNCTION switchboard.retry(route text DEFAULT NULL) RETURNS bigint
	LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_retry_route';
COMMENT ON FUNCTION switchboard.retry(text) IS
	'Re-queue every dead letter (of one route, or of all routes the caller may repair); returns how many';
CREATE FUNCTION switchboard.retry(id bigint) RETURNS boolean
	LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_retry_one';
COMMENT ON FUNCTION switchboard.retry(bigint) IS 'Re-queue one dead letter (a change, or a failed run at its failed step)';
CREATE FUNCTION switchboard.discard(id bigint) RETURNS boolean
	LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_discard_one';
COMMENT ON FUNCTION switchboard.discard(bigint) IS 'Drop a dead letter on purpose (recorded in deliveries)';


-- Waits until every change committed before the call is final: delivered, filtered out, a dead
-- letter, a run done or failed. Each check runs with a fresh snapshot (READ COMMITTED). As the
-- extension owner, since the queue is not readable by configuration roles; it tells only
-- whether everything is final.
CREATE FUNCTION switchboard.wait_idle(timeout interval DEFAULT '30 s') RETURNS boolean
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
