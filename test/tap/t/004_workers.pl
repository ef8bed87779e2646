# Workers (SPEC §1): one per database that has the extension, started by one launcher;
# CREATE/DROP EXTENSION start and stop it; DROP/RENAME DATABASE are never blocked by it;
# switchboard.enabled pauses delivery while capture goes on; a terminated worker is replaced;
# its activity is visible; a commit wakes it without waiting for the safety poll.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time usleep);

my ($base, $double) = start_double();
my $node = new_node('workers');

my @dbs = map { "db$_" } 1 .. 4;

# A database with the extension, an items table and a webhook route to hooks/<db>.
sub setup_db
{
	my ($db) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE items (id serial PRIMARY KEY, name text);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('sink', 'webhook', '$base/hooks/$db');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('items_wh', 'items', 'sink', 'item', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('items_wh', 'name', 'name');
EOS
}

# pid of the worker connected to a database ('' when none).
sub worker_pid
{
	my ($db) = @_;
	return sql($node,
		"SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity "
		  . "WHERE backend_type = 'switchboard worker' AND datname = '$db'");
}

# Names carried by the events a hook received.
sub hook_names
{
	my ($hook) = @_;
	return [ map { $_->{body}{data}{name} // '' } @{ json_get("$base/_control/hooks/$hook") } ];
}

sub hook_count { return scalar @{ json_get("$base/_control/hooks/$_[0]") }; }

# Polls a condition every 20 ms for at most $timeout seconds; returns the seconds it took,
# or undef on timeout.
sub time_until
{
	my ($cond, $timeout) = @_;
	my $start = time;
	while (time - $start < $timeout)
	{
		return time - $start if $cond->();
		usleep(20_000);
	}
	return undef;
}

sub set_conf
{
	my ($name, $value) = @_;
	my $stmt = defined $value ? "ALTER SYSTEM SET $name = '$value'" : "ALTER SYSTEM RESET $name";
	$node->safe_psql('postgres', $stmt);
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	usleep(700_000);    # the worker reloads at once (SIGHUP sets its latch); leave it ample time
}

#### Many databases at once

setup_db($_) for @dbs;
my $in_list = join(',', map { "'$_'" } @dbs);
ok( wait_for(
		'a worker in each of the four databases',
		sub {
			sql($node,
				"SELECT count(*) || '/' || count(DISTINCT datname) FROM pg_stat_activity "
				  . "WHERE backend_type = 'switchboard worker' AND datname IN ($in_list)") eq '4/4';
		},
		20),
	'four databases: four workers, one per database');
is(sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard launcher'"),
	'1', 'one launcher');
is(sql($node,
		"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity "
	  . "WHERE backend_type = 'switchboard worker' AND datname IN ($in_list)"),
	join(',', @dbs), 'pg_stat_activity names the database of each worker');

$node->safe_psql($_, "INSERT INTO items (name) VALUES ('first in $_'), ('second in $_')") for @dbs;
for my $db (@dbs)
{
	is(sql($node, "SELECT switchboard.wait_idle('30 s')", $db), 't', "$db: wait_idle");
	is_deeply([ sort @{ hook_names($db) } ], [ "first in $db", "second in $db" ],
		"$db: its changes reached hooks/$db, and only its own");
}

ok( wait_for(
		'no worker outside the four databases',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker'") eq '4' },
		10),
	'databases without the extension keep no worker: four workers in all');

#### The worker's activity text (and an idle worker really idles)

my $activity = '';
time_until(
	sub {
		$activity = sql($node,
			"SELECT state || ':' || query FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'db1'");
		return $activity eq 'idle:idle';
	},
	3);
is($activity, 'idle:idle', "an idle worker shows state 'idle' and activity 'idle'");
# An idle worker sleeps between safety polls (naptime 200 ms here: 15 polls in 3 s, each a few
# short transactions: the queue, due pulls; due runs only where a route has steps), it does not spin (a spinning worker
# commits thousands).
my $commits_sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'db1'";
my $commits0 = sql($node, $commits_sql);
sleep 3;
my $idle_commits = sql($node, $commits_sql) - $commits0;
ok($idle_commits <= 60, "an idle worker does not spin ($idle_commits transactions in 3 s)");
control($base, 'faults', { path_prefix => '/hooks/db2', kind => 'slow', delay_ms => 1500, count => 1 });
$node->safe_psql('db2', "INSERT INTO items (name) VALUES ('slow one')");
my $seen = '';
time_until(
	sub {
		$seen = sql($node,
			"SELECT state || ':' || query FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'db2'");
		return $seen =~ /delivering/;
	},
	5);
like($seen, qr/^active:delivering 1 change/, 'while a request is in flight the activity says what it does');
is(sql($node, "SELECT switchboard.wait_idle('30 s')", 'db2'), 't', 'the slow delivery completes');

#### CREATE EXTENSION starts a worker, DROP EXTENSION stops it

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE TABLE items (id serial PRIMARY KEY, name text)');
# Leave the launcher time to look at the database without the extension (and set it aside).
sleep 2;
is(worker_pid('fresh'), '', 'a database without the extension keeps no worker');
my $t0 = time;
$node->safe_psql('fresh', 'CREATE EXTENSION switchboard');
my $took = time_until(sub { worker_pid('fresh') ne '' }, 10);
ok(defined $took && time - $t0 < 5,
	sprintf('CREATE EXTENSION starts the worker within 5 s (%.2f s)', defined $took ? time - $t0 : -1));
$node->safe_psql('fresh', <<"EOS");
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('sink', 'webhook', '$base/hooks/fresh');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('items_wh', 'items', 'sink', 'item', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('items_wh', 'name', 'name');
INSERT INTO items (name) VALUES ('fresh row');
EOS
is(sql($node, "SELECT switchboard.wait_idle('30 s')", 'fresh'), 't', 'the new worker delivers');
is_deeply(hook_names('fresh'), ['fresh row'], 'change from the fresh database delivered');

$t0 = time;
my ($ret, $stdout, $stderr) = $node->psql('fresh', 'DROP EXTENSION switchboard');
is($ret, 0, 'DROP EXTENSION succeeds while the worker runs') or diag($stderr);
$took = time_until(sub { worker_pid('fresh') eq '' }, 10);
ok(defined $took && time - $t0 < 5,
	sprintf('DROP EXTENSION stops the worker within 5 s (%.2f s)', defined $took ? time - $t0 : -1));
sleep 2;
is(worker_pid('fresh'), '', 'and no worker comes back for it');

#### DROP DATABASE and ALTER DATABASE ... RENAME are not blocked by a running worker

my $db4_pid = worker_pid('db4');
ok($db4_pid ne '', "db4 has a running worker ($db4_pid)");
$t0 = time;
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE db4');
my $drop_s = time - $t0;
is($ret, 0, 'DROP DATABASE of a database with a running worker succeeds') or diag($stderr);
ok($drop_s < 5, sprintf('and it is quick (%.2f s)', $drop_s));
is(sql($node, "SELECT count(*) FROM pg_database WHERE datname = 'db4'"), '0', 'db4 is gone');
ok(defined time_until(sub { worker_pid('db4') eq '' }, 5), 'no worker left for db4');

ok(worker_pid('db3') ne '', 'db3 has a running worker');
$t0 = time;
($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE db3 RENAME TO db3_renamed');
my $rename_s = time - $t0;
is($ret, 0, 'ALTER DATABASE RENAME of a database with a running worker succeeds') or diag($stderr);
ok($rename_s < 5, sprintf('and it is quick (%.2f s)', $rename_s));
ok(time_until(sub { worker_pid('db3_renamed') ne '' }, 20), 'the renamed database gets its worker back');
$node->safe_psql('db3_renamed', "INSERT INTO items (name) VALUES ('after rename')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')", 'db3_renamed'), 't', 'renamed database: wait_idle');
ok((grep { $_ eq 'after rename' } @{ hook_names('db3') }), 'the renamed database delivers again');

# A database dropped right after CREATE EXTENSION (its worker being started at that moment).
for my $i (1 .. 3)
{
	$node->safe_psql('postgres', "CREATE DATABASE racy$i");
	$node->safe_psql("racy$i", 'CREATE EXTENSION switchboard');
	$t0 = time;
	($ret, $stdout, $stderr) = $node->psql('postgres', "DROP DATABASE racy$i");
	my $s = time - $t0;
	is($ret, 0, "DROP DATABASE right after CREATE EXTENSION succeeds (round $i)") or diag($stderr);
	ok($s < 5, sprintf('and is quick (%.2f s)', $s));
}

#### switchboard.enabled = off pauses delivery, capture goes on

set_conf('switchboard.enabled', 'off');
my $before = hook_count('db1');
$node->safe_psql('db1', "INSERT INTO items (name) VALUES ('paused $_')") for 1 .. 5;
is(sql($node, "SELECT pending FROM switchboard.route_status WHERE route = 'items_wh'", 'db1'),
	'5', 'capture goes on while disabled: 5 pending');
sleep 2;
is(hook_count('db1'), $before, 'nothing reaches the remote for 2 s while disabled');
is(sql($node, "SELECT pending FROM switchboard.route_status WHERE route = 'items_wh'", 'db1'),
	'5', 'still 5 pending');
ok(worker_pid('db1') ne '', 'the worker stays up while paused');
set_conf('switchboard.enabled', 'on');
is(sql($node, "SELECT switchboard.wait_idle('30 s')", 'db1'), 't', 'enabled again: wait_idle');
is(scalar(grep { /^paused \d$/ } @{ hook_names('db1') }), 5, 'the paused changes are delivered');

#### pg_terminate_backend(worker): it exits promptly and the launcher starts a new one

my $old_pid = worker_pid('db2');
like($old_pid, qr/^\d+$/, "db2 has one worker ($old_pid)");
is(sql($node, "SELECT pg_terminate_backend($old_pid)"), 't', 'pg_terminate_backend on the worker');
ok(defined time_until(sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $old_pid") eq '0' }, 3),
	'the worker exits promptly');
my $new_pid = '';
ok(defined time_until(sub { $new_pid = worker_pid('db2'); $new_pid =~ /^\d+$/ && $new_pid ne $old_pid }, 5),
	"the launcher starts a new worker within 5 s (pid $old_pid -> $new_pid)");
$node->safe_psql('db2', "INSERT INTO items (name) VALUES ('after terminate')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')", 'db2'), 't', 'new worker: wait_idle');
ok((grep { $_ eq 'after terminate' } @{ hook_names('db2') }), 'the new worker delivers');
is(sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard launcher'"),
	'1', 'still one launcher');

#### A commit wakes the worker: with a 10 s safety poll, delivery still takes well under 2 s

set_conf('switchboard.naptime', '10s');
is(sql($node, "SHOW switchboard.naptime"), '10s', 'naptime is 10 s');
sleep 1;    # the worker is now in its 10 s sleep
for my $i (1 .. 3)
{
	my $count = hook_count('db1');
	$t0 = time;
	$node->safe_psql('db1', "INSERT INTO items (name) VALUES ('woken $i')");
	$took = time_until(sub { hook_count('db1') > $count }, 5);
	ok(defined $took && $took < 2,
		sprintf('commit %d wakes the worker: delivered in %.2f s', $i, defined $took ? $took : -1));
	usleep(500_000);
}

# With that long safety poll, dropping the extension still stops the worker within seconds.
$t0 = time;
($ret, $stdout, $stderr) = $node->psql('db1', 'DROP EXTENSION switchboard CASCADE');
is($ret, 0, 'with naptime 10 s, DROP EXTENSION succeeds') or diag($stderr);
$took = time_until(sub { worker_pid('db1') eq '' }, 12);
ok(defined $took && time - $t0 < 5,
	sprintf('with naptime 10 s, DROP EXTENSION stops the worker within 5 s (%.2f s)', defined $took ? time - $t0 : -1));
set_conf('switchboard.naptime', undef);

$node->stop;
$double->kill_kill;
done_testing();
