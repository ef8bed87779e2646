# Runs belong to their route (SPEC §8 Who acts): deleting a route takes its runs (unfinished and
# failed ones are said so in deliveries), so no later route of that name, another owner's,
# executes them with its own definition; a rename carries them and is refused over runs an
# earlier route of the new name left. Row data in runs (new, old, step outputs) is shown only
# to roles with the privileges of the route's owner.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use JSON::PP;

my ($base, $double) = start_double();
END { $double->kill_kill if $double; }
my $node = new_node('runs_lifecycle', 'switchboard.max_attempts' => 1);
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
SELECT switchboard.grant_admin('alice'); SELECT switchboard.grant_admin('bob');
CREATE SCHEMA a AUTHORIZATION alice; CREATE SCHEMA b AUTHORIZATION bob;
EOS
$node->safe_psql('postgres', <<"EOS");
SET ROLE alice;
CREATE TABLE a.leads (id int PRIMARY KEY, secret text);
INSERT INTO switchboard.endpoints (name, kind, base_url, enabled) VALUES ('ahook', 'webhook', '$base/hooks/a', false);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'a.leads', 'ahook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('leads', 'calc', 5, 'sql', NULL, \$\$jsonb_build_object('s', new.secret, 'q', 1 / (new.id - 2))\$\$),
	('leads', 'tell', 10, 'notify', 'ahook', \$\$jsonb_build_object('id', new.id, 's', new.secret)\$\$);
INSERT INTO a.leads VALUES (1, 'alice-secret'), (2, 'alice-secret2');
EOS
ok(wait_for('alice runs: one waiting at its endpoint, one failed',
		sub { sql($node, "SELECT string_agg(key || ':' || state, ',' ORDER BY id) FROM switchboard.run_queue") eq '1:waiting,2:failed' }),
	'a waiting and a failed run of alice');

# Who sees what.
my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE bob; SELECT count(*) FROM switchboard.run_queue");
like($err, qr/permission denied/, 'a config role cannot read run_queue (row images)');
($rc, $out, $err) = $node->psql('postgres', "SET ROLE bob; SELECT count(*) FROM a.leads");
like($err, qr/permission denied/, 'bob cannot read alice\'s table');
for my $who ('bob', 'watcher') {
	is(sql($node, "SET ROLE $who; SELECT count(*) || ' ' || count(*) FILTER (WHERE new IS NULL AND old IS NULL "
			. "AND steps::text NOT LIKE '%alice-secret%' AND NOT steps->'calc' ? 'output') FROM switchboard.runs"),
		'2 2', "$who sees both runs, none of their row data or step outputs");
	is(sql($node, "SET ROLE $who; SELECT string_agg(key || ':' || state || ':' || current_step || ':' "
			. "|| coalesce(steps->'calc'->>'state', '-') , ',' ORDER BY id) FROM switchboard.runs WHERE key = '1'"),
		'1:waiting:tell:done', "$who sees states and steps");
}
like(sql($node, "SET ROLE bob; SELECT last_error FROM switchboard.runs WHERE key = '2'"), qr/division by zero/,
	'errors are shown as in dead_letters');
is(sql($node, "SET ROLE alice; SELECT (new->>'secret') || ' ' || (steps->'calc'->'output'->>'s') FROM switchboard.runs WHERE key = '1'"),
	'alice-secret alice-secret', 'the route\'s owner sees the row and the step outputs');
is(sql($node, "SELECT count(*) FROM switchboard.runs WHERE new IS NOT NULL"), '2', 'so does the superuser');

# Alice deletes her route: its runs go with it, said so in deliveries.
$node->safe_psql('postgres', "SET ROLE alice; DELETE FROM switchboard.routes WHERE name = 'leads'");
is(sql($node, "SELECT count(*) FROM switchboard.run_queue WHERE route = 'leads'"), '0', 'the deleted route\'s runs are gone');
is(sql($node, "SELECT string_agg(key || ':' || outcome, ',' ORDER BY change_id) FROM switchboard.deliveries WHERE route = 'leads'"),
	'1:discarded,2:discarded', 'each is listed in deliveries as discarded');
like(sql($node, "SELECT min(error) FROM switchboard.deliveries WHERE route = 'leads' AND outcome = 'discarded'"),
	qr/^route "leads" deleted by /, 'saying the route was deleted and by whom');
is(sql($node, "SELECT switchboard.wait_idle('5 s')"), 't', 'nothing waits for the deleted route');

# Bob makes a route of the same name: it runs his own changes only.
$node->safe_psql('postgres', <<"EOS");
SET ROLE bob;
CREATE TABLE b.t (id int PRIMARY KEY, note text);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('bhook', 'webhook', '$base/hooks/b');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'b.t', 'bhook', 'x', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('leads', 'grab', 10, 'notify', 'bhook', \$\$to_jsonb(new)\$\$);
INSERT INTO b.t VALUES (7, 'bob-row');
EOS
is(sql($node, "SELECT switchboard.wait_idle('20 s')"), 't', 'bob\'s run ends');
my @bodies = map { $_->{body}{data} } @{ double_requests($base, '/hooks/') };
is(scalar @bodies, 1, 'one request: bob\'s own change');
is($bodies[0]{note} // '', 'bob-row', 'with bob\'s row');
unlike(JSON::PP->new->canonical->encode(double_requests($base, '/')), qr/alice-secret/,
	'no request carries alice\'s row data');
is(sql($node, "SELECT string_agg(key || ':' || state, ',') FROM switchboard.run_queue"), '7:done', 'only bob\'s run is kept');

# A failed run whose route is gone (left by TRUNCATE or triggers disabled) is not retried.
($rc, $out, $err) = $node->psql('postgres', <<"EOS");
BEGIN;
INSERT INTO switchboard.run_queue (id, route, key, op, new, captured_at, state, current_step, last_error)
VALUES (900001, 'ghost', '1', 'insert', '{"secret": "ghost-row"}', now(), 'failed', 'tell', 'x');
SELECT switchboard.retry(900001::bigint);
EOS
like($err, qr/dead letter 900001 cannot be retried: its route was deleted/, 'retry(id) refuses a run whose route is gone');
($rc, $out, $err) = $node->psql('postgres', <<"EOS");
BEGIN;
INSERT INTO switchboard.run_queue (id, route, key, op, new, captured_at, state, current_step, last_error)
VALUES (900001, 'ghost', '1', 'insert', '{"secret": "ghost-row"}', now(), 'failed', 'tell', 'x');
SELECT switchboard.retry();
SELECT state FROM switchboard.run_queue WHERE id = 900001;
EOS
is($out, "0\nfailed", 'retry() of all leaves it failed');
($rc, $out, $err) = $node->psql('postgres', "SELECT switchboard.retry('ghost')");
like($err, qr/route "ghost" does not exist/, 'retry(route) of a deleted route says so');

# A rename carries the route's runs, and is refused over runs an earlier route of the new name left.
($rc, $out, $err) = $node->psql('postgres', <<"EOS");
BEGIN;
INSERT INTO switchboard.run_queue (id, route, key, op, new, captured_at, state)
VALUES (900002, 'ghost', '1', 'insert', '{"secret": "ghost-row"}', now(), 'pending');
SET ROLE bob;
UPDATE switchboard.routes SET name = 'ghost' WHERE name = 'leads';
EOS
like($err, qr/route "leads" cannot be renamed to "ghost": runs of an earlier route of that name are still kept/,
	'a rename onto leftover runs is refused');
$node->safe_psql('postgres', "SET ROLE bob; UPDATE switchboard.routes SET name = 'leads2' WHERE name = 'leads'");
is(sql($node, "SELECT string_agg(route || ':' || key, ',') FROM switchboard.run_queue"), 'leads2:7', 'a rename carries the runs');
is(sql($node, "SET ROLE bob; SELECT new->>'note' FROM switchboard.runs WHERE route = 'leads2'"), 'bob-row',
	'still shown to their owner under the new name');

# A new route never takes over runs left under its name.
$node->safe_psql('postgres', <<"EOS");
BEGIN;
INSERT INTO switchboard.run_queue (id, route, key, op, new, captured_at, state)
VALUES (900003, 'ghost', '1', 'insert', '{"secret": "ghost-row"}', now(), 'pending');
SET ROLE bob;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('ghost', 'b.t', 'bhook', 'x', 'id::text', '{insert}');
COMMIT;
EOS
is(sql($node, "SELECT count(*) FROM switchboard.run_queue WHERE route = 'ghost'"), '0', 'a new route drops runs left under its name');
like(sql($node, "SELECT error FROM switchboard.deliveries WHERE change_id = 900003"), qr/a new route of that name was created/,
	'said so in deliveries');

# Nor the changes an earlier route of its name left queued (pending until the worker sets them
# aside, then dead letters): creating the route is refused until they are dealt with.
($rc, $out, $err) = $node->psql('postgres', <<"EOS");
BEGIN;
INSERT INTO switchboard.queue (route, op, new, key, state, captured_at) VALUES ('ghost2', 'insert', '{"secret": "ghost-row"}', '1', 'dead', now());
SET ROLE bob;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('ghost2', 'b.t', 'bhook', 'x', 'id::text', '{insert}');
EOS
like($err, qr/route "ghost2" cannot be created: changes of an earlier route of that name are still queued/,
	'a new route of a name with queued changes of an earlier one is refused');
done_testing();
