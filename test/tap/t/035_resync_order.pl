# resync() never sends a stale image after a newer one (issue 9 item 7, SPEC §4).
# resync reads rows without locking them. A transaction that changes a row after resync's
# snapshot, but draws its queue id before resync queues the row, used to leave the older image
# with the higher id: the worker then sent the stale image last and the remote kept it.
#  1. the writer is still in progress when resync reads: resync waits for it, then queues the
#     newest version;
#  2. the writer commits while resync is between reading the row and queueing it (where_clause
#     sleeps): resync replaces its image with the newest version.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('resync_order');
setup_hubspot_route($node, $base);
$node->safe_psql('postgres', q{
INSERT INTO contacts (id, email, first_name) VALUES (1, 'one@x.com', 'V1'), (2, 'two@x.com', 'V1'),
  (3, 'three@x.com', 'V1');
});
sub wait_idle { return sql($node, "SELECT switchboard.wait_idle('60 s')"); }
sub firstname
{
	my ($key) = @_;
	my ($r) = grep { $_->{key} eq $key } @{ json_get("$base/_control/records/hubspot/contacts") };
	return $r ? $r->{properties}{firstname} : undef;
}
is(wait_idle(), 't', 'the first state is delivered');
is(firstname('one@x.com'), 'V1', 'the remote has V1');

# ---------------------------------------------------------------------------------------
# 1. a writer in progress while resync reads
my $writer = $node->background_psql('postgres');
$writer->query_safe("BEGIN; UPDATE contacts SET first_name = 'V2' WHERE id = 1");
my $resync = $node->background_psql('postgres', wait => 0, on_error_stop => 0);
$resync->{stdin} .= "SELECT switchboard.resync('contacts_hs', 'id = 1');\n\\echo resynced\n";
$resync->{run}->pump_nb();
ok( wait_for('resync to wait for the writer',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT switchboard.resync%' "
			  . "AND wait_event_type = 'Lock'") eq '1' }, 20),
	'resync waits for the transaction that is changing the row');
$writer->query_safe('COMMIT');
$resync->{run}->pump until $resync->{stdout} =~ /resynced/ || !$resync->{run}->pumpable;
like($resync->{stdout}, qr/^1$/m, 'resync queued the row');
is($resync->{stderr}, '', 'without an error');
is(wait_idle(), 't', 'settled');
is(firstname('one@x.com'), 'V2', 'the remote keeps the newer value, not the image resync read first');

# ---------------------------------------------------------------------------------------
# 2. a writer that commits between resync's read and its queueing
$resync = $node->background_psql('postgres', wait => 0, on_error_stop => 0);
$resync->{stdin} .= "SELECT switchboard.resync('contacts_hs', 'id = 2 AND (SELECT true FROM pg_sleep(2))');\n"
  . "\\echo resynced\n";
$resync->{run}->pump_nb();
ok( wait_for('resync to read the row',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT switchboard.resync%' "
			  . "AND wait_event = 'PgSleep'") eq '1' }, 20),
	'resync is between reading the row and queueing it');
$node->safe_psql('postgres', "UPDATE contacts SET first_name = 'V2' WHERE id = 2");
$resync->{run}->pump until $resync->{stdout} =~ /resynced/ || !$resync->{run}->pumpable;
is($resync->{stderr}, '', 'resync succeeds');
is(wait_idle(), 't', 'settled');
is(firstname('two@x.com'), 'V2', 'the remote keeps the value committed during resync');

# ---------------------------------------------------------------------------------------
# 3. a writer that aborts: resync still sends the row
$writer->query_safe("BEGIN; UPDATE contacts SET first_name = 'never' WHERE id = 3");
$resync = $node->background_psql('postgres', wait => 0, on_error_stop => 0);
$resync->{stdin} .= "SELECT switchboard.resync('contacts_hs', 'id = 3');\n\\echo resynced\n";
$resync->{run}->pump_nb();
ok( wait_for('resync to wait for the writer',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%switchboard.resync%' "
			  . "AND wait_event_type = 'Lock'") eq '1' }, 20),
	'resync waits for the writer');
my $before = scalar @{ double_requests($base, '/crm/') };
$writer->query_safe('ROLLBACK');
$resync->{run}->pump until $resync->{stdout} =~ /resynced/ || !$resync->{run}->pumpable;
like($resync->{stdout}, qr/^1$/m, 'the row is queued once the writer rolled back');
is(wait_idle(), 't', 'settled');
ok(scalar @{ double_requests($base, '/crm/') } > $before, 'and it is sent');
is(firstname('three@x.com'), 'V1', 'with the value that stayed');

# ---------------------------------------------------------------------------------------
# 4. REPEATABLE READ cannot re-read: a concurrent change is a serialization failure
$writer->query_safe("BEGIN; UPDATE contacts SET first_name = 'V3' WHERE id = 1");
$resync = $node->background_psql('postgres', wait => 0, on_error_stop => 0);
$resync->{stdin} .= "BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT switchboard.resync('contacts_hs', 'id = 1');\n"
  . "ROLLBACK;\n\\echo resynced\n";
$resync->{run}->pump_nb();
ok( wait_for('resync to wait for the writer',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%switchboard.resync%' "
			  . "AND wait_event_type = 'Lock'") eq '1' }, 20),
	'resync waits for the writer');
$writer->query_safe('COMMIT');
$resync->{run}->pump until $resync->{stdout} =~ /resynced/ || !$resync->{run}->pumpable;
like($resync->{stderr}, qr/could not serialize access due to concurrent update/,
	'in REPEATABLE READ the caller is told to retry');
is(wait_idle(), 't', 'settled');
is(firstname('one@x.com'), 'V3', 'the writer\'s value reaches the remote');

# ---------------------------------------------------------------------------------------
# 5. a writer that changes the row after resync checked it, and is delivered before resync's
#    transaction commits: resync's image, older, must not follow it
$resync = $node->background_psql('postgres');
$resync->query_safe("BEGIN; SELECT switchboard.resync('contacts_hs', 'id = 2')");
$node->safe_psql('postgres', "UPDATE contacts SET first_name = 'V4' WHERE id = 2");
ok(wait_for('the newer value to be delivered', sub { (firstname('two@x.com') // '') eq 'V4' }, 30),
	'the writer\'s change is delivered while resync\'s transaction is open');
$resync->query_safe('COMMIT');
is(wait_idle(), 't', 'settled');
is(firstname('two@x.com'), 'V4', 'resync\'s older image, committed later, did not overwrite it');
like(sql($node, "SELECT error FROM switchboard.deliveries WHERE key = 'two\@x.com' ORDER BY at DESC LIMIT 1"),
	qr/not sent/, 'deliveries says why it was not sent');
$resync->quit;

$writer->quit;
$node->stop;
done_testing();
