# Capture keeps the queue's indexes right while they change under it: an index being built by
# CREATE INDEX CONCURRENTLY (in the catalog, not yet ready for inserts) is left to the build,
# as the executor does, so the application's writes go on; once it is ready, capture in the
# same sessions feeds it.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my $node = new_node('capture_indexes');
$node->safe_psql('postgres', q{
ALTER SYSTEM SET switchboard.enabled = off;
SELECT pg_reload_conf();
CREATE EXTENSION switchboard;
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', 'http://127.0.0.1:9/hook');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local)
VALUES ('items_hook', 'items', 'hook', 'item', 'id::text');
});

# A session that captured once (its cache is filled) and keeps capturing.
my $writer = $node->background_psql('postgres');
$writer->query_safe("INSERT INTO items VALUES (1, 'a')");

# An open transaction that holds the queue: CREATE INDEX CONCURRENTLY commits its catalog entry,
# then waits for it before building.
my $holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; INSERT INTO items VALUES (2, 'b')");
my $builder = $node->background_psql('postgres', wait => 0, on_error_stop => 0);
$builder->{stdin} .= "CREATE INDEX CONCURRENTLY queue_op_cic ON switchboard.queue (op);\n\\echo built\n";
$builder->{run}->pump_nb();
ok(wait_for('the concurrent index in the catalog, not ready',
		sub { sql($node, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'queue_op_cic' AND NOT i.indisready") eq '1' },
		30),
	'CREATE INDEX CONCURRENTLY waits with an index not yet ready for inserts');

# Writers, old session and new, capture while it is not ready.
my ($ok_old) = eval { $writer->query_safe("INSERT INTO items VALUES (3, 'c')"); 1 };
ok($ok_old, 'a session that captured before still captures') or diag($@);
my ($ret, $out, $err) = $node->psql('postgres', "INSERT INTO items VALUES (4, 'd')");
is($ret, 0, 'a new session captures too') or diag($err);

$holder->query_safe('COMMIT');
ok(wait_for('the index built', sub { $builder->{stdout} =~ /built/ || ($builder->{run}->pump_nb(), 0) }, 60),
	'CREATE INDEX CONCURRENTLY finishes');
is(sql($node, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'switchboard.queue_op_cic'::regclass"), 't',
	'and the index is valid');

# Now ready: the old session's captures reach it.
$writer->query_safe("INSERT INTO items VALUES (5, 'e')");
is(sql($node, "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM switchboard.queue WHERE op = 'insert'"),
	sql($node, 'SELECT count(*) FROM switchboard.queue'), 'every captured change is in the new index');
is(sql($node, 'SELECT count(*) FROM switchboard.queue'), '5', 'nothing was lost');

$writer->quit;
$holder->quit;
$builder->quit;
$node->stop;
done_testing();
