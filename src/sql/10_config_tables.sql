-- Configuration: every row is validated when written (see the _validate_* triggers below).

CREATE TABLE switchboard.secrets (
	name text PRIMARY KEY,
	value text NOT NULL,
	-- The role that wrote it (set by _validate). Only roles with its privileges may change or
	-- delete it, attach it to an endpoint, or move an endpoint that carries it (SPEC §8).
	owner regrole
);
COMMENT ON TABLE switchboard.secrets IS 'Credentials referenced by endpoints.secret; readable only by the extension owner';

CREATE TABLE switchboard.endpoints (
	name text PRIMARY KEY,
	kind text NOT NULL,
	base_url text NOT NULL,
	secret text REFERENCES switchboard.secrets (name) ON UPDATE CASCADE,
	options jsonb NOT NULL DEFAULT '{}',
	enabled boolean NOT NULL DEFAULT true,
	-- The role that wrote it (set by _validate): only roles with its privileges may change or
	-- delete it, or route through it.
	owner regrole
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
	disabled_reason text,
	-- The role its expressions run as and whose privileges bound what it may read and write
	-- (SPEC §8 Who acts). Set by _validate to the writer; changed only by a member of it.
	owner regrole,
	-- Inbound webhooks (SPEC §9, src/sql/80_inbound.sql): the random path segment of
	-- POST /inbound/{token} (set by the _inbound_token trigger for direction pull or both;
	-- readable only through switchboard.inbound_token(route)), and the secret the sender signs with.
	inbound_token text UNIQUE,
	inbound_secret text REFERENCES switchboard.secrets (name) ON UPDATE CASCADE
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

CREATE TABLE switchboard.steps (
	route text NOT NULL REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE,
	name text NOT NULL,
	position integer NOT NULL,
	kind text NOT NULL,
	endpoint text REFERENCES switchboard.endpoints (name) ON UPDATE CASCADE,
	run_if text,
	input text,
	options jsonb NOT NULL DEFAULT '{}',
	PRIMARY KEY (route, name),
	UNIQUE (route, position)
);
COMMENT ON TABLE switchboard.steps IS 'Orchestration: the steps (enrich, sql, deliver, notify, writeback) a change of a route runs, in position order';

-- pg_dump keeps configuration (not the queue: a restored database starts with an empty one).
SELECT pg_catalog.pg_extension_config_dump('switchboard.secrets', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.routes', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.mappings', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.filters', '');
SELECT pg_catalog.pg_extension_config_dump('switchboard.steps', '');

-- Validation at write time (C): the error names the table, the row and the reason.
CREATE FUNCTION switchboard._validate() RETURNS trigger
	LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_validate';
-- Attach/detach capture triggers after a route or one of its filters changes (C).
CREATE FUNCTION switchboard._sync_capture() RETURNS trigger
	LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_sync_capture';

-- Deletes are checked too: only a role with the owner's privileges may remove a route, its
-- mappings and filters, an endpoint or a secret.
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.endpoints
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.secrets
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.routes
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.mappings
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.filters
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER validate BEFORE INSERT OR UPDATE OR DELETE ON switchboard.steps
	FOR EACH ROW EXECUTE FUNCTION switchboard._validate();
CREATE TRIGGER sync_capture AFTER INSERT OR UPDATE OR DELETE ON switchboard.routes
	FOR EACH ROW EXECUTE FUNCTION switchboard._sync_capture();
CREATE TRIGGER sync_capture AFTER INSERT OR UPDATE OR DELETE ON switchboard.filters
	FOR EACH ROW EXECUTE FUNCTION switchboard._sync_capture();
