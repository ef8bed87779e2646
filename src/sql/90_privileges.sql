-- Configuration and the queue belong to the extension owner (and roles it grants).
REVOKE ALL ON ALL TABLES IN SCHEMA switchboard FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA switchboard FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA switchboard FROM PUBLIC;
GRANT USAGE ON SCHEMA switchboard TO pg_monitor;
GRANT SELECT ON switchboard.route_status, switchboard.dead_letters TO pg_monitor;
