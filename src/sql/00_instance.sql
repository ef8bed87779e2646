-- switchboard install script. Built by concatenating src/sql/*.sql in name order.
\echo Use "CREATE EXTENSION switchboard" to load this file. \quit

-- One row: identity of this installation. Event ids are prefixed with it so that a
-- restored or recreated database never reuses an event id a consumer has seen.
CREATE TABLE switchboard.instance (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	id text NOT NULL DEFAULT substr(md5(gen_random_uuid()::text), 1, 10),
	created_at timestamptz NOT NULL DEFAULT now(),
	-- The database this row was made in: a database copied with CREATE DATABASE … TEMPLATE
	-- carries another's, and its worker then takes an id of its own (see RecognizeCopy).
	database_oid oid
);
INSERT INTO switchboard.instance (database_oid)
SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database();
