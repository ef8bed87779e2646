# Upgrade path: a live 0.1 install (a route, queued changes, delivery paused) updated with
# ALTER EXTENSION switchboard UPDATE has exactly the schema of a fresh install of the default
# version, and its queued changes are still delivered. When the catalogs differ, the failure
# names each object that differs: complete versions/switchboard--<old>--<new>.sql until it passes.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
END { $double->kill_kill if $double; }    # also when a query dies: the double must not outlive the test
my $node = new_node('upgrade', 'switchboard.enabled' => 'off');

my $default = sql($node, "SELECT default_version FROM pg_available_extensions WHERE name = 'switchboard'");
my @versions = split /\n/, sql($node,
	"SELECT version FROM pg_available_extension_versions WHERE name = 'switchboard' ORDER BY version");
ok((grep { $_ eq '0.1' } @versions), "0.1 is installable (available: @versions; default $default)");
isnt($default, '0.1', 'the default version is newer than the released 0.1');

$node->safe_psql('postgres', 'CREATE DATABASE upgraded');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');

# A live 0.1: a route with mappings and changes waiting while delivery is paused.
$node->safe_psql('upgraded', "CREATE EXTENSION switchboard VERSION '0.1'");
is(sql($node, "SELECT extversion FROM pg_extension WHERE extname = 'switchboard'", 'upgraded'), '0.1', 'installed 0.1');
setup_hubspot_route($node, $base, db => 'upgraded');
$node->safe_psql('upgraded', "INSERT INTO contacts (email, first_name) VALUES ('a\@x.com', 'A'), ('b\@x.com', 'B')");
$node->safe_psql('upgraded', "UPDATE contacts SET first_name = 'A2' WHERE email = 'a\@x.com'");
$node->safe_psql('upgraded', "INSERT INTO contacts (email, first_name) VALUES ('c\@x.com', 'C')");
is(sql($node, "SELECT pending FROM switchboard.route_status", 'upgraded'), '4', '0.1 holds 4 queued changes');

# The default version's library runs the 0.1 schema's worker meanwhile: it must stay up.
ok(wait_for('worker on the 0.1 schema',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'upgraded'") == 1 }),
	'a worker serves the 0.1 database');

# A database that stays at 0.1 across the whole test: once delivery resumes, the new library's
# worker must either deliver its changes or say plainly that the schema needs the update.
$node->safe_psql('postgres', 'CREATE DATABASE stale');
$node->safe_psql('stale', "CREATE EXTENSION switchboard VERSION '0.1'");
setup_hubspot_route($node, $base, db => 'stale');
$node->safe_psql('stale', "INSERT INTO contacts (email, first_name) VALUES ('stale\@x.com', 'S')");

$node->safe_psql('upgraded', 'ALTER EXTENSION switchboard UPDATE');
is(sql($node, "SELECT extversion FROM pg_extension WHERE extname = 'switchboard'", 'upgraded'), $default,
	"ALTER EXTENSION UPDATE reaches $default");
$node->safe_psql('fresh', 'CREATE EXTENSION switchboard');

# The catalog, as sorted lines per kind of object. Each line names its object first, so a
# difference reads "only in upgraded: function switchboard.x(...) ...".
my %catalog = (
	'schema' => q{
SELECT 'schema ' || nspname || ' owner=' || nspowner::regrole || ' acl=' || coalesce(nspacl::text, '-')
  FROM pg_namespace WHERE nspname = 'switchboard'},
	'relations' => q{
SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
       || ' acl=' || coalesce(c.relacl::text, '-') || ' options=' || coalesce(c.reloptions::text, '-')
       || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
  FROM pg_class c WHERE c.relnamespace = 'switchboard'::regnamespace AND c.relkind::text NOT IN ('i', 'I')},
	# Position among live columns: the capture trigger forms queue tuples in column order, so an
	# appended column is a difference from a fresh install that declares it elsewhere.
	'columns' => q{
SELECT 'column ' || a.attrelid::regclass || '.' || a.attname
       || ' position=' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum)
       || ' type=' || format_type(a.atttypid, a.atttypmod) || ' not_null=' || a.attnotnull
       || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
       || ' generated=' || a.attgenerated::text || ' identity=' || a.attidentity::text
       || ' collation=' || coalesce(nullif(a.attcollation, 0)::regcollation::text, '-')
       || ' acl=' || coalesce(a.attacl::text, '-')
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'switchboard'::regnamespace AND c.relkind::text IN ('r', 'p', 'v', 'm', 'f')
   AND a.attnum > 0 AND NOT a.attisdropped},
	'constraints' => q{
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ': ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'switchboard'::regnamespace},
	'indexes' => q{
SELECT 'index ' || indexrelid::regclass || ': ' || pg_get_indexdef(indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE c.relnamespace = 'switchboard'::regnamespace},
	'sequences' => q{
SELECT 'sequence ' || seqrelid::regclass || ' type=' || seqtypid::regtype || ' start=' || seqstart
       || ' increment=' || seqincrement || ' owned_by=' || coalesce((
         SELECT refobjid::regclass || '.' || a.attname FROM pg_depend d
           JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
          WHERE d.classid = 'pg_class'::regclass AND d.objid = seqrelid AND d.deptype = 'a'), '-')
  FROM pg_sequence WHERE seqrelid::regclass::text LIKE 'switchboard.%'},
	'views' => q{
SELECT 'view ' || c.oid::regclass || ': ' || regexp_replace(pg_get_viewdef(c.oid, true), '\s+', ' ', 'g')
  FROM pg_class c WHERE c.relnamespace = 'switchboard'::regnamespace AND c.relkind::text IN ('v', 'm')},
	'functions' => q{
SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_get_function_result(p.oid)
       || ' args=(' || pg_get_function_arguments(p.oid) || ')'
       || ' language=' || l.lanname || ' security_definer=' || p.prosecdef || ' strict=' || p.proisstrict
       || ' volatility=' || p.provolatile::text || ' parallel=' || p.proparallel::text
       || ' config=' || coalesce(p.proconfig::text, '-') || ' acl=' || coalesce(p.proacl::text, '-')
       || ' owner=' || p.proowner::regrole
       || ' body_md5=' || md5(coalesce(p.prosrc, '') || '/' || coalesce(p.probin, ''))
       || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'switchboard'::regnamespace},
	'triggers' => q{
SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass || ': ' || pg_get_triggerdef(t.oid)
       || ' enabled=' || t.tgenabled::text
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'switchboard'::regnamespace AND NOT t.tgisinternal},
	'event triggers' => q{
SELECT 'event trigger ' || evtname || ' on ' || evtevent || ' function=' || evtfoid::regprocedure
       || ' tags=' || coalesce(evttags::text, '-') || ' enabled=' || evtenabled::text
  FROM pg_event_trigger e
 WHERE EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_event_trigger'::regclass AND d.objid = e.oid
                 AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')},
	'config-dump marks' => q{
SELECT 'config dump ' || t.cfg::regclass || ' condition=' || coalesce(x.extcondition[t.n], '-')
  FROM pg_extension x, unnest(x.extconfig) WITH ORDINALITY AS t(cfg, n)
 WHERE x.extname = 'switchboard'},
	'extension members' => q{
SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'switchboard')},
	'extension' => q{
SELECT 'extension ' || extname || ' version=' || extversion || ' schema=' || extnamespace::regnamespace
       || ' relocatable=' || extrelocatable
  FROM pg_extension WHERE extname = 'switchboard'},
);

sub lines
{
	my ($db, $query) = @_;
	return [ sort split /\n/, sql($node, "SELECT * FROM ($query) q", $db) ];
}

for my $kind (sort keys %catalog)
{
	my $up = lines('upgraded', $catalog{$kind});
	my $fr = lines('fresh', $catalog{$kind});
	my %in_up = map { $_ => 1 } @$up;
	my %in_fr = map { $_ => 1 } @$fr;
	my @diff = ((map { "only in upgraded: $_" } grep { !$in_fr{$_} } @$up),
		(map { "only in fresh:    $_" } grep { !$in_up{$_} } @$fr));
	ok(!@diff && @$fr, "$kind: the upgraded install equals a fresh $default install ("
		  . scalar(@$fr) . ' objects)')
	  or diag(join("\n", @diff));
}

# The queued changes survive the update and are delivered once delivery resumes.
is(sql($node, "SELECT pending FROM switchboard.route_status", 'upgraded'), '4', 'the 4 changes are still queued');
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.enabled = on");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
is(sql($node, "SELECT switchboard.wait_idle('60 s')", 'upgraded'), 't', 'delivery resumed: wait_idle');
my %records = map { $_->{key} => $_ } @{ json_get("$base/_control/records/hubspot/contacts") };
is(join(',', grep { $_ ne 'stale@x.com' } sort keys %records), 'a@x.com,b@x.com,c@x.com',
	'every queued change reached the remote');
is($records{'a@x.com'}{properties}{firstname}, 'A2', 'with the latest state');
is(sql($node, "SELECT count(*) FROM switchboard.queue", 'upgraded'), '0', 'the queue is empty');

my $stale_done = sql($node, "SELECT switchboard.wait_idle('30 s')", 'stale') eq 't'
  && grep { $_->{key} eq 'stale@x.com' } @{ json_get("$base/_control/records/hubspot/contacts") };
my $log_so_far = PostgreSQL::Test::Utils::slurp_file($node->logfile);
ok($stale_done || $log_so_far =~ /ALTER EXTENSION switchboard UPDATE/,
	'a database still at 0.1 is served by the new library, or its worker asks for the update')
  or diag('stale queue: ' . sql($node, "SELECT string_agg(state || ' ' || coalesce(last_error, ''), '; ') FROM switchboard.queue", 'stale'));
is(sql($node, "SELECT extversion FROM pg_extension WHERE extname = 'switchboard'", 'stale'), '0.1', 'stale is still 0.1');

# The worker never crashed on the old schema.
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
unlike($log, qr/switchboard worker.*(terminated by signal|exited with exit code [^0])/,
	'no worker crashed across the update');

$node->stop;
done_testing();
