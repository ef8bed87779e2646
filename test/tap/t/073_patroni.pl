# Patroni (issue 13.2, SPEC §10): a two-member Patroni cluster with one etcd, all on
# 127.0.0.1, synchronous_mode on, switchboard preloaded, a route to the double. Rows are written
# continuously; the leader dies (kill -9 of its Patroni and its postmaster), the replica is
# promoted and writing resumes on it: every committed row reaches the double (duplicates
# allowed, none missing), and the old leader rejoins as a replica without delivering. Then the
# same through a clean switchover. Skipped when patroni or etcd is not installed
# (scripts/install-deps.sh installs them).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);
use IPC::Run;
use File::Path qw(make_path);
use HTTP::Tiny;

my $patroni = '/usr/bin/patroni';
my $etcd = '/usr/bin/etcd';
plan skip_all => 'patroni and etcd-server not installed' unless -x $patroni && -x $etcd;

my $t0 = time;
my ($base, $double) = start_double();
my $dir = "$PostgreSQL::Test::Utils::tmp_check/patroni";
make_path($dir);
my $bindir = `pg_config --bindir`;
chomp $bindir;
my $port = sub { PostgreSQL::Test::Cluster::get_free_port() };
my ($etcd_client, $etcd_peer) = ($port->(), $port->());

my @procs;
END
{
	# Patroni killed hard leaves its postmaster behind: stop both servers first.
	for my $name ('m1', 'm2')
	{
		system("pg_ctl", "stop", "-s", "-m", "immediate", "-D", "$dir/$name") if -f "$dir/$name/postmaster.pid";
	}
	$_->kill_kill for grep { $_->pumpable } @procs;
}

sub start_proc
{
	my ($name, @cmd) = @_;
	my $h = IPC::Run::start(\@cmd, '>', "$dir/$name.log", '2>&1');
	push @procs, $h;
	return $h;
}

start_proc('etcd', $etcd, '--name', 'e1', '--data-dir', "$dir/etcd",
	'--listen-client-urls', "http://127.0.0.1:$etcd_client",
	'--advertise-client-urls', "http://127.0.0.1:$etcd_client",
	'--listen-peer-urls', "http://127.0.0.1:$etcd_peer",
	'--initial-advertise-peer-urls', "http://127.0.0.1:$etcd_peer",
	'--initial-cluster', "e1=http://127.0.0.1:$etcd_peer", '--enable-v2=true');

my %member;
for my $name ('m1', 'm2')
{
	my ($pg, $api) = ($port->(), $port->());
	$member{$name} = { pg => $pg, api => $api, conf => "$dir/$name.yml" };
	open my $fh, '>', "$dir/$name.yml" or die;
	print $fh <<"EOY";
scope: sb
namespace: /sb$$/
name: $name
restapi:
  listen: 127.0.0.1:$api
  connect_address: 127.0.0.1:$api
etcd3:
  hosts: 127.0.0.1:$etcd_client
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 3
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        shared_preload_libraries: switchboard
        switchboard.naptime: 200ms
        max_worker_processes: 16
        wal_log_hints: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
  initdb:
    - encoding: UTF8
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $dir/$name
  bin_dir: $bindir
  pgpass: $dir/$name.pgpass
  authentication:
    superuser: {username: postgres, password: x}
    replication: {username: postgres, password: x}
    rewind: {username: postgres, password: x}
  parameters:
    unix_socket_directories: '$dir'
tags: {nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}
EOY
	close $fh;
}

sub start_member
{
	my ($name) = @_;
	$member{$name}{h} = start_proc("$name-" . int(time), $patroni, $member{$name}{conf});
}

# psql against a member; undef when it fails.
sub psql_on
{
	my ($name, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ "$bindir/psql", '-X', '-At', '-h', '127.0.0.1', '-p', $member{$name}{pg},
			'-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', $sql ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(20));
	chomp $out;
	return $ok ? $out : undef;
}

sub leader
{
	for my $name (sort keys %member)
	{
		my $r = psql_on($name, 'SELECT pg_is_in_recovery()');
		return $name if defined $r && $r eq 'f';
	}
	return undef;
}

# Patroni itself counts the member as the synchronous standby (a switchover needs that).
sub patroni_sync
{
	my ($name) = @_;
	my $res = HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$member{$name}{api}/synchronous");
	return $res->{status} == 200;
}

sub workers_on
{
	my ($name) = @_;
	return psql_on($name, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
}

start_member('m1');
my $l;
ok(wait_for('m1 to become leader', sub { $l = leader(); defined $l && $l eq 'm1' }, 90), 'm1 leads');
start_member('m2');
ok( wait_for(
		'm2 streaming synchronously',
		sub { (psql_on('m1', "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") // '') eq '1' }, 90),
	'm2 is a synchronous replica');

my $setup = <<"EOS";
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text, first_name text, status text, score int);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, on_delete)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'delete');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('contacts_hs', 'email', 'lower(email)'), ('contacts_hs', 'firstname', 'first_name');
EOS
ok(defined psql_on('m1', $setup), 'extension and route created on the leader');

my %committed;
my $serial = 0;
# Writes one row to whichever member leads; records it only if the commit returned.
sub write_row
{
	my ($tag) = @_;
	my $target = leader() // return 0;
	my $key = sprintf('%s%04d@x.com', $tag, ++$serial);
	my $r = psql_on($target, "INSERT INTO contacts (email, first_name) VALUES ('$key', 'P') RETURNING 1");
	# psql prints the RETURNING row and then the command tag ("1\nINSERT 0 1").
	$committed{$key} = 1 if defined $r && $r =~ /\A1$/m;
	return defined $r;
}

sub remote_keys
{
	return { map { $_->{key} => 1 } @{ json_get("$base/_control/records/hubspot/contacts") } };
}

sub all_delivered
{
	my ($what) = @_;
	my $missing;
	wait_for($what, sub {
		my $remote = remote_keys();
		$missing = grep { !$remote->{$_} } keys %committed;
		return $missing == 0;
	}, 60);
	is($missing, 0, "$what: every committed row reached the double (" . scalar(keys %committed) . ' rows)');
}

write_row('a') for 1 .. 20;
all_delivered('before the failover');

# ---- failover: kill -9 of the leader's Patroni and postmaster, writes go on ----
my $pidfile = "$dir/m1/postmaster.pid";
my ($pm) = split /\n/, PostgreSQL::Test::Utils::slurp_file($pidfile);
# Requests in flight when the leader dies: the double holds each upsert 3 s and then drops
# the connection without applying it, so the rows of those requests reach the double only if
# the new leader delivers them again.
my $upsert = '/crm/v3/objects/contacts/batch/upsert';
control($base, 'faults', { kind => 'drop', delay_ms => 3000, path_prefix => $upsert });
write_row('b') for 1 .. 10;    # committed (synchronously replicated) before the kill
ok(wait_for('requests in flight', sub { json_get("$base/_control/stats")->{in_flight} >= 1 }, 30),
	'requests of the leader are in flight at the double');
$member{m1}{h}->signal('KILL');
$member{m1}{h}->finish;
kill 'KILL', $pm;
my $failover_start = time;
my $in_flight_at_kill = json_get("$base/_control/stats")->{in_flight};
json_delete("$base/_control/faults");
cmp_ok($in_flight_at_kill, '>=', 1, "the leader died with $in_flight_at_kill requests in flight");
wait_for('m2 promoted', sub { write_row('c'); my $x = leader(); defined $x && $x eq 'm2' }, 90);
is(leader(), 'm2', sprintf('Patroni promoted m2 (%.0f s)', time - $failover_start));
write_row('d') for 1 .. 20;
ok(wait_for('a worker on m2', sub { (workers_on('m2') // 0) >= 1 }, 30), 'the new leader runs a worker');
all_delivered('after the failover');
# The dropped requests' rows: committed, never applied by the old leader's attempt.
my %dropped;
for my $r (grep { ($_->{fault} // '') eq 'drop' } @{ double_requests($base, $upsert) })
{
	$dropped{ lc($_->{id}) } = 1 for @{ (ref $r->{body} eq 'HASH' ? $r->{body}{inputs} : undef) // [] };
}
my @lost_in_flight = sort grep { $committed{$_} } keys %dropped;
my $remote = remote_keys();
my @redelivered = grep { $remote->{$_} } @lost_in_flight;
cmp_ok(scalar @lost_in_flight, '>=', 1,
	scalar(@lost_in_flight) . ' committed rows were in requests dropped at the kill (' . join(',', @lost_in_flight) . ')');
is(scalar @redelivered, scalar @lost_in_flight, 'the new leader delivered all of them again');

start_member('m1');
ok( wait_for(
		'm1 back as a replica',
		sub { (psql_on('m1', 'SELECT pg_is_in_recovery()') // '') eq 't' }, 90),
	'the old leader rejoins as a replica');
ok( wait_for(
		'm1 launcher waiting',
		sub {
			(psql_on('m1', "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'switchboard launcher (standby)'")
				  // '') eq '1';
		},
		30),
	'its launcher waits for promotion');
write_row('e') for 1 .. 10;
# Patroni may restart m1 once more while it rejoins: ask until it answers.
my $m1_workers;
wait_for('m1 to answer', sub { defined($m1_workers = workers_on('m1')) }, 60);
is($m1_workers, '0', 'no worker on the rejoined old leader');
ok( wait_for(
		'm1 synchronous again',
		sub {
			(psql_on('m2', "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") // '') eq '1'
			  && patroni_sync('m1');
		},
		90),
	'm1 is the synchronous replica');
all_delivered('after the rejoin');

# ---- clean switchover back to m1 ----
my ($out, $err) = ('', '');
for my $try (1 .. 5)
{
	($out, $err) = ('', '');
	last
	  if IPC::Run::run(
		[ '/usr/bin/patronictl', '-c', $member{m2}{conf}, 'switchover', '--leader', 'm2', '--candidate', 'm1', '--force' ],
		'>', \$out, '2>', \$err)
	  && $out !~ /failed/i;
	sleep 2;
}
note("patronictl switchover: $out $err");
wait_for('m1 leads again', sub { write_row('f'); my $x = leader(); defined $x && $x eq 'm1' }, 90);
is(leader(), 'm1', 'switchover to m1');
write_row('g') for 1 .. 20;
all_delivered('after the switchover');
ok(wait_for('m2 a replica', sub { (psql_on('m2', 'SELECT pg_is_in_recovery()') // '') eq 't' }, 90), 'm2 is a replica');
is(workers_on('m2'), '0', 'no worker on the old leader after the switchover');

diag(sprintf('t/073 took %.1f s', time - $t0));
if (!Test::More->builder->is_passing)
{
	for my $log (sort glob("$dir/*.log"))
	{
		my $text = PostgreSQL::Test::Utils::slurp_file($log);
		my $from = length($text) > 3000 ? length($text) - 3000 : 0;
		diag("---- $log (tail)\n" . substr($text, $from));
	}
}
$_->signal('TERM') for grep { $_->pumpable } @procs;
done_testing();
