# Pull (SPEC §6): remote edits flow back into the table, paging (HubSpot after, the 10,000
# cap, Salesforce nextRecordsUrl), no echo, each conflict policy, remote deletes, bad records,
# and a cursor that survives kill -9 in the middle of a pull.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time usleep);

my ($base, $double) = start_double();
my $node = new_node('pull', restart_after_crash => 'on');

sub psql_ok { my ($q) = @_; return $node->safe_psql('postgres', $q); }
sub hs_put
{
	my ($key, $props) = @_;
	return _put("$base/_control/records/hubspot/contacts/$key", { properties => $props });
}
sub _put
{
	my ($url, $body) = @_;
	my $res = HTTP::Tiny->new->request('PUT', $url,
		{ headers => { 'Content-Type' => 'application/json' }, content => JSON::PP->new->encode($body) });
	die "PUT $url: $res->{status} $res->{content}" unless $res->{success};
	return 1;
}
sub pull_until
{
	my ($what, $query, $expect, $route) = @_;
	$route //= 'contacts_hs';
	psql_ok("SELECT switchboard.pull_now('$route')");
	return wait_for($what, sub { psql_ok($query) eq $expect }, 60);
}

psql_ok(q{
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text UNIQUE, first_name text, score int);
CREATE TABLE audit_log (id serial PRIMARY KEY, what text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
psql_ok("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs'), ('hook', 'webhook', '$base/hooks/audit', NULL)");
psql_ok(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, on_delete, conflict, pull_interval)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'both', 'delete', 'remote', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column, pull_expr) VALUES
  ('contacts_hs', 'email', 'lower(email)', 'email', NULL),
  ('contacts_hs', 'firstname', 'first_name', 'first_name', NULL),
  ('contacts_hs', 'score', 'score', 'score', '(value #>> ''{}'')::int');
-- another route on the same table still sees pulled writes
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('contacts_hook', 'contacts', 'hook', 'contact', 'lower(email)');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hook', 'first_name', 'first_name');
});

# push first, so that the CRM has records
psql_ok("INSERT INTO contacts (email, first_name, score) VALUES ('ada\@x.com', 'Ada', 1), ('bob\@x.com', 'Bob', 2)");
psql_ok("SELECT switchboard.wait_idle('30 s')");
is(scalar @{ json_get("$base/_control/records/hubspot/contacts") }, 2, 'pushed two contacts');

# an edit "in the CRM" arrives in the table
json_delete("$base/_control/requests");
hs_put('ada@x.com', { firstname => 'Ada (CRM)', score => '42' });
ok(pull_until('remote edit applied', "SELECT first_name || '/' || score FROM contacts WHERE email = 'ada\@x.com'", 'Ada (CRM)/42'),
	'a record edited in the CRM arrives back in the table (pull_expr casts the score)');
# a record created in the CRM is inserted
hs_put('carol@x.com', { email => 'carol@x.com', firstname => 'Carol', score => '7' });
ok(pull_until('remote insert applied', "SELECT count(*) FROM contacts WHERE email = 'carol\@x.com'", '1'),
	'a record created in the CRM is inserted');
is(psql_ok("SELECT remote_id FROM switchboard.remote_ids WHERE route = 'contacts_hs' AND key = 'carol\@x.com'"),
	json_get("$base/_control/records/hubspot/contacts/carol\@x.com")->{id}, 'its remote id is remembered');

# no echo: the pulled writes were not pushed back to HubSpot, but the webhook route saw them
psql_ok("SELECT switchboard.wait_idle('30 s')");
my @upserts = grep { $_->{path} =~ m{batch/upsert$} } @{ double_requests($base, '/crm/') };
is(scalar @upserts, 0, 'no echo: nothing pushed back to the route the change came from');
my $hook_events = json_get("$base/_control/hooks/audit");
$hook_events = $hook_events->{events} if ref $hook_events eq 'HASH';
ok((grep { ($_->{body}{data}{first_name} // '') eq 'Ada (CRM)' } @$hook_events), 'other routes on the table still see pulled changes');
like(psql_ok("SELECT cursor FROM switchboard.pull_status WHERE route = 'contacts_hs'"), qr/^\d{13}$/, 'pull_status shows the cursor (epoch ms)');
ok(psql_ok("SELECT records_pulled >= 3 AND last_pull_at IS NOT NULL FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't',
	'pull_status counts records and the time of the last pull');
ok(psql_ok("SELECT count(*) > 0 FROM switchboard.deliveries WHERE op = 'pull' AND outcome = 'pulled'"), 'pulls appear in deliveries');

# conflicts: a pending local change and a remote change of the same key
sub conflict_case
{
	my ($policy, $order) = @_;
	psql_ok("UPDATE switchboard.routes SET conflict = '$policy' WHERE name = 'contacts_hs'");

	my $remote = sub { hs_put('bob@x.com', { firstname => "remote-$policy-$order" }); usleep(20_000); };
	# the local change is held back (due in an hour), so it is still pending when the pull comes
	my $local = sub {
		psql_ok("BEGIN; UPDATE contacts SET first_name = 'local-$policy-$order' WHERE email = 'bob\@x.com'; "
			  . "UPDATE switchboard.queue SET next_attempt_at = now() + interval '1 hour' WHERE route = 'contacts_hs' AND state = 'pending'; COMMIT");
		usleep(20_000);
	};
	if ($order eq 'remote_last') { $local->(); $remote->(); } else { $remote->(); $local->(); }
	# pull while the local change is still pending
	my $before = psql_ok("SELECT records_pulled + records_skipped FROM switchboard.pull_status WHERE route = 'contacts_hs'");
	psql_ok("SELECT switchboard.pull_now('contacts_hs')");
	wait_for("pull ($policy, $order)", sub {
		psql_ok("SELECT records_pulled + records_skipped FROM switchboard.pull_status WHERE route = 'contacts_hs'") > $before
		  && psql_ok("SELECT next_pull_at > now() FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't' });
	my $local_value = psql_ok("SELECT first_name FROM contacts WHERE email = 'bob\@x.com'");
	my $pending = psql_ok("SELECT pending FROM switchboard.route_status WHERE route = 'contacts_hs'");
	psql_ok("UPDATE switchboard.queue SET next_attempt_at = NULL WHERE state = 'pending'");
	psql_ok("SELECT switchboard.wait_idle('60 s')");
	my $remote_value = json_get("$base/_control/records/hubspot/contacts/bob\@x.com")->{properties}{firstname};
	return ($local_value, $pending, $remote_value);
}
my ($l, $p, $r) = conflict_case('remote', 'remote_last');
is_deeply([ $l, $p, $r ], [ 'remote-remote-remote_last', 0, 'remote-remote-remote_last' ], 'conflict = remote: the remote value wins both sides');
($l, $p, $r) = conflict_case('local', 'remote_last');
is_deeply([ $l, $p, $r ], [ 'local-local-remote_last', 1, 'local-local-remote_last' ], 'conflict = local: the local change wins and is pushed');
($l, $p, $r) = conflict_case('newest', 'remote_last');
is_deeply([ $l, $p, $r ], [ 'remote-newest-remote_last', 0, 'remote-newest-remote_last' ], 'conflict = newest, remote newer: remote wins');
($l, $p, $r) = conflict_case('newest', 'local_last');
is_deeply([ $l, $p, $r ], [ 'local-newest-local_last', 1, 'local-newest-local_last' ], 'conflict = newest, local newer: local wins');
psql_ok("UPDATE switchboard.routes SET conflict = 'remote' WHERE name = 'contacts_hs'");

# remote deletions, with on_delete = 'delete'
HTTP::Tiny->new->request('DELETE', "$base/_control/records/hubspot/contacts/carol\@x.com");
ok(pull_until('remote delete applied', "SELECT count(*) FROM contacts WHERE email = 'carol\@x.com'", '0'),
	'a record archived in the CRM is deleted locally');

# bad remote records are recorded and skipped; the rest of the page applies
hs_put('dave@x.com', { email => 'dave@x.com', firstname => 'Dave', score => 'not a number' });
hs_put('erin@x.com', { email => 'erin@x.com', firstname => 'Erin', score => '5' });
ok(pull_until('good record applied', "SELECT count(*) FROM contacts WHERE email = 'erin\@x.com'", '1'), 'good record of the page applied');
is(psql_ok("SELECT count(*) FROM contacts WHERE email = 'dave\@x.com'"), '0', 'the bad record is not applied');
like(psql_ok("SELECT error FROM switchboard.deliveries WHERE outcome = 'pull_failed' AND key = 'dave\@x.com' LIMIT 1"),
	qr/invalid input syntax for type integer/, 'and its reason is recorded in deliveries');
ok(psql_ok("SELECT records_failed >= 1 FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't', 'pull_status counts it');
HTTP::Tiny->new->request('DELETE', "$base/_control/records/hubspot/contacts/dave\@x.com");

# paging: 450 records in the CRM reach a fresh table over several search pages
psql_ok(q{
CREATE TABLE leads (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('leads_hs', 'leads', 'hubspot', 'leads', 'email', 'email', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('leads_hs', 'email', 'email'), ('leads_hs', 'firstname', 'first_name');
UPDATE switchboard.routes SET enabled = false WHERE name = 'leads_hs';
});
my $http = HTTP::Tiny->new;
for my $batch (0 .. 104)    # 10,500 records: past the 10,000-result search cap
{
	my @inputs = map { my $n = $batch * 100 + $_; { idProperty => 'email', id => "l$n\@x.com", properties => { email => "l$n\@x.com", firstname => "L$n" } } } 1 .. 100;
	my $res = $http->request('POST', "$base/crm/v3/objects/leads/batch/upsert",
		{ headers => { 'Content-Type' => 'application/json', Authorization => 'Bearer hs-test-token' }, content => JSON::PP->new->encode({ inputs => \@inputs }) });
	die "seed: $res->{status}" unless $res->{success};
}
json_delete("$base/_control/requests");
psql_ok("UPDATE switchboard.routes SET enabled = true WHERE name = 'leads_hs'");
ok(wait_for('10,500 leads pulled', sub { psql_ok("SELECT count(*) FROM leads") == 10500 }, 240), 'all 10,500 records pulled');
my @searches = grep { $_->{path} =~ m{/leads/search$} } @{ double_requests($base, '/crm/') };
ok(@searches >= 53, 'paged over at least 53 search requests (' . scalar(@searches) . ')');
ok(!(grep { ($_->{body}{after} // 0) + 200 > 10000 } @searches), 'never asked past the 10,000-result cap (re-anchored instead)');
is(psql_ok("SELECT count(*) FROM switchboard.queue WHERE route = 'leads_hs'"), '0', 'a pull-only route captures nothing');

# kill -9 in the middle of a pull: the cursor moves only with the page it covers
psql_ok("UPDATE switchboard.routes SET enabled = false WHERE name = 'leads_hs'");
psql_ok(q{
CREATE TABLE people (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('people_hs', 'people', 'hubspot', 'people', 'email', 'email', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('people_hs', 'email', 'email'), ('people_hs', 'firstname', 'first_name');
UPDATE switchboard.routes SET enabled = false WHERE name = 'people_hs';
});
for my $batch (0 .. 9)
{
	my @inputs = map { my $n = $batch * 100 + $_; { idProperty => 'email', id => "p$n\@x.com", properties => { email => "p$n\@x.com", firstname => "P$n" } } } 1 .. 100;
	$http->request('POST', "$base/crm/v3/objects/people/batch/upsert",
		{ headers => { 'Content-Type' => 'application/json', Authorization => 'Bearer hs-test-token' }, content => JSON::PP->new->encode({ inputs => \@inputs }) });
}
control($base, 'faults', { path_prefix => '/crm/v3/objects/people/search', kind => 'slow', delay_ms => 1500, count => -1 });
psql_ok("UPDATE switchboard.routes SET enabled = true WHERE name = 'people_hs'");
wait_for('some pages applied', sub { psql_ok("SELECT count(*) FROM people") >= 200 }, 60);
my $pid = psql_ok("SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
kill 'KILL', $pid;
wait_for('server back', sub { eval { psql_ok("SELECT 1") } // 0 }, 60);
json_delete("$base/_control/faults");
ok(wait_for('all 1,000 people pulled', sub { (eval { psql_ok("SELECT count(*) FROM people") } // 0) == 1000 }, 120), 'every record arrives after the crash');
is(psql_ok("SELECT records_pulled FROM switchboard.pull_status WHERE route = 'people_hs'"), '1000',
	'each page applied exactly once (records_pulled = 1,000)');

# Salesforce: SOQL on SystemModstamp, following nextRecordsUrl
control($base, 'config', { sf_page_size => 3 });
psql_ok(q{
INSERT INTO switchboard.secrets VALUES ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
CREATE TABLE sf_contacts (ext_id text PRIMARY KEY, last_name text, email text);
});
psql_ok("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('salesforce', 'salesforce', '$base', 'sf')");
for my $n (1 .. 8)
{
	_put("$base/_control/records/salesforce/Contact/c$n", { key_field => 'External_Id__c', properties => { External_Id__c => "c$n", LastName => "Last$n", Email => "c$n\@x.com" } });
}
psql_ok(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('sf_pull', 'sf_contacts', 'salesforce', 'Contact', 'ext_id', 'External_Id__c', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('sf_pull', 'External_Id__c', 'ext_id'), ('sf_pull', 'LastName', 'last_name'), ('sf_pull', 'Email', 'email');
});
ok(wait_for('salesforce records pulled', sub { psql_ok("SELECT count(*) FROM sf_contacts") == 8 }, 60), 'Salesforce records pulled');
my @queries = grep { $_->{path} =~ m{/query} } @{ double_requests($base, '/services/data/') };
ok(@queries >= 3, 'followed nextRecordsUrl across pages (' . scalar(@queries) . ' requests)');
_put("$base/_control/records/salesforce/Contact/c3", { key_field => 'External_Id__c', properties => { LastName => 'Changed' } });
ok(pull_until('salesforce edit applied', "SELECT last_name FROM sf_contacts WHERE ext_id = 'c3'", 'Changed', 'sf_pull'),
	'an edit in Salesforce arrives');
like(psql_ok("SELECT cursor FROM switchboard.pull_status WHERE route = 'sf_pull'"), qr/^\d{4}-\d\d-\d\dT/, 'SOQL cursor is a datetime');

$node->stop;
$double->kill_kill;
done_testing();
