# Runs (SPEC §7): the local steps of many runs (sql steps, each bounded by its limit) do not hold
# up the database's other routes: a runs round carries runs through their local steps for about
# a second, sends what it has, and lets pushes and pulls have their turn.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time usleep);

my ($base, $double) = start_double();
my $node = new_node('roundbudget');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text);
CREATE TABLE orders (id int PRIMARY KEY, amount int);
-- Counts its calls whatever rolls back, so the test sees the worker inside the runs' SQL.
CREATE SEQUENCE thoughts;
CREATE FUNCTION think() RETURNS text LANGUAGE sql AS \$\$ SELECT nextval('thoughts')::text || pg_sleep(0.3)::text \$\$;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES
	('leads_hook', 'webhook', '$base/hooks/leads'),
	('orders_hook', 'webhook', '$base/hooks/orders');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations) VALUES
	('leads', 'leads', 'leads_hook', 'lead', 'id::text', '{insert}'),
	('orders', 'orders', 'orders_hook', 'order', 'id::text', '{insert}');
-- 300 ms of SQL per run, well within its limit: 40 runs are 12 s of step SQL.
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('leads', 'think', 10, 'sql', NULL, 'think()'),
	('leads', 'tell', 20, 'notify', 'leads_hook', \$\$jsonb_build_object('id', new.id)\$\$);
EOS
$node->safe_psql('postgres', "SELECT switchboard.wait_idle('30 s')");

$node->safe_psql('postgres', "INSERT INTO leads SELECT g, 'l' || g || '\@x.io' FROM generate_series(1, 40) g");
# The worker is in the runs' SQL now.
ok(wait_for('runs started', sub { sql($node, "SELECT last_value FROM thoughts") >= 2 }, 30),
	'the runs are under way');
my $t0 = time;
$node->safe_psql('postgres', "INSERT INTO orders VALUES (1, 100)");
ok(wait_for('the order is delivered', sub { @{ double_requests($base, '/hooks/orders') } >= 1 }, 60),
	'the order of the other route is delivered');
my $took = time - $t0;
cmp_ok($took, '<', 5, sprintf('within seconds, not after the 12 s of the runs\' SQL (%.1f s)', $took));
cmp_ok(sql($node, "SELECT count(*) FROM switchboard.runs WHERE state = 'done'"), '<', 40,
	'while runs were still waiting for their turn');
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'then every run ends');
is(sql($node, "SELECT count(*) FROM switchboard.runs WHERE state = 'done'"), '40', 'all 40 done');
is(scalar @{ double_requests($base, '/hooks/leads') }, 40, 'each notified once');

# A route's filter (evaluated by the worker) that takes 30 s: cut off by
# switchboard.route_sql_timeout, its route waits a minute with the reason in route_status,
# its changes kept, while the other routes' changes go out; a push route and a route with
# steps alike.
$node->safe_psql('postgres', <<"EOS");
ALTER SYSTEM SET switchboard.route_sql_timeout = '1s';
SELECT pg_reload_conf();
CREATE FUNCTION slow_filter(int) RETURNS boolean LANGUAGE plpgsql VOLATILE AS \$\$
BEGIN
	PERFORM pg_sleep(30);
	RETURN true;
END \$\$;
CREATE TABLE slow_push (id int PRIMARY KEY);
CREATE TABLE slow_runs (id int PRIMARY KEY);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations) VALUES
	('slow_push', 'slow_push', 'orders_hook', 'x', 'id::text', '{insert}'),
	('slow_runs', 'slow_runs', 'leads_hook', 'x', 'id::text', '{insert}');
INSERT INTO switchboard.filters (route, name, predicate) VALUES
	('slow_push', 'slow', 'slow_filter(new.id)'),
	('slow_runs', 'slow', 'slow_filter(new.id)');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input)
VALUES ('slow_runs', 'tell', 10, 'notify', 'leads_hook', \$\$jsonb_build_object('slow', new.id)\$\$);
EOS
sleep 1;
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "INSERT INTO slow_push VALUES (1); INSERT INTO slow_runs VALUES (1)");
sleep 1;
$t0 = time;
$node->safe_psql('postgres', "INSERT INTO orders VALUES (2, 200); INSERT INTO leads VALUES (41, 'l41\@x.io')");
ok(wait_for('the others are delivered', sub {
	@{ double_requests($base, '/hooks/orders') } >= 1
	  && (grep { ($_->{body}{data}{id} // 0) == 41 } @{ double_requests($base, '/hooks/leads') }) }, 60),
	'the other routes\' changes are delivered');
$took = time - $t0;
cmp_ok($took, '<', 8, sprintf('within seconds, not after the 30 s filters (%.1f s)', $took));
ok(wait_for('the reason', sub {
	sql($node, "SELECT count(*) FROM switchboard.route_status WHERE route IN ('slow_push', 'slow_runs') "
		  . "AND last_error LIKE '%route_sql_timeout%'") eq '2' }, 30),
	'each slow route says why in route_status');
is(sql($node, "SELECT string_agg(route || ':' || state, ',' ORDER BY route) FROM switchboard.queue WHERE route LIKE 'slow%'"),
	'slow_push:pending,slow_runs:pending', 'their changes are kept, pending');
done_testing();
