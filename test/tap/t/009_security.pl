# Security at run time (SPEC §8 "Who acts"): the worker runs a route's expressions and pulled
# writes as the route's owner, refuses definitions that skipped validation, cannot be
# redirected by a search_path that user code sets, and cannot be paused by a role that may not
# drop or rename a database. Every attack is made by an unprivileged role.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time usleep);

my ($base, $double) = start_double();
(my $port = $base) =~ s{.*:}{};
my $node = new_node('security', 'switchboard.allowed_hosts' => "'127.0.0.1'");

sub psql_ok { my ($q, $db) = @_; return $node->safe_psql($db // 'postgres', $q); }
sub as_config { my ($q) = @_; return psql_ok("SET ROLE sb_config; $q"); }
sub upserts { return [ grep { $_->{path} =~ m{/batch/upsert$} } @{ double_requests($base, '/crm/') } ]; }
sub hijacks { return psql_ok("SELECT coalesce(string_agg(DISTINCT who::text, ','), '') FROM hijack_log WHERE who <> 'sb_config'"); }

psql_ok(qq{
CREATE EXTENSION switchboard;
CREATE ROLE sb_config;
SELECT switchboard.grant_admin('sb_config');
CREATE SCHEMA cfg AUTHORIZATION sb_config;
CREATE TABLE hijack_log (who name, what text);
GRANT INSERT ON hijack_log TO PUBLIC;
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs');
});
# The configuring role's own table and its own attacker functions.
as_config(qq{
INSERT INTO switchboard.secrets VALUES ('cfg_hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('cfg_hubspot', 'hubspot', '$base', 'cfg_hs');
});
as_config(q{
CREATE TABLE cfg.contacts (id serial PRIMARY KEY, email text, first_name text);
-- logs who runs it, then plants a search_path in which its own functions shadow built-ins
CREATE FUNCTION cfg.plant(t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.hijack_log VALUES (current_user, 'plant');
	PERFORM pg_catalog.set_config('search_path', 'cfg, pg_catalog', false);
	RETURN t;
END $$;
CREATE FUNCTION cfg.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION cfg.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'clock'); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION cfg.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'unnest'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION cfg.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'unnest'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION cfg.key_of(e text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'key'); RETURN pg_catalog.lower(e); END $$;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('cfg_push', 'cfg.contacts', 'cfg_hubspot', 'contacts', 'lower(email)', 'email');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('cfg_push', 'email', 'lower(email)'), ('cfg_push', 'firstname', 'cfg.plant(first_name)');
});

# 4. A mapping that sets search_path cannot plant functions the worker then runs as superuser.
as_config("INSERT INTO cfg.contacts (email, first_name) VALUES ('a\@x.com', 'A'), ('b\@x.com', 'B')");
psql_ok("SELECT switchboard.wait_idle('30 s')");
as_config("UPDATE cfg.contacts SET first_name = first_name || '2'");
psql_ok("SELECT switchboard.wait_idle('30 s')");
is(psql_ok("SELECT count(*) FROM switchboard.deliveries WHERE route = 'cfg_push' AND outcome = 'delivered'"), '4',
	'the route delivered all four changes');
is(psql_ok("SELECT count(*) FROM hijack_log WHERE who = 'sb_config' AND what = 'plant'") > 0 ? 1 : 0, 1,
	"the mapping ran, as its owner");
is(hijacks(), '', 'nothing ran as any other role: the planted search_path did not reach the worker');
is(psql_ok("SELECT count(*) FROM hijack_log WHERE what <> 'plant'"), '0', 'no planted function ran at all');
like(psql_ok("SELECT setting FROM pg_settings WHERE name = 'search_path'"), qr/public/,
	'(sessions keep their own search_path)');

# 3. check_function_bodies = off skips validation at write time; the worker checks before use.
as_config(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('cfg_other', 'cfg.contacts', 'cfg_hubspot', 'companies', 'id::text', 'domain');
});
psql_ok("SELECT switchboard.wait_idle('30 s')");
psql_ok("DELETE FROM hijack_log");
json_delete("$base/_control/requests");
as_config(qq{
SET check_function_bodies = off;
INSERT INTO switchboard.mappings (route, remote_field, push_expr)
VALUES ('cfg_push', 'smuggled', '1); INSERT INTO public.hijack_log VALUES (current_user, ''smuggled''); SELECT (1');
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('elsewhere', 'hubspot', 'http://localhost:$port');
UPDATE switchboard.routes SET endpoint = 'elsewhere' WHERE name = 'cfg_other';
});
as_config("INSERT INTO cfg.contacts (email, first_name) VALUES ('c\@x.com', 'C')");
ok(wait_for('the worker to refuse and disable the route',
		sub { psql_ok("SELECT coalesce(last_error, '') FROM switchboard.route_status WHERE route = 'cfg_push'") =~ /not used.*not a single SQL expression/ }, 30),
	'route_status names the definition the worker refused');
is(psql_ok("SELECT enabled FROM switchboard.routes WHERE name = 'cfg_push'"), 'f', 'the refused route is disabled');
like(psql_ok("SELECT last_error FROM switchboard.route_status WHERE route = 'cfg_other'"),
	qr/not used.*not in switchboard.allowed_hosts/, 'an endpoint outside allowed_hosts is refused at use');
usleep(1_000_000);
is(scalar @{ upserts() }, 0, 'nothing was sent for either route');
is(psql_ok("SELECT count(*) FROM hijack_log WHERE what = 'smuggled'"), '0', 'the smuggled statement never ran');
is(psql_ok("SELECT pending FROM switchboard.route_status WHERE route = 'cfg_push'"), '1', 'the change is kept');
# a refused route does not hold up the others
psql_ok(q{
CREATE TABLE accounts (id int PRIMARY KEY, name text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('accounts_hs', 'accounts', 'hubspot', 'companies', 'id::text', 'account_id');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('accounts_hs', 'name', 'name');
INSERT INTO accounts VALUES (1, 'Acme');
});
ok(wait_for('another route to deliver',
		sub { psql_ok("SELECT delivered FROM switchboard.route_status WHERE route = 'accounts_hs'") eq '1' }, 30),
	'other routes go on');
# fixed, the kept change goes out
as_config("DELETE FROM switchboard.mappings WHERE remote_field = 'smuggled'; DELETE FROM switchboard.routes WHERE name = 'cfg_other'; "
	  . "UPDATE switchboard.routes SET enabled = true, disabled_reason = NULL WHERE name = 'cfg_push'");

ok(wait_for('the kept change', sub { psql_ok("SELECT pending FROM switchboard.route_status WHERE route = 'cfg_push'") eq '0' }, 30),
	'once fixed, the kept change is delivered');

# 2. A pull into a system catalog, written with validation switched off, never runs.
as_config(q{
SET check_function_bodies = off;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote, pull_interval)
VALUES ('escalate', 'pg_catalog.pg_authid', 'cfg_hubspot', 'contacts', 'pull', 'rolname::text', 'email', '1 s');
INSERT INTO switchboard.mappings (route, remote_field, pull_column, pull_expr) VALUES
  ('escalate', 'email', 'rolname', NULL), ('escalate', 'firstname', 'rolsuper', 'true');
});
ok(wait_for('the pull to be refused',
		sub { psql_ok("SELECT coalesce(last_error, '') FROM switchboard.pull_status WHERE route = 'escalate'") =~ /system catalog/ }, 30),
	'pull_status says why the route is not pulled');
is(psql_ok("SELECT rolsuper FROM pg_roles WHERE rolname = 'sb_config'"), 'f', 'the role did not become superuser');
psql_ok("DELETE FROM switchboard.routes WHERE name = 'escalate'");

# 2. A pull writes, and evaluates its key, as the route's owner.
psql_ok("DELETE FROM hijack_log");
as_config(q{
CREATE TABLE cfg.leads (id serial PRIMARY KEY, email text, first_name text);
INSERT INTO cfg.leads (email, first_name) VALUES ('lead@x.com', 'Local');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, direction, match_local, match_remote, conflict, pull_interval)
VALUES ('cfg_leads', 'cfg.leads', 'cfg_hubspot', 'contacts', 'both', 'cfg.key_of(email)', 'email', 'remote', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column) VALUES
  ('cfg_leads', 'email', 'lower(email)', 'email'), ('cfg_leads', 'firstname', 'first_name', 'first_name');
});
# a local change waiting for its retry, so the pull has to work out its key
psql_ok(q{INSERT INTO switchboard.queue (route, op, new, captured_at, next_attempt_at)
SELECT 'cfg_leads', 'update', row_to_json(l), now(), now() + interval '1 hour' FROM cfg.leads l});
my $res = HTTP::Tiny->new->request('PUT', "$base/_control/records/hubspot/contacts/lead\@x.com",
	{ headers => { 'Content-Type' => 'application/json' },
	  content => JSON::PP->new->encode({ properties => { email => 'lead@x.com', firstname => 'Remote' } }) });
ok($res->{success}, 'a remote record exists');
psql_ok("SELECT switchboard.pull_now('cfg_leads')");
ok(wait_for('the pull', sub { psql_ok("SELECT first_name FROM cfg.leads WHERE email = 'lead\@x.com'") eq 'Remote' }, 30),
	'the remote change was applied')
  or diag(psql_ok("SELECT row_to_json(p) FROM switchboard.pull_status p WHERE route = 'cfg_leads'") . "\n" .
	psql_ok("SELECT string_agg(row_to_json(d)::text, E'\\n') FROM switchboard.deliveries d WHERE route = 'cfg_leads'"));
is(psql_ok("SELECT count(*) > 0 FROM hijack_log WHERE what = 'key'"), 't', 'the key expression ran');
is(hijacks(), '', 'the key expression and the writes ran as the route owner only');
is(psql_ok("SELECT count(*) FROM switchboard.queue WHERE route = 'cfg_leads'"), '0', 'the remote won over the pending change');

# 6. A role that may not drop or rename a database cannot pause its worker.
psql_ok("CREATE ROLE plain LOGIN; CREATE DATABASE other");
my $pid = psql_ok("SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'postgres'");
for my $i (1 .. 5)
{
	$node->psql('other', 'DROP DATABASE postgres', extra_params => [ '-U', 'plain' ]);
	$node->psql('other', 'ALTER DATABASE postgres RENAME TO gone', extra_params => [ '-U', 'plain' ]);
	$node->psql('other', 'CREATE DATABASE copy TEMPLATE postgres', extra_params => [ '-U', 'plain' ]);
}
my $t0 = time;
psql_ok("INSERT INTO accounts VALUES (2, 'Globex')");
ok(wait_for('delivery after the failed commands',
		sub { psql_ok("SELECT delivered FROM switchboard.route_status WHERE route = 'accounts_hs'") eq '2' }, 30),
	'delivered');
my $took = time - $t0;
ok($took < 4, sprintf('delivery was not held up by failing DROP/RENAME/CREATE DATABASE (%.2f s)', $took));
is(psql_ok("SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'postgres'"),
	$pid, 'the worker was not stopped');

$node->stop;
$double->kill_kill;
done_testing();
