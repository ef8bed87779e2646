# The error boundary (src/pg/boundary.h): errors that cross it, in both directions, leave the
# backend usable. One session drives a Postgres error through Guarded (resync's cursor), a
# cancel through Guarded, C++ errors out through Boundary (also into a plpgsql exception block,
# the caller's own PG_TRY), and then raises and catches ordinary errors: a jump buffer left
# dangling by any of them would crash the backend at the next error. Then: a worker waiting on
# an HTTP answer notices the postmaster's death at once, not when the request times out.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my ($base, $double) = start_double();
my $node = new_node('boundary', 'switchboard.http_timeout' => "'60s'");
setup_hubspot_route($node, $base);

# --- one session, many errors ---------------------------------------------------------------
my ($rc, $out, $err) = (0, '', '');
$node->psql('postgres', <<'EOQ', stdout => \$out, stderr => \$err, on_error_stop => 0);
\set VERBOSITY terse
SELECT pg_backend_pid() AS pid \gset
CREATE TABLE deals (id int PRIMARY KEY, amount numeric, qty int);
INSERT INTO deals VALUES (1, 10, 0), (2, 5, 1);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', 'http://127.0.0.1:9/hook');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, enabled)
VALUES ('deals_hook', 'deals', 'hook', 'deal', 'id::text', false);
SELECT switchboard.resync('deals_hook', 'amount / qty > 1');
SET statement_timeout = '300ms';
SELECT switchboard.resync('deals_hook', 'pg_sleep(2) IS NOT NULL');
RESET statement_timeout;
SELECT switchboard.resync('no_such_route');
DO $$ BEGIN PERFORM switchboard.resync('no_such_route');
EXCEPTION WHEN others THEN RAISE NOTICE 'caught: %', SQLERRM; END $$;
DO $$ BEGIN INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('deals_hook', 'x', 'amount +');
EXCEPTION WHEN others THEN RAISE NOTICE 'caught: %', SQLERRM; END $$;
SELECT 1/0;
DO $$ BEGIN PERFORM 1/0; EXCEPTION WHEN division_by_zero THEN RAISE NOTICE 'still caught'; END $$;
SELECT 'resynced ' || switchboard.resync('deals_hook', 'qty > 0');
SELECT 'same backend ' || (pg_backend_pid() = :pid);
EOQ
like($err, qr/ERROR:  division by zero.*ERROR:  canceling statement due to statement timeout/s,
	'a Postgres error and a cancel inside Guarded come out as errors of the statement');
like($err, qr/ERROR:  route "no_such_route" does not exist/, 'a C++ error leaves through Boundary');
like($err, qr/NOTICE:  caught: route "no_such_route" does not exist/,
	'a C++ error raised through Boundary is caught by the caller\'s exception block');
like($err, qr/NOTICE:  caught: invalid row in switchboard.mappings .*push_expr: syntax error/,
	'so is a Postgres error that went through Guarded, a Subtransaction and Boundary');
like($err, qr/NOTICE:  still caught/, 'later errors land in the right exception block');
like($out, qr/resynced 1/, 'the extension still works in the session');
like($out, qr/same backend true/, 'the same backend served the whole session');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/,
	'no backend crashed');

# --- postmaster death during an HTTP wait ---------------------------------------------------
control($base, 'faults',
	{ path_prefix => '/crm/v3/objects/contacts/batch/upsert', kind => 'timeout', delay_ms => 60000 });
$node->safe_psql('postgres', "INSERT INTO contacts (email) VALUES ('slow\@x.com')");
my $worker;
wait_for(
	'the worker to wait on the slow answer',
	sub {
		$worker = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND query LIKE 'delivering%'");
		return $worker =~ /^\d+$/;
	});
$node->kill9;
my $t0 = time;
wait_for('the worker to exit', sub { kill(0, $worker) == 0 }, 10);
cmp_ok(time - $t0, '<', 5, 'the worker ended soon after the postmaster, not at the HTTP timeout');
# The other children leave by themselves as well: the server starts again once they are gone
# (their shared memory is released), and the test's end stops it.
wait_for('the server to start again', sub { $node->start(fail_ok => 1) }, 60);

done_testing();
