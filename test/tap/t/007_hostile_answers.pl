# Hostile answers (issue 7 item 5): a HubSpot search page with a 100,000-deep nested property
# must not crash the worker (nlohmann's copy recursed once per level and overflowed the stack,
# the postmaster then restarted every backend, and the pull repeated it forever). The page is
# refused with the reason in pull_status; and a worker that does die while pulling a route
# (kill -9 here) leaves that route backed off with the reason, instead of a crash loop.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use IPC::Run;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time usleep);

my ($base, $double) = start_double();
# A crash would restart every backend (and show in the log) instead of shutting down.
my $node = new_node('hostile', restart_after_crash => 'on');

sub psql_ok { my ($q) = @_; return $node->safe_psql('postgres', $q); }
sub try_sql
{
	my ($q) = @_;
	my ($rc, $out) = $node->psql('postgres', $q, on_error_stop => 1);
	return $rc == 0 ? $out : undef;
}
sub worker_pid
{
	my $pid = try_sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
	return defined $pid && $pid =~ /^\d+$/ ? $pid : undef;
}
sub pulling_pid
{
	my $pid = try_sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' "
		  . "AND query LIKE 'pulling contacts_hs%'");
	return defined $pid && $pid =~ /^\d+$/ ? $pid : undef;
}
sub hs_put
{
	my ($key, $props) = @_;
	my $res = HTTP::Tiny->new->request('PUT', "$base/_control/records/hubspot/contacts/$key",
		{ headers => { 'Content-Type' => 'application/json' },
		  content => JSON::PP->new->encode({ properties => $props }) });
	die "PUT $key: $res->{status} $res->{content}" unless $res->{success};
}

psql_ok(q{
CREATE EXTENSION switchboard;
CREATE TABLE contacts (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
psql_ok("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
hs_put("a$_\@x.com", { email => "a$_\@x.com", firstname => "A$_" }) for 1 .. 3;

# A session opened before: it must stay usable (no backend is restarted).
my ($in, $out, $err) = ('', '', '');
my $session = IPC::Run::start([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
sub session_pid
{
	$out = '';
	$in .= "SELECT 'pid:' || pg_backend_pid();\n";
	my $deadline = time + 20;
	while (time < $deadline)
	{
		eval { $session->pump_nb; };
		return $1 if $out =~ /pid:(\d+)/;
		last if $@ || !$session->pumpable;
		usleep(50_000);
	}
	return undef;
}
my $session_before = session_pid();
ok(defined $session_before, 'a session is open before the hostile answer');
my $started = psql_ok('SELECT pg_postmaster_start_time()');
my $worker_before = worker_pid();
ok(defined $worker_before, 'the worker runs');

control($base, 'faults', { path_prefix => '/crm/v3/objects/contacts/search', kind => 'deep', depth => 100000, count => -1 });
psql_ok(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'email', 'email', 'pull', '2 s');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('contacts_hs', 'email', 'email'), ('contacts_hs', 'firstname', 'first_name');
});
ok(wait_for('the hostile page refused',
		sub { (try_sql("SELECT last_error FROM switchboard.pull_status WHERE route = 'contacts_hs'") // '') =~ /nested deeper/ }, 60),
	'the page is refused');
like(psql_ok("SELECT last_error FROM switchboard.pull_status WHERE route = 'contacts_hs'"),
	qr/^hubspot pull answer refused: JSON nested deeper than 64 levels$/, 'pull_status.last_error gives the reason');
# Let it come back a few times (pull_interval 2 s): every try is refused the same way.
my $hits = sub { my $s = json_get("$base/_control/stats"); $s->{faults_applied}{deep} // 0 };
ok(wait_for('three hostile pages', sub { $hits->() >= 3 }, 60), 'the route was tried again and refused again');
is(worker_pid(), $worker_before, 'the same worker still runs');
is(session_pid(), $session_before, 'the session opened before is still usable (no backend restarted)');
is(psql_ok('SELECT pg_postmaster_start_time()'), $started, 'the postmaster did not restart');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'no process was terminated by a signal');
unlike($log, qr/terminating any other active server processes/, 'no crash recovery');
is(psql_ok('SELECT count(*) FROM contacts'), '0', 'nothing of the hostile page was applied');
is(psql_ok("SELECT coalesce(cursor, '0') FROM switchboard.pull_status WHERE route = 'contacts_hs'"), '0',
	'the cursor did not move');
$in .= "\\q\n";
eval { $session->finish; };

# Once the remote answers sanely, the route pulls again.
json_delete("$base/_control/faults");
ok(wait_for('records pulled', sub { psql_ok('SELECT count(*) FROM contacts') eq '3' }, 60), 'a sane answer is applied');

# The crash-loop guard: the worker dies (kill -9) while pulling the route, twice in a row.
psql_ok("UPDATE switchboard.routes SET pull_interval = '1 s' WHERE name = 'contacts_hs'");
control($base, 'faults', { path_prefix => '/crm/v3/objects/contacts/search', kind => 'slow', delay_ms => 4000, count => -1 });
psql_ok("SELECT switchboard.pull_now('contacts_hs')");
for my $n (1 .. 2)
{
	my $pid;
	ok(wait_for("the worker pulling (try $n)", sub { $pid = pulling_pid(); defined $pid }, 90), "the worker is pulling (try $n)");
	kill 'KILL', $pid if defined $pid;
	wait_for('a new worker', sub { my $w = worker_pid(); defined $w && $w != ($pid // 0) }, 90);
}
like(psql_ok("SELECT last_error FROM switchboard.pull_status WHERE route = 'contacts_hs'"),
	qr/^the worker stopped while pulling a page of this route \(2 times in a row\)/,
	'pull_status says the worker stopped twice in a row while pulling this route');
ok(psql_ok("SELECT next_pull_at > now() + interval '1 s' FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't',
	'and the route is backed off (longer after each stop)');
json_delete("$base/_control/faults");
hs_put('a1@x.com', { firstname => 'A1 again' });
ok(wait_for('pulling resumes', sub { (try_sql("SELECT first_name FROM contacts WHERE email = 'a1\@x.com'") // '') eq 'A1 again' }, 90),
	'after the backoff the route pulls again');

$node->stop;
$double->kill_kill;
done_testing();
