-- Delivery functions: waking the worker, the repair functions DBAs use, and the worker's start.

-- retry/discard run as the extension owner: EXECUTE on them (grant_admin) is what permits them.

-- Nudges this database's worker (at commit of the calling transaction).
CREATE FUNCTION switchboard.wake() RETURNS void
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_wake';

CREATE FUNCTION switchboard.retry(route text DEFAULT NULL) RETURNS bigint
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
COMMENT ON FUNCTION switchboard.retry(text) IS 'Re-queue every dead letter (of one route, or all); returns how many';

CREATE FUNCTION switchboard.retry(id bigint) RETURNS boolean
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
COMMENT ON FUNCTION switchboard.retry(bigint) IS 'Re-queue one dead letter';

CREATE FUNCTION switchboard.discard(id bigint) RETURNS boolean
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
COMMENT ON FUNCTION switchboard.discard(bigint) IS 'Drop a dead letter on purpose (recorded in deliveries)';

-- Waits until every change committed before the call is final: delivered, filtered out,
-- or a dead letter. Each check runs with a fresh snapshot (READ COMMITTED).
CREATE FUNCTION switchboard.wait_idle(timeout interval DEFAULT '30 s') RETURNS boolean
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
COMMENT ON FUNCTION switchboard.wait_idle(interval) IS
	'Waits until every change committed before the call is delivered or dead; false on timeout';

-- Called by the extension script: start this database's worker once CREATE EXTENSION commits.
CREATE FUNCTION switchboard._start_worker() RETURNS void
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_start_worker';
SELECT switchboard._start_worker();
