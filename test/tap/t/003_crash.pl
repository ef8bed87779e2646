# Crash safety (SPEC §4): kill -9 of the worker or an immediate shutdown in the middle of a
# batch loses no committed change (what was in flight is sent again); a change whose delivery
# keeps killing the worker becomes a dead letter instead of a crash loop; a change committed
# while the worker is down is delivered once the launcher restarts it.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my $t0 = time;
my ($base, $double) = start_double();
# PostgreSQL::Test::Cluster turns restart_after_crash off; these tests need the server to
# come back by itself after a backend is killed.
my $node = new_node('crash', restart_after_crash => 'on');
setup_hubspot_route($node, $base);

my $upsert_path = '/crm/v3/objects/contacts/batch/upsert';

# A query that may fail while the server restarts: undef then.
sub try_sql
{
	my ($query) = @_;
	my ($rc, $out) = $node->psql('postgres', $query, on_error_stop => 1);
	return $rc == 0 ? $out : undef;
}

sub worker_pid
{
	my $pid = try_sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
	return defined $pid && $pid =~ /^\d+$/ ? $pid : undef;
}

sub delivering_pid
{
	my $pid = try_sql(
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND query LIKE 'delivering%'");
	return defined $pid && $pid =~ /^\d+$/ ? $pid : undef;
}

# Waits until the worker is delivering; returns its pid.
sub wait_delivering
{
	my ($timeout) = @_;
	my $pid;
	wait_for('the worker delivering', sub { $pid = delivering_pid(); defined $pid }, $timeout // 30);
	return $pid;
}

# After a crash: waits until the server accepts queries and a worker other than $old runs.
sub wait_new_worker
{
	my ($old, $what) = @_;
	my $pid;
	wait_for($what // 'a new worker after the crash',
		sub { $pid = worker_pid(); defined $pid && (!defined $old || $pid != $old) }, 60);
	return $pid;
}

sub remote_keys
{
	my ($prefix) = @_;
	my %seen = map { $_->{key} => 1 } grep { index($_->{key}, $prefix) == 0 }
	  @{ json_get("$base/_control/records/hubspot/contacts") };
	return scalar keys %seen;
}

sub crash_restarts
{
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
	my @n = $log =~ /all server processes terminated; reinitializing/g;
	return scalar @n;
}

sub slow_upserts
{
	json_delete("$base/_control/faults");
	control($base, 'faults', { path_prefix => $upsert_path, kind => 'slow', delay_ms => 3000 });
}

my $first = wait_new_worker(undef, 'the worker to start');
ok($first, 'worker running');
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('warm\@x.com', 'W')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'warm-up change delivered');

# ---------------------------------------------------------------------------------------
# 1. kill -9 of the worker in the middle of a batch
slow_upserts();
$node->safe_psql('postgres',
	q{INSERT INTO contacts (email, first_name) SELECT 'k' || g || '@x.com', 'K' || g FROM generate_series(1, 100) g});
my $victim = wait_delivering();
ok($victim, "worker $victim is delivering the batch");
is(sql($node, "SELECT in_flight FROM switchboard.route_status"), '100', 'the batch is in flight');
ok(kill('KILL', $victim), 'kill -9 the worker mid-batch');
my $after = wait_new_worker($victim);
ok($after, "server recovered, new worker $after");
is(crash_restarts(), 1, 'the postmaster went through crash recovery');
json_delete("$base/_control/faults");
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'the interrupted batch settles');
is(remote_keys('k'), 100, 'all 100 records at the remote after the crash');
is(sql($node, "SELECT pending || ',' || in_flight || ',' || dead FROM switchboard.route_status"), '0,0,0',
	'route_status: nothing pending, in flight or dead');

# ---------------------------------------------------------------------------------------
# 2. immediate shutdown in the middle of a batch
slow_upserts();
$node->safe_psql('postgres',
	q{INSERT INTO contacts (email, first_name) SELECT 'i' || g || '@x.com', 'I' || g FROM generate_series(1, 100) g});
$victim = wait_delivering();
ok($victim, "worker $victim is delivering the second batch");
$node->stop('immediate');
$node->start;
$after = wait_new_worker($victim, 'a worker after the restart');
ok($after, "server restarted, worker $after");
json_delete("$base/_control/faults");
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'the interrupted batch settles after the restart');
is(remote_keys('i'), 100, 'all 100 records at the remote after the immediate shutdown');
is(sql($node, "SELECT pending || ',' || in_flight || ',' || dead FROM switchboard.route_status"), '0,0,0',
	'route_status: nothing pending, in flight or dead');

# ---------------------------------------------------------------------------------------
# 3. a change whose delivery keeps killing the worker becomes a dead letter, no crash loop
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.max_attempts = 3");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
sleep 0.6;
slow_upserts();
my $restarts_before = crash_restarts();
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('poison\@x.com', 'P')");
my $kills = 0;
my $dead_seen = 0;
for my $round (1 .. 4)
{
	my ($pid, $dead);
	wait_for(
		'the worker delivering the change, or the change dead',
		sub {
			$dead = try_sql("SELECT count(*) FROM switchboard.dead_letters WHERE key = 'poison\@x.com'");
			return 1 if defined $dead && $dead eq '1';
			$pid = delivering_pid();
			return defined $pid;
		},
		30);
	if (defined $dead && $dead eq '1')
	{
		$dead_seen = 1;
		last;
	}
	last unless defined $pid;
	kill 'KILL', $pid;
	$kills++;
	wait_new_worker($pid, "a new worker after kill $kills");
}
ok($dead_seen, "the change became a dead letter after $kills kills");
cmp_ok($kills, '<=', 3, 'at most max_attempts (3) kills');
cmp_ok($kills, '>=', 1, 'the worker was killed while delivering it');
my ($dl_attempts, $dl_error, $dl_payload) = split /\|/,
  sql($node, "SELECT attempts, last_error, payload->>'email' FROM switchboard.dead_letters WHERE key = 'poison\@x.com'");
like($dl_error // '', qr/worker stopped while delivering/, "last_error says the worker stopped while delivering it");
is($dl_payload, 'poison@x.com', 'the dead letter keeps the change');
is($dl_attempts, $kills, 'each kill counted as one attempt');
is(crash_restarts() - $restarts_before, $kills, 'one crash recovery per kill, no more');

# the worker now stays up, and with nothing due it sleeps between polls (naptime 200ms)
my $steady = wait_new_worker(undef, 'a worker after the last kill');
sleep 0.5;    # let it finish recovering the dead letter
my $cpu_file = "/proc/$steady/stat";
sub cpu_ticks
{
	my @f = split ' ', PostgreSQL::Test::Utils::slurp_file($cpu_file);
	return $f[13] + $f[14];    # utime + stime
}
my $cpu_before = -r $cpu_file ? cpu_ticks() : undef;
my $activity_before = sql($node, "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
my ($idle_seen, $samples, %seen_activity) = (0, 0);
my $watch_start = time;
while (time - $watch_start < 4)
{
	my $row = try_sql("SELECT state || ':' || coalesce(wait_event_type, '') || ':' || query "
		  . "FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
	if (defined $row)
	{
		$samples++;
		$seen_activity{$row}++;
		$idle_seen++ if $row =~ /^idle:/ || $row =~ /^[^:]*:Extension:/;
	}
	sleep 0.2;
}
my $watched = time - $watch_start;
note('worker activity samples: ' . join(', ', map { "$_ x$seen_activity{$_}" } sort keys %seen_activity));
ok($idle_seen, "the worker is seen idle, waiting on its latch ($idle_seen of $samples samples)");
if (defined $cpu_before)
{
	my $cpu_share = (cpu_ticks() - $cpu_before) / 100 / $watched;
	cmp_ok($cpu_share, '<', 0.1,
		sprintf('an idle worker does not spin (%.0f%% of a CPU with nothing to deliver)', 100 * $cpu_share));
}
sleep 1.1;    # pgstat flushes a backend's counters at most once a second
my $commits = sql($node, "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'") - $activity_before;
cmp_ok($commits / ($watched + 1.1), '<', 100,
	sprintf('an idle worker polls at naptime, not in a tight loop (%.0f transactions/s)', $commits / ($watched + 1.1)));
is(worker_pid(), $steady, 'the worker stays up (same pid a few seconds later)');
is(crash_restarts() - $restarts_before, $kills, 'no further crash');

json_delete("$base/_control/faults");
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('after\@x.com', 'A')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'a new change settles');
is(remote_keys('after@'), 1, 'the new change is delivered normally');
is(worker_pid(), $steady, 'by the same worker');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters"), '1', 'only the poison change is dead');
$node->safe_psql('postgres', "ALTER SYSTEM RESET switchboard.max_attempts");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');

# ---------------------------------------------------------------------------------------
# 4. a change committed while the worker is down is delivered once it is back
# a) the worker is terminated inside the writing transaction, which commits right after
my $old = worker_pid();
my ($seen_workers) = reverse split /\n/, $node->safe_psql('postgres', qq{
BEGIN;
INSERT INTO contacts (email, first_name) VALUES ('down\@x.com', 'Down');
SELECT pg_terminate_backend($old, 10000);
COMMIT;
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND pid <> $old;
});
note("workers running right after the insert committed: $seen_workers");
my $back = wait_new_worker($old, 'the launcher to restart the worker');
ok($back, "launcher restarted the terminated worker ($back)");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the change made while the worker stopped settles');
is(remote_keys('down@'), 1, 'the change made while the worker stopped is delivered');

# b) deterministic: ALTER DATABASE (from another database) stops the worker and keeps it away
# for a while, so this change is certainly committed while no worker runs.
$old = worker_pid();
$node->safe_psql('template1', "ALTER DATABASE postgres WITH CONNECTION LIMIT -1");
my ($none) = reverse split /\n/, $node->safe_psql('postgres', q{
INSERT INTO contacts (email, first_name) VALUES ('away@x.com', 'Away');
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker';
});
is($none, '0', 'no worker was running when the change committed');
is(sql($node, "SELECT pending FROM switchboard.route_status"), '1', 'the change waits in the queue');
$back = wait_new_worker($old, 'the launcher to bring the worker back');
ok($back, "launcher brought the worker back ($back)");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the change made while no worker ran settles');
is(remote_keys('away@'), 1, 'the change made while no worker ran is delivered');
is(sql($node, "SELECT pending || ',' || in_flight FROM switchboard.route_status"), '0,0', 'nothing left over');

# c) the record step fails (here a trigger on the history that raises once): the round's
# changes go back to pending at once instead of sitting in flight until a restart, where
# their stale state would overwrite what was delivered after them.
$node->safe_psql('postgres', q{
CREATE SEQUENCE record_faults;  -- not rolled back with the failing transaction
CREATE FUNCTION fail_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.key = 'rec@x.com' AND NEW.outcome = 'delivered' AND nextval('public.record_faults') = 1 THEN
		RAISE EXCEPTION 'injected failure of the record step';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER fail_record BEFORE INSERT ON switchboard.delivery_log FOR EACH ROW EXECUTE FUNCTION fail_record();
});
$old = worker_pid();
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('rec\@x.com', 'v1')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'a change whose result could not be recorded is not left in flight');
is(sql($node, "SELECT count(*) FROM switchboard.deliveries WHERE key = 'rec\@x.com' AND outcome = 'delivered'"), '1',
	'it was sent again and recorded');
is(worker_pid(), $old, 'without a restart of the worker');
$node->safe_psql('postgres', "UPDATE contacts SET first_name = 'v2' WHERE email = 'rec\@x.com'");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the newer change settles');
kill 'KILL', $old;
wait_new_worker($old, 'a worker after the kill');
sleep 1;
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'nothing in flight after the restart');
my ($rec) = grep { $_->{key} eq 'rec@x.com' } @{ json_get("$base/_control/records/hubspot/contacts") };
is($rec->{properties}{firstname}, 'v2', 'the remote keeps the newer state: nothing stale was sent after it');
$node->safe_psql('postgres', 'DROP TRIGGER fail_record ON switchboard.delivery_log');

$node->stop;
$double->kill_kill;
note(sprintf('003_crash took %.1f s', time - $t0));
done_testing();
