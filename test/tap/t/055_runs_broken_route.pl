# Runs (SPEC §7, issue 11 review): a route whose stored definition fails its checks (here: it
# has no owner) holds back its own runs and changes: they neither fill
# the round's pages (1,000 runs or changes) so that other routes starve, nor make the worker spin.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('brokenroute');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, note text);
CREATE TABLE other (id int PRIMARY KEY);
CREATE ROLE alice;
SELECT switchboard.grant_admin('alice');
GRANT SELECT, INSERT, UPDATE, TRIGGER ON leads TO alice;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook2', 'webhook', '$base/hooks/b');
SET ROLE alice;
INSERT INTO switchboard.endpoints (name, kind, base_url, enabled) VALUES ('hook', 'webhook', '$base/hooks/a', false);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('leads', 'n', 5, 'sql', NULL, 'new.note'),
	('leads', 'tell', 10, 'notify', 'hook', \$\$jsonb_build_object('id', new.id)\$\$);
RESET ROLE;
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('other', 'other', 'hook2', 'x', 'id::text', '{insert}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, input) VALUES
	('other', 'tell', 10, 'notify', 'hook2', \$\$jsonb_build_object('id', new.id)\$\$);
INSERT INTO leads SELECT g, 'x' FROM generate_series(1, 1001) g;
EOS
ok(wait_for('runs wait', sub { sql($node, "SELECT count(*) FROM switchboard.run_queue WHERE state = 'waiting'") eq '1001' }, 60),
	'1,001 runs wait for their disabled endpoint');
# The route breaks; its runs come due at once (as after their wait).
$node->safe_psql('postgres',
	"SET session_replication_role = replica; UPDATE switchboard.routes SET owner = NULL WHERE name = 'leads'");
$node->safe_psql('postgres', "UPDATE switchboard.run_queue SET next_attempt_at = now()");
$node->safe_psql('postgres', "INSERT INTO other VALUES (1)");
ok(wait_for('other route ran', sub { scalar @{ double_requests($base, '/hooks/b') } == 1 }, 15),
	'the healthy route\'s run is done meanwhile');
my $c0 = sql($node, "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
sleep 3;
my $c1 = sql($node, "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
cmp_ok($c1 - $c0, '<', 150, 'the worker does not spin on the broken route\'s runs (' . ($c1 - $c0) . ' commits in 3 s)');
is(sql($node, "SELECT count(*) FROM switchboard.run_queue WHERE route = 'leads' AND state = 'waiting'"), '1001',
	'the broken route\'s runs are kept');

# More than a page of its changes waits in the queue: a new change of the other route is still
# adopted and run.
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.enabled = off");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
sleep 1;
$node->safe_psql('postgres', "INSERT INTO leads SELECT g, 'y' FROM generate_series(2001, 3001) g");
$node->safe_psql('postgres', "INSERT INTO other VALUES (2)");
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.enabled = on");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
ok(wait_for('other route ran again', sub { scalar @{ double_requests($base, '/hooks/b') } == 2 }, 15),
	'behind 1,001 held-back changes, the other route\'s change becomes a run and is done');
is(sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'leads' AND state = 'pending'"), '1001',
	'the broken route\'s changes stay queued');

done_testing();
