# Faults while a route's changes are claimed stay with that route, and a transient one is no
# verdict on the definition (issue 9 item 5):
#  1. a value jsonb holds but JSON numbers cannot (numeric 1e400) fails that change alone; the
#     other changes of the route and the other routes are delivered;
#  2. a lock timeout while the worker checks or evaluates a route (a filter reads a table
#     another session holds locked) holds that route for a round: it is not disabled, its
#     capture triggers stay, and its change is delivered once the lock is gone.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('claim_faults', lock_timeout => "'300ms'");
setup_hubspot_route($node, $base);
$node->safe_psql('postgres', qq{
CREATE TABLE metrics (id int PRIMARY KEY, v numeric);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('metrics_hook', 'webhook', '$base/hooks/metrics');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('metrics_wh', 'metrics', 'metrics_hook', 'metric', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('metrics_wh', 'v', 'v');
CREATE TABLE gate (open boolean);
INSERT INTO gate VALUES (true);
CREATE TABLE gated (id int PRIMARY KEY, note text);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('gated_hook', 'webhook', '$base/hooks/gated');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('gated_wh', 'gated', 'gated_hook', 'gated', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('gated_wh', 'note', 'note');
INSERT INTO switchboard.filters (route, name, predicate) VALUES ('gated_wh', 'gate_open', '(SELECT open FROM gate LIMIT 1)');
});
sub wait_idle { return sql($node, "SELECT switchboard.wait_idle('60 s')"); }
sub hooks { my ($path) = @_; return scalar grep { $_->{path} eq $path } @{ double_requests($base, '/hooks/') }; }

# ---------------------------------------------------------------------------------------
# 1. a number JSON cannot carry
$node->safe_psql('postgres', q{
INSERT INTO metrics VALUES (1, 1e400), (2, 2);
INSERT INTO contacts (email, first_name) VALUES ('c@x.com', 'C');
});
is(wait_idle(), 't', 'the changes settle');
is(hooks('/hooks/metrics'), 1, 'the other change of the route is delivered');
is(sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'contacts_hs'"), 0,
	'the other route is delivered');
like(sql($node, "SELECT key || ': ' || last_error FROM switchboard.dead_letters WHERE route = 'metrics_wh'"),
	qr/^1: .*cannot be sent as JSON/, 'the change alone is a dead letter, with its key and the reason');

# ---------------------------------------------------------------------------------------
# 2. a lock timeout
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE');
$node->safe_psql('postgres', q{INSERT INTO gated VALUES (1, 'n')});
ok( wait_for('the route to be held',
		sub { sql($node, "SELECT coalesce(last_error, '') FROM switchboard.route_status WHERE route = 'gated_wh'") =~ /lock timeout|held/ },
		30),
	'the route shows the lock timeout');
is(sql($node, "SELECT enabled FROM switchboard.routes WHERE name = 'gated_wh'"), 't', 'it is not disabled');
is(sql($node, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'gated'::regclass AND tgname LIKE 'switchboard_%'"), 3,
	'its capture triggers stay');
$holder->query_safe('COMMIT');
is(wait_idle(), 't', 'once the lock is gone the change settles');
is(hooks('/hooks/gated'), 1, 'and is delivered');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters WHERE route = 'gated_wh'"), 0, 'not a dead letter');
$holder->quit;

$node->stop;
done_testing();
