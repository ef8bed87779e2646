# switchboard.max_workers with runs (issue 13 review): a worker that makes room for another
# database while one of its runs waits for a retry asks to be started again when that retry is
# due, not at the 5-minute revisit.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time);

my ($base, $double) = start_double();
my $node = new_node('roomruns', 'switchboard.max_workers' => 1);
$node->safe_psql('postgres', 'CREATE DATABASE other');
setup_hubspot_route($node, $base, db => 'other');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', '$base/hooks/runs');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input)
VALUES ('leads', 'tell', 10, 'notify', 'hook', \$\$jsonb_build_object('id', new.id)\$\$);
EOS
sub run_state { return sql($node, "SELECT state || ':' || attempts FROM switchboard.runs WHERE key = '1'"); }

# The hook answers 503 with Retry-After 3 once: the run waits 3 s for its retry.
control($base, 'faults', [ { path_prefix => '/hooks/runs', kind => 'status', status => 503, retry_after => 3, count => 1 } ]);
$node->safe_psql('postgres', 'INSERT INTO leads VALUES (1)');
ok(wait_for('first attempt failed', sub { run_state() eq 'waiting:1' || run_state() eq 'pending:1' }, 30),
	'the first attempt failed; the run waits for its retry');
# Another database commits: with max_workers 1, this database's worker makes room for it.
$node->safe_psql('other', "INSERT INTO contacts (email, first_name) VALUES ('o\@x.com', 'O')");
ok(wait_for('other delivered', sub { grep { ($_->{key} // '') eq 'o@x.com' } @{ json_get("$base/_control/records/hubspot/contacts") } }, 30),
	'the other database was served');
my $t0 = time;
ok(wait_for('run done', sub { run_state() =~ /^done/ }, 30), 'the waiting run is done');
cmp_ok(time - $t0, '<', 15, sprintf('soon after its retry was due, not at the 5-minute revisit (%.1f s)', time - $t0));
is(scalar @{ double_requests($base, '/hooks/runs') }, 2, 'two attempts in all');
$node->stop;
done_testing();
