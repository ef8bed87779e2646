# A hot standby stays quiet (SPEC §10): its launcher waits for promotion (pg_stat_activity
# shows it), no worker runs there, and the queue, the configuration and the capture triggers
# arrive by replication. On promotion the workers start by themselves and deliver every change
# that reached the standby, the one the old primary had in flight again.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my $t0 = time;
my ($base, $double) = start_double();

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'switchboard'
switchboard.naptime = '200ms'
log_min_messages = log
max_worker_processes = 32
EOC
$primary->start;
setup_hubspot_route($primary, $base);
my $upsert_path = '/crm/v3/objects/contacts/batch/upsert';

sub remote_keys
{
	my ($prefix) = @_;
	my %seen = map { $_->{key} => 1 } grep { index($_->{key}, $prefix) == 0 }
	  @{ json_get("$base/_control/records/hubspot/contacts") };
	return scalar keys %seen;
}

# Keys sent to the double in upserts after request $since.
sub sent_keys
{
	my ($since, $prefix) = @_;
	my %keys;
	for my $r (@{ json_get("$base/_control/requests?path_prefix=$upsert_path&since=$since") })
	{
		my $body = $r->{body};
		next unless ref $body eq 'HASH';
		for my $input (@{ $body->{inputs} // [] })
		{
			my $k = $input->{id} // $input->{properties}{email} // '';
			$keys{$k} = 1 if index($k, $prefix) == 0;
		}
	}
	return scalar keys %keys;
}

sub last_seq
{
	my $list = json_get("$base/_control/requests");
	return @$list ? $list->[-1]{seq} : 0;
}

sub activity
{
	my ($node, $what) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE $what");
}

$primary->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('warm\@x.com', 'W')");
is(sql($primary, "SELECT switchboard.wait_idle('30 s')"), 't', 'warm-up change delivered by the primary');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

# 1. the standby's launcher waits for promotion, visibly; no worker there
ok( wait_for(
		'the standby launcher waiting for promotion',
		sub {
			activity($standby,
				"backend_type = 'switchboard launcher' AND application_name = 'switchboard launcher (standby)' "
				  . "AND query LIKE 'waiting for promotion%'") eq '1';
		},
		30),
	'pg_stat_activity shows the standby launcher waiting for promotion');

# 2. a change in flight on the primary (the double holds its request), more queued behind it
control($base, 'faults', { path_prefix => $upsert_path, kind => 'slow', delay_ms => 60000, count => 1 });
$primary->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('a1\@x.com', 'A')");
ok( wait_for(
		'the primary delivering',
		sub {
			activity($primary, "backend_type = 'switchboard worker' AND query LIKE 'delivering%'") eq '1';
		},
		30),
	'the primary has a change in flight');
$primary->safe_psql('postgres',
	q{INSERT INTO contacts (email, first_name) SELECT 'b' || g || '@x.com', 'B' FROM generate_series(1, 20) g});
$primary->wait_for_catchup($standby);

is(sql($standby, "SELECT count(*) FROM switchboard.routes WHERE name = 'contacts_hs'"), '1',
	'the route reached the standby by replication');
is(sql($standby, "SELECT in_flight || ',' || pending FROM switchboard.route_status"), '1,20',
	'the standby sees the in-flight change and the queued ones');
is(sql($standby, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'contacts'::regclass AND NOT tgisinternal")
	  > 0 ? 1 : 0, 1, 'the capture triggers reached the standby');
is(activity($standby, "backend_type = 'switchboard worker'"), '0', 'no switchboard worker runs on the standby');

# 3. the primary dies; the standby, still unpromoted, sends nothing
$primary->stop('immediate');
my $seq = last_seq();
sleep 1.5;
is(last_seq(), $seq, 'nothing reached the double from the standby before promotion');
is(activity($standby, "backend_type = 'switchboard worker'"), '0', 'still no worker on the standby');

# 4. promotion: workers start by themselves and deliver everything, the in-flight one again
$standby->promote;
ok( wait_for(
		'a worker on the promoted standby',
		sub { activity($standby, "backend_type = 'switchboard worker'") eq '1' }, 30),
	'a worker starts on the new primary by itself');
is(sql($standby, "SELECT switchboard.wait_idle('60 s')"), 't', 'the new primary settles its queue');
is(sent_keys($seq, 'a1@'), 1, 'the change in flight on the old primary was delivered again by the new one');
is(remote_keys('b'), 20, 'every queued change reached the remote');
is(activity($standby, "backend_type = 'switchboard launcher' AND application_name = 'switchboard launcher'"),
	'1', 'the launcher no longer says standby');

$standby->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('c1\@x.com', 'C')");
is(sql($standby, "SELECT switchboard.wait_idle('30 s')"), 't', 'a change written on the new primary settles');
is(remote_keys('c1@'), 1, 'the replicated capture trigger captures on the new primary');
is(sql($standby, "SELECT pending || ',' || in_flight || ',' || dead FROM switchboard.route_status"), '0,0,0',
	'route_status: nothing pending, in flight or dead');

note(sprintf('t/070 took %.1f s', time - $t0));
done_testing();
