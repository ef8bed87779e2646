# review38: route_sql_timeout bounds the whole set-based translation of a claim (up to 2,000
# rows), not one row's expressions: a backlog whose rows each take 20 ms never gets through.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('livelock');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
ALTER SYSTEM SET switchboard.route_sql_timeout = '500ms';
SELECT pg_reload_conf();
CREATE TABLE leads (id int PRIMARY KEY, email text);
CREATE FUNCTION slowish(int) RETURNS int LANGUAGE plpgsql VOLATILE AS \$\$
BEGIN PERFORM pg_sleep(0.02); RETURN \$1; END \$\$;
INSERT INTO switchboard.endpoints (name, kind, base_url) VALUES ('hook', 'webhook', '$base/hooks/leads');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, operations)
VALUES ('leads', 'leads', 'hook', 'lead', 'id::text', '{insert}');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('leads', 'id', 'slowish(id)');
EOS
$node->safe_psql('postgres', "INSERT INTO leads VALUES (0, 'first')");
is($node->safe_psql('postgres', "SELECT switchboard.wait_idle('30 s')"), 't', 'one row (20 ms) is delivered');
# 100 rows of 20 ms each: 2 s of mapping in one statement, each row 4% of the limit.
$node->safe_psql('postgres', "INSERT INTO leads SELECT g, 'l' || g FROM generate_series(1, 100) g");
sleep 20;
diag($node->safe_psql('postgres', "SELECT last_error FROM switchboard.route_stats WHERE route = 'leads'"));
is($node->safe_psql('postgres', "SELECT count(*) FROM switchboard.queue"), '0',
	'100 rows of 20 ms each are delivered within 20 s');
sleep 70; # past the minute's hold: the same 100 rows, the same statement
is($node->safe_psql('postgres', "SELECT count(*) FROM switchboard.queue"), '0', 'delivered after the hold at least');
done_testing();
