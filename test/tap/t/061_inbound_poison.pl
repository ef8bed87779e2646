# One unstorable request may not fail the others of its receiver turn (issue 12 review). The
# receiver stores the events of every request of a turn in one transaction (group commit): a
# signed body holding \u0000 (which jsonb refuses), invalid UTF-8 in a stored header field or
# in the body, or an event the database refuses for any other reason failed that transaction,
# every request of the turn got 503, the senders retried, and the next turn failed the same way.
# Now such a request answers 400 before storage (counted in inbound_status.rejected, with a
# readable last_error), and storage itself is per request: what the database still refuses
# fails only the request that brought it.
#
# To put good and poisoned requests into one turn, a session holds a lock on inbound_events
# while they are sent: the receiver waits in the turn before, and reads them all in the next.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Digest::SHA qw(hmac_sha256);
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time usleep);

my ($base, $double) = start_double();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = new_node(
	'inbound_poison',
	'switchboard.listen_addresses' => "'127.0.0.1'",
	'switchboard.listen_port'      => $port,
	'switchboard.inbound_timeout'  => "'60s'",
	'switchboard.naptime'          => "'10s'");
sub q_ { return $node->safe_psql('postgres', $_[0]); }

my $woo_secret = 'woo-webhook-secret';
my $whsec_key  = 'sixteen-byte-key-0123456789';
my $whsec      = 'whsec_' . encode_base64($whsec_key, '');
q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, first_name text);
CREATE TABLE accounts (ext_id text PRIMARY KEY, last_name text);
INSERT INTO switchboard.secrets VALUES ('woo', '{"consumer_key":"ck_test","consumer_secret":"cs_test"}'),
  ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
});
q_("INSERT INTO switchboard.secrets VALUES ('woo_hook', '$woo_secret'), ('sf_hook', '$whsec')");
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('shop', 'woocommerce', '$base', 'woo'), "
	. "('sf', 'salesforce', '$base', 'sf')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval, inbound_secret)
VALUES ('customers_woo', 'customers', 'shop', 'customers', 'id::text', 'id', 'pull', '1 hour', 'woo_hook'),
       ('accounts_sf', 'accounts', 'sf', 'Account', 'ext_id', 'External_Id__c', 'pull', '1 hour', 'sf_hook');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('customers_woo', 'id', 'id'), ('customers_woo', 'email', 'email'), ('customers_woo', 'first_name', 'first_name'),
  ('accounts_sf', 'External_Id__c', 'ext_id'), ('accounts_sf', 'LastName', 'last_name');
});
my %token = map { $_ => q_("SELECT switchboard.inbound_token('$_')") } qw(customers_woo accounts_sf);
my $http = HTTP::Tiny->new(timeout => 20, keep_alive => 0);
ok(wait_for('receiver listening', sub { $http->post("http://127.0.0.1:$port/inbound/" . ('0' x 32), { content => '{}' })->{status} == 404 }, 60),
	'the receiver listens');

sub b64_hmac { return encode_base64(hmac_sha256($_[0], $_[1]), ''); }    # (message, key)

# A request as raw bytes (no client library cleans its headers or body).
sub raw_request
{
	my ($token, $body, @headers) = @_;
	my $req = "POST /inbound/$token HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nContent-Type: application/json\r\n"
	  . "Connection: close\r\nContent-Length: " . length($body) . "\r\n";
	$req .= "$_\r\n" for @headers;
	return "$req\r\n$body";
}
# A WooCommerce request for a body given as bytes (signed as they are), topic as bytes too.
sub woo_raw
{
	my ($body, $topic) = @_;
	return raw_request($token{customers_woo}, $body, 'X-WC-Webhook-Topic: ' . ($topic // 'customer.updated'),
		'X-WC-Webhook-Signature: ' . b64_hmac($body, $woo_secret));
}
sub woo_customer
{
	my ($id, $first, %o) = @_;
	return woo_raw(encode_json({ id => $id, email => "c$id\@x.io", first_name => $first, date_modified_gmt => '2026-12-03T10:00:00' }), $o{topic});
}
my $sw_serial = 0;
sub standard_raw
{
	my ($body, $ts) = @_;
	my $id = 'msg_' . ++$sw_serial;
	$ts //= int(time);
	return raw_request($token{accounts_sf}, $body, "webhook-id: $id", "webhook-timestamp: $ts",
		'webhook-signature: v1,' . b64_hmac("$id.$ts.$body", $whsec_key));
}

# Opens a connection per request and sends it whole; returns the sockets.
sub send_all
{
	my @socks;
	for my $req (@_)
	{
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
		$s->autoflush(1);
		print $s $req;
		push @socks, $s;
	}
	return @socks;
}
# The status of each answer (0 when the connection closed without one).
sub statuses
{
	my @out;
	for my $s (@_)
	{
		local $/;
		my $answer = '';
		my $deadline = time + 30;
		while (time < $deadline)
		{
			my $rin = '';
			vec($rin, fileno($s), 1) = 1;
			next unless select(my $rout = $rin, undef, undef, 0.5);
			my $n = sysread($s, my $buf, 65536);
			last if !$n;
			$answer .= $buf;
		}
		close $s;
		push @out, $answer =~ m{^HTTP/1\.[01] (\d{3})} ? $1 + 0 : 0;
	}
	return @out;
}

# Sends the requests so that the receiver reads them all in one turn: a first request waits
# for a lock on inbound_events, the others arrive meanwhile, then the lock goes.
sub one_turn
{
	my (@requests) = @_;
	my ($lock_in, $lock_out) = ("BEGIN;\nLOCK TABLE switchboard.inbound_events IN SHARE MODE;\nSELECT 'locked';\n", '');
	my $locker = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr('postgres') ], '<', \$lock_in, '>', \$lock_out, '2>', \my $lock_err);
	wait_for('lock taken', sub { $locker->pump_nb; $lock_out =~ /locked/ }, 30) or die 'no lock';
	my ($first) = send_all(woo_customer(100 + int(rand(1e6)), 'Opener'));
	my $waiting_sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard receiver' AND wait_event_type = 'Lock'";
	wait_for('receiver waits on the lock', sub { q_($waiting_sql) eq '1' }, 30) or die 'receiver not waiting';
	my @socks = send_all(@requests);
	usleep(500_000);    # all in the kernel's buffers before the receiver reads again
	$lock_in .= "COMMIT;\n\\q\n";
	$locker->finish;
	my ($opener) = statuses($first);
	is($opener, 200, 'the request of the turn before is stored');
	return statuses(@socks);
}

sub rejected { return q_("SELECT rejected FROM switchboard.inbound_status WHERE route = '$_[0]'"); }
sub stored { return q_("SELECT count(*) FROM switchboard.inbound_events WHERE route = '$_[0]' AND object_id = '$_[1]'"); }

# ---- 1. unstorable requests refused with 400 before storage ---------------------------------
my @got = one_turn(
	woo_customer(1, 'Good one'),
	woo_raw('{"id": 2, "email": "nul@x.io", "first_name": "a\u0000b", "date_modified_gmt": "2026-12-03T10:00:00"}'),
	woo_customer(3, 'Good three'),
	woo_customer(4, 'Bad topic', topic => "customer.updated\xff\xfe"),
	woo_raw("{\"id\": 5, \"first_name\": \"latin-1 \xe9\"}"),
	woo_raw("not json \xff\xfe at all"),
	standard_raw(encode_json({ type => 'account.updated', data => { id => 'sf6', External_Id__c => 'a6', LastName => 'Good six' } })),
	standard_raw('{"type": "account.updated", "data": {"id": "sf7", "External_Id__c": "a7", "LastName": "\u0000"}}'),
	standard_raw('{"type": "account.updated", "data": {"id": "sf8", "External_Id__c": "a8", "Last\u0000Name": "x"}}'));
is("@got", '200 400 200 400 400 400 200 400 400',
	'in one turn: the good requests answer 200, each unstorable one 400 (not 503 for all)');
is(stored('customers_woo', $_), '1', "good woocommerce request $_ stored") for 1, 3;
is(stored('accounts_sf', 'sf6'), '1', 'good standard-webhooks request stored');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE object_id IN ('2', '4', '5', 'sf7', 'sf8')"), '0',
	'nothing of the unstorable ones');
is(rejected('customers_woo'), '4', 'the woocommerce ones are counted in inbound_status.rejected');
is(rejected('accounts_sf'), '2', 'the standard-webhooks ones too');
my $last = q_("SELECT last_error FROM switchboard.inbound_status WHERE route = 'accounts_sf'");
like($last, qr/\\u0000|NUL|null character/i, "last_error says what was refused ($last)");
ok(wait_for('good ones applied', sub { q_("SELECT count(*) FROM customers WHERE id IN (1, 3)") eq '2' }, 30),
	'and the good ones are applied');
my @again = statuses(send_all(woo_customer(11, 'After')));
is($again[0], 200, 'the next turn is served as usual (no poison left behind)');

# ---- 2. storage is per request: what the database refuses fails that request only ----------
# A trigger stands in for whatever else the database may refuse in one event (an encoding the
# database cannot hold, a constraint added by an operator): a data error for object 21, any
# other error for object 22.
q_(q{
CREATE FUNCTION refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.object_id = '21' THEN RAISE EXCEPTION 'object 21 is unstorable' USING ERRCODE = 'invalid_parameter_value'; END IF;
	IF NEW.object_id = '22' THEN RAISE EXCEPTION 'object 22 cannot be stored now'; END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_some BEFORE INSERT ON switchboard.inbound_events FOR EACH ROW EXECUTE FUNCTION refuse_some();
});
@got = one_turn(woo_customer(20, 'Twenty'), woo_customer(21, 'Bad'), woo_customer(22, 'Later'), woo_customer(23, 'Twenty-three'));
is("@got", '200 400 503 200',
	'one turn: the event the database refuses for its data answers 400, one refused otherwise 503 (retried), the others 200');
is(stored('customers_woo', $_), '1', "request $_ stored") for 20, 23;
is(stored('customers_woo', $_), '0', "request $_ not stored") for 21, 22;
is(rejected('customers_woo'), '5', 'the 400 is counted as a rejection (the 503 is not: the sender retries it)');
like(q_("SELECT last_error FROM switchboard.inbound_status WHERE route = 'customers_woo'"), qr/object 21 is unstorable/,
	'with the database\'s reason');
q_('DROP TRIGGER refuse_some ON switchboard.inbound_events');
@again = statuses(send_all(woo_customer(22, 'Later')));
is($again[0], 200, 'the retried request is stored once the database takes it');

# ---- 3. a Standard Webhooks event whose body has no time -----------------------------------
# Its time is the signed webhook-timestamp: an older event delivered after a newer one of the
# same record (a sender delivering in parallel, a proxy holding one back) does not overwrite it.
# Before, such an event had no time at all, and the last to arrive won.
sub account { return encode_json({ type => 'account.updated', data => { id => 'sf9', External_Id__c => 'a9', LastName => $_[0] } }); }
my $now = int(time);
@again = statuses(send_all(standard_raw(account('Newer'), $now)));
is($again[0], 200, 'standard webhooks without a body timestamp: the newer event is accepted');
ok(wait_for('newer applied', sub { q_("SELECT last_name FROM accounts WHERE ext_id = 'a9'") eq 'Newer' }, 30), 'and applied');
@again = statuses(send_all(standard_raw(account('Older'), $now - 60)));
is($again[0], 200, 'the older one, signed a minute before and delivered after it, is accepted');
ok(wait_for('older settled', sub { q_("SELECT count(*) FROM switchboard.inbound_events WHERE route = 'accounts_sf' AND object_id = 'sf9' AND applied_at IS NULL") eq '0' }, 30),
	'and settled');
is(q_("SELECT last_name FROM accounts WHERE ext_id = 'a9'"), 'Newer', 'without overwriting the newer one');
is(q_("SELECT string_agg(to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), ',' ORDER BY id) FROM switchboard.inbound_events WHERE object_id = 'sf9'"),
	q_("SELECT to_char(to_timestamp($now) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ',' || to_char(to_timestamp($now - 60) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"),
	'each event\'s occurred_at is its webhook-timestamp');

$node->stop;
done_testing();
