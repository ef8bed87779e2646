# The inbound webhook receiver (issue 12 items 1-3, SPEC §9), end to end: a real server whose
# launcher starts the receiver on switchboard.listen_addresses / listen_port, requests sent from
# here with signatures computed here. Each scheme (WooCommerce, HubSpot v3, Standard Webhooks)
# is accepted, stored, answered 200 after commit, and applied to its table promptly (the
# receiver's commit wakes the database's worker; the safety poll is 10 s); forged and stale
# requests answer 401, are counted in inbound_status and store nothing; a redelivery is applied
# once; a body over inbound_max_bytes answers 413; unknown tokens, paths and methods 404; a
# receiver killed (kill -9) while its commit waits answers nothing, and the resent request is
# stored and applied once.
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
use MIME::Base64 qw(encode_base64 decode_base64);
use Time::HiRes qw(time usleep);

my ($base, $double) = start_double();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = new_node(
	'inbound_receiver',
	'switchboard.listen_addresses' => "'127.0.0.1'",
	'switchboard.listen_port'      => $port,
	'switchboard.inbound_max_bytes' => "'4kB'",
	'switchboard.inbound_timeout'  => "'2s'",
	'switchboard.naptime'          => "'10s'",
	'restart_after_crash'          => 'on');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

my $woo_secret = 'woo-webhook-secret';
my $hs_secret  = 'hubspot-app-client-secret';
my $whsec_key  = 'sixteen-byte-key-0123456789';
my $whsec      = 'whsec_' . encode_base64($whsec_key, '');

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, first_name text, updates int NOT NULL DEFAULT 0);
CREATE FUNCTION count_updates() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updates := OLD.updates + 1; RETURN NEW; END $$;
CREATE TRIGGER count_updates BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION count_updates();
CREATE TABLE contacts (email text PRIMARY KEY, first_name text);
CREATE TABLE accounts (ext_id text PRIMARY KEY, last_name text, updates int NOT NULL DEFAULT 0);
CREATE TRIGGER count_updates BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION count_updates();
INSERT INTO switchboard.secrets VALUES ('woo', '{"consumer_key":"ck_test","consumer_secret":"cs_test"}'),
  ('hs', 'hs-test-token'), ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
});
q_("INSERT INTO switchboard.secrets VALUES ('woo_hook', '$woo_secret'), ('hs_app', '$hs_secret'), ('sf_hook', '$whsec')");
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('shop', 'woocommerce', '$base', 'woo'), "
	. "('hubspot', 'hubspot', '$base', 'hs'), ('sf', 'salesforce', '$base', 'sf')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval, inbound_secret)
VALUES ('customers_woo', 'customers', 'shop', 'customers', 'id::text', 'id', 'pull', '1 hour', 'woo_hook'),
       ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'email', 'email', 'pull', '1 hour', 'hs_app'),
       ('accounts_sf', 'accounts', 'sf', 'Account', 'ext_id', 'External_Id__c', 'pull', '1 hour', 'sf_hook');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('customers_woo', 'id', 'id'), ('customers_woo', 'email', 'email'), ('customers_woo', 'first_name', 'first_name'),
  ('contacts_hs', 'email', 'email'), ('contacts_hs', 'firstname', 'first_name'),
  ('accounts_sf', 'External_Id__c', 'ext_id'), ('accounts_sf', 'LastName', 'last_name');
});
my %token = map { $_ => q_("SELECT switchboard.inbound_token('$_')") } qw(customers_woo contacts_hs accounts_sf);
like($token{$_}, qr/^[0-9a-f]{32}$/, "$_ has a 32-character token") for sort keys %token;

my $http = HTTP::Tiny->new(timeout => 20, keep_alive => 0);    # a kept connection may meet the idle timeout
my $origin = "http://127.0.0.1:$port";
sub post
{
	my ($path, $body, %headers) = @_;
	return $http->request('POST', "$origin$path", { headers => { 'Content-Type' => 'application/json', %headers }, content => $body });
}
sub b64_hmac { return encode_base64(hmac_sha256($_[0], $_[1]), ''); }    # (message, key)

ok(wait_for('receiver listening', sub { post('/inbound/' . ('0' x 32), '{}')->{status} == 404 }, 60),
	'the launcher started the receiver: it listens on 127.0.0.1:listen_port');
is(q_("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard receiver'"), '1',
	'one receiver, shown as such in pg_stat_activity');
ok(wait_for('first pulls', sub { q_("SELECT count(*) FROM switchboard.pull_status WHERE last_pull_at IS NOT NULL") eq '3' }, 30),
	'the routes polled once (the safety net), so only webhooks change the tables from now on');

sub count_events { return q_("SELECT count(*) FROM switchboard.inbound_events"); }
sub rejected { return q_("SELECT rejected FROM switchboard.inbound_status WHERE route = '$_[0]'"); }
sub applied_within
{
	my ($what, $cond) = @_;
	my $t0 = time;
	my $ok = wait_for($what, $cond, 30);
	my $ms = (time - $t0) * 1000;
	ok($ok && $ms < 5000, sprintf("$what, when woken by the commit, not at the 10 s safety poll (%.0f ms)", $ms));
}

# ---- WooCommerce: X-WC-Webhook-Signature over the raw body -----------------------------------
sub woo
{
	my ($resource, %o) = @_;
	my $body = encode_json($resource);
	return post("/inbound/$token{customers_woo}", $body,
		'X-WC-Webhook-Topic'     => $o{topic} // 'customer.updated',
		'X-WC-Webhook-Signature' => b64_hmac($body, $o{secret} // $woo_secret));
}
my $res = woo({ id => 7, email => 'ann@x.io', first_name => 'Ann', date_modified_gmt => '2026-12-03T10:00:00' });
is($res->{status}, 200, 'woocommerce: a signed request is accepted (200 once committed)');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE route = 'customers_woo'"), '1', 'its event is stored before the answer');
applied_within('woocommerce: the event is applied', sub { q_("SELECT first_name FROM customers WHERE id = 7") eq 'Ann' });

my $before = count_events();
$res = woo({ id => 7, email => 'ann@x.io', first_name => 'Forged', date_modified_gmt => '2026-12-03T11:00:00' }, secret => 'wrong');
is($res->{status}, 401, 'woocommerce: a forged signature answers 401');
is(count_events(), $before, 'nothing of it is stored');
is(rejected('customers_woo'), '1', 'and it is counted in inbound_status.rejected');
like(q_("SELECT last_error FROM switchboard.inbound_status WHERE route = 'customers_woo'"), qr/X-WC-Webhook-Signature/,
	'with the reason in last_error');
unlike(q_("SELECT last_error FROM switchboard.inbound_status WHERE route = 'customers_woo'"), qr/\Q$woo_secret\E/,
	'which never shows the secret');

# A redelivery of the same state (WooCommerce retries with the same body): stored and applied once.
my $annie = { id => 7, email => 'ann@x.io', first_name => 'Annie', date_modified_gmt => '2026-12-03T12:00:00' };
is(woo($annie)->{status}, 200, 'woocommerce: an update is accepted');
applied_within('woocommerce: the update is applied', sub { q_("SELECT first_name FROM customers WHERE id = 7") eq 'Annie' });
q_("UPDATE customers SET first_name = 'Local' WHERE id = 7");
my $updates = q_("SELECT updates FROM customers WHERE id = 7");
is(woo($annie)->{status}, 200, 'woocommerce: its redelivery is answered 200 too (the sender stops retrying)');
q_("SELECT switchboard.wake()");
sleep 2;
is(q_("SELECT first_name || ' ' || updates FROM customers WHERE id = 7"), "Local $updates",
	'the redelivery is not applied again (the local change since stays)');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE route = 'customers_woo'"), '2', 'nor stored twice');

# ---- HubSpot v3: method + URI + body + timestamp, 5 minutes --------------------------------
sub crm_put
{
	my ($email, $first) = @_;
	my $r = $http->request('PUT', "$base/_control/records/hubspot/contacts/$email",
		{ headers => { 'Content-Type' => 'application/json' }, content => encode_json({ properties => { firstname => $first } }) });
	die "PUT: $r->{status} $r->{content}" unless $r->{success};
	return json_get("$base/_control/records/hubspot/contacts/$email")->{id};
}
my $hs_id = crm_put('bob@x.io', 'Bob');
my $hs_event_id = 1000;
sub hubspot
{
	my (%o) = @_;
	my $body = encode_json([ { eventId => $o{event_id} // $hs_event_id++, objectId => $hs_id + 0,
		subscriptionType => 'contact.propertyChange', propertyName => 'firstname', occurredAt => int(time * 1000) } ]);
	my $ts = $o{timestamp} // int(time * 1000);
	my $path = "/inbound/$token{contacts_hs}";
	my $called = $o{proxied} ? "https://127.0.0.1:$port" : $origin;    # behind a TLS-ending proxy
	my $sig = b64_hmac("POST$called$path$body$ts", $o{secret} // $hs_secret);
	return post($path, $body, 'X-HubSpot-Request-Timestamp' => $ts, 'X-HubSpot-Signature-v3' => $sig,
		$o{proxied} ? ('X-Forwarded-Proto' => 'https') : ());
}
$res = hubspot();
is($res->{status}, 200, 'hubspot v3: a signed request is accepted');
applied_within('hubspot: the object is read back and applied', sub { q_("SELECT count(*) FROM contacts WHERE first_name = 'Bob'") eq '1' });
$before = count_events();
is(hubspot(secret => 'not-the-client-secret')->{status}, 401, 'hubspot v3: a forged signature answers 401');
is(hubspot(timestamp => int(time * 1000) - 6 * 60 * 1000)->{status}, 401,
	'hubspot v3: a correctly signed request older than 5 minutes answers 401');
is(count_events(), $before, 'nothing of them is stored');
is(rejected('contacts_hs'), '2', 'both counted');
is(hubspot(proxied => 1)->{status}, 200, 'hubspot v3 behind a TLS-ending proxy: the https URI the sender signed (X-Forwarded-Proto) verifies');
like(q_("SELECT last_error FROM switchboard.inbound_status WHERE route = 'contacts_hs'"), qr/stale|older/, 'the stale one said so');

# ---- Standard Webhooks (any other sender): webhook-id.webhook-timestamp.body under whsec_ ----
my $sw_serial = 0;
sub standard
{
	my ($data, %o) = @_;
	my $id = $o{id} // 'msg_' . ++$sw_serial;
	my $ts = $o{timestamp} // int(time);
	my $body = encode_json({ type => 'account.updated', timestamp => int(time * 1000), data => $data });
	my $sig = 'v1,' . b64_hmac("$id.$ts.$body", $o{key} // $whsec_key);
	return post("/inbound/$token{accounts_sf}", $body, 'webhook-id' => $id, 'webhook-timestamp' => $ts, 'webhook-signature' => $sig);
}
is(standard({ id => 'sf1', External_Id__c => 'a1', LastName => 'First' }, id => 'msg_redelivered')->{status}, 200,
	'standard webhooks: a signed request is accepted');
applied_within('standard webhooks: the event is applied', sub { q_("SELECT last_name FROM accounts WHERE ext_id = 'a1'") eq 'First' });
$before = count_events();
is(standard({ id => 'sf1', External_Id__c => 'a1', LastName => 'Forged' }, key => 'another-key-0123456789')->{status}, 401,
	'standard webhooks: a forged signature answers 401');
is(standard({ id => 'sf1', External_Id__c => 'a1', LastName => 'Stale' }, timestamp => int(time) - 600)->{status}, 401,
	'standard webhooks: a stale webhook-timestamp answers 401');
is(count_events(), $before, 'nothing of them is stored');
is(rejected('accounts_sf'), '2', 'both counted');
# The same webhook-id again (a sender's retry, here with another body): applied once.
q_("UPDATE accounts SET last_name = 'Local' WHERE ext_id = 'a1'");
is(standard({ id => 'sf1', External_Id__c => 'a1', LastName => 'Again' }, id => 'msg_redelivered')->{status}, 200,
	'standard webhooks: a redelivery is answered 200');
q_("SELECT switchboard.wake()");
sleep 2;
is(q_("SELECT last_name || ' ' || updates FROM accounts WHERE ext_id = 'a1'"), 'Local 1', 'and not applied again');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE event_id = 'msg_redelivered'"), '1', 'stored once');

# ---- limits and unknown requests ------------------------------------------------------------
$before = count_events();
my $big = encode_json({ id => 8, email => 'big@x.io', first_name => 'x' x 5000 });
$res = post("/inbound/$token{customers_woo}", $big, 'X-WC-Webhook-Topic' => 'customer.updated', 'X-WC-Webhook-Signature' => b64_hmac($big, $woo_secret));
is($res->{status}, 413, 'a body over inbound_max_bytes answers 413');
diag("413 test got: $res->{status} $res->{content}") if $res->{status} != 413;
my $chunked = `curl -s -o /dev/null -w '%{http_code}' --max-time 20 -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' --data-binary '$big' $origin/inbound/$token{customers_woo}`;
is($chunked, '413', 'also when it comes chunked, without a Content-Length');
is(post('/inbound/' . ('a' x 32), '{}')->{status}, 404, 'an unknown token answers 404');
is(post('/inbound/short', '{}')->{status}, 404, 'a malformed token answers 404');
is(post('/elsewhere', '{}')->{status}, 404, 'another path answers 404');
is($http->request('GET', "$origin/inbound/$token{customers_woo}")->{status}, 404, 'another method answers 404');
is(count_events(), $before, 'none of them stored anything');
is(rejected('customers_woo'), '1', 'nor counted as a bad signature');
# Slow clients are cut off after inbound_timeout (2 s here): one that goes silent mid-body, and
# one that trickles a byte every 300 ms (never silent for long, but slower than the limit).
sub cut_off_after
{
	my ($trickle) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!";
	$sock->autoflush(1);
	print $sock "POST /inbound/$token{customers_woo} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{";
	my $t0 = time;
	while (time - $t0 < 15)
	{
		if ($trickle) { local $SIG{PIPE} = 'IGNORE'; last unless print $sock 'x'; }
		my $rin = '';
		vec($rin, fileno($sock), 1) = 1;
		if (select(my $rout = $rin, undef, undef, 0.3))
		{
			my $n = sysread($sock, my $buf, 4096);
			last if !$n;    # closed
		}
	}
	close $sock;
	return time - $t0;
}
my $silent = cut_off_after(0);
ok($silent >= 1.5 && $silent < 6, sprintf('a client silent mid-body is cut off after inbound_timeout (%.1f s)', $silent));
my $trickled = cut_off_after(1);
ok($trickled >= 1.5 && $trickled < 6, sprintf('a client trickling its body is cut off too (%.1f s)', $trickled));
is(woo({ id => 9, email => 'cy@x.io', first_name => 'Cy', date_modified_gmt => '2026-12-03T10:00:00' })->{status}, 200,
	'the receiver still serves after them');

# ---- kill -9 of the receiver between receive and commit ------------------------------------
# A session holds a lock on inbound_events, so the receiver's insert waits: the request is
# received and verified, not committed. The receiver is killed there.
my ($lock_in, $lock_out) = ("BEGIN;\nLOCK TABLE switchboard.inbound_events IN EXCLUSIVE MODE;\nSELECT 'locked';\n", '');
my $locker = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr('postgres') ], '<', \$lock_in, '>', \$lock_out, '2>', \my $lock_err);
ok(wait_for('lock taken', sub { $locker->pump_nb; $lock_out =~ /locked/ }, 30), 'a session locks inbound_events');
my $dave = { id => 10, email => 'dave@x.io', first_name => 'Dave', date_modified_gmt => '2026-12-03T10:00:00' };
my $dave_body = encode_json($dave);
my @curl = ('curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '60', '-H', 'Content-Type: application/json',
	'-H', 'X-WC-Webhook-Topic: customer.created', '-H', 'X-WC-Webhook-Signature: ' . b64_hmac($dave_body, $woo_secret),
	'--data-binary', $dave_body, "$origin/inbound/$token{customers_woo}");
my $curl_out = '';
my $sender = IPC::Run::start(\@curl, '>', \$curl_out, '2>', \my $curl_err);
my $waiting_sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard receiver' AND wait_event_type = 'Lock'";
ok(wait_for('receiver waits on the lock', sub { q_($waiting_sql) ne '' }, 30), 'the receiver got the request and waits to commit it');
my $pid = q_($waiting_sql);
kill 'KILL', $pid;
$sender->finish;
isnt($curl_out, '200', "the sender saw no 2xx (curl: '$curl_out')");
$locker->kill_kill;
ok(wait_for('server back', sub { (eval { q_('SELECT 1') } // '') eq '1' }, 60), 'the server is back after the crash restart');
ok(wait_for('receiver back', sub { my $s = eval { post('/inbound/' . ('0' x 32), '{}')->{status} } // 0; $s == 404 }, 60),
	'the launcher started the receiver again');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE object_id = '10'"), '0', 'nothing of the killed request was stored');
is(post("/inbound/$token{customers_woo}", $dave_body, 'X-WC-Webhook-Topic' => 'customer.created',
		'X-WC-Webhook-Signature' => b64_hmac($dave_body, $woo_secret))->{status}, 200, 'the resent request is accepted');
ok(wait_for('applied', sub { q_("SELECT count(*) FROM customers WHERE id = 10") eq '1' }, 30), 'and applied');
is(q_("SELECT count(*) FROM switchboard.inbound_events WHERE object_id = '10'"), '1', 'stored once');
is(q_("SELECT first_name || ' ' || updates FROM customers WHERE id = 10"), 'Dave 0', 'applied once');
is(q_("SELECT count(*) FROM customers"), '3', 'no other row appeared');

# ---- promptness ------------------------------------------------------------------------
# Answered as soon as committed: a new connection whose request came with it is read in the
# receiver's pass after the one that accepted it, and must not wait for the next wake-up (1 s).
my @answer_ms;
for my $n (1 .. 9) {
	my $t0 = time;
	my $r = woo({ id => 100 + $n, email => "quick$n\@x.io", first_name => 'Q', date_modified_gmt => '2026-12-03T10:00:00' });
	push @answer_ms, (time - $t0) * 1000;
	die "quick request $n: $r->{status}" unless $r->{status} == 200;
}
@answer_ms = sort { $a <=> $b } @answer_ms;
ok($answer_ms[4] < 200, sprintf('a signed request on a new connection is answered at commit, not at the next wake-up (median %.0f ms)', $answer_ms[4]));


# ---- HTTPS: listen_certificate and listen_key (reloaded: the receiver restarts with them) ----
my $dir = PostgreSQL::Test::Utils::tempdir();
system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
	'-keyout', "$dir/key.pem", '-out', "$dir/cert.pem", '-loglevel', 'quiet') == 0
  or system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
	'-keyout', "$dir/key.pem", '-out', "$dir/cert.pem") == 0
  or die 'openssl req failed';
chmod 0644, "$dir/key.pem", "$dir/cert.pem";
q_("ALTER SYSTEM SET switchboard.listen_certificate = '$dir/cert.pem'");
q_("ALTER SYSTEM SET switchboard.listen_key = '$dir/key.pem'");
q_('SELECT pg_reload_conf()');
my $https = HTTP::Tiny->new(timeout => 20, verify_SSL => 0, keep_alive => 0);
$origin = "https://127.0.0.1:$port";
ok(wait_for('receiver on https', sub { $https->request('POST', "$origin/inbound/" . ('0' x 32), { content => '{}' })->{status} == 404 }, 30),
	'with listen_certificate and listen_key the receiver serves HTTPS');
$http = $https;
is(hubspot()->{status}, 200, 'hubspot v3 over HTTPS: the https URI the sender signed verifies');
is(post('/inbound/' . ('0' x 32), '{}')->{status}, 404, 'and unknown tokens still answer 404');
my $plain = `curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST http://127.0.0.1:$port/inbound/$token{customers_woo}`;
isnt($plain, '200', "plain HTTP is no longer served ($plain)");

# ---- a receiver that cannot start is not started again every second ----------------------
my $log_offset = -s $node->logfile;
q_("ALTER SYSTEM SET switchboard.inbound_database = 'nosuchdb'");
q_('SELECT pg_reload_conf()');
sleep 8;
my $fatals = () = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_offset) =~ /database "nosuchdb" does not exist/g;
ok($fatals >= 1 && $fatals <= 3, "a receiver whose database does not exist is started again every 5 s, not every second ($fatals starts in 8 s)");

$node->stop;
done_testing();
