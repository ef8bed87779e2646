# switchboard.allowed_hosts is enforced when the worker connects, not only when a row is
# written (issue 7, item 8): an endpoint that was valid when written but whose host a reload
# took out of the list gets no request, and a Salesforce token answer cannot send the
# worker (and the token) to a host outside the list through its instance_url.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
# A second double stands for "a host outside allowed_hosts": it must never see a request.
my ($outside, $outside_h) = start_double();
my ($outside_port) = $outside =~ /:(\d+)$/;
my $node = new_node('connect_policy');
$node->safe_psql('postgres', 'CREATE EXTENSION switchboard');

sub set_policy
{
	my ($value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.allowed_hosts = '$value'");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	# the worker re-reads its settings at the start of its next round
	sleep 1;
}

sub outside_requests { return json_get("$outside/_control/stats")->{requests}; }

sub last_errors
{
	my ($endpoint, $route) = @_;
	return sql($node, "SELECT coalesce((SELECT last_error FROM switchboard.endpoint_status WHERE endpoint = '$endpoint'), '')"
		  . " || ' | ' || coalesce((SELECT last_error FROM switchboard.route_status WHERE route = '$route'), '')");
}

#### An endpoint row that the list no longer allows

set_policy('127.0.0.1, localhost');
(my $via_localhost = $base) =~ s/127\.0\.0\.1/localhost/;
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE events (id int PRIMARY KEY, note text);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', '$via_localhost/hooks/moved');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('events_hook', 'events', 'hook', 'event', 'id::text');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('events_hook', 'note', 'note');
EOS
$node->safe_psql('postgres', "INSERT INTO events VALUES (1, 'while allowed')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'delivered while localhost is allowed');
is(scalar @{ json_get("$base/_control/hooks/moved") }, 1, 'the sink got that event');

set_policy('127.0.0.1');
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "INSERT INTO events VALUES (2, 'after the reload')");
wait_for('the refusal to show in a status view', sub { last_errors('hook', 'events_hook') =~ /allowed_hosts/ }, 30);
like(last_errors('hook', 'events_hook'), qr/localhost/, 'the error names the refused host');
sleep 1;
is(scalar @{ json_get("$base/_control/hooks/moved") }, 1, 'no further event reached the sink');
is(scalar @{ double_requests($base, '/hooks/') }, 0, 'not a single request to the refused host');
is(sql($node, "SELECT pending + in_flight FROM switchboard.route_status WHERE route = 'events_hook'"), '1',
	'the change stays queued');

$node->safe_psql('postgres', "DELETE FROM switchboard.routes WHERE name = 'events_hook'");

#### A Salesforce token answer that points instance_url outside the list

set_policy('127.0.0.1');
$node->safe_psql('postgres', <<"EOS");
CREATE TABLE people (id int PRIMARY KEY, last_name text);
INSERT INTO switchboard.secrets VALUES ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('sf', 'salesforce', '$base', 'sf');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('people_sf', 'people', 'sf', 'Contact', '''P-'' || id', 'External_Id__c');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('people_sf', 'LastName', 'last_name');
EOS
control($base, 'faults', { path_prefix => '/services/oauth2/token', kind => 'status', status => 200,
	body => { access_token => '00D!stolen-if-sent', instance_url => "http://localhost:$outside_port",
		token_type => 'Bearer' } });
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "INSERT INTO people VALUES (1, 'Lovelace')");
wait_for('a token request', sub { scalar @{ double_requests($base, '/services/oauth2/token') } >= 1 }, 30);
wait_for('the token failure to show', sub { last_errors('sf', 'people_sf') =~ /instance_url/ }, 30);
my $errors = last_errors('sf', 'people_sf');
like($errors, qr/salesforce token/, 'a token failure');
like($errors, qr/allowed_hosts/, 'naming the policy');
unlike($errors, qr/stolen-if-sent/, 'without the token');
sleep 1;
is(outside_requests(), 0, 'no request reached the host named by instance_url');
is(scalar @{ double_requests($base, '/services/data/') }, 0, 'and no data call was made anywhere');
is(sql($node, "SELECT pending + in_flight FROM switchboard.route_status WHERE route = 'people_sf'"), '1',
	'the change stays queued');

$node->stop;
$double->kill_kill;
$outside_h->kill_kill;
done_testing();
