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
done_testing();
