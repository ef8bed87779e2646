# Runs (SPEC §7): a step's options.timeout_ms bounds its own requests (not only the endpoint's
# timeout) and its own SQL: a slow model or a pg_sleep in a step fails that run's step in time,
# and other runs go on meanwhile.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time);

my ($base, $double) = start_double();
my $node = new_node('steptimeout', 'switchboard.max_attempts' => 1);
# Sleeps 30 s the first time (the sequence counts calls whatever rolls back), then returns.
$node->safe_psql('postgres', <<"EOS");
CREATE SEQUENCE slow_calls;
CREATE FUNCTION slow_once() RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
	IF nextval('slow_calls') = 1 THEN
		PERFORM pg_sleep(30);
	END IF;
	RETURN 'ok';
END \$\$;
EOS
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text, note text);
-- Catches every cancel: only ending the worker stops it.
CREATE FUNCTION stubborn() RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
	LOOP
		BEGIN
			PERFORM pg_sleep(10);
		EXCEPTION WHEN query_canceled THEN
			NULL;
		END;
	END LOOP;
END \$\$;
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES
	('model', 'openai', '$base', '{"model": "gpt-4o-mini", "timeout_ms": 30000}'),
	('hook', 'webhook', '$base/hooks/done', '{"timeout_ms": 30000}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, run_if, input, options) VALUES
	('leads', 'score', 10, 'enrich', 'model', \$\$new.note = 'ai'\$\$, 'new.email', '{"timeout_ms": 400}'),
	('leads', 'wait', 20, 'sql', NULL, \$\$new.note = 'sleep'\$\$, 'pg_sleep(20)::text', '{"timeout_ms": 300}'),
	('leads', 'tell', 30, 'notify', 'hook', \$\$new.note = 'tell'\$\$, \$\$jsonb_build_object('id', new.id)\$\$,
	 '{"timeout_ms": 400}'),
	('leads', 'stubborn', 40, 'sql', NULL, \$\$new.note = 'stubborn'\$\$, 'stubborn()', '{"timeout_ms": 300}'),
	-- A long limit of its own: switchboard.route_sql_timeout, the superuser's, bounds it.
	('leads', 'capped', 50, 'sql', NULL, \$\$new.note = 'capped'\$\$, 'pg_sleep(20)::text', '{"timeout_ms": 600000}'),
	('leads', 'slow_once', 60, 'sql', NULL, \$\$new.note = 'stop'\$\$, 'slow_once()', '{"timeout_ms": 600000}'),
	('leads', 'locker', 70, 'sql', NULL, \$\$new.note = 'lock'\$\$, 'pg_advisory_lock(4242)::text', '{}');
EOS
sub state_of { return sql($node, "SELECT state || ':' || coalesce(current_step, '') FROM switchboard.runs WHERE key = '$_[0]'"); }

# 1. The model answers after 4 s; the step allows 400 ms (the endpoint would wait 30 s).
control($base, 'openai', { latency_ms => 4000 });
my $t0 = time;
$node->safe_psql('postgres', "INSERT INTO leads VALUES (1, 'slow\@x.io', 'ai')");
ok(wait_for('run 1 ends', sub { state_of('1') =~ /^(failed|done)/ }, 30), 'the run with the slow model ends');
my $took = time - $t0;
is(state_of('1'), 'failed:score', 'it failed at the model step');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE key = '1'"), qr/time|Timeout/i, 'saying it timed out');
cmp_ok($took, '<', 3.5, sprintf('within the step\'s timeout, not the model\'s 4 s (%.1f s)', $took));
control($base, 'openai', { latency_ms => 0 });

# 2. A notify step: the hook answers after 4 s, the step allows 400 ms.
control($base, 'faults', [ { path_prefix => '/hooks/', kind => 'slow', delay_ms => 4000, count => 100 } ]);
$t0 = time;
$node->safe_psql('postgres', "INSERT INTO leads VALUES (2, 'n\@x.io', 'tell')");
ok(wait_for('run 2 ends', sub { state_of('2') =~ /^(failed|done)/ }, 30), 'the run with the slow hook ends');
$took = time - $t0;
is(state_of('2'), 'failed:tell', 'it failed at the notify step');
cmp_ok($took, '<', 3.5, sprintf('within the step\'s timeout (%.1f s)', $took));
json_delete("$base/_control/faults");

# 3. A sql step that sleeps 20 s is cancelled after 300 ms; a run beside it is done, and the
#    cancel does not leak into what the worker runs next.
$t0 = time;
$node->safe_psql('postgres', "INSERT INTO leads VALUES (3, 's\@x.io', 'sleep'), (4, 'ok\@x.io', 'tell')");
ok(wait_for('runs 3, 4 end', sub { state_of('3') =~ /^(failed|done)/ && state_of('4') =~ /^(failed|done)/ }, 30),
	'both runs end');
$took = time - $t0;
is(state_of('3'), 'failed:wait', 'the sleeping sql step failed');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE key = '3'"), qr/statement timeout/, 'with the statement timeout');
is(state_of('4'), 'done:', 'the other run is done');
cmp_ok($took, '<', 10, sprintf('well before the 20 s sleep (%.1f s)', $took));
$node->safe_psql('postgres', "INSERT INTO leads VALUES (5, 'later\@x.io', 'tell')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'a later run ends');
is(state_of('5'), 'done:', 'and is done (no stray cancel)');

# 4. Step SQL that catches the cancel: cancelled again and again, and 5 s past its limit the
#    worker ends; the next worker fails that run (instead of running it again) and goes on.
$t0 = time;
$node->safe_psql('postgres', "INSERT INTO leads VALUES (6, 'st\@x.io', 'stubborn'), (7, 'ok7\@x.io', 'tell')");
ok(wait_for('run 6 ends', sub { state_of('6') =~ /^(failed|done)/ }, 40), 'the run whose SQL ignores the cancel ends');
$took = time - $t0;
like(state_of('6'), qr/^failed/, 'failed');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE key = '6'"), qr/ignoring the cancel/, 'saying why');
cmp_ok($took, '<', 25, sprintf('within seconds of its limit and grace (%.1f s)', $took));
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the other runs end');
is(state_of('7'), 'done:', 'the run beside it is done');

# 5. A step's own timeout_ms (10 minutes) cannot lift its SQL past switchboard.route_sql_timeout:
#    a configuration role's step cannot hold the database's worker longer than the DBA allows.
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.route_sql_timeout = '1s'; SELECT pg_reload_conf()");
sleep 1;
$t0 = time;
$node->safe_psql('postgres', "INSERT INTO leads VALUES (8, 'c\@x.io', 'capped')");
ok(wait_for('run 8 ends', sub { state_of('8') =~ /^(failed|done)/ }, 40), 'the capped run ends');
$took = time - $t0;
is(state_of('8'), 'failed:capped', 'failed at its sql step');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE key = '8'"), qr/statement timeout/, 'with the statement timeout');
cmp_ok($took, '<', 8, sprintf('after the 1 s cap, not the step\'s 10 minutes nor the 20 s sleep (%.1f s)', $took));
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.route_sql_timeout = '60s'; SELECT pg_reload_conf()");
sleep 1;

# 6. A stop (SIGTERM) while step SQL runs ends the worker at once, not when the SQL is done;
#    the run is not failed for it: the next worker runs the step again and the run is done.
$node->safe_psql('postgres', "INSERT INTO leads VALUES (9, 'stop\@x.io', 'stop')");
ok(wait_for('the step is sleeping', sub { sql($node, "SELECT is_called FROM slow_calls") eq 't' }, 30),
	'the step SQL is running');
my $pid = sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_for('the worker is gone', sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") eq '0' }, 40),
	'the worker ends');
$took = time - $t0;
cmp_ok($took, '<', 5, sprintf('at once, not after the 30 s sleep (%.1f s)', $took));
$node->safe_psql('postgres', "SELECT switchboard.wake()");
ok(wait_for('run 9 ends', sub { state_of('9') =~ /^(failed|done)/ }, 60), 'the run ends');
is(state_of('9'), 'done:', 'done: the stop did not fail it');
is(sql($node, "SELECT last_value FROM slow_calls"), '2', 'its step ran again once');

# 7. A session-level advisory lock taken by step SQL is not kept by the worker after the step.
$node->safe_psql('postgres', "INSERT INTO leads VALUES (10, 'lock\@x.io', 'lock')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the locking run ends');
is(state_of('10'), 'done:', 'done');
is(sql($node, "SELECT pg_try_advisory_lock(4242)"), 't', 'and the lock is free again');
done_testing();
