# Runs (SPEC §7 Durable, step by step): a step that keeps killing the worker ends failed after
# its max_attempts instead of being sent again after every crash; steps renumbered while runs
# are pending never repeat a completed step.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(usleep);

my ($base, $double) = start_double();
my $node = new_node('crashloop', restart_after_crash => 'on');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text);
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES
	('model', 'openai', '$base', '{"model": "gpt-4o-mini"}'),
	('hook', 'webhook', '$base/hooks/a', '{}'),
	('hook2', 'webhook', '$base/hooks/b', '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options) VALUES
	('leads', 'score', 10, 'enrich', 'model', 'new.email', '{"max_attempts": 2}');
EOS
sub reqs { return double_requests($base, $_[0]); }
sub worker_pid
{
	my $pid = '';
	wait_for('a worker', sub {
		$pid = eval { sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker'") } // '';
		$pid ne '' }, 60);
	return $pid;
}

# Every model call hangs; the worker is killed while each is in flight.
control($base, 'faults', { kind => 'slow', path_prefix => '/v1/', delay_ms => 20000 });
$node->safe_psql('postgres', "INSERT INTO leads VALUES (1, 'boom\@x.io')");
for my $n (1 .. 2)
{
	ok(wait_for("call $n in flight", sub { scalar @{ reqs('/v1/') } >= $n }, 60), "model call $n in flight");
	kill 'KILL', worker_pid();
}
ok(wait_for('the run fails', sub {
	(eval { sql($node, "SELECT state FROM switchboard.runs WHERE key = '1'") } // '') eq 'failed' }, 60),
	'after max_attempts cut short by crashes, the run fails at the step');
sleep 2;
is(scalar @{ reqs('/v1/') }, 2, 'no third call');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE key = '1'"), qr/cut short/, 'the error says why');
json_delete("$base/_control/faults");

# Steps renumbered while a run waits at its second step: the first is not sent again.
json_delete("$base/_control/requests");
$node->safe_psql('postgres', <<"EOS");
DELETE FROM switchboard.steps WHERE route = 'leads';
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('leads', 'first', 1, 'notify', 'hook', \$\$jsonb_build_object('id', new.id)\$\$),
	('leads', 'second', 2, 'notify', 'hook2', \$\$jsonb_build_object('id', new.id)\$\$);
EOS
control($base, 'faults', { kind => 'status', path_prefix => '/hooks/b', status => 503, count => -1 });
$node->safe_psql('postgres', "INSERT INTO leads VALUES (2, 'renum\@x.io')");
ok(wait_for('waiting at the second step', sub {
	sql($node, "SELECT current_step || ':' || state FROM switchboard.runs WHERE key = '2'") eq 'second:waiting' }, 30),
	'the run waits at its second step');
$node->safe_psql('postgres', "UPDATE switchboard.steps SET position = position * 10 WHERE route = 'leads'");
json_delete("$base/_control/faults");
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'the run ends');
is(sql($node, "SELECT state FROM switchboard.runs WHERE key = '2'"), 'done', 'done');
is(scalar @{ reqs('/hooks/a') }, 1, 'the completed first step was not repeated');

# A sql step in which the server crashes (here: the worker is killed outright while the step's
# SQL runs, as a segfault or the OOM killer would; the postmaster then restarts every process):
# after the second crash in a row in that run's step SQL it fails instead of crashing the server
# after every restart; a run beside it is done.
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE crashers (id int PRIMARY KEY, bad boolean);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('crashers', 'crashers', 'hook', 'x', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options) VALUES
	('crashers', 'crash', 10, 'sql', NULL, 'CASE WHEN new.bad THEN pg_sleep(30)::text END', '{"timeout_ms": 600000}');
EOS
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.route_sql_timeout = '60s'; SELECT pg_reload_conf()");
# The worker sleeping in the step's SQL (nothing the step does survives the crash to count it).
sub in_step_sql
{
	my $pid = eval { sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND wait_event = 'PgSleep'") } // '';
	return $pid =~ /^\d+$/ ? $pid : undef;
}
$node->safe_psql('postgres', "INSERT INTO crashers VALUES (1, true)");
for my $n (1 .. 2)
{
	my $pid;
	ok(wait_for("step SQL $n running", sub { $pid = in_step_sql(); defined $pid }, 60), "the step's SQL runs ($n)");
	kill 'KILL', $pid if $pid;
}
ok(wait_for('the crashing run fails', sub {
	(eval { sql($node, "SELECT state FROM switchboard.runs WHERE route = 'crashers' AND key = '1'") } // '') eq 'failed' }, 90),
	'after two crashes in its step SQL the run fails');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE route = 'crashers' AND key = '1'"), qr/crashed 2 times/,
	'saying why');
my $again = 0;
for (1 .. 20) { $again ||= defined in_step_sql(); usleep(100_000); }
ok(!$again, 'its SQL was not run a third time');
$node->safe_psql('postgres', "INSERT INTO crashers VALUES (2, false)");
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'the next run ends');
is(sql($node, "SELECT state FROM switchboard.runs WHERE route = 'crashers' AND key = '2'"), 'done', 'and is done');
done_testing();
