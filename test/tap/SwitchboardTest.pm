# Shared setup for the integration tests: a PostgreSQL cluster with switchboard preloaded,
# the CRM double on an ephemeral 127.0.0.1 port, and small helpers to drive both.
package SwitchboardTest;

use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(busiest_window new_node start_double control wait_for sql json_get json_post json_delete
  double_requests setup_hubspot_route);

my $json = JSON::PP->new->canonical;
my $http = HTTP::Tiny->new(timeout => 30);

# A started cluster with switchboard preloaded and quick polling.
sub new_node
{
	my ($name, %conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $extra = join('', map { "$_ = $conf{$_}\n" } sort keys %conf);
	$node->append_conf('postgresql.conf', <<"EOC" . $extra);
shared_preload_libraries = 'switchboard'
switchboard.naptime = '200ms'
log_statement = none
log_min_messages = log
max_worker_processes = 32
EOC
	$node->start;
	return $node;
}

# Every double started, stopped when the test ends however it ends: one left running would
# outlive the test (and hold whatever files it inherited).
my @doubles;
END { $_->kill_kill for grep { $_->pumpable } @doubles; }

# The CRM double on an ephemeral port; returns (base_url, harness). Extra CLI args allowed.
sub start_double
{
	my (@args) = @_;
	my $script = File::Spec->rel2abs(dirname(__FILE__) . '/../doubles/crm_double.py');
	my $port_file = "$PostgreSQL::Test::Utils::tmp_check/double_port_$$" . int(rand(1e6));
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'python3', $script, '--port', '0', '--port-file', $port_file, @args ],
		'>', \$out, '2>', \$err);
	my $deadline = time + 20;
	while (!-s $port_file)
	{
		die "CRM double did not start: $err" if time > $deadline;
		usleep(50_000);
	}
	my $port = PostgreSQL::Test::Utils::slurp_file($port_file);
	$port =~ s/\s+//g;
	push @doubles, $h;
	return ("http://127.0.0.1:$port", $h);
}

sub _request
{
	my ($method, $url, $body) = @_;
	my %opt = (headers => { 'Content-Type' => 'application/json' });
	$opt{content} = $json->encode($body) if defined $body;
	my $res = $http->request($method, $url, \%opt);
	die "$method $url: $res->{status} $res->{content}" unless $res->{success};
	return length($res->{content} // '') ? $json->decode($res->{content}) : undef;
}

sub json_get    { return _request('GET',    @_); }
sub json_post   { return _request('POST',   @_); }
sub json_delete { return _request('DELETE', @_); }

# POST /_control/<what> on the double.
sub control
{
	my ($base, $what, $body) = @_;
	return _request('POST', "$base/_control/$what", $body // {});
}

# Requests the double received under a path prefix.
sub double_requests
{
	my ($base, $prefix) = @_;
	my $list = json_get("$base/_control/requests?path_prefix=$prefix");
	return ref $list eq 'HASH' ? $list->{requests} : $list;
}

# Polls a Perl condition until true (or fails the test after $timeout seconds).
sub wait_for
{
	my ($what, $cond, $timeout) = @_;
	$timeout //= 60;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	fail("timed out waiting for $what");
	return 0;
}

sub sql
{
	my ($node, $query, $db) = @_;
	return $node->safe_psql($db // 'postgres', $query);
}

# The most arrival times (ms) that fall in any window of window_ms starting at one of them:
# what a remote counting requests in a sliding window saw at its busiest.
sub busiest_window
{
	my ($window_ms, @at) = @_;
	my $busiest = 0;
	for my $i (0 .. $#at)
	{
		my $n = grep { $_ >= $at[$i] && $_ < $at[$i] + $window_ms } @at;
		$busiest = $n if $n > $busiest;
	}
	return $busiest;
}

# A contacts table with a HubSpot route to the double (token hs-test-token).
sub setup_hubspot_route
{
	my ($node, $base, %opt) = @_;
	my $db = $opt{db} // 'postgres';
	my $options = $opt{options} // '{}';
	my $route = $opt{route} // 'contacts_hs';
	$node->safe_psql($db, <<"EOS");
CREATE EXTENSION IF NOT EXISTS switchboard;
CREATE TABLE IF NOT EXISTS contacts (id serial PRIMARY KEY, email text, first_name text, status text, score int);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token') ON CONFLICT DO NOTHING;
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options)
VALUES ('hubspot', 'hubspot', '$base', 'hs', '$options')
ON CONFLICT (name) DO UPDATE SET base_url = excluded.base_url, options = excluded.options;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, on_delete)
VALUES ('$route', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'delete');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('$route', 'email', 'lower(email)'), ('$route', 'firstname', 'first_name');
EOS
}

1;
