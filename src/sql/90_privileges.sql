-- Configuration and the queue belong to the extension owner (and roles it grants).
REVOKE ALL ON ALL TABLES IN SCHEMA switchboard FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA switchboard FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA switchboard FROM PUBLIC;
GRANT USAGE ON SCHEMA switchboard TO pg_monitor;
GRANT SELECT ON switchboard.route_status, switchboard.dead_letters, switchboard.endpoint_status,
	switchboard.deliveries, switchboard.pull_status, switchboard.inbound_status TO pg_monitor;

-- One call lets a role configure and watch switchboard: write every configuration table,
-- write (but never read) secrets, read the status, and use every function. Not the queue: it
-- holds the row images of every route (each owner's changes are repaired through retry() and
-- discard(), which check the owner, and shown by views that do).
CREATE FUNCTION switchboard.grant_admin(role regrole) RETURNS void
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON switchboard.endpoints, '
	               'switchboard.mappings, switchboard.filters, switchboard.steps TO %s', role);
	-- Every column of routes but inbound_token (whoever knows it can post events to the route:
	-- only the owner reads it, through switchboard.inbound_token(route)).
	EXECUTE pg_catalog.format('REVOKE SELECT ON switchboard.routes FROM %s', role);
	EXECUTE pg_catalog.format('GRANT INSERT, UPDATE, DELETE ON switchboard.routes TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT (%s) ON switchboard.routes TO %s',
	               (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
	                  FROM pg_catalog.pg_attribute a
	                 WHERE a.attrelid = 'switchboard.routes'::pg_catalog.regclass AND a.attnum > 0
	                   AND NOT a.attisdropped AND a.attname OPERATOR(pg_catalog.<>) 'inbound_token'), role);
	EXECUTE pg_catalog.format('GRANT INSERT, UPDATE, DELETE, REFERENCES ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT (name, owner) ON switchboard.secrets TO %s', role);
	EXECUTE pg_catalog.format('GRANT SELECT ON switchboard.route_status, switchboard.dead_letters, switchboard.outbox, '
	               'switchboard.route_stats, switchboard.remote_ids, switchboard.delivered_marks, switchboard.instance, switchboard.endpoint_status, '
	               'switchboard.deliveries, switchboard.delivery_log, switchboard.endpoint_state, switchboard.pull_status, '
	               'switchboard.pull_state, switchboard.metrics, switchboard.runs, switchboard.ai_usage, '
	               'switchboard.ai_usage_daily, switchboard.inbound_status, switchboard.inbound_rejections TO %s', role);
	EXECUTE pg_catalog.format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA switchboard TO %s', role);
	EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION switchboard.grant_admin(regrole), '
	               'switchboard._retry_route(text, oid), switchboard._retry_one(bigint, oid), '
	               'switchboard._discard_one(bigint, oid), switchboard._dead_letter_route(bigint) FROM %s', role);
END $$;
COMMENT ON FUNCTION switchboard.grant_admin(regrole) IS
	'Lets a role configure and monitor switchboard (secrets stay write-only for it)';
REVOKE ALL ON FUNCTION switchboard.grant_admin(regrole) FROM PUBLIC;
