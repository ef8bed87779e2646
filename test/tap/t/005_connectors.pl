# Connectors end to end (SPEC §5): Salesforce (token fetched once and cached, refreshed once on
# INVALID_SESSION_ID, per-record rejections as dead letters, deletes by remembered id, batches
# of at most 200), signed webhooks (stable event id across retries, 410 disables the route),
# an endpoint rate limit, and max_concurrency.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use HTTP::Tiny;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time usleep);

my $whsec = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
my ($base, $double) = start_double('--webhook-secret', $whsec);
my $node = new_node('connectors');
$node->safe_psql('postgres', 'CREATE EXTENSION switchboard');

sub wait_idle
{
	my ($timeout) = @_;
	return sql($node, "SELECT switchboard.wait_idle('" . ($timeout // 30) . " s')");
}

sub requests_of
{
	my ($prefix, $method) = @_;
	return [ grep { !defined $method || $_->{method} eq $method } @{ double_requests($base, $prefix) } ];
}

sub put_json
{
	my ($url, $body) = @_;
	my $res = HTTP::Tiny->new(timeout => 30)->request('PUT', $url,
		{ headers => { 'Content-Type' => 'application/json' }, content => JSON::PP->new->encode($body) });
	die "PUT $url: $res->{status} $res->{content}" unless $res->{success};
	return $res;
}

#### Salesforce

my $sf_collection = '/services/data/v59.0/composite/sobjects';
my $sf_upsert_path = "$sf_collection/Contact/External_Id__c";
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE people (id int PRIMARY KEY, last_name text, email text);
INSERT INTO switchboard.secrets VALUES ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('sf', 'salesforce', '$base', 'sf');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, on_delete)
VALUES ('people_sf', 'people', 'sf', 'Contact', '''P-'' || id', 'External_Id__c', 'delete');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('people_sf', 'LastName', 'last_name'), ('people_sf', 'Email', 'email');
EOS

sub sf_records
{
	my %opt = @_;
	my $q = $opt{archived} ? '?include_archived=1' : '';
	return { map { $_->{key} => $_ } @{ json_get("$base/_control/records/salesforce/Contact$q") } };
}
sub token_requests { return scalar @{ requests_of('/services/oauth2/token', 'POST') }; }
sub sf_upserts { return requests_of($sf_upsert_path, 'PATCH'); }

$node->safe_psql('postgres', "INSERT INTO people VALUES (1, 'Lovelace', 'ada\@x.io')");
is(wait_idle(), 't', 'salesforce: first change delivered');
my $rec = sf_records()->{'P-1'};
ok($rec, 'record upserted by its external id');
is_deeply([ @{ $rec->{properties} }{qw(LastName Email)} ], [ 'Lovelace', 'ada@x.io' ], 'mapped fields written');
is(token_requests(), 1, 'one token request');
my ($token_req) = @{ requests_of('/services/oauth2/token', 'POST') };
is_deeply([ @{ $token_req->{body} }{qw(grant_type client_id client_secret)} ],
	[ 'client_credentials', 'sf-id', 'sf-secret' ], 'client-credentials form from the secret');
my ($first_upsert) = @{ sf_upserts() };
ok($first_upsert, 'PATCH to composite/sobjects/Contact/External_Id__c');
is($first_upsert->{body}{allOrNone}, JSON::PP::false, 'allOrNone false') if $first_upsert;
is_deeply($first_upsert->{body}{records}[0]{attributes}, { type => 'Contact' }, 'record attributes name the sObject')
  if $first_upsert;

for my $id (2 .. 4)
{
	$node->safe_psql('postgres', "INSERT INTO people VALUES ($id, 'Person $id', 'p$id\@x.io')");
	wait_idle();
}
is(scalar(grep { $_->{status} == 200 } @{ sf_upserts() }), 4, 'four deliveries, each its own PATCH');
is(token_requests(), 1, 'the token is cached: still one token request after four deliveries');

control($base, 'expire_tokens');
$node->safe_psql('postgres', "INSERT INTO people VALUES (5, 'After Expiry', 'p5\@x.io')");
is(wait_idle(), 't', 'delivery after the token expired');
is(token_requests(), 2, 'INVALID_SESSION_ID: exactly one more token request');
ok(sf_records()->{'P-5'}, 'and the change reached Salesforce');
my @last_two = map { $_->{status} } @{ sf_upserts() }[ -2, -1 ];
is_deeply(\@last_two, [ 401, 200 ], 'the 401 was resent with the new token');
$node->safe_psql('postgres', "INSERT INTO people VALUES (6, 'Once More', 'p6\@x.io')");
wait_idle();
is(token_requests(), 2, 'the new token is reused');

# a rejected record in a batch: dead letter with Salesforce's message, the others delivered
json_delete("$base/_control/requests");
$node->safe_psql('postgres',
	"INSERT INTO people VALUES (7, 'Seven', 'p7\@x.io'), (8, NULL, 'no-name\@x.io'), (9, 'Nine', 'p9\@x.io')");
is(wait_idle(), 't', 'batch with a rejected record settles');
my @calls = @{ sf_upserts() };
is(scalar @calls, 1, 'the three records went in one PATCH');
is(scalar @{ $calls[0]{body}{records} // [] }, 3, 'carrying three records') if @calls;
my $recs = sf_records();
ok($recs->{'P-7'} && $recs->{'P-9'}, 'the other records of the batch are delivered');
ok(!$recs->{'P-8'}, 'the rejected record is not at the remote');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters WHERE route = 'people_sf'"), '1', 'exactly one dead letter');
like(sql($node, "SELECT key || ' ' || last_error FROM switchboard.dead_letters WHERE route = 'people_sf'"),
	qr/^P-8 .*REQUIRED_FIELD_MISSING.*LastName/, 'dead letter names the record and carries the remote message');

# on_delete = 'delete': DELETE composite request naming the remembered Salesforce id
my $sf_id = sql($node, "SELECT remote_id FROM switchboard.remote_ids WHERE route = 'people_sf' AND key = 'P-1'");
is($sf_id, sf_records()->{'P-1'}{id}, 'the Salesforce id returned by the upsert is remembered');
json_delete("$base/_control/requests");
$node->safe_psql('postgres', 'DELETE FROM people WHERE id = 1');
is(wait_idle(), 't', 'delete delivered');
my @deletes = @{ requests_of($sf_collection, 'DELETE') };
is(scalar @deletes, 1, 'one DELETE request');
is_deeply($deletes[0]{query}, { ids => $sf_id, allOrNone => 'false' }, 'DELETE composite/sobjects?ids=<remembered id>&allOrNone=false')
  if @deletes;
ok(sf_records(archived => 1)->{'P-1'}{archived}, 'record deleted at the remote');
is(sql($node, "SELECT count(*) FROM switchboard.remote_ids WHERE route = 'people_sf' AND key = 'P-1'"), '0',
	'remote id forgotten');

# 450 rows: upserts of at most 200 records
json_delete("$base/_control/requests");
$node->safe_psql('postgres',
	"INSERT INTO people SELECT g, 'Bulk ' || g, 'b' || g || '\@x.io' FROM generate_series(1000, 1449) g");
is(wait_idle(60), 't', '450 rows delivered');
my @sizes = map { scalar @{ $_->{body}{records} } } @{ sf_upserts() };
ok(@sizes >= 3, 'at least three PATCH calls (' . join(',', @sizes) . ')');
ok(!(grep { $_ > 200 } @sizes), 'none carries more than 200 records');
my $total = 0;
$total += $_ for @sizes;
is($total, 450, 'each record sent once');
is(scalar(grep { /^P-1\d\d\d$/ } keys %{ sf_records() }), 450, 'all 450 records at the remote');
is(token_requests(), 0, 'no token request for the bulk load (token still cached)');

#### Webhook with a Standard Webhooks secret

$node->safe_psql('postgres', <<"EOS");
CREATE TABLE orders (id int PRIMARY KEY, amount int, status text);
INSERT INTO switchboard.secrets VALUES ('wh', '$whsec');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('orders_hook', 'webhook', '$base/hooks/orders', 'wh');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('orders_wh', 'orders', 'orders_hook', 'order', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('orders_wh', 'amount', 'amount'), ('orders_wh', 'status', 'status');
EOS
sub events { return json_get("$base/_control/hooks/orders"); }

control($base, 'faults', { path_prefix => '/hooks/orders', kind => 'status', status => 503, count => 1 });
$node->safe_psql('postgres', "INSERT INTO orders VALUES (1, 100, 'new')");
is(wait_idle(), 't', 'webhook: event delivered after a 503');
# The 503 is injected in front of the sink, so the request log shows both attempts.
my @tries = @{ requests_of('/hooks/orders', 'POST') };
is_deeply([ map { $_->{status} } @tries ], [ 503, 200 ], 'a 503, then the retry accepted');
is(scalar(grep { $_->{body}{type} eq 'order.insert' } @tries), 2, 'type is "<remote_object>.<op>"');
is(scalar(grep { defined $_->{body}{id} && $_->{body}{id} eq ($_->{headers}{'webhook-id'} // '') } @tries),
	2, 'event id equals the webhook-id header');
ok(@tries == 2 && $tries[0]{body}{id} eq $tries[1]{body}{id}, 'the retry carries the same event id');
ok(@tries == 2 && $tries[0]{headers}{'webhook-id'} eq $tries[1]{headers}{'webhook-id'},
	'and the same webhook-id header');
my @ev = @{ events() };
is(scalar @ev, 1, 'the sink recorded the accepted event');
is(scalar(grep { JSON::PP::is_bool($_->{verified}) && $_->{verified} } @ev), scalar @ev,
	'it carries a valid Standard Webhooks signature');
is($ev[0]{body}{id}, $tries[0]{body}{id}, 'with the event id of the first attempt') if @ev && @tries;
is_deeply($ev[-1]{body}{data}, { amount => 100, status => 'new' }, 'data carries the mapped fields');
like($ev[-1]{body}{timestamp} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$/, 'ISO 8601 timestamp');

$node->safe_psql('postgres', "UPDATE orders SET status = 'paid' WHERE id = 1");
wait_idle();
@ev = @{ events() };
is($ev[-1]{body}{type}, 'order.update', 'an update is "order.update"');
isnt($ev[-1]{body}{id}, $ev[0]{body}{id}, 'a new change gets a new event id');
ok($ev[-1]{verified}, 'and is signed');

# 410 Gone disables the route with a reason; later changes are not sent
put_json("$base/_control/hooks/orders", { status => 410 });
$node->safe_psql('postgres', "INSERT INTO orders VALUES (2, 200, 'new')");
wait_idle();
is(sql($node, "SELECT enabled FROM switchboard.route_status WHERE route = 'orders_wh'"), 'f', '410: route disabled');
like(sql($node, "SELECT disabled_reason FROM switchboard.route_status WHERE route = 'orders_wh'"),
	qr/410/, 'route_status says why (410)');
my $count = scalar @{ events() };
$node->safe_psql('postgres', "INSERT INTO orders VALUES (3, 300, 'new'); UPDATE orders SET status = 'shipped' WHERE id = 1");
usleep(1_500_000);
wait_idle();
is(scalar @{ events() }, $count, 'changes after the 410 are not sent');

#### Rate limit: at most 5 requests in any 1000 ms window

setup_hubspot_route($node, $base, options => '{"rate_limit": "5/1s", "batch_size": 1}');
json_delete("$base/_control/requests");
$node->safe_psql('postgres', join("\n", map { "INSERT INTO contacts (email, first_name) VALUES ('r$_\@x.io', 'R$_');" } 1 .. 20));
is(wait_idle(60), 't', 'rate limited: all settle');
my @rl = sort { $a->{at_ms} <=> $b->{at_ms} } @{ requests_of('/crm/v3/objects/contacts/batch/upsert', 'POST') };
is(scalar @rl, 20, 'twenty requests (batch_size 1)');
my %rl_ids = map { $_->{body}{inputs}[0]{id} => 1 } @rl;
is(scalar keys %rl_ids, 20, 'all twenty records arrive');
# Arrival times are whole milliseconds taken by the receiver, so allow a few ms for clock
# granularity and for the moment between the limiter's grant and the request on the wire.
my $slack_ms = 50;
my ($worst, $crowded) = (undef, 0);
for my $i (0 .. $#rl - 5)
{
	my $gap = $rl[ $i + 5 ]{at_ms} - $rl[$i]{at_ms};    # six consecutive requests span this many ms
	$worst = $gap if !defined $worst || $gap < $worst;
	$crowded++ if $gap < 1000 - $slack_ms;
}
is($crowded, 0,
	"no 1000 ms window holds more than 5 requests (tightest six span ${\ ($worst // 'n/a')} ms, slack $slack_ms ms)");
ok(@rl && $rl[-1]{at_ms} - $rl[0]{at_ms} >= 3000 - $slack_ms, 'twenty requests at 5/s take at least 3 s');
note('arrivals (ms after the first): ' . join(',', map { $_->{at_ms} - $rl[0]{at_ms} } @rl)) if @rl;

#### max_concurrency: at most 2 requests in flight to the endpoint

$node->safe_psql('postgres', <<"EOS");
CREATE TABLE signals (id int PRIMARY KEY, v int);
INSERT INTO switchboard.endpoints (name, kind, base_url, options)
VALUES ('slow_hook', 'webhook', '$base/hooks/slow', '{"max_concurrency": 2}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('signals_wh', 'signals', 'slow_hook', 'signal', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('signals_wh', 'v', 'v');
EOS
wait_idle();
control($base, 'reset');
control($base, 'faults', { path_prefix => '/hooks/slow', kind => 'slow', delay_ms => 300 });
my $t0 = time;
$node->safe_psql('postgres', 'INSERT INTO signals SELECT g, g FROM generate_series(1, 20) g');
is(wait_idle(60), 't', 'slow endpoint: all settle');
my $elapsed = time - $t0;
my $stats = json_get("$base/_control/stats");
my @slow = @{ json_get("$base/_control/hooks/slow") };
is(scalar(grep { $_->{status} == 200 } @slow), 20, 'twenty events delivered');
ok($stats->{max_concurrent} <= 2, "never more than 2 requests in flight (max_concurrent $stats->{max_concurrent})");
is($stats->{max_concurrent}, 2, 'and the allowed concurrency is used');
note(sprintf('20 events at 300 ms with max_concurrency 2 took %.2f s', $elapsed));

$node->stop;
$double->kill_kill;
done_testing();
