# The worker translates a claim's rows in one statement per route (set-based), falling back to
# one statement per row only when some row raises. A regression once made the set-based
# statement fail on every claim (a schema-qualified multi-argument unnest does not exist), and
# a kept plan went stale when the source table was replaced by one of the same name: delivery
# still worked, row by row, at a third of the speed. pg_stat_statements counts which ran.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('set_based', shared_preload_libraries => "'switchboard,pg_stat_statements'",
	'pg_stat_statements.track' => 'all');
setup_hubspot_route($node, $base);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_stat_statements');

sub calls
{
	my ($like) = @_;
	return sql($node, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '$like'");
}
my $set_based = 'SELECT m.key, m.fields FROM ROWS FROM (pg_catalog.unnest(%';
my $per_row   = 'SELECT (%lower(email)%)::text, (pg_catalog.jsonb_build_object(%';

sub deliver_and_count
{
	my ($what, $first) = @_;
	$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
	$node->safe_psql('postgres',
		"INSERT INTO contacts (email, first_name) SELECT 'u' || g || '$first\@x.com', 'F' || g FROM generate_series(1, 50) g");
	is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', "$what: delivered");
	ok(calls($set_based) >= 1, "$what: translated set-based");
	is(calls($per_row), 0, "$what: no row translated on its own");
}

deliver_and_count('first batch', 'a');

# The same table name, a new table: the kept set-based plan must not be used for it.
$node->safe_psql('postgres', q{
DROP TABLE contacts CASCADE;
CREATE TABLE contacts (id serial PRIMARY KEY, email text, first_name text, status text, score int);
UPDATE switchboard.routes SET source = 'contacts', enabled = true WHERE name = 'contacts_hs';
});
deliver_and_count('after the table was replaced', 'b');

# The same table, a column of another type: a new plan, not the kept one.
$node->safe_psql('postgres', 'ALTER TABLE contacts ALTER COLUMN first_name TYPE varchar(40)');
deliver_and_count('after a column changed its type', 'c');

# A row that raises still sends the others, row by row.
$node->safe_psql('postgres', q{
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', 'ratio', '100 / length(first_name)')});
$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
$node->safe_psql('postgres', q{INSERT INTO contacts (email, first_name) VALUES ('ok@x.com', 'x'), ('bad@x.com', '')});
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'a batch with a bad row settles');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters"), 1, 'the bad row alone is a dead letter');
ok(calls('SELECT (%lower(email)%)::text, (pg_catalog.jsonb_build_object(%') >= 1, 'found row by row');

$node->stop;
done_testing();
