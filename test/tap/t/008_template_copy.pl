# A database made with CREATE DATABASE ... TEMPLATE copies switchboard's instance row and queue:
# the copy takes an instance id of its own (its event ids never collide with the template's) and
# pushes nothing it copied until a DBA enables its routes.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('template');
setup_hubspot_route($node, $base);

sub upserts_for
{
	my ($key) = @_;
	return [ grep { $_->{id} eq $key } map { @{ $_->{body}{inputs} } }
		  grep { $_->{path} =~ m{/batch/upsert$} } @{ double_requests($base, '/crm/') } ];
}

$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('first\@x.com', 'F')");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the template database delivers');
my $instance = sql($node, 'SELECT id FROM switchboard.instance');

# a change waiting in the template's queue when it is copied
$node->safe_psql('postgres', "UPDATE switchboard.endpoints SET enabled = false WHERE name = 'hubspot'");
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('queued\@x.com', 'Q')");
is(sql($node, 'SELECT pending FROM switchboard.route_status'), '1', 'one change waits in the template');
$node->safe_psql('template1', 'CREATE DATABASE copy TEMPLATE postgres');

ok(wait_for('the copy to be recognised',
		sub { sql($node, 'SELECT id FROM switchboard.instance', 'copy') ne $instance }, 30),
	'the copy takes an instance id of its own');
is(sql($node, "SELECT enabled FROM switchboard.routes", 'copy'), 'f', "the copy's routes are disabled");
like(sql($node, 'SELECT last_error FROM switchboard.route_status', 'copy'), qr/copy of another/,
	'route_status says why');
is(sql($node, 'SELECT pending FROM switchboard.route_status', 'copy'), '1', 'the copied change is kept');
is(sql($node, 'SELECT id FROM switchboard.instance'), $instance, 'the template keeps its instance id');

# the template delivers its change; the copy sends nothing until enabled
$node->safe_psql('postgres', "UPDATE switchboard.endpoints SET enabled = true WHERE name = 'hubspot'");
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the template delivers its queued change');
sleep 1;
is(scalar @{ upserts_for('queued@x.com') }, 1, 'only the template sent it');

$node->safe_psql('copy', "UPDATE switchboard.endpoints SET enabled = true WHERE name = 'hubspot'");
$node->safe_psql('copy', "UPDATE switchboard.routes SET enabled = true, disabled_reason = NULL");
is(sql($node, "SELECT switchboard.wait_idle('30 s')", 'copy'), 't', 'once enabled, the copy delivers');
my @sent = @{ upserts_for('queued@x.com') };
is(scalar @sent, 2, 'the copy sent its own');
isnt($sent[0]{objectWriteTraceId}, $sent[1]{objectWriteTraceId}, 'under an event id of its own');

$node->stop;
$double->kill_kill;
done_testing();
