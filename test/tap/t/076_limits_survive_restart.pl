# A worker's rate limit and circuit breaker outlive the worker (issue 13 review, item 1): a
# worker that stops (pg_terminate_backend) or makes room for another database, and is started
# again mid-window, still honours rate_limit at the remote's clock, and a backing-off endpoint
# stays backed off. The double records when each request arrived.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my ($base, $double) = start_double();
my $node = new_node('limitsurvive', 'switchboard.max_workers' => 1);
my ($count, $window_ms) = (4, 5000);
my $options = qq({"batch_size": 1, "rate_limit": "$count/${window_ms}ms"});
$node->safe_psql('postgres', 'CREATE DATABASE other');
setup_hubspot_route($node, $base, options => $options);
setup_hubspot_route($node, $base, db => 'other');
my $path = '/crm/v3/objects/contacts/batch/upsert';

sub worker_pid
{
	my ($db) = @_;
	return sql($node,
		"SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = '$db'"
	);
}

# Arrival times of this database's requests at the double.
sub arrivals
{
	my ($prefix) = @_;
	my @at = sort { $a <=> $b }
	  map { $_->{at_ms} }
	  grep { my $b = $_->{body}; ref $b eq 'HASH' && ($b->{inputs}[0]{id} // '') =~ /^$prefix/ }
	  @{ double_requests($base, $path) };
	return @at;
}

sub n_arrivals { my @a = arrivals(@_); return scalar @a; }

sub busiest { return busiest_window($window_ms, @_); }

ok(wait_for('a worker for postgres', sub { worker_pid('postgres') != 0 }, 30), 'the worker runs');
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'settled');
json_delete("$base/_control/requests");

# 1. Stopped mid-window: 8 changes, the limit sends 4, the worker is terminated while it waits
# for the window; the worker started again must wait for the rest of the same window.
$node->safe_psql('postgres',
	"INSERT INTO contacts (email, first_name) SELECT 'a' || g || '\@x.com', 'A' FROM generate_series(1, 8) g");
ok(wait_for('four sent', sub { n_arrivals('a') >= 4 }, 30), 'the first four are sent');
sleep 0.5;
my $pid = worker_pid('postgres');
sql($node, "SELECT pg_terminate_backend($pid)");
ok( wait_for(
		'a new worker',
		sub { my $p = worker_pid('postgres'); $p != 0 && $p != $pid },
		10),
	'a new worker is started mid-window');
ok(wait_for('all eight sent', sub { n_arrivals('a') >= 8 }, 30), 'all eight are sent');
my @a = arrivals('a');
cmp_ok(busiest(@a), '<=', $count,
	"at the double's clock, at most $count in any $window_ms ms across the restart (" . busiest(@a) . ')');

# 2. Made room mid-window: the worker delivers 4, goes idle, makes room for 'other' (max_workers
# 1), and is started again for 4 more changes while the window of the first four still runs.
sleep($window_ms / 1000 + 0.5);
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'settled');
$node->safe_psql('postgres',
	"INSERT INTO contacts (email, first_name) SELECT 'b' || g || '\@x.com', 'B' FROM generate_series(1, 4) g");
ok(wait_for('four sent', sub { n_arrivals('b') >= 4 }, 30), 'four sent');
$pid = worker_pid('postgres');
$node->safe_psql('other', "INSERT INTO contacts (email, first_name) VALUES ('o1\@x.com', 'O')");
ok(wait_for('the worker made room', sub { worker_pid('postgres') == 0 }, 10), 'the worker makes room for other');
ok(wait_for('other delivered', sub { n_arrivals('o') >= 1 }, 10), 'other is served');
$node->safe_psql('postgres',
	"INSERT INTO contacts (email, first_name) SELECT 'c' || g || '\@x.com', 'C' FROM generate_series(1, 4) g");
ok(wait_for('all sent', sub { n_arrivals('c') >= 4 }, 30), 'the four later changes are sent');
isnt(worker_pid('postgres'), $pid, 'by a worker started again');
my @bc = sort { $a <=> $b } (arrivals('b'), arrivals('c'));
cmp_ok(busiest(@bc), '<=', $count,
	"at most $count in any $window_ms ms across making room (" . busiest(@bc) . ')');

# 3. The breaker: the remote answers 503 with Retry-After 60, the endpoint backs off for a
# minute; a worker started again meanwhile must not send a new change before then.
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'settled');
control($base, 'faults', { kind => 'status', status => 503, retry_after => 60, path_prefix => $path });
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('d1\@x.com', 'D')");
ok( wait_for(
		'the endpoint backing off',
		sub { sql($node, "SELECT coalesce(string_agg(state, ','), '') FROM switchboard.endpoint_status") eq 'backing_off' },
		30),
	'the endpoint backs off for the Retry-After');
my $sent = n_arrivals('d');
$pid = worker_pid('postgres');
sql($node, "SELECT pg_terminate_backend($pid)");
ok(wait_for('a new worker', sub { my $p = worker_pid('postgres'); $p != 0 && $p != $pid }, 10), 'restarted');
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('d2\@x.com', 'D')");
sleep 3;
is(n_arrivals('d'), $sent, 'the restarted worker keeps backing off: no request before the Retry-After');
json_delete("$base/_control/faults");

$node->stop;
done_testing();
