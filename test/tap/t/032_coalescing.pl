# Coalescing keeps what the remote needs (issue 9 item 10, SPEC §4: pending changes of one key
# may be coalesced into one upsert of the latest state). Coalescing must not change what the
# remote ends up with, whether the changes were claimed together or one waited for a retry:
#  - on a route with on_delete = 'ignore', an update followed by a delete still sends the
#    update (the remote keeps the record, so it must see its last state);
#  - an insert waiting for a retry, superseded by an update of the same key, is still an
#    insert for a webhook consumer (which has never heard of the record).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my $whsec = 'whsec_' . 'c2VjcmV0LWZvci1jb2FsZXNjaW5nLXRlc3Q=';
my ($base, $double) = start_double('--webhook-secret', $whsec);
my $node = new_node('coalescing');

my $upsert_path = '/crm/v3/objects/contacts/batch/upsert';

$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token'), ('wh', '$whsec');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, on_delete)
VALUES ('contacts_keep', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'ignore');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('contacts_keep', 'email', 'lower(email)'), ('contacts_keep', 'firstname', 'first_name');

CREATE TABLE orders (id int PRIMARY KEY, amount int, status text);
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('orders_hook', 'webhook', '$base/hooks/orders', 'wh');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('orders_wh', 'orders', 'orders_hook', 'order', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('orders_wh', 'amount', 'amount'), ('orders_wh', 'status', 'status');
EOS

sub wait_idle { return sql($node, "SELECT switchboard.wait_idle('60 s')"); }
sub hs_records { return { map { $_->{key} => $_ } @{ json_get("$base/_control/records/hubspot/contacts") } }; }
sub firstname { my $r = hs_records()->{ $_[0] }; return $r ? $r->{properties}{firstname} : undef; }

# Upsert requests that carried the key, in arrival order.
sub upserts_for
{
	my ($key) = @_;
	return [ grep { grep { $_->{id} eq $key } @{ $_->{body}{inputs} // [] } }
		  grep { $_->{path} eq $upsert_path } @{ double_requests($base, '/crm/') } ];
}

$node->safe_psql('postgres', q{INSERT INTO contacts (email, first_name) VALUES
  ('same@x.com', 'Before'), ('retry@x.com', 'Before')});
is(wait_idle(), 't', 'the first state of both contacts is delivered');
is(firstname('same@x.com'), 'Before', 'the remote has the first state');

# ---------------------------------------------------------------------------------------
# 1. update then delete, claimed together (one transaction), on_delete = 'ignore'
$node->safe_psql('postgres', q{BEGIN;
  UPDATE contacts SET first_name = 'After' WHERE email = 'same@x.com';
  DELETE FROM contacts WHERE email = 'same@x.com';
COMMIT;});
is(wait_idle(), 't', 'update + delete settle');
is(firstname('same@x.com'), 'After', 'the update before the ignored delete reached the remote');
ok(!hs_records()->{'same@x.com'}{archived}, 'and the record is not archived (deletes are ignored)');

# ---------------------------------------------------------------------------------------
# 2. the update fails and waits for its retry; the delete comes meanwhile
control($base, 'faults',
	{ path_prefix => $upsert_path, kind => 'status', status => 503, retry_after => '3', count => 1 });
$node->safe_psql('postgres', "UPDATE contacts SET first_name = 'Retried' WHERE email = 'retry\@x.com'");
ok( wait_for('the update to fail once',
		sub { sql($node, "SELECT count(*) FROM switchboard.queue WHERE key = 'retry\@x.com' AND state = 'pending' "
			  . "AND next_attempt_at > now()") == 1 }, 30),
	'the update waits for its retry');
$node->safe_psql('postgres', "DELETE FROM contacts WHERE email = 'retry\@x.com'");
is(wait_idle(), 't', 'update (retried) + delete settle');
my $calls = upserts_for('retry@x.com');
is_deeply([ map { $_->{status} } @$calls ], [ 200, 503, 200 ], 'first state, the failed update, its retry');
is(firstname('retry@x.com'), 'Retried', 'the update waiting for a retry was not swallowed by the ignored delete');

# ---------------------------------------------------------------------------------------
# 3. webhook: an insert waiting for a retry, then an update of the same key
sub events { return json_get("$base/_control/hooks/orders"); }
control($base, 'faults',
	{ path_prefix => '/hooks/orders', kind => 'status', status => 503, retry_after => '3', count => 1 });
$node->safe_psql('postgres', "INSERT INTO orders VALUES (1, 100, 'new')");
ok( wait_for('the insert to fail once',
		sub { sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'orders_wh' AND state = 'pending' "
			  . "AND next_attempt_at > now()") == 1 }, 30),
	'the insert waits for its retry');
$node->safe_psql('postgres', "UPDATE orders SET status = 'paid' WHERE id = 1");
is(wait_idle(), 't', 'insert (superseded) + update settle');
my @ev = @{ events() };
is(scalar @ev, 1, 'one event accepted by the consumer (the insert and the update coalesced)');
is($ev[0]{body}{type}, 'order.insert', 'it is an insert: the consumer never saw the record before') if @ev;
is_deeply($ev[0]{body}{data}, { amount => 100, status => 'paid' }, 'with the latest state') if @ev;

# the insert fails again, and the update that superseded it waits too; a further update
# meanwhile: still one insert, with the latest state, and nothing sent out of order
control($base, 'faults',
	{ path_prefix => '/hooks/orders', kind => 'status', status => 503, retry_after => '2', count => 2 });
$node->safe_psql('postgres', "INSERT INTO orders VALUES (3, 300, 'new')");
ok( wait_for('the second insert to fail',
		sub { sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'orders_wh' AND state = 'pending' "
			  . "AND next_attempt_at > now()") >= 1 }, 30),
	'the second insert waits for its retry');
$node->safe_psql('postgres', "UPDATE orders SET status = 'paid' WHERE id = 3");
ok( wait_for('the update to be tried',
		sub { sql($node, "SELECT count(*) FROM switchboard.deliveries WHERE route = 'orders_wh' AND key = '3' "
			  . "AND outcome = 'retry'") >= 2 }, 30),
	'the update (standing for the insert) failed too');
$node->safe_psql('postgres', "UPDATE orders SET amount = 333 WHERE id = 3");
is(wait_idle(), 't', 'insert + two updates settle');
@ev = grep { ($_->{body}{data}{amount} // 0) >= 300 } @{ events() };
is(scalar @ev, 1, 'one event for the record');
is(@ev && $ev[0]{body}{type}, 'order.insert', 'an insert');
is_deeply(@ev ? $ev[0]{body}{data} : undef, { amount => 333, status => 'paid' }, 'with the latest state');
my @tries3 = map { $_->{body}{type} } grep { $_->{method} eq 'POST' && ($_->{body}{data}{amount} // 0) >= 300 }
  @{ double_requests($base, '/hooks/orders') };
is_deeply(\@tries3, [ 'order.insert', 'order.insert', 'order.insert' ], 'every attempt for it was an insert');

# the same sequence claimed together was already an insert: still so
$node->safe_psql('postgres', "BEGIN; INSERT INTO orders VALUES (2, 5, 'new'); UPDATE orders SET amount = 6 WHERE id = 2; COMMIT;");
is(wait_idle(), 't', 'insert + update in one claim settle');
@ev = grep { ($_->{body}{data}{amount} // 0) == 6 } @{ events() };
is(scalar(@ev) && $ev[0]{body}{type}, 'order.insert', 'insert + update claimed together is an insert');

# ---------------------------------------------------------------------------------------
# Per-key order across retries (issue 9 item 7): a dead letter retried after a newer change of
# its key was delivered is not sent (it would put the older state back), and deliveries says so.
json_post("$base/_control/faults",
	{ path_prefix => $upsert_path, kind => 'reject', reject_ids => ['order@x.com'], count => 1 });
$node->safe_psql('postgres', q{INSERT INTO contacts (email, first_name) VALUES ('order@x.com', 'Old')});
is(wait_idle(), 't', 'the first state is rejected');
my $dead_id = sql($node, "SELECT id FROM switchboard.dead_letters WHERE key = 'order\@x.com'");
ok($dead_id, 'and became a dead letter');
$node->safe_psql('postgres', q{UPDATE contacts SET first_name = 'New' WHERE email = 'order@x.com'});
is(wait_idle(), 't', 'the newer state is delivered');
is(firstname('order@x.com'), 'New', 'the remote has the newer state');
my $upserts_before = scalar @{ upserts_for('order@x.com') };
$node->safe_psql('postgres', "SELECT switchboard.retry($dead_id)");
is(wait_idle(), 't', 'the retried dead letter settles');
is(firstname('order@x.com'), 'New', 'the remote keeps the newer state');
is(scalar @{ upserts_for('order@x.com') }, $upserts_before, 'the older state was not sent');
like(sql($node, "SELECT error FROM switchboard.deliveries WHERE change_id = $dead_id AND outcome = 'skipped'"),
	qr/not sent: change \d+ of this key, captured later, was delivered already/, 'deliveries says why');
is(sql($node, "SELECT count(*) FROM switchboard.queue WHERE id = $dead_id"), 0, 'and it left the queue');

# ---------------------------------------------------------------------------------------
# Two changes of a key tried before (keyed), with more than a claim's worth (2,000) of changes
# between them: the newer one is claimed with the older, which goes out coalesced into it,
# never alone after it.
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.enabled = off");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
sleep 1;
$node->safe_psql('postgres', q{INSERT INTO contacts (email, first_name) VALUES ('split@x.com', 'Older')});
$node->safe_psql('postgres',
	q{INSERT INTO contacts (email, first_name) SELECT 'filler' || g || '@x.com', 'F' FROM generate_series(1, 2100) g});
$node->safe_psql('postgres', q{UPDATE contacts SET first_name = 'Newer' WHERE email = 'split@x.com'});
$node->safe_psql('postgres', q{UPDATE switchboard.queue SET key = 'split@x.com', attempts = 1
  WHERE route = 'contacts_keep' AND new->>'email' = 'split@x.com'});
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.enabled = on");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
is(wait_idle(), 't', 'the backlog settles');
my @split = map { my $r = $_; map { $_->{properties}{firstname} } grep { $_->{id} eq 'split@x.com' } @{ $r->{body}{inputs} } }
  @{ upserts_for('split@x.com') };
is_deeply(\@split, ['Newer'], 'the key was sent once, with its newer state; the older never alone');

# ---------------------------------------------------------------------------------------
# A route whose claim keeps failing (here: marking changes in flight is refused) sets no change aside
# (issue 9 item 5): every change is kept and delivered once the fault is gone, and
# route_status shows the error meanwhile.
$node->safe_psql('postgres',
	"ALTER TABLE switchboard.queue ADD CONSTRAINT test_no_flight CHECK (state <> 'in_flight') NOT VALID");
$node->safe_psql('postgres', q{INSERT INTO contacts (email, first_name) VALUES ('stuck@x.com', 'S')});
ok(wait_for('the failure to show', sub {
	sql($node, "SELECT last_error FROM switchboard.route_status WHERE route = 'contacts_keep'") =~ /held for a round \(changes kept\): .*test_no_flight/ }, 60),
	'route_status shows the failing round');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters WHERE key = 'stuck\@x.com'"), 0, 'no change was set aside');
$node->safe_psql('postgres', "ALTER TABLE switchboard.queue DROP CONSTRAINT test_no_flight");
is(wait_idle(), 't', 'the changes are delivered once the fault is gone');
is(firstname('stuck@x.com'), 'S', 'including the one that waited');

# ---------------------------------------------------------------------------------------
# A change that becomes a dead letter when the worker restarts (it was in flight max_attempts
# times) takes the older changes it superseded with it: sent later on their own, they would
# put an older state over the newer one.
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.enabled = off");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
$node->safe_psql('postgres', "INSERT INTO orders VALUES (9, 1, 'old')");
$node->safe_psql('postgres', "UPDATE orders SET amount = 2, status = 'new' WHERE id = 9");
$node->safe_psql('postgres', q{
UPDATE switchboard.queue SET key = '9' WHERE route = 'orders_wh' AND new->>'id' = '9';
UPDATE switchboard.queue SET state = 'in_flight', attempts = current_setting('switchboard.max_attempts')::int - 1
 WHERE id = (SELECT max(id) FROM switchboard.queue WHERE route = 'orders_wh' AND key = '9')});
my $worker = sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($worker)");
ok(wait_for('the restarted worker recovers the change in flight',
	sub { sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'orders_wh' AND key = '9' AND state = 'dead'") == 1 }, 30),
	'the newest change of the key is a dead letter');
is(sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'orders_wh' AND key = '9' AND state = 'pending'"), 0,
	'the older change it superseded is not left to be sent on its own');

$node->stop;
done_testing();
