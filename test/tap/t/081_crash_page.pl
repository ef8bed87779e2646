# The page that remembers which run's step SQL was running when the server crashed
# ($PGDATA/switchboard/step_sql.<database oid>, SPEC §7):
#  1. two crashes that catch the same run in two of its steps' SQL, its first step's SQL having
#     returned in between, do not condemn it (the count starts again when step SQL returns);
#  2. a worker stopped after it found a run condemned, before the failing committed, leaves the
#     verdict to the next worker;
#  3. a link planted in place of the page is not followed (and the worker says it runs without
#     the guard);
#  4. marks of another cluster (a copy of the data directory) are ignored;
#  5. nor is a link planted in place of the directory followed.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my ($base, $double) = start_double();
my $node = new_node('crash_page', restart_after_crash => 'on', 'switchboard.route_sql_timeout' => '60s');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text);
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('hook', 'webhook', '$base/hooks/a', '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options) VALUES
	('leads', 'first', 10, 'sql', NULL, 'CASE WHEN new.id = 1 THEN pg_sleep(4)::text END', '{}'),
	('leads', 'second', 20, 'sql', NULL, 'CASE WHEN new.id = 1 THEN pg_advisory_xact_lock(4244)::text END', '{}'),
	('leads', 'crash', 30, 'sql', NULL, 'CASE WHEN new.id = 2 THEN pg_sleep(20)::text END', '{}');
EOS

sub up
{
	wait_for('the server back', sub { (eval { sql($node, 'SELECT 1') } // '') eq '1' }, 60);
}
sub worker_in
{
	my ($type, $event) = @_;
	my $pid = eval { sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' "
		  . "AND datname = 'postgres' AND wait_event_type = '$type' AND wait_event = '$event'") } // '';
	return $pid =~ /^\d+$/ ? $pid : undef;
}
sub hold_lock
{
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		'SELECT pg_advisory_lock(4244), pg_sleep(600)' ], '>', \$out, '2>', \$err);
	wait_for('the lock held', sub {
		sql($node, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4244 AND granted") eq '1' }, 20);
	return $h;
}
sub state_of
{
	my ($key) = @_;
	return eval { sql($node, "SELECT state FROM switchboard.runs WHERE route = 'leads' AND key = '$key'") } // '';
}

# ---------------------------------------------------------------------------------------
# 1. one crash in the first step's SQL, one in the second's
my $holder = hold_lock();
$node->safe_psql('postgres', "INSERT INTO leads VALUES (1, 'one\@x.io')");
my $pid;
ok(wait_for('the first step sleeping', sub { $pid = worker_in('Timeout', 'PgSleep'); defined $pid }, 60),
	'the worker is in the first step\'s SQL');
kill 'KILL', $pid;
$holder->kill_kill;
up();
$holder = hold_lock();
ok(wait_for('the second step waiting', sub { $pid = worker_in('Lock', 'advisory'); defined $pid }, 60),
	'after the restart the first step\'s SQL returned, the second\'s waits');
kill 'KILL', $pid;
$holder->kill_kill;
up();
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'settled');
is(state_of('1'), 'done', 'the run is done: two crashes in different steps\' SQL did not condemn it');

# ---------------------------------------------------------------------------------------
# 2. the worker is stopped between finding a run condemned and committing its failing.
# A change of another route whose key expression sleeps: queued while the worker is in the
# crashing step's SQL, so the next worker adopts it after it found the run condemned.
$node->safe_psql('postgres', <<"EOS");
CREATE FUNCTION slow_key(int) RETURNS text LANGUAGE sql AS \$\$ SELECT pg_sleep(3); SELECT \$1::text \$\$;
CREATE TABLE others (id int PRIMARY KEY);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('others', 'others', 'hook', 'other', 'slow_key(id)', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('others', 'noop', 10, 'sql', NULL, '1');
EOS
$node->safe_psql('postgres', "INSERT INTO leads VALUES (2, 'two\@x.io')");
ok(wait_for('crashing step SQL 1', sub { $pid = worker_in('Timeout', 'PgSleep'); defined $pid }, 60), 'in step SQL (1)');
kill 'KILL', $pid;
up();
ok(wait_for('crashing step SQL 2', sub { $pid = worker_in('Timeout', 'PgSleep'); defined $pid }, 60), 'in step SQL (2)');
$node->safe_psql('postgres', "INSERT INTO others VALUES (1)");
kill 'KILL', $pid;
up();
# The new worker found the run condemned; it now computes the other route's key (sleeping).
ok(wait_for('the worker adopting', sub { $pid = worker_in('Timeout', 'PgSleep'); defined $pid }, 60),
	'the next worker sleeps in the other route\'s key');
isnt(state_of('2'), 'failed', 'the run is not failed yet');
sql($node, "SELECT pg_terminate_backend($pid)");
ok(wait_for('the run fails', sub { state_of('2') eq 'failed' }, 60), 'the worker after it fails the run');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE route = 'leads' AND key = '2'"), qr/crashed 2 times/,
	'saying why');

# ---------------------------------------------------------------------------------------
# 3. a link in place of the page
$node->safe_psql('postgres', 'CREATE DATABASE linked');
my $oid = sql($node, "SELECT oid FROM pg_database WHERE datname = 'linked'");
my $target = $node->basedir . '/target';
PostgreSQL::Test::Utils::append_to_file($target, '');
my $page = $node->data_dir . "/switchboard/step_sql.$oid";
symlink($target, $page) or die "symlink: $!";
my $log_offset = -s $node->logfile;
$node->safe_psql('linked', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY);
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('hook', 'webhook', '$base/hooks/b', '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 's', 10, 'sql', NULL, '1');
INSERT INTO leads VALUES (1);
EOS
is(sql($node, "SELECT switchboard.wait_idle('60 s')", 'linked'), 't', 'runs go on without the page');
ok(!-s $target, 'the file the link points to is not written');
ok(-l $page, 'the link is left as it is');
my $log = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_offset);
like($log, qr/cannot open "switchboard\/step_sql\.$oid".*no crash guard/, 'the worker says it runs without the guard');

# ---------------------------------------------------------------------------------------
# 4. marks copied from another cluster: in step SQL at a crash, once already
$node->safe_psql('postgres', 'CREATE DATABASE copied');
$oid = sql($node, "SELECT oid FROM pg_database WHERE datname = 'copied'");
$node->safe_psql('copied', <<"EOS");
CREATE EXTENSION switchboard;
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('hook', 'webhook', '$base/hooks/c', '{}');
CREATE TABLE leads (id int PRIMARY KEY);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations, enabled)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}', false);
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 's', 10, 'sql', NULL, '1');
EOS
# A run of a disabled route: never executed here, only failed if the marks are believed.
my $run = sql($node, "INSERT INTO switchboard.run_queue (id, route, key, op, new, captured_at, position, current_step) "
	  . "VALUES (nextval('switchboard.queue_id_seq'), 'leads', '1', 'insert', '{\"id\": 1}', now(), 10, 's') RETURNING id",
	'copied');
my $worker = '';
wait_for('the worker of copied', sub {
	$worker = sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'copied'");
	$worker ne '' }, 60);
sleep 1;
$page = $node->data_dir . "/switchboard/step_sql.$oid";
ok(-f $page, 'the worker has its page');
open(my $fh, '+<', $page) or die "open $page: $!";
binmode $fh;
# in_sql, suspect, crashes, then the stamp of another cluster
print $fh pack('Q<8', $run, $run, 1, 1, 1, $oid, 0, 0);
close $fh;
sql($node, "SELECT pg_terminate_backend($worker)");
wait_for('a new worker of copied', sub {
	my $now = sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'copied'");
	$now ne '' && $now ne $worker }, 60);
sleep 3;
is(sql($node, "SELECT state FROM switchboard.run_queue WHERE id = $run", 'copied'), 'pending',
	'marks stamped by another cluster are ignored');

# ---------------------------------------------------------------------------------------
# 5. the directory replaced by a link: not followed either
my $dir = $node->data_dir . '/switchboard';
rename($dir, "$dir.moved") or die "rename: $!";
symlink("$dir.moved", $dir) or die "symlink: $!";
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE dirlinked');
$oid = sql($node, "SELECT oid FROM pg_database WHERE datname = 'dirlinked'");
$node->safe_psql('dirlinked', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY);
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('hook', 'webhook', '$base/hooks/d', '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES ('leads', 's', 10, 'sql', NULL, '1');
EOS
ok(wait_for('the worker says so', sub {
	substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_offset)
	  =~ /cannot open directory "switchboard".*no crash guard/ }, 30), 'a linked directory is not followed');
ok(!-e "$dir.moved/step_sql.$oid", 'no page is made through it');
done_testing();
