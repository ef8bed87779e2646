# Inbound events applied like a pull (issue 12 item 4, SPEC §9): WooCommerce events carry the
# resource, which the worker translates with the pull side of the mappings and upserts by key
# through the one apply path (ApplyRemoteRecords), promptly when woken, without touching the
# polling cursor. Per key the newest event of a batch wins; an event is applied once; a pending
# local change meets an inbound event under each conflict policy; the echo of our own push is no
# remote change; a bad record fails alone with last_error and attempts, and is failed after
# max_attempts; applied events go after switchboard.inbound_retention.
# The events are inserted as the receiver stores them (this test needs no receiver).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);

my ($base, $double) = start_double();
my $node = new_node('inbound_apply', 'switchboard.max_attempts' => 3, 'switchboard.naptime' => "'10s'");
sub q_ { return $node->safe_psql('postgres', $_[0]); }

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE customers (id serial PRIMARY KEY, email text UNIQUE, first_name text, version int NOT NULL DEFAULT 0);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$;
CREATE TRIGGER bump BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION bump();
CREATE TABLE orders (id bigint PRIMARY KEY, status text, total numeric, email text);
INSERT INTO switchboard.secrets VALUES ('woo', '{"consumer_key":"ck_test","consumer_secret":"cs_test"}');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('shop', 'woocommerce', '$base', 'woo')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, conflict, pull_interval)
VALUES ('customers_woo', 'customers', 'shop', 'customers', 'lower(email)', 'email', 'both', 'newest', '1 hour'),
       ('orders_woo', 'orders', 'shop', 'orders', 'id::text', 'id', 'pull', 'newest', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column, pull_expr) VALUES
  ('customers_woo', 'email', 'lower(email)', 'email', NULL),
  ('customers_woo', 'first_name', 'first_name', 'first_name', NULL),
  ('orders_woo', 'id', NULL, 'id', NULL), ('orders_woo', 'status', NULL, 'status', NULL),
  ('orders_woo', 'total', NULL, 'total', NULL), ('orders_woo', 'billing', NULL, 'email', 'value ->> ''email''');
});
ok(wait_for('first pulls', sub { q_("SELECT count(*) FROM switchboard.pull_status WHERE last_pull_at IS NOT NULL AND next_pull_at > now()") eq '2' }, 30),
	'both routes polled once (the safety net)');
my $cursor_sql = "SELECT route, cursor, last_pull_at, records_pulled, next_pull_at FROM switchboard.pull_status ORDER BY route";
my $cursor_before = q_($cursor_sql);

# An event as the receiver stores it: (route, event_id) unique, a redelivery stored once.
my $serial = 0;
sub event
{
	my ($route, $topic, $id, $ms_offset, $resource, %o) = @_;
	my $res = defined $resource ? "'" . encode_json($resource) . "'" : 'NULL';
	my $event_id = $o{event_id} // "$topic:$id@" . ($serial++);
	my $deleted = $topic =~ /deleted$/ ? 'true' : 'false';
	return "INSERT INTO switchboard.inbound_events (route, event_id, kind, object_id, type, deleted, occurred_at, resource, read_back) "
	  . "VALUES ('$route', '$event_id', 'woocommerce', " . (defined $id ? "'$id'" : 'NULL') . ", '$topic', $deleted, "
	  . "clock_timestamp() + interval '$ms_offset ms', $res, false) ON CONFLICT (route, event_id) DO NOTHING;";
}
sub applied_all
{
	return wait_for('events applied', sub { q_("SELECT count(*) FROM switchboard.inbound_events WHERE applied_at IS NULL") eq '0' }, 30);
}

# ---- WooCommerce events upserted through the pull side of the mappings ----------------------
my $t0 = time;
q_(event('customers_woo', 'customer.created', 7, 0, { id => 7, email => 'ann@x.io', first_name => 'Ann' })
	. event('orders_woo', 'order.created', 501, 0, { id => 501, status => 'processing', total => '12.50', billing => { email => 'ann@x.io' } })
	. 'SELECT switchboard.wake()');
ok(applied_all(), 'the events are applied');
my $elapsed = time - $t0;
ok($elapsed < 5, sprintf('applied when woken, not at the safety poll of 10 s (%.0f ms)', $elapsed * 1000));
is(q_("SELECT email || ' ' || first_name || ' ' || version FROM customers"), 'ann@x.io Ann 0', 'the customer is inserted');
is(q_("SELECT id || ' ' || status || ' ' || total || ' ' || email FROM orders"), '501 processing 12.50 ann@x.io',
	'the order is inserted, translated by pull_expr and casts');
is(q_("SELECT remote_id FROM switchboard.remote_ids WHERE route = 'customers_woo' AND key = 'ann\@x.io'"), '7',
	'the remote id is kept (a later deletion names it)');
is(q_("SELECT count(*) FROM switchboard.queue"), '0', 'no echo: the inbound write is not pushed back to its route');
is(q_($cursor_sql), $cursor_before, 'the polling cursor is untouched (pull_status before = after)');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE applied_at IS NOT NULL AND last_error IS NULL AND attempts = 0"), '2',
	'both events are applied (applied_at set, no error)');

# ---- newest event of a key wins; an event is applied once ---------------------------------
# In one batch: the newer state committed first, an older one (a late retry) after it.
q_('BEGIN; ' . event('customers_woo', 'customer.updated', 7, 2000, { id => 7, email => 'ann@x.io', first_name => 'Annie' }, event_id => 'annie')
	. event('customers_woo', 'customer.updated', 7, 1000, { id => 7, email => 'ann@x.io', first_name => 'Old' })
	. 'SELECT switchboard.wake(); COMMIT');
ok(applied_all(), 'applied');
is(q_("SELECT first_name || ' ' || version FROM customers"), 'Annie 1', 'the newest event of the key wins, in one update');
# A redelivery of an applied event (same event id) is stored once and changes nothing.
q_(event('customers_woo', 'customer.updated', 7, 5000, { id => 7, email => 'ann@x.io', first_name => 'Again' }, event_id => 'annie')
	. event('orders_woo', 'order.updated', 501, 0, { id => 501, status => 'completed' }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
ok(wait_for('order updated', sub { q_("SELECT status FROM orders") eq 'completed' }, 30), 'a later event applies');
is(q_("SELECT first_name || ' ' || version FROM customers"), 'Annie 1', 'the redelivered event is not applied twice');
is(q_("SELECT total FROM orders"), '12.50', 'fields an event lacks are left alone');

# ---- conflicts with a pending local change ------------------------------------------------
# The local change is held back (no push for an hour), so it stays pending.
sub hold_local
{
	my ($sql) = @_;
	q_("BEGIN; $sql; UPDATE switchboard.queue SET next_attempt_at = now() + interval '1 hour' WHERE state = 'pending'; COMMIT");
}
hold_local("UPDATE customers SET first_name = 'Local1' WHERE email = 'ann\@x.io'");
# newest: an event older than the local change loses, a newer one wins.
q_(event('customers_woo', 'customer.updated', 7, -60000, { id => 7, email => 'ann@x.io', first_name => 'Older' }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT first_name FROM customers"), 'Local1', 'newest: an event older than the pending local change loses');
is(q_("SELECT count(*) FROM switchboard.queue WHERE state = 'pending'"), '1', 'the local change is still to be pushed');
q_(event('customers_woo', 'customer.updated', 7, 60000, { id => 7, email => 'ann@x.io', first_name => 'Newer' }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT first_name FROM customers"), 'Newer', 'newest: an event newer than the pending local change wins');
is(q_("SELECT count(*) FROM switchboard.queue WHERE state = 'pending'"), '0', 'the overtaken local change is dropped');
# local: the pending local change wins even against a newer event.
q_("UPDATE switchboard.routes SET conflict = 'local' WHERE name = 'customers_woo'");
hold_local("UPDATE customers SET first_name = 'Local2' WHERE email = 'ann\@x.io'");
q_(event('customers_woo', 'customer.updated', 7, 60000, { id => 7, email => 'ann@x.io', first_name => 'Remote2' }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT first_name FROM customers"), 'Local2', 'local: the pending local change wins');
# An event older than a version of the record already applied ('Newer') is stale, a late
# redelivery: skipped whatever the policy, so the local row never goes back to it.
q_("UPDATE switchboard.routes SET conflict = 'remote' WHERE name = 'customers_woo'");
q_(event('customers_woo', 'customer.updated', 7, -60000, { id => 7, email => 'ann@x.io', first_name => 'Remote3' }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT first_name FROM customers"), 'Local2', 'an event older than a version already applied is skipped');
# remote: the event wins even when older than the pending local change.
hold_local("INSERT INTO customers (email, first_name) VALUES ('cat\@x.io', 'CatLocal')");
q_(event('customers_woo', 'customer.updated', 70, -60000, { id => 70, email => 'cat@x.io', first_name => 'CatRemote' }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT first_name FROM customers WHERE email = 'cat\@x.io'"), 'CatRemote', 'remote: the event wins even when older');
q_("DELETE FROM switchboard.queue; DELETE FROM customers WHERE email = 'cat\@x.io'; DELETE FROM switchboard.queue");

# ---- the echo of our own push ---------------------------------------------------------------
q_("UPDATE switchboard.routes SET conflict = 'newest' WHERE name = 'customers_woo'");
q_("UPDATE switchboard.queue SET next_attempt_at = NULL");
q_("DELETE FROM switchboard.queue");
q_("INSERT INTO customers (email, first_name) VALUES ('bob\@x.io', 'Pushed')");
is(q_("SELECT switchboard.wait_idle('30 s')"), 't', 'a local customer is pushed to the shop');
my ($bob) = grep { $_->{email} eq 'bob@x.io' } @{ json_get("$base/_control/woocommerce/customers") };
ok($bob, 'the shop has it');
# A newer local change is pending when the shop's webhook of our own push comes back late.
hold_local("UPDATE customers SET first_name = 'Local4' WHERE email = 'bob\@x.io'");
q_(event('customers_woo', 'customer.created', $bob->{id}, 60000, { id => $bob->{id}, email => 'bob@x.io', first_name => 'Pushed' })
	. 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT first_name FROM customers WHERE email = 'bob\@x.io'"), 'Local4', 'the echo of our own push does not beat a newer local change');
q_("DELETE FROM switchboard.queue");

# ---- a deletion applies to the remote id the route knows -----------------------------------
q_("UPDATE switchboard.routes SET on_delete = 'delete' WHERE name = 'customers_woo'");
q_(event('customers_woo', 'customer.deleted', 7, -60000, { id => 7 }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT count(*) FROM customers WHERE email = 'ann\@x.io'"), '1', 'a deletion older than a version applied since deletes nothing');
# (Stamped after the versions above, some of which were stamped a minute ahead: a deletion
# older than a version applied since is a late redelivery and deletes nothing.)
q_(event('customers_woo', 'customer.deleted', 999, 120000, { id => 999 }) . event('customers_woo', 'customer.deleted', 7, 120000, { id => 7 })
	. 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT string_agg(email, ',' ORDER BY email) FROM customers"), 'bob@x.io', 'the known customer is deleted, an unknown id deletes nothing');

# ---- a stale version and a bad record in one batch: each event is settled as its own ------------
q_(event('orders_woo', 'order.updated', 600, 0, { id => 600, status => 'processing', total => '6' }) . 'SELECT switchboard.wake()');
ok(applied_all(), 'order 600 applied');
q_('BEGIN; ' . event('orders_woo', 'order.updated', 600, -60000, { id => 600, status => 'stale', total => '5' }, event_id => 'stale600')
	. event('orders_woo', 'order.created', 601, 0, { id => 601, status => 'processing', total => 'lots' }, event_id => 'bad601')
	. 'COMMIT; SELECT switchboard.wake()');
ok(wait_for('both settled', sub { q_("SELECT count(*) FROM switchboard.inbound_events WHERE event_id IN ('stale600', 'bad601') "
	. "AND (applied_at IS NOT NULL OR attempts > 0)") eq '2' }, 30), 'both events settled');
is(q_("SELECT string_agg(event_id || ':' || (last_error IS NULL), ',' ORDER BY event_id) FROM switchboard.inbound_events "
	. "WHERE event_id IN ('stale600', 'bad601')"), 'bad601:false,stale600:true',
	'the bad record\'s event carries its error, the stale version\'s does not');
is(q_("SELECT status FROM orders WHERE id = 600"), 'processing', 'the stale version was not applied');
q_("DELETE FROM switchboard.inbound_events WHERE event_id = 'bad601'");

# ---- a bad record fails alone -----------------------------------------------------------------
q_('BEGIN; ' . event('orders_woo', 'order.created', 502, 0, { id => 502, status => 'processing', total => 'lots' })
	. event('orders_woo', 'order.created', 503, 0, { id => 503, status => 'processing', total => '3' })
	. event('orders_woo', 'order.created', undef, 0, { status => 'no id' }, event_id => 'noid')
	. 'SELECT switchboard.wake(); COMMIT');
ok(wait_for('good order', sub { q_("SELECT count(*) FROM orders WHERE id = 503") eq '1' }, 30), 'the good record of the batch is applied');
ok(wait_for('bad record recorded', sub { q_("SELECT attempts FROM switchboard.inbound_events WHERE object_id = '502'") ge '1' }, 30),
	'the bad record counts an attempt');
like(q_("SELECT last_error FROM switchboard.inbound_events WHERE object_id = '502'"), qr/numeric/, 'with its error in last_error');
is(q_("SELECT count(*) FROM orders WHERE id = 502"), '0', 'the bad record is not applied');
like(q_("SELECT (applied_at IS NOT NULL) || ' ' || attempts || ' ' || last_error FROM switchboard.inbound_events WHERE event_id = 'noid'"),
	qr/^true 1 the event names no object id/, 'an event naming no record fails at once');
ok(wait_for('given up', sub { q_("SELECT applied_at IS NOT NULL FROM switchboard.inbound_events WHERE object_id = '502'") eq 't' }, 30),
	'after max_attempts the bad record is failed');
is(q_("SELECT attempts FROM switchboard.inbound_events WHERE object_id = '502'"), '3', 'after 3 attempts');
is(q_("SELECT pending || ' ' || failed || ' ' || (last_error IS NOT NULL) FROM switchboard.inbound_status WHERE route = 'orders_woo'"),
	'0 2 true', 'inbound_status shows the failed events and the last error');
like(q_("SELECT string_agg(outcome, ',') FROM switchboard.deliveries WHERE route = 'orders_woo' AND key = '502'"), qr/pull_failed/,
	'the failure is in deliveries too, as for a pulled record');

# ---- retention ---------------------------------------------------------------------------------
my $kept = q_("SELECT count(*) FROM switchboard.inbound_events");
q_("UPDATE switchboard.inbound_events SET applied_at = now() - interval '4 days' WHERE route = 'customers_woo' AND last_error IS NULL");
my $old = q_("SELECT count(*) FROM switchboard.inbound_events WHERE applied_at < now() - interval '3 days'");
ok($old > 0, 'some applied events are older than the retention');
$node->reload; # a reload prunes at once
ok(wait_for('pruned', sub { q_("SELECT count(*) FROM switchboard.inbound_events") == $kept - $old }, 30),
	'applied events older than switchboard.inbound_retention (3 days) are deleted');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE last_error IS NOT NULL"), '2', 'failed events are kept (dead_letter_retention 0)');
is(q_($cursor_sql), $cursor_before, 'the polling cursor was never touched');

# ---- a route's events follow it: renamed, they are its; deleted, they go with it ----------------
# (issue 12 review: inbound_events.route had no foreign key. A renamed route stranded its pending
# events; one re-created under the same name applied the old route's payloads.)
q_("UPDATE switchboard.routes SET enabled = false WHERE name = 'orders_woo'");
q_(event('orders_woo', 'order.updated', 601, 0, { id => 601, status => 'before rename', total => '1' }));
q_("INSERT INTO switchboard.inbound_rejections (route, rejected) VALUES ('orders_woo', 4) "
	. "ON CONFLICT (route) DO UPDATE SET rejected = excluded.rejected");
q_("UPDATE switchboard.routes SET name = 'orders_shop' WHERE name = 'orders_woo'");
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE route = 'orders_woo'"), '0', 'renamed: no event is left under the old name');
is(q_("SELECT rejected FROM switchboard.inbound_status WHERE route = 'orders_shop'"), '4', 'the rejection count moved with it');
q_("UPDATE switchboard.routes SET enabled = true WHERE name = 'orders_shop'; SELECT switchboard.wake()");
ok(wait_for('applied after the rename', sub { q_("SELECT count(*) FROM orders WHERE id = 601 AND status = 'before rename'") eq '1' }, 30),
	'the pending event of the renamed route is applied by it');
q_("UPDATE switchboard.routes SET enabled = false WHERE name = 'orders_shop'");
q_(event('orders_shop', 'order.updated', 602, 0, { id => 602, status => 'of the old route', total => '1' }));
is(q_("SELECT rejected FROM switchboard.inbound_rejections WHERE route = 'orders_shop'"), '4', 'a rejection count to go');
q_("DELETE FROM switchboard.routes WHERE name = 'orders_shop'");
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE route = 'orders_shop'"), '0', 'deleted: its events go with it');
is(q_("SELECT count(*) FROM switchboard.inbound_rejections WHERE route = 'orders_shop'"), '0', 'and its rejection counts');
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, conflict, pull_interval)
VALUES ('orders_shop', 'orders', 'shop', 'orders', 'id::text', 'id', 'pull', 'newest', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column, pull_expr) VALUES
  ('orders_shop', 'id', NULL, 'id', NULL), ('orders_shop', 'status', NULL, 'status', NULL), ('orders_shop', 'total', NULL, 'total', NULL);
SELECT switchboard.wake();
});
ok(wait_for('the new route polled', sub { q_("SELECT count(*) FROM switchboard.pull_status WHERE route = 'orders_shop' AND last_pull_at IS NOT NULL") eq '1' }, 30),
	'a route re-created under the same name runs');
q_("SELECT switchboard.wake()");
sleep 2;
is(q_("SELECT count(*) FROM orders WHERE id = 602"), '0', 'and applies nothing the deleted route had received');

$node->stop;
done_testing();
