# Runs (SPEC §7, §8 Hostile remote answers): a run whose step cannot be recorded (a model
# answer jsonb refuses, a sql value the worker cannot read) fails at that step, once: it is
# neither asked again round after round, nor holds up the other runs of its round.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('poison', 'switchboard.max_attempts' => 3);
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text, note text);
INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES
	('model', 'openai', '$base', '{"model": "gpt-4o-mini", "max_concurrency": 8}'),
	('hook', 'webhook', '$base/hooks/done', '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, run_if, input) VALUES
	('leads', 'big', 5, 'sql', NULL, NULL, \$\$CASE WHEN new.note = 'huge' THEN '1e1000'::jsonb ELSE '1'::jsonb END\$\$),
	('leads', 'score', 10, 'enrich', 'model', NULL, 'new.email'),
	('leads', 'tell', 20, 'notify', 'hook', NULL, \$\$jsonb_build_object('id', new.id)\$\$);
EOS
sub reqs { return double_requests($base, $_[0]); }

# The model answers one prompt with a string jsonb cannot hold (\\u0000).
control($base, 'openai', { rules => [ { match => 'nul@', content => '{"note": "a\\u0000b"}' } ] });
$node->safe_psql('postgres', "INSERT INTO leads VALUES (1, 'nul\@x.io', ''), (2, 'ok2\@x.io', ''), (3, 'ok3\@x.io', '')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'every run ends');
is(sql($node, "SELECT string_agg(key || ':' || state, ',' ORDER BY id) FROM switchboard.runs WHERE key::int < 10"), '1:failed,2:done,3:done',
	'the run with the unstorable answer fails; the others of its round are done');
like(sql($node, "SELECT current_step || ': ' || last_error FROM switchboard.runs WHERE key = '1'"), qr/^score: .*/,
	'it failed at the model step, saying why');
my $calls = grep { ($_->{body}{messages}[-1]{content} // '') =~ /nul@/ } @{ reqs('/v1/') };
is($calls, 1, 'the model was asked once, not round after round');
is(scalar @{ reqs('/hooks/') }, 2, 'each other run notified once (none repeated)');

# A sql step whose value the worker cannot read (a number out of double range).
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "INSERT INTO leads VALUES (10, 'a\@x.io', 'huge'), (11, 'b\@x.io', '')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'both runs end');
is(sql($node, "SELECT string_agg(key || ':' || state, ',' ORDER BY id) FROM switchboard.runs WHERE key::int >= 10"),
	'10:failed,11:done', 'the unreadable value fails its run only');
is(sql($node, "SELECT current_step FROM switchboard.runs WHERE key = '10'"), 'big', 'at the sql step');

# A model answer that does not match the step's json_schema (a compatible server may ignore the
# response format): the run fails at that step, once, and the tokens spent are still counted.
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE scored (id int PRIMARY KEY, email text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('scored', 'scored', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options) VALUES
	('scored', 'score', 10, 'enrich', 'model', 'new.email',
	 '{"json_schema": {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"], "additionalProperties": false}}');
EOS
control($base, 'openai', { rules => [ { match => 'words@', content => '{"score": "high"}' }, { match => 'fine@', content => '{"score": 7}' } ],
	usage => { prompt_tokens => 11, completion_tokens => 3 } });
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "INSERT INTO scored VALUES (1, 'words\@x.io'), (2, 'fine\@x.io')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'both scored runs end');
is(sql($node, "SELECT string_agg(key || ':' || state, ',' ORDER BY id) FROM switchboard.runs WHERE route = 'scored'"),
	'1:failed,2:done', 'the answer that does not match the schema fails its run; the matching one is done');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE route = 'scored' AND key = '1'"),
	qr/model answer does not match json_schema: \$\.score: expected integer/, 'naming where and why');
is(scalar @{ reqs('/v1/') }, 2, 'the model was asked once per run (a mismatch is not retried)');
is(sql($node, "SELECT calls || ':' || prompt_tokens FROM switchboard.ai_usage WHERE route = 'scored'"), '2:22',
	'the tokens of the refused answer are counted too');

# A writeback whose input is a remote answer as a whole: the answer cannot move the row to
# another key.
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE moved (id int PRIMARY KEY, email text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('moved', 'moved', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('moved', 'ask', 10, 'enrich', 'model', 'new.email'),
	('moved', 'save', 20, 'writeback', NULL, \$\$steps->'ask'\$\$);
EOS
control($base, 'openai', { rules => [ { match => 'mover@', content => '{"id": 99, "email": "taken"}' } ] });
$node->safe_psql('postgres', "INSERT INTO moved VALUES (1, 'mover\@x.io')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the writeback run ends');
like(sql($node, "SELECT state || ': ' || last_error FROM switchboard.runs WHERE route = 'moved'"),
	qr/^failed: .*may not set primary key column "id"/, 'a writeback may not set the primary key');
is(sql($node, "SELECT id || ':' || email FROM moved"), '1:mover@x.io', 'the row is unchanged');

# Runs of a key in commit order, retry included: a failed run whose key has a newer run done
# cannot be retried (it would deliver older data after newer).
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE orders (id int PRIMARY KEY, qty int);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('orderhook', 'webhook', '$base/hooks/order');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('orders', 'orders', 'orderhook', 'order', 'id::text', '{insert,update}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input)
VALUES ('orders', 'tell', 10, 'notify', 'orderhook', \$\$jsonb_build_object('qty', new.qty)\$\$);
EOS
control($base, 'faults', [ { path_prefix => '/hooks/order', kind => 'status', status => 400, count => 1 } ]);
$node->safe_psql('postgres', "INSERT INTO orders VALUES (1, 5)");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the first run ends');
$node->safe_psql('postgres', "UPDATE orders SET qty = 0 WHERE id = 1");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the newer run ends');
is(sql($node, "SELECT string_agg(state, ',' ORDER BY id) FROM switchboard.runs WHERE route = 'orders'"), 'failed,done',
	'the older run failed, the newer one is done');
my $older = sql($node, "SELECT min(id) FROM switchboard.runs WHERE route = 'orders'");
my ($rc, $out, $err) = $node->psql('postgres', "SELECT switchboard.retry($older)");
like($err, qr/cannot be retried: a newer run of its key has started/, 'retry(id) of the older run is refused');
is(sql($node, "SELECT switchboard.retry('orders')"), '0', 'retry(route) leaves it');
json_delete("$base/_control/faults");

# The steps of a route deleted under a run: nothing the run was for has happened, so it is not
# done but failed, and says why.
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE notes (id int PRIMARY KEY);
INSERT INTO switchboard.endpoints (name, kind, base_url, enabled) VALUES ('offhook', 'webhook', '$base/hooks/off', false);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('notes', 'notes', 'hook', 'note', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input)
VALUES ('notes', 'tell', 10, 'notify', 'offhook', \$\$jsonb_build_object('id', new.id)\$\$);
INSERT INTO notes VALUES (1);
EOS
ok(wait_for('run waits', sub { sql($node, "SELECT state FROM switchboard.runs WHERE route = 'notes'") eq 'waiting' }, 30),
	'the run waits for its disabled endpoint');
$node->safe_psql('postgres', "DELETE FROM switchboard.steps WHERE route = 'notes'");
$node->safe_psql('postgres', "UPDATE switchboard.run_queue SET next_attempt_at = now() WHERE route = 'notes'");
ok(wait_for('run ends', sub { sql($node, "SELECT state FROM switchboard.runs WHERE route = 'notes'") ne 'waiting' }, 30),
	'the run ends once its steps are gone');
is(sql($node, "SELECT state || ': ' || last_error FROM switchboard.runs WHERE route = 'notes'"),
	'failed: the route has no steps any more', 'failed, not done, saying why');

# A transient error of step SQL (a serialization failure, a deadlock) retries that step after a
# backoff, like a transient answer; it does not fail the run.
$node->safe_psql('postgres', <<"EOS");
CREATE SEQUENCE flaky_calls;
CREATE FUNCTION flaky() RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
	IF nextval('flaky_calls') < 3 THEN
		RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure';
	END IF;
	RETURN 'ok';
END \$\$;
CREATE TABLE flaky_rows (id int PRIMARY KEY);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('flaky', 'flaky_rows', 'hook', 'x', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input, options)
VALUES ('flaky', 'try', 10, 'sql', NULL, 'flaky()', '{"max_attempts": 5}');
INSERT INTO flaky_rows VALUES (1);
EOS
ok(wait_for('flaky run ends', sub { sql($node, "SELECT state FROM switchboard.runs WHERE route = 'flaky'") =~ /done|failed/ }, 60),
	'the run with the transiently failing step ends');
is(sql($node, "SELECT state || ':' || (steps->'try'->>'output') FROM switchboard.runs WHERE route = 'flaky'"), 'done:ok',
	'done, after retrying the step');

# A change whose filter raises when its run would be made: it stays a dead letter of the queue
# (not a failed run), so retry() passes it through the filters again instead of starting the
# steps past them.
json_delete("$base/_control/requests");
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE ratios (id int PRIMARY KEY, amount int, divisor int);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('ratios', 'ratios', 'hook', 'x', 'id::text', '{insert}');
INSERT INTO switchboard.filters (route, name, predicate) VALUES ('ratios', 'big', 'new.amount / new.divisor > 1');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input)
VALUES ('ratios', 'tell', 10, 'notify', 'hook', \$\$jsonb_build_object('ratio', new.id)\$\$);
INSERT INTO ratios VALUES (1, 10, 0), (2, 10, 2);
EOS
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'both changes are final');
is(sql($node, "SELECT string_agg(key || ':' || state, ',') FROM switchboard.runs WHERE route = 'ratios'"), '2:done',
	'the change that passed its filter ran');
is(sql($node, "SELECT key || ': ' || last_error FROM switchboard.dead_letters WHERE route = 'ratios'"),
	'1: filter "big": division by zero', 'the other is a dead letter with its key and the filter\'s error');
is(scalar(grep { ($_->{body}{data}{ratio} // 0) == 2 } @{ reqs('/hooks/') }), 1, 'the run of the one that passed notified');
is(scalar(grep { ($_->{body}{data}{ratio} // 0) == 1 } @{ reqs('/hooks/') }), 0, 'the dead letter sent nothing');
# The filter repaired so that it lets no such row through; retried, the change meets it again.
$node->safe_psql('postgres', <<"EOS");
UPDATE switchboard.filters SET predicate = 'new.divisor <> 0 AND new.amount / new.divisor > 1' WHERE route = 'ratios';
SELECT switchboard.retry(id) FROM switchboard.dead_letters WHERE route = 'ratios';
EOS
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the retried change is final');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters WHERE route = 'ratios'"), '0', 'no dead letter left');
is(sql($node, "SELECT string_agg(key, ',') FROM switchboard.runs WHERE route = 'ratios'"), '2',
	'filtered out: no run was made of it');
is(scalar(grep { ($_->{body}{data}{ratio} // 0) == 1 } @{ reqs('/hooks/') }), 0, 'nothing sent for it');

# Per key in commit order, retried dead letters too: a change whose filter raised, retried after
# a newer change of its key ran (and its run was pruned since), is settled as skipped, not run.
json_delete("$base/_control/requests");
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE ordered (id int PRIMARY KEY, amount int, divisor int);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('ordered', 'ordered', 'hook', 'x', 'id::text', '{insert,update}');
INSERT INTO switchboard.filters (route, name, predicate) VALUES ('ordered', 'pos', 'new.amount / new.divisor > 0');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input)
VALUES ('ordered', 'tell', 10, 'notify', 'hook', \$\$jsonb_build_object('ordered', new.id, 'amount', new.amount)\$\$);
INSERT INTO ordered VALUES (1, 10, 0);
EOS
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the first change is final');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters WHERE route = 'ordered'"), '1', 'a dead letter');
$node->safe_psql('postgres', "UPDATE ordered SET amount = 20, divisor = 1 WHERE id = 1");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the newer change is final');
is(sql($node, "SELECT string_agg(state, ',') FROM switchboard.runs WHERE route = 'ordered'"), 'done', 'its run is done');
$node->safe_psql('postgres', <<"EOS");
DELETE FROM switchboard.run_queue WHERE route = 'ordered';  -- as history_retention would
UPDATE switchboard.filters SET predicate = 'new.divisor = 0 OR new.amount / new.divisor > 0' WHERE route = 'ordered';
SELECT switchboard.retry(id) FROM switchboard.dead_letters WHERE route = 'ordered';
EOS
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the retried change is final');
is(sql($node, "SELECT count(*) FROM switchboard.runs WHERE route = 'ordered'"), '0', 'it was not run');
is(join(',', map { $_->{body}{data}{amount} } grep { $_->{body}{data}{ordered} } @{ reqs('/hooks/') }), '20',
	'only the newer state was sent');
like(sql($node, "SELECT outcome || ': ' || error FROM switchboard.deliveries WHERE route = 'ordered' AND outcome = 'skipped'"),
	qr/^skipped: a newer change of its key has run/, 'settled as skipped, saying why');

# Outputs are kept in the run: one of more than 1 MB (a sql step's value, a model's answer)
# fails its step, permanently, instead of swelling every round that reads the run.
control($base, 'openai', { rules => [ { match => 'wordy@', content => '{"note": "' . ('y' x 1_100_000) . '"}' } ] });
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE bulky (id int PRIMARY KEY, email text, big boolean);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('bulky', 'bulky', 'hook', 'x', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, run_if, input) VALUES
	('bulky', 'fat', 10, 'sql', NULL, 'new.big', \$\$to_jsonb(repeat('x', 1100000))\$\$),
	('bulky', 'ask', 20, 'enrich', 'model', NULL, 'new.email');
INSERT INTO bulky VALUES (1, 'a\@x.io', true), (2, 'wordy\@x.io', false), (3, 'fine\@x.io', false);
EOS
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'the bulky runs end');
is(sql($node, "SELECT string_agg(key || ':' || state || ':' || coalesce(current_step, ''), ',' ORDER BY id) FROM switchboard.runs WHERE route = 'bulky'"),
	'1:failed:fat,2:failed:ask,3:done:', 'the oversized outputs fail their steps; a normal one is done');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE route = 'bulky' AND key = '1'"), qr/more than the 1024 kB/, 'saying why (sql)');
like(sql($node, "SELECT last_error FROM switchboard.runs WHERE route = 'bulky' AND key = '2'"), qr/more than the 1024 kB/, 'saying why (model)');
cmp_ok(sql($node, "SELECT max(pg_column_size(step_state)) FROM switchboard.run_queue WHERE route = 'bulky'"), '<', 100_000,
	'nothing of them kept');
done_testing();
