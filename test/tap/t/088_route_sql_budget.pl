# switchboard.route_sql_timeout is one budget per route per round for the route's filters, key
# and mappings (review38):
# 1. a backlog whose rows are each fast gets through, even though the whole claim's set-based
#    statement would not fit in the limit (it used to time out, hold the route for a minute,
#    and time out again on the same rows, forever);
# 2. a route whose rows each take most of the limit (after one that raises, so the set-based
#    statement fails at once and the worker goes row by row) costs the other routes about one
#    limit a round, not one limit per row;
# 3. the same for a route with steps: its changes are adopted as runs within the budget;
# 4. an expression that catches the cancel ends the worker past the grace; the next worker holds
#    that route instead of running the same change again and ending too.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time);

my ($base, $double) = start_double();
my $node = new_node('budget');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
ALTER SYSTEM SET switchboard.route_sql_timeout = '500ms';
SELECT pg_reload_conf();
CREATE TABLE leads (id int PRIMARY KEY, email text);
CREATE TABLE slow (id int PRIMARY KEY);
CREATE TABLE fast (id int PRIMARY KEY);
CREATE TABLE staged (id int PRIMARY KEY);
CREATE TABLE stubborn (id int PRIMARY KEY);
CREATE FUNCTION slowish(int) RETURNS int LANGUAGE plpgsql VOLATILE AS \$\$
BEGIN PERFORM pg_sleep(0.02); RETURN \$1; END \$\$;
CREATE FUNCTION sleepy(int) RETURNS int LANGUAGE plpgsql VOLATILE AS \$\$
BEGIN PERFORM pg_sleep(0.4); RETURN \$1; END \$\$;
CREATE FUNCTION stubborn(int) RETURNS int LANGUAGE plpgsql VOLATILE AS \$\$
BEGIN
	LOOP
		BEGIN
			PERFORM pg_sleep(10);
		EXCEPTION WHEN query_canceled THEN
			NULL;
		END;
	END LOOP;
END \$\$;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', '$base/hooks/leads');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations) VALUES
	('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}'),
	('slow', 'slow', 'hook', 'lead', 'id::text', '{insert}'),
	('fast', 'fast', 'hook', 'lead', 'id::text', '{insert}'),
	('staged', 'staged', 'hook', 'lead', 'sleepy(id)::text', '{insert}'),
	('stubborn', 'stubborn', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
	('leads', 'id', 'slowish(id)'),
	('slow', 'id', 'CASE WHEN id = 1 THEN 1 / (id - 1) ELSE sleepy(id) END'),
	('fast', 'id', 'id'),
	('stubborn', 'id', 'stubborn(id)');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('staged', 'tell', 10, 'notify', 'hook', \$\$jsonb_build_object('id', new.id)\$\$);
EOS
sub pending { return sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = '$_[0]' AND state = 'pending'"); }
sub last_error { return sql($node, "SELECT coalesce(last_error, '') FROM switchboard.route_stats WHERE route = '$_[0]'"); }

# 1. 100 rows of 20 ms each: 2 s of mapping for the claim, each row 4% of the limit.
$node->safe_psql('postgres', "INSERT INTO leads VALUES (0, 'first')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'one row (20 ms) is delivered');
$node->safe_psql('postgres', "INSERT INTO leads SELECT g, 'l' || g FROM generate_series(1, 100) g");
ok(wait_for('the backlog of fast rows', sub { pending('leads') eq '0' }, 20),
	'100 rows of 20 ms each are delivered within 20 s');
is(sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'leads'"), '0', 'none of them a dead letter');
diag('leads: ' . last_error('leads'));

# 2. 30 rows of 400 ms each, after one that raises: row by row, one row a round fits.
$node->safe_psql('postgres', "INSERT INTO slow SELECT g FROM generate_series(1, 31) g");
sleep 1; # the worker is in the slow route's rows
my $t0 = time;
$node->safe_psql('postgres', "INSERT INTO fast VALUES (1)");
ok(wait_for('the fast route', sub { pending('fast') eq '0' }, 30), 'the fast route is delivered');
my $took = time - $t0;
diag('slow: ' . last_error('slow') . '; pending ' . pending('slow'));
cmp_ok($took, '<', 6, sprintf('... within about one route_sql_timeout of the slow route (%.1f s)', $took));
like(last_error('slow'), qr/route_sql_timeout.*the rest waits/, 'route_status says the slow route was cut off');
cmp_ok(pending('slow'), '<', 30, 'the slow route makes progress');

# 3. A route with steps whose key takes 400 ms a change: adopted within the budget too.
$node->safe_psql('postgres', "INSERT INTO staged SELECT g FROM generate_series(1, 20) g");
sleep 1;
$t0 = time;
$node->safe_psql('postgres', "INSERT INTO fast VALUES (2)");
ok(wait_for('the fast route again', sub { pending('fast') eq '0' }, 30), 'the fast route is delivered');
$took = time - $t0;
cmp_ok($took, '<', 6, sprintf('... within about one route_sql_timeout of adopting the staged route (%.1f s)', $took));
ok(wait_for('staged changes adopted', sub { sql($node, "SELECT count(*) FROM switchboard.run_queue") > 0 }, 20),
	'the staged route makes progress');

# 4. The cancel caught: the worker ends 5 s past the limit; the next one holds the route.
my $log_at = -s $node->logfile;
$node->safe_psql('postgres', "INSERT INTO stubborn VALUES (1)");
ok(wait_for('the worker ended', sub { slurp_from($node->logfile, $log_at) =~ /due to administrator command/ }, 30),
	'the stubborn expression ends the worker');
ok(wait_for('the next worker holds the route', sub { last_error('stubborn') =~ /previous worker ended/ }, 30),
	'the next worker holds the route, saying why');
my $t1 = time;
$node->safe_psql('postgres', "INSERT INTO fast VALUES (3)");
ok(wait_for('the fast route after the restart', sub { pending('fast') eq '0' }, 30),
	'the other routes are delivered meanwhile');
sleep 20 - (time - $t1) if time - $t1 < 20;
my @ends = (slurp_from($node->logfile, $log_at) =~ /due to administrator command/g);
is(scalar(@ends), 1, 'the worker ended once, not again with the same change');
is(pending('stubborn'), '1', 'the change waits');

done_testing();

sub slurp_from
{
	my ($file, $at) = @_;
	open(my $fh, '<', $file) or die "$file: $!";
	seek($fh, $at, 0);
	local $/;
	my $text = <$fh>;
	close($fh);
	return $text // '';
}
