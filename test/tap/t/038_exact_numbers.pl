# Numbers leave the database with every digit: a numeric a double would round (more than 15
# significant digits) goes out as its exact text, to HubSpot (a property string) and in a
# webhook's data (a JSON string), instead of a silently different amount; numbers a double
# holds stay JSON numbers, and 64-bit integers stay exact.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use JSON::PP;

my ($base, $double) = start_double();
my $node = new_node('exact_numbers');
sub q_ { return $node->safe_psql('postgres', $_[0]); }
q_(qq{
CREATE EXTENSION switchboard;
CREATE TABLE invoices (id int PRIMARY KEY, email text, amount numeric, small numeric, big bigint);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs'),
  ('hook', 'webhook', '$base/hooks/invoices', NULL);
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote) VALUES
  ('invoices_hs', 'invoices', 'hubspot', 'contacts', 'lower(email)', 'email'),
  ('invoices_hook', 'invoices', 'hook', 'invoice', 'id::text', NULL);
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('invoices_hs', 'email', 'lower(email)'), ('invoices_hs', 'amount', 'amount'), ('invoices_hs', 'small', 'small'),
  ('invoices_hs', 'big', 'big'),
  ('invoices_hook', 'amount', 'amount'), ('invoices_hook', 'small', 'small'), ('invoices_hook', 'big', 'big');
INSERT INTO invoices VALUES (1, 'a\@x.io', 12345678901234567.89, 59.50, 9223372036854775807);
});
q_("SELECT switchboard.wait_idle('30 s')");

my $contact = json_get("$base/_control/records/hubspot/contacts/a\@x.io");
is($contact->{properties}{amount}, '12345678901234567.89', 'HubSpot: the 19-digit amount arrives digit for digit');
is($contact->{properties}{small} + 0, 59.5, 'HubSpot: an amount a double holds arrives as that number');
is($contact->{properties}{big}, '9223372036854775807', 'HubSpot: a 64-bit integer arrives exact');

my $log = json_get("$base/_control/requests?path_prefix=/hooks/invoices");
my @hooks = @{ ref $log eq 'HASH' ? $log->{requests} : $log };
is(scalar @hooks, 1, 'one webhook');
my $data = $hooks[0]{body}{data};
is($data->{amount}, '12345678901234567.89', 'webhook: the 19-digit amount is its exact text (a JSON string)');
is($data->{small} + 0, 59.5, 'webhook: 59.50 arrives as that number');
is($data->{big}, '9223372036854775807', 'webhook: the 64-bit integer is exact');
is(q_("SELECT count(*) FROM switchboard.dead_letters"), '0', 'nothing failed');
done_testing();
