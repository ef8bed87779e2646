# WooCommerce (SPEC §5 woocommerce) against the double's REST v3: push of customers through
# /customers/batch (creates, then updates and deletes by the remote id kept from the create
# answer; a per-object error becomes a dead letter while the rest of the batch lands; Basic
# auth from the JSON secret), and pull of orders by modified_after, walking X-WP-TotalPages.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use HTTP::Tiny;
use JSON::PP;

my ($base, $double) = start_double();
my $node = new_node('woocommerce');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

q1(q{
CREATE EXTENSION switchboard;
CREATE TABLE customers (id serial PRIMARY KEY, email text, first_name text);
CREATE TABLE orders (id bigint PRIMARY KEY, status text, total numeric, email text);
INSERT INTO switchboard.secrets VALUES ('woo', '{"consumer_key":"ck_test","consumer_secret":"cs_test"}'),
  ('woo_bad', '{"consumer_key":"ck_test","consumer_secret":"wrong"}');
});
q1("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('shop', 'woocommerce', '$base', 'woo')");
q1(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, on_delete)
VALUES ('customers_woo', 'customers', 'shop', 'customers', 'lower(email)', 'email', 'delete');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('customers_woo', 'email', 'lower(email)'), ('customers_woo', 'first_name', 'first_name');
});

# ---- push ---------------------------------------------------------------------------------

# A customer the shop already has: its create fails on its own (email exists).
json_post("$base/_control/woocommerce/customers", { email => 'taken@x.io', first_name => 'Old', notify => JSON::PP::false });
q1(q{INSERT INTO customers (email, first_name) VALUES ('ann@x.io', 'Ann'), ('bob@x.io', 'Bob'), ('taken@x.io', 'New')});
is(q1("SELECT switchboard.wait_idle('30 s')"), 't', 'push settles');
my %shop = map { $_->{email} => $_ } @{ json_get("$base/_control/woocommerce/customers") };
is($shop{'ann@x.io'}{first_name}, 'Ann', 'a customer is created in the shop through /customers/batch');
is($shop{'taken@x.io'}{first_name}, 'Old', 'the customer whose create failed is untouched');
like(q1("SELECT last_error FROM switchboard.dead_letters WHERE route = 'customers_woo' AND key = 'taken\@x.io'"),
	qr/registration-error-email-exists/, 'a per-object error is a dead letter with the shop\'s code');
is(q1("SELECT remote_id FROM switchboard.remote_ids WHERE route = 'customers_woo' AND key = 'ann\@x.io'"),
	$shop{'ann@x.io'}{id}, 'the remote id of a created customer is kept');
my ($batch) = grep { $_->{path} =~ m{/customers/batch$} } @{ double_requests($base, '/wp-json/') };
like($batch->{headers}{authorization}, qr/^Basic /, 'Basic auth from the JSON secret');

json_delete("$base/_control/requests");
q1(q{UPDATE customers SET first_name = 'Annie' WHERE email = 'ann@x.io'; DELETE FROM customers WHERE email = 'bob@x.io'});
is(q1("SELECT switchboard.wait_idle('30 s')"), 't', 'update and delete settle');
%shop = map { $_->{email} => $_ } @{ json_get("$base/_control/woocommerce/customers") };
is($shop{'ann@x.io'}{first_name}, 'Annie', 'an update goes to the kept remote id');
ok(!exists $shop{'bob@x.io'}, 'a delete removes the customer by its remote id');
my @bodies = map { $_->{body} } grep { $_->{path} =~ m{/customers/batch$} } @{ double_requests($base, '/wp-json/') };
ok((grep { ($_->{update} // [])->[0] && $_->{update}[0]{id} == $shop{'ann@x.io'}{id} } @bodies), 'the update names the remote id');
ok(!(grep { $_->{create} } @bodies), 'nothing was created twice');

my $preview = decode_json(q1("SELECT switchboard.preview('customers_woo', 'ann\@x.io')"));
is($preview->{url}, "$base/wp-json/wc/v3/customers/batch", 'preview shows the batch URL');
like(encode_json($preview->{headers}), qr/Basic \*\*\*\*/, 'preview masks the Basic credentials');
unlike(encode_json($preview), qr/cs_test|Y2tfdGVzdDpjc190ZXN0/, 'no secret in preview output');
is($preview->{body}{update}[0]{id}, $shop{'ann@x.io'}{id}, 'preview shows the update by remote id');

# ---- pull ---------------------------------------------------------------------------------

my @orders = map { { status => 'processing', total => "$_.50", billing => { email => "o$_\@x.io" }, notify => JSON::PP::false } } 1 .. 150;
json_post("$base/_control/woocommerce/orders", \@orders);
json_delete("$base/_control/requests");
q1(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('orders_woo', 'orders', 'shop', 'orders', 'id::text', 'id', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column, pull_expr) VALUES
  ('orders_woo', 'id', 'id', NULL), ('orders_woo', 'status', 'status', NULL),
  ('orders_woo', 'total', 'total', NULL), ('orders_woo', 'billing', 'email', 'value ->> ''email''');
});
q1("SELECT switchboard.pull_now('orders_woo')");
ok(wait_for('150 orders pulled', sub { q1('SELECT count(*) FROM orders') eq '150' }, 30), 'all 150 orders are pulled');
is(q1("SELECT email || ' ' || total FROM orders ORDER BY id LIMIT 1"), 'o1@x.io 1.50', 'mapped through pull_expr and casts');
my @pages = map { $_->{query}{page} } grep { $_->{method} eq 'GET' } @{ double_requests($base, '/wp-json/wc/v3/orders') };
is_deeply([ @pages[0, 1] ], [ 1, 2 ], 'pages are walked until X-WP-TotalPages');
like(q1("SELECT cursor FROM switchboard.pull_status WHERE route = 'orders_woo'"), qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/,
	'the cursor is the newest date_modified_gmt');

my $first = q1('SELECT min(id) FROM orders');
sleep 1; # WooCommerce times are whole seconds, and modified_after is strictly after
my $res = HTTP::Tiny->new->request('PUT', "$base/_control/woocommerce/orders/$first",
	{ headers => { 'Content-Type' => 'application/json' }, content => encode_json({ status => 'completed' }) });
ok($res->{success}, 'an order changes in the shop');
json_delete("$base/_control/requests");
q1("SELECT switchboard.pull_now('orders_woo')");
ok(wait_for('changed order pulled', sub { q1("SELECT status FROM orders WHERE id = $first") eq 'completed' }, 30),
	'the changed order arrives');
my @since = map { $_->{query}{modified_after} } grep { $_->{method} eq 'GET' } @{ double_requests($base, '/wp-json/wc/v3/orders') };
ok(@since && $since[0] =~ /^\d{4}-/ && $since[0] ne '1970-01-01T00:00:00', 'the next pull asks only for what changed since the cursor');

# A wrong consumer secret: the shop's error format reaches pull_status.
q1("UPDATE switchboard.endpoints SET secret = 'woo_bad' WHERE name = 'shop'");
q1("SELECT switchboard.pull_now('orders_woo')");
ok(wait_for('auth error shown', sub { q1("SELECT coalesce(last_error, '') FROM switchboard.pull_status WHERE route = 'orders_woo'") =~ /woocommerce_rest_cannot_view/ }, 30),
	'a 401 shows the shop\'s code and message');

done_testing();
