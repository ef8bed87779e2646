CREATE FUNCTION switchboard.preview(route text, key text, op text DEFAULT 'update') RETURNS jsonb
	LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'switchboard_preview';
COMMENT ON FUNCTION switchboard.preview(text, text, text) IS
	'The exact request that would be sent for the row with this key now (secrets masked), and whether filters let it through';

CREATE FUNCTION switchboard.resync(route text, where_clause text DEFAULT NULL) RETURNS bigint
	LANGUAGE c AS 'MODULE_PATHNAME', 'switchboard_resync';
COMMENT ON FUNCTION switchboard.resync(text, text) IS
	'Enqueue the current state of existing rows of the route''s source (all, or those matching where_clause) that pass its filters';
