-- Inbound webhooks (SPEC §9, docs/inbound.md): the receiver (src/inbound/receiver.cpp) verifies
-- a signed POST /inbound/{token}, stores its events here and answers 2xx only once they are
-- committed; the database's worker applies them like a pulled page.

-- A route that pulls (direction pull or both) gets a random token, the path segment its sender
-- posts to; a push route has none. UPDATE ... SET inbound_token = NULL gives it a new one (so
-- does switchboard.rotate_inbound_token). A token written explicitly (a pg_dump restore) must
-- look like one the trigger makes: 32 letters or digits.
CREATE FUNCTION switchboard._inbound_token() RETURNS trigger
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.direction NOT IN ('pull', 'both') THEN
		NEW.inbound_token := NULL;
	ELSIF NEW.inbound_token IS NULL THEN
		-- gen_random_uuid() draws from pg_strong_random(): 122 random bits in 32 hex digits.
		NEW.inbound_token := pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text, '-', '');
	ELSIF NEW.inbound_token OPERATOR(pg_catalog.!~) '^[A-Za-z0-9]{32}$' THEN
		RAISE EXCEPTION 'switchboard.routes (name)=(%): inbound_token must be 32 letters or digits', NEW.name
			USING ERRCODE = 'check_violation',
			      HINT = 'set it to NULL and a random one is generated';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER inbound_token BEFORE INSERT OR UPDATE ON switchboard.routes
	FOR EACH ROW EXECUTE FUNCTION switchboard._inbound_token();

-- The token, to a role with the privileges of the route's owner (nobody else may read the
-- column: see grant_admin). C, not SECURITY DEFINER: it checks the calling role's privileges.
CREATE FUNCTION switchboard.inbound_token(route text) RETURNS text
	LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_inbound_token';
COMMENT ON FUNCTION switchboard.inbound_token(text) IS
	'The route''s inbound token (POST /inbound/{token}); needs the privileges of the route''s owner';
CREATE FUNCTION switchboard.rotate_inbound_token(route text) RETURNS text
	LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'switchboard_rotate_inbound_token';
COMMENT ON FUNCTION switchboard.rotate_inbound_token(text) IS
	'Gives the route a new inbound token and returns it (the receiver stops taking the old one within 5 s); needs the privileges of the route''s owner';

-- One row per received event. A redelivery of the same event (same route and event_id) is
-- stored once (INSERT ... ON CONFLICT DO NOTHING). The receiver writes every column up to
-- read_back; the apply (the database's worker) only sets applied_at, attempts and last_error:
--   pending: applied_at IS NULL (last_error: why the last attempt did not apply it yet)
--   applied: applied_at set, last_error NULL
--   failed:  applied_at set with last_error (a bad record, recorded and given up on)
CREATE TABLE switchboard.inbound_events (
	id bigserial PRIMARY KEY,
	-- A renamed route keeps its pending events; a deleted one takes them along (one re-created
	-- under the same name must not apply what the old one received).
	route text NOT NULL REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE,
	event_id text NOT NULL,          -- what a redelivery repeats (see ParseEvents in src/inbound/verify.h)
	received_at timestamptz NOT NULL DEFAULT now(),
	kind text NOT NULL,              -- signature scheme: hubspot-v3, woocommerce or standard-webhooks
	object_id text,                  -- the remote id the event is about
	type text,                       -- e.g. contact.propertyChange, order.updated
	property text,                   -- HubSpot propertyName
	deleted boolean NOT NULL DEFAULT false,
	occurred_at timestamptz,
	resource jsonb,                  -- the record itself; NULL when it is to be read back (HubSpot)
	read_back boolean NOT NULL DEFAULT false,
	applied_at timestamptz,
	attempts integer NOT NULL DEFAULT 0,
	last_error text,
	UNIQUE (route, event_id)
);
COMMENT ON TABLE switchboard.inbound_events IS
	'Verified webhook events, stored before they were acknowledged; applied_at once the worker applied them';
-- The apply's work: per route, the pending events in the order they arrived.
CREATE INDEX inbound_events_pending ON switchboard.inbound_events (route, id) WHERE applied_at IS NULL;

-- Requests the receiver refused for a known route's token (401 bad signature or stale
-- timestamp, 400 a body it cannot read); nothing of them is stored but this count.
CREATE TABLE switchboard.inbound_rejections (
	route text PRIMARY KEY REFERENCES switchboard.routes (name) ON UPDATE CASCADE ON DELETE CASCADE,
	rejected bigint NOT NULL DEFAULT 0,
	last_rejected_at timestamptz,
	last_error text
);
COMMENT ON TABLE switchboard.inbound_rejections IS 'Per route: webhook requests refused (bad signature, stale, unreadable body)';

CREATE VIEW switchboard.inbound_status AS
SELECT r.name AS route,
       coalesce(e.received, 0) AS received,
       coalesce(e.pending, 0) AS pending,
       coalesce(e.applied, 0) AS applied,
       coalesce(e.failed, 0) AS failed,
       coalesce(j.rejected, 0) AS rejected,
       e.last_received_at,
       e.last_applied_at,
       CASE WHEN j.last_rejected_at IS NOT NULL
                 AND (f.received_at IS NULL OR j.last_rejected_at > f.received_at) THEN j.last_error
            ELSE f.last_error END AS last_error
  FROM switchboard.routes r
  LEFT JOIN (SELECT route,
                    count(*) AS received,
                    count(*) FILTER (WHERE applied_at IS NULL) AS pending,
                    count(*) FILTER (WHERE applied_at IS NOT NULL AND last_error IS NULL) AS applied,
                    count(*) FILTER (WHERE applied_at IS NOT NULL AND last_error IS NOT NULL) AS failed,
                    max(received_at) AS last_received_at,
                    max(applied_at) AS last_applied_at
               FROM switchboard.inbound_events GROUP BY route) e ON e.route = r.name
  LEFT JOIN switchboard.inbound_rejections j ON j.route = r.name
  LEFT JOIN LATERAL (SELECT x.received_at, x.last_error FROM switchboard.inbound_events x
                      WHERE x.route = r.name AND x.last_error IS NOT NULL
                      ORDER BY x.id DESC LIMIT 1) f ON true
 WHERE r.direction IN ('pull', 'both');
COMMENT ON VIEW switchboard.inbound_status IS
	'Per pulling route: webhook events received, pending, applied, failed, requests rejected, last times, last error';
