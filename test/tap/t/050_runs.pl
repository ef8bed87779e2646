# Runs (SPEC §7): the seed's flow end to end (HubSpot create -> OpenAI score -> sql routing ->
# writeback -> notify only for high scores), resume at the failed step without repeating a
# completed one, quota vs rate-limit 429, invalid model output, per-key order with a slow model,
# and kill -9 while a step is in flight.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);

my ($base, $double) = start_double();
my $node = new_node('runs', 'switchboard.max_attempts' => 3, restart_after_crash => 'on');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id serial PRIMARY KEY, email text, region text, score int, owner_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token'), ('ai', 'sk-test');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options) VALUES
	('hubspot', 'hubspot', '$base', 'hs', '{}'),
	('model', 'openai', '$base', 'ai', '{"model": "gpt-4o-mini"}'),
	('sales', 'webhook', '$base/hooks/sales', NULL, '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, operations)
VALUES ('leads', 'leads', 'hubspot', 'contacts', 'lower(email)', 'email', '{insert,update}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, run_if, input, options) VALUES
	('leads', 'create', 10, 'deliver', NULL, NULL, NULL, '{}'),
	-- the double's model answers {"score": length of the prompt}
	('leads', 'score', 20, 'enrich', 'model', NULL, 'new.email', '{"system": "Score the lead.", "max_attempts": 3}'),
	('leads', 'route', 30, 'sql', NULL, NULL,
	 \$\$CASE WHEN (steps->'score'->>'score')::int >= 30 THEN 'ae-' || new.region ELSE 'sdr' END\$\$, '{}'),
	('leads', 'save', 40, 'writeback', NULL, NULL,
	 \$\$jsonb_build_object('score', (steps->'score'->>'score')::int, 'owner_name', steps->>'route')\$\$, '{}'),
	('leads', 'alert', 50, 'notify', 'sales', \$\$(steps->'score'->>'score')::int >= 30\$\$,
	 \$\$jsonb_build_object('email', new.email, 'owner', steps->>'route')\$\$, '{}');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('leads', 'email', 'lower(email)');
EOS

sub reqs { return double_requests($base, $_[0]); }
sub idle { is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', $_[0]); }

# -- the seed's flow
my $hot = 'hot.lead.with.a.long.address@example.com';    # 40 characters: score 40
my $cold = 'c@x.io';                                       # score 6
$node->safe_psql('postgres', "INSERT INTO leads (email, region) VALUES ('$hot', 'emea'), ('$cold', 'us')");
idle('both runs finish');
is(sql($node, "SELECT string_agg(key || ':' || state, ',' ORDER BY id) FROM switchboard.runs"),
	"$hot:done,$cold:done", 'one run per captured change, done');
is(sql($node, "SELECT score || '/' || owner_name FROM leads WHERE email = '$hot'"), '40/ae-emea',
	'the model\'s score and the sql routing written back');
is(sql($node, "SELECT score || '/' || owner_name FROM leads WHERE email = '$cold'"), '6/sdr', 'the cold lead too');
is(sql($node, "SELECT count(*) FROM switchboard.run_queue"), '2', 'the writeback is not captured again by its own route');
my $records = { map { $_->{key} => $_ } @{ json_get("$base/_control/records/hubspot/contacts") } };
ok($records->{$hot} && $records->{$cold}, 'deliver created both records in HubSpot');
my @events = @{ reqs('/hooks/sales') };
is(scalar @events, 1, 'only the hot lead notified');
like(JSON::PP->new->canonical->encode($events[0]{body}), qr/"type":"leads\.alert".*/, 'event type {route}.{step}');
is($events[0]{body}{data}{owner}, 'ae-emea', 'the notification carries the routing result');
is(scalar @{ reqs('/v1/chat/completions') }, 2, 'one model call per run');
is(sql($node, "SELECT calls || ':' || (prompt_tokens > 0) || ':' || (completion_tokens > 0) FROM switchboard.ai_usage WHERE route = 'leads' AND endpoint = 'model'"),
	'2:true:true', 'ai_usage counts the calls and tokens');
is(sql($node, "SELECT steps->'alert'->>'state' FROM switchboard.runs WHERE key = '$cold'"), 'skipped',
	'run_if false skips the step');
is(sql($node, "SELECT (steps->'score'->'output'->>'score') FROM switchboard.runs WHERE key = '$hot'"), '40',
	'runs shows each step\'s output');
my ($hs_order, $ai_order, $hook_order) = map { my $p = $_; (map { $_->{seq} } grep { count_for_req($_, $hot) } @{ reqs($p) })[0] } ('/crm/', '/v1/', '/hooks/');
sub count_for_req { my ($r, $needle) = @_; return JSON::PP->new->canonical->encode($r->{body} // {}) =~ /\Q$needle\E/; }
ok($hs_order < $ai_order && $ai_order < $hook_order, "steps in position order ($hs_order < $ai_order < $hook_order)");

is(sql($node, "SELECT runs_active || '/' || runs_done || '/' || runs_failed FROM switchboard.route_status WHERE route = 'leads'"),
	'0/2/0', 'route_status counts runs');

# -- a failing step is retried alone; exhausted, the run fails there; retry(id) resumes there
json_delete("$base/_control/requests");
control($base, 'faults', { kind => 'status', path_prefix => '/v1/', status => 500 });
my $flaky = 'flaky.lead.address.that.is.long@example.com';
$node->safe_psql('postgres', "INSERT INTO leads (email, region) VALUES ('$flaky', 'apac')");
ok(wait_for('run failed', sub { sql($node, "SELECT state FROM switchboard.runs WHERE key = '$flaky'") eq 'failed' }, 60),
	'exhausted attempts leave the run failed');
is(sql($node, "SELECT current_step || ':' || attempts FROM switchboard.runs WHERE key = '$flaky'"), 'score:3',
	'failed at the step, after its max_attempts');
like(sql($node, "SELECT last_error FROM switchboard.dead_letters WHERE key = '$flaky'"), qr/^step "score": HTTP 500/,
	'dead_letters names the step');
is(scalar @{ reqs('/v1/') }, 3, 'the model was asked three times');
is(scalar @{ reqs('/crm/') }, 1, 'the completed deliver step was not repeated by the retries');
json_delete("$base/_control/faults");
my $id = sql($node, "SELECT id FROM switchboard.dead_letters WHERE key = '$flaky'");
sql($node, "SELECT switchboard.retry($id)");
idle('the retried run finishes');
is(sql($node, "SELECT state FROM switchboard.runs WHERE id = $id"), 'done', 'retry(id) completes the run');
is(scalar @{ reqs('/crm/') }, 1, 'retry(id) resumed at the failed step: HubSpot not called again');
is(scalar @{ reqs('/v1/') }, 4, 'one more model call');
is(scalar @{ reqs('/hooks/') }, 1, 'and the notification once');

# -- quota vs rate limit
json_delete("$base/_control/requests");
control($base, 'faults', { kind => 'status', path_prefix => '/v1/', status => 429, count => 1,
	body => { error => { message => 'You exceeded your current quota', type => 'insufficient_quota', code => 'insufficient_quota' } } });
$node->safe_psql('postgres', "INSERT INTO leads (email, region) VALUES ('quota\@x.io', 'us')");
ok(wait_for('quota run failed', sub { sql($node, "SELECT state FROM switchboard.runs WHERE key = 'quota\@x.io'") eq 'failed' }, 30),
	'insufficient_quota fails the step at once');
is(sql($node, "SELECT attempts FROM switchboard.runs WHERE key = 'quota\@x.io'"), '1', 'not retried');
control($base, 'faults', { kind => 'status', path_prefix => '/v1/', status => 429, count => 1, retry_after => 1,
	body => { error => { message => 'Rate limit reached', type => 'requests', code => 'rate_limit_exceeded' } } });
$node->safe_psql('postgres', "INSERT INTO leads (email, region) VALUES ('rate\@x.io', 'us')");
idle('the rate-limited run finishes');
is(sql($node, "SELECT state || ':' || (steps->'score'->>'attempts') FROM switchboard.runs WHERE key = 'rate\@x.io'"),
	'done:2', 'a rate-limit 429 is retried (after Retry-After)');
json_delete("$base/_control/faults");

# -- invalid model output
control($base, 'openai', { content => 'Sure! The score is 87.' });
$node->safe_psql('postgres', "INSERT INTO leads (email, region) VALUES ('prose\@x.io', 'us')");
ok(wait_for('invalid output fails', sub { sql($node, "SELECT state FROM switchboard.runs WHERE key = 'prose\@x.io'") eq 'failed' }, 30),
	'content that is not a JSON object fails the step');
like(sql($node, "SELECT steps->'score'->>'error' FROM switchboard.runs WHERE key = 'prose\@x.io'"),
	qr/not a JSON object/, 'and says why');
control($base, 'openai', { content => undef });

# -- per key, in commit order, with a slow model
json_delete("$base/_control/requests");
control($base, 'faults', { kind => 'slow', path_prefix => '/v1/', delay_ms => 400 });
$node->safe_psql('postgres', "INSERT INTO leads (email, region) VALUES ('order\@x.io', 'r0')");
$node->safe_psql('postgres', "UPDATE leads SET region = 'r$_' WHERE email = 'order\@x.io'") for 1 .. 3;
idle('the runs of one key finish');
my @runs = split /\n/, sql($node, "SELECT id || ',' || extract(epoch FROM started_at) || ',' || extract(epoch FROM finished_at) FROM switchboard.runs WHERE key = 'order\@x.io' ORDER BY id");
is(scalar @runs, 4, 'four runs of the key');
my $ordered = 1;
for my $i (1 .. $#runs)
{
	my (undef, $start) = split /,/, $runs[$i];
	my (undef, undef, $prev_end) = split /,/, $runs[ $i - 1 ];
	$ordered = 0 if $start < $prev_end;
}
ok($ordered, 'a later run of the key starts only after the earlier one finished');
json_delete("$base/_control/faults");

# -- many runs at once: deliver steps share bulk requests, model calls are many in flight
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "UPDATE switchboard.endpoints SET options = '{\"model\": \"gpt-4o-mini\", \"max_concurrency\": 16}' WHERE name = 'model'");
control($base, 'openai', { latency_ms => 1000 });
my $t0 = time;
$node->safe_psql('postgres', "INSERT INTO leads (email, region) SELECT 'bulk' || g || '\@x.io', 'us' FROM generate_series(1, 16) g");
idle('sixteen runs finish');
my $took = time - $t0;
control($base, 'openai', { latency_ms => 0 });
is(sql($node, "SELECT count(*) FROM switchboard.runs WHERE key LIKE 'bulk%' AND state = 'done'"), '16', 'all sixteen done');
my $upserts = scalar grep { $_->{path} =~ m{/batch/upsert$} } @{ reqs('/crm/') };
ok($upserts < 16, "their deliver steps shared bulk requests ($upserts upserts for 16 runs)");
ok($took < 8, sprintf('sixteen 1-second model calls in flight together (%.1f s)', $took));

# -- an http enrich step: POST of the input as JSON, the JSON object answered is the output
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE accounts (id int PRIMARY KEY, email text, employees int);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('firmo', 'http', '$base/enrich/firmo');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('accounts', 'accounts', 'sales', 'account', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('accounts', 'firmo', 10, 'enrich', 'firmo', \$\$jsonb_build_object('email', new.email)\$\$),
	('accounts', 'save', 20, 'writeback', NULL, \$\$jsonb_build_object('employees', (steps->'firmo'->>'employees')::int)\$\$);
INSERT INTO accounts VALUES (1, 'ops\@acme.io');
EOS
idle('the http enrich run finishes');
is(sql($node, "SELECT employees FROM accounts WHERE id = 1"), '70', 'the http answer written back');
is(sql($node, "SELECT steps->'firmo'->'output'->>'domain' FROM switchboard.runs WHERE route = 'accounts'"), 'acme.io',
	'its output in runs');

# -- who acts: a writeback runs as the route's owner, with that role's privileges only
$node->safe_psql('postgres', <<"EOS");
CREATE ROLE lead_ops LOGIN;
SELECT switchboard.grant_admin('lead_ops');
CREATE TABLE guarded (id int PRIMARY KEY, email text, score int, locked text);
GRANT SELECT, TRIGGER ON guarded TO lead_ops;
GRANT UPDATE (score) ON guarded TO lead_ops;
SET ROLE lead_ops;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('ops_hook', 'webhook', '$base/hooks/ops');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('guarded', 'guarded', 'ops_hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, input) VALUES
	('guarded', 'mine', 10, 'writeback', \$\$jsonb_build_object('score', 1)\$\$),
	('guarded', 'theirs', 20, 'writeback', \$\$jsonb_build_object('locked', 'pwned')\$\$);
RESET ROLE;
INSERT INTO guarded VALUES (1, 'g\@x.io', NULL, 'no');
EOS
idle('the guarded run ends');
is(sql($node, "SELECT score || '/' || locked FROM guarded"), '1/no', 'the owner wrote the column it may write, not the other');
like(sql($node, "SELECT state || ' ' || last_error FROM switchboard.runs WHERE route = 'guarded'"),
	qr/^failed .*permission denied/, 'the step writing a column the owner may not write fails');

# -- kill -9 while the model call is in flight: that step only is repeated
json_delete("$base/_control/requests");
control($base, 'faults', { kind => 'slow', path_prefix => '/v1/', delay_ms => 3000, count => 1 });
$node->safe_psql('postgres', "INSERT INTO leads (email, region) VALUES ('crash.lead.long.address\@example.com', 'emea')");
ok(wait_for('model call in flight', sub { scalar @{ reqs('/v1/') } >= 1 }, 30), 'the model call is in flight');
my $pid = sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
kill 'KILL', $pid;
ok(wait_for('crashed run done', sub {
	my $s = eval { sql($node, "SELECT state FROM switchboard.runs WHERE key = 'crash.lead.long.address\@example.com'") } // '';
	$s eq 'done' }, 60), 'the run completes after the crash');
is(scalar @{ reqs('/crm/') }, 1, 'the deliver step committed before the crash is not repeated');
is(scalar @{ reqs('/v1/') }, 2, 'the step in flight is repeated once');
is(sql($node, "SELECT steps->'score'->>'attempts' FROM switchboard.runs WHERE key = 'crash.lead.long.address\@example.com'"), '2',
	'the attempt cut short by the crash counts');

done_testing();
