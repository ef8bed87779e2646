# A configuration role plants =(text,text) ahead of pg_catalog in a schema it owns: the owner
# lookups of _validate() (RouteOwner, RouteSource, SecretOwner) and of FindRoute (resync) must
# not read its own rows for another owner's names (they run with pg_catalog, pg_temp).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('hijack', 'switchboard.allowed_hosts' => "'127.0.0.1'");
sub psql_ok { my ($q) = @_; return $node->safe_psql('postgres', $q); }

psql_ok(qq{
CREATE EXTENSION switchboard;
CREATE ROLE sb_config;
SELECT switchboard.grant_admin('sb_config');
CREATE SCHEMA cfg AUTHORIZATION sb_config;
CREATE TABLE hijack_log (who name, what text);
GRANT INSERT ON hijack_log TO PUBLIC;
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs');
CREATE TABLE public.dba_contacts (id serial PRIMARY KEY, email text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('dba_push', 'public.dba_contacts', 'hubspot', 'contacts', 'lower(email)', 'email');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('dba_push', 'email', 'lower(email)');
});
psql_ok(qq{
SET ROLE sb_config;
INSERT INTO switchboard.secrets VALUES ('cfg_hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('cfg_hubspot', 'hubspot', '$base', 'cfg_hs');
CREATE TABLE cfg.t (id serial PRIMARY KEY, email text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, enabled)
VALUES ('cfg_push', 'cfg.t', 'cfg_hubspot', 'contacts', 'lower(email)', 'email', false);
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('cfg_push', 'email', 'lower(email)');
CREATE FUNCTION cfg.who(t text) RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
  INSERT INTO public.hijack_log VALUES (current_user, 'who');
  IF current_user <> 'sb_config' THEN EXECUTE 'ALTER ROLE sb_config SUPERUSER'; END IF;
  RETURN t;
END \$\$;
-- the victim's names read the attacker's rows; everything else compares as usual
CREATE FUNCTION cfg.eq(l text, r text) RETURNS boolean LANGUAGE sql AS \$\$
  SELECT CASE WHEN r OPERATOR(pg_catalog.=) 'dba_push' THEN l OPERATOR(pg_catalog.=) 'cfg_push'
              WHEN r OPERATOR(pg_catalog.=) 'hs' THEN l OPERATOR(pg_catalog.=) 'cfg_hs'
              ELSE l OPERATOR(pg_catalog.=) r END \$\$;
CREATE OPERATOR cfg.= (LEFTARG = text, RIGHTARG = text, FUNCTION = cfg.eq);
INSERT INTO cfg.t (email) VALUES ('injected\@evil.example');
});

my ($rc, $out, $err) = $node->psql('postgres', q{SET ROLE sb_config;
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('dba_push', 'x', 'cfg.who(email)')});
like($err, qr/belongs to|permission denied/, 'plain search_path: a mapping on the DBA route is refused');

($rc, $out, $err) = $node->psql('postgres', q{SET ROLE sb_config; SET search_path = cfg, pg_catalog;
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('dba_push', 'firstname', 'cfg.who(email)')});
isnt($rc, 0, '=(text,text) planted: a mapping on the DBA route is still refused') or diag("accepted; stderr: $err");

($rc, $out, $err) = $node->psql('postgres', qq{SET ROLE sb_config; SET search_path = cfg, pg_catalog;
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('steal', 'hubspot', '$base', 'hs')});
isnt($rc, 0, "=(text,text) planted: the DBA's secret cannot go on sb_config's endpoint") or diag("accepted; stderr: $err");

($rc, $out, $err) = $node->psql('postgres', q{SET ROLE sb_config; SET search_path = cfg, pg_catalog;
SELECT switchboard.resync('dba_push')});
isnt($rc, 0, "=(text,text) planted: sb_config cannot resync the DBA's route") or diag("accepted ($out); stderr: $err");

psql_ok("INSERT INTO public.dba_contacts (email) VALUES ('a\@x.com')");
psql_ok("SELECT switchboard.wait_idle('30 s')");
is(psql_ok("SELECT coalesce(string_agg(DISTINCT who::text, ','), '') FROM hijack_log WHERE who <> 'sb_config'"), '',
	"sb_config's code never ran as another role");
is(psql_ok("SELECT rolsuper FROM pg_roles WHERE rolname = 'sb_config'"), 'f', 'sb_config is no superuser');
is(psql_ok("SELECT count(*) FROM switchboard.delivery_log WHERE route = 'dba_push' AND key = 'injected\@evil.example'"), '0',
	"sb_config's rows did not go out through the DBA's route");
diag(psql_ok("SELECT string_agg(who::text || ':' || what, ',') FROM hijack_log"));
diag(psql_ok("SELECT string_agg(route || '/' || coalesce(key,'') || '/' || outcome, ', ') FROM switchboard.delivery_log"));
diag(psql_ok("SELECT string_agg(coalesce(key,'') || ': ' || coalesce(last_error,''), ' | ') FROM switchboard.dead_letters"));
done_testing();
