-- preview(route, key): the exact request for the current row, per connector, secrets masked.
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text, first_name text, last_name text,
                    status text, mrr numeric(10,2), active boolean, signed_up date, tags text[]);
INSERT INTO leads VALUES
  (1, 'Ann@Example.com', 'Ann', 'Lee', 'qualified', 1200.50, true, '2026-01-15', '{vip,eu}'),
  (2, 'bob@example.com', 'Bob', NULL, 'lead', NULL, false, NULL, NULL);
INSERT INTO switchboard.secrets VALUES
  ('hs_token', 'pat-na1-0123-secret'),
  ('sf_creds', '{"client_id":"sf-id","client_secret":"sf-very-secret"}'),
  ('hook_key', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options) VALUES
  ('hubspot', 'hubspot', 'http://127.0.0.1:9100', 'hs_token', '{"headers": {"X-Team": "growth"}}'),
  ('salesforce', 'salesforce', 'http://127.0.0.1:9100', 'sf_creds', '{"api_version": "60.0"}'),
  ('hooks', 'webhook', 'http://127.0.0.1:9100/hooks/leads', 'hook_key', '{}'),
  ('plain_hooks', 'webhook', 'http://127.0.0.1:9100/hooks/plain', NULL, '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, on_delete) VALUES
  ('leads_hs', 'leads', 'hubspot', 'contacts', 'lower(email)', 'email', 'delete'),
  ('leads_sf', 'leads', 'salesforce', 'Lead', 'id::text', 'External_Id__c', 'ignore'),
  ('leads_hook', 'leads', 'hooks', 'lead', 'id::text', NULL, 'delete'),
  ('leads_plain', 'leads', 'plain_hooks', 'lead', 'id::text', NULL, 'ignore');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
  ('leads_hs', 'email', 'lower(email)'),
  ('leads_hs', 'firstname', 'first_name'),
  ('leads_hs', 'lastname', 'last_name'),
  ('leads_hs', 'mrr', 'mrr'),
  ('leads_hs', 'is_active', 'active'),
  ('leads_hs', 'signup_date', 'signed_up'),
  ('leads_hs', 'tags', 'tags'),
  ('leads_sf', 'Email', 'email'),
  ('leads_sf', 'LastName', 'coalesce(last_name, ''Unknown'')'),
  ('leads_sf', 'Company', '''Acme''::text'),
  ('leads_sf', 'MRR__c', 'mrr'),
  ('leads_sf', 'Active__c', 'active'),
  ('leads_hook', 'email', 'email'),
  ('leads_hook', 'name', 'first_name || coalesce('' '' || last_name, '''')'),
  ('leads_hook', 'tags', 'tags'),
  ('leads_plain', 'id', 'id');
INSERT INTO switchboard.filters VALUES ('leads_hs', 'qualified', 'new.status = ''qualified''');

-- HubSpot: batch upsert by idProperty, every property a string, NULL as "", token masked
SELECT jsonb_pretty(switchboard.preview('leads_hs', 'ann@example.com'));
-- Salesforce: sObject Collections upsert by external id, typed JSON values
SELECT jsonb_pretty(switchboard.preview('leads_sf', '1') #- '{body,records,0,attributes}');
SELECT switchboard.preview('leads_sf', '1')->'body'->'records'->0->'attributes';
-- webhook: event envelope, Standard Webhooks headers with the signature masked
SELECT jsonb_pretty(switchboard.preview('leads_hook', '2') #- '{body,timestamp}' #- '{headers,webhook-timestamp}');
SELECT switchboard.preview('leads_hook', '2')->'headers'->>'webhook-timestamp' ~ '^\d{10}$' AS has_timestamp;
SELECT switchboard.preview('leads_hook', '2')->'body'->>'timestamp' ~ '^\d{4}-\d\d-\d\dT' AS iso_timestamp;
-- a webhook without secret is not signed
SELECT switchboard.preview('leads_plain', '1')->'headers';
-- no secret ever appears in a preview
SELECT count(*) FROM leads l, switchboard.routes r
 WHERE switchboard.preview(r.name, CASE WHEN r.name = 'leads_hs' THEN lower(l.email) ELSE l.id::text END)::text
       ~ '(0123-secret|sf-very-secret|MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)';
-- a filter that rejects the row says so
SELECT jsonb_pretty(switchboard.preview('leads_hs', 'bob@example.com'));
-- deletes: only sent when on_delete = delete (and, for CRMs, the remote id is known)
SELECT switchboard.preview('leads_sf', '1', 'delete') - 'endpoint';
SELECT switchboard.preview('leads_hs', 'ann@example.com', 'delete') - 'endpoint';
SELECT switchboard.preview('leads_hs', 'bob@example.com', 'delete') - 'endpoint';
INSERT INTO switchboard.remote_ids VALUES ('leads_hs', 'ann@example.com', '9001');
SELECT switchboard.preview('leads_hs', 'ann@example.com', 'delete') - 'headers' - 'route' - 'op' - 'endpoint' - 'key';
SELECT switchboard.preview('leads_hook', '1', 'delete')->'body'->>'type' AS event_type;
-- errors
SELECT switchboard.preview('leads_hs', 'nobody@example.com');
SELECT switchboard.preview('no_such_route', '1');
SELECT switchboard.preview('leads_hs', 'ann@example.com', 'upsert');
-- a mapping that fails on this row shows the failing mapping and the error
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('leads_plain', 'ratio', '100 / (id - 2)');
SELECT switchboard.preview('leads_plain', '2');

DROP EXTENSION switchboard;
DROP TABLE leads;
