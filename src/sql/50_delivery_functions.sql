-- Delivery functions: waking the worker, the repair functions DBAs use, and the worker's start.

-- Nudges this database's worker (at commit of the calling transaction).
CREATE FUNCTION switchboard.wake() RETURNS void
	LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_wake';

-- retry, discard and wait_idle: src/sql/66_repair.sql (they cover runs too).

-- Called by the extension script: start this database's worker once CREATE EXTENSION commits.
CREATE FUNCTION switchboard._start_worker() RETURNS void
	LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_start_worker';
SELECT switchboard._start_worker();
