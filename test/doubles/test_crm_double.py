#!/usr/bin/env python3
"""Tests for crm_double.py: run with `python3 test/doubles/test_crm_double.py`."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DOUBLE = os.path.join(HERE, "crm_double.py")

# Standard Webhooks test vector
WH_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WH_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
WH_TS = "1614265330"
WH_BODY = '{"test": 2432232314}'
WH_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

HS_AUTH = {"Authorization": "Bearer hs-test-token"}
UPSERT = "/crm/v3/objects/contacts/batch/upsert"


def start_double(*args):
    proc = subprocess.Popen([sys.executable, DOUBLE, "--port", "0"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError("double did not start: %r %s" % (line, proc.stderr.read()))
    return proc, int(line.split()[1])


def stop_double(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    proc.stderr.close()


class Client:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def call(self, method, path, body=None, headers=None, form=None, raw=None, timeout=5):
        """Returns (status, headers, parsed body or text or None)."""
        hdrs = dict(headers or {})
        data = None
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
            hdrs.setdefault("Content-Type", "application/json")
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, rh, payload = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, rh, payload = e.code, e.headers, e.read()
        if not payload:
            return status, rh, None
        try:
            return status, rh, json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: a "deep" fault's answer
            return status, rh, payload.decode()

    # shorthands
    def ctl(self, method, what, body=None):
        return self.call(method, "/_control/" + what, body)[2]

    def hs(self, path, body, token="hs-test-token"):
        return self.call("POST", path, body, {"Authorization": "Bearer " + token})

    def sf_token(self, cid="sf-id", secret="sf-secret"):
        return self.call("POST", "/services/oauth2/token",
                         form={"grant_type": "client_credentials", "client_id": cid,
                               "client_secret": secret})


PROC = None
PORT = None


def setUpModule():
    global PROC, PORT
    PROC, PORT = start_double("--webhook-secret", WH_SECRET)


def tearDownModule():
    stop_double(PROC)


class Base(unittest.TestCase):
    def setUp(self):
        self.c = Client(PORT)
        self.c.ctl("POST", "reset")

    def contact(self, email, **props):
        return {"idProperty": "email", "id": email, "objectWriteTraceId": "trace-" + email,
                "properties": dict({"firstname": "F"}, **props)}


# --------------------------------------------------------------------------- HubSpot

class HubSpotTests(Base):
    def test_auth_required(self):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            st, _, body = self.c.call("POST", UPSERT, {"inputs": []}, headers)
            self.assertEqual(st, 401)
            self.assertEqual(body["category"], "INVALID_AUTHENTICATION")
            self.assertEqual(body["status"], "error")
            self.assertIn("Authentication credentials not found", body["message"])
            self.assertTrue(body["correlationId"])

    def test_upsert_creates_then_updates(self):
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io"), self.contact("b@x.io")]})
        self.assertEqual(st, 200)
        self.assertEqual(body["status"], "COMPLETE")
        first = {r["properties"]["email"]: r for r in body["results"]}
        self.assertTrue(all(r["new"] for r in body["results"]))
        self.assertTrue(first["a@x.io"]["id"].isdigit())
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io", firstname="G")]})
        self.assertEqual(st, 200)
        r = body["results"][0]
        self.assertFalse(r["new"])
        self.assertEqual(r["id"], first["a@x.io"]["id"])
        self.assertEqual(r["properties"]["firstname"], "G")
        recs = {x["key"]: x for x in self.c.ctl("GET", "records/hubspot/contacts")}
        self.assertEqual(set(recs), {"a@x.io", "b@x.io"})
        self.assertEqual(recs["a@x.io"]["writes"], 2)
        self.assertEqual(recs["a@x.io"]["properties"]["firstname"], "G")
        # "" clears a property
        self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io", firstname="")]})
        rec = self.c.ctl("GET", "records/hubspot/contacts/a@x.io")
        self.assertNotIn("firstname", rec["properties"])

    def test_upsert_validation_errors(self):
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("u%d@x.io" % i)
                                                    for i in range(101)]})
        self.assertEqual((st, body["category"]), (400, "VALIDATION_ERROR"))
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("n@x.io", age=42)]})
        self.assertEqual((st, body["category"]), (400, "VALIDATION_ERROR"))
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("d@x.io"), self.contact("d@x.io")]})
        self.assertEqual(st, 400)
        self.assertIn("Duplicate", body["message"])
        # The whole batch is refused for one bad input: ids equal but for case, an empty id.
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("ok@x.io"), self.contact("e@x.io"),
                                                    self.contact("E@x.io")]})
        self.assertEqual((st, body["category"]), (400, "VALIDATION_ERROR"))
        self.assertIn("Duplicate IDs found in batch input: [e@x.io]", body["message"])
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("ok@x.io"), self.contact("")]})
        self.assertEqual((st, body["category"]), (400, "VALIDATION_ERROR"))
        self.assertIn("id is required", body["message"])
        st, _, _ = self.c.call("POST", UPSERT, raw="{not json", headers=HS_AUTH)
        self.assertEqual(st, 400)
        self.assertEqual(self.c.ctl("GET", "records/hubspot/contacts"), [])

    def test_upsert_results_order(self):
        inputs = [self.contact("a@x.io"), self.contact("b@x.io"), self.contact("c@x.io")]
        _, _, body = self.c.hs(UPSERT, {"inputs": inputs})
        self.assertEqual([r["properties"]["email"] for r in body["results"]], ["a@x.io", "b@x.io", "c@x.io"])
        self.c.ctl("POST", "config", {"hubspot_results_order": "reversed"})
        _, _, body = self.c.hs(UPSERT, {"inputs": inputs})
        self.assertEqual([r["properties"]["email"] for r in body["results"]], ["c@x.io", "b@x.io", "a@x.io"])

    def test_upsert_frozen_clock(self):
        self.c.ctl("POST", "config", {"hubspot_frozen_ms": 1700000000000})
        self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
        self.c.hs(UPSERT, {"inputs": [self.contact("b@x.io")]})
        stamps = {r["modified_ms"] for r in self.c.ctl("GET", "records/hubspot/contacts")}
        self.assertEqual(stamps, {1700000000000})

    def test_upsert_207_partial(self):
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("ok@x.io"),
                                                    self.contact("not-an-email")]})
        self.assertEqual(st, 207)
        self.assertEqual(len(body["results"]), 1)
        self.assertEqual(body["numErrors"], 1)
        err = body["errors"][0]
        self.assertEqual(err["category"], "VALIDATION_ERROR")
        self.assertEqual(err["context"]["objectWriteTraceId"], ["trace-not-an-email"])
        self.assertEqual(len(self.c.ctl("GET", "records/hubspot/contacts")), 1)

    def test_archive(self):
        _, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io"), self.contact("b@x.io")]})
        rid = body["results"][0]["id"]
        st, hdrs, payload = self.c.hs("/crm/v3/objects/contacts/batch/archive",
                                      {"inputs": [{"id": rid}, {"id": "999999"}]})
        self.assertEqual((st, payload), (204, None))
        live = self.c.ctl("GET", "records/hubspot/contacts")
        self.assertEqual(len(live), 1)
        every = self.c.call("GET", "/_control/records/hubspot/contacts?include_archived=1")[2]
        self.assertEqual([r["archived"] for r in every if r["id"] == rid], [True])
        _, _, res = self.c.hs("/crm/v3/objects/contacts/search", {"limit": 10})
        self.assertEqual(res["total"], 1)
        # upserting the archived key creates a new record
        _, _, body = self.c.hs(UPSERT, {"inputs": [self.contact(body["results"][0]["properties"]["email"])]})
        self.assertTrue(body["results"][0]["new"])
        self.assertNotEqual(body["results"][0]["id"], rid)

    def search(self, obj, prop, cursor, limit, after=None, props=("firstname",)):
        req = {"filterGroups": [{"filters": [{"propertyName": prop, "operator": "GT",
                                              "value": str(cursor)}]}],
               "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
               "properties": list(props), "limit": limit}
        if after is not None:
            req["after"] = after
        return self.c.hs("/crm/v3/objects/%s/search" % obj, req)

    def test_search_filter_sort_and_paging(self):
        for batch in range(3):
            self.c.hs(UPSERT, {"inputs": [self.contact("p%d-%d@x.io" % (batch, i), firstname=str(batch))
                                          for i in range(9)]})
            time.sleep(0.005)
        recs = self.c.ctl("GET", "records/hubspot/contacts")
        cutoff = min(r["modified_ms"] for r in recs)       # excludes the first batch
        seen, after, pages = [], None, 0
        while True:
            st, _, body = self.search("contacts", "lastmodifieddate", cutoff, 5, after)
            self.assertEqual(st, 200)
            self.assertEqual(body["total"], 18)
            pages += 1
            seen.extend(body["results"])
            nxt = body.get("paging", {}).get("next")
            if not nxt:
                break
            after = nxt["after"]
        self.assertEqual(pages, 4)
        self.assertEqual(len({r["id"] for r in seen}), 18)
        stamps = [r["properties"]["lastmodifieddate"] for r in seen]
        self.assertEqual(stamps, sorted(stamps))
        self.assertRegex(stamps[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual({r["properties"]["firstname"] for r in seen}, {"1", "2"})
        self.assertIn("hs_object_id", seen[0]["properties"])
        self.assertFalse(seen[0]["archived"])

    def test_search_limits(self):
        st, _, body = self.search("contacts", "lastmodifieddate", 0, 201)
        self.assertEqual((st, body["category"]), (400, "VALIDATION_ERROR"))
        st, _, body = self.search("contacts", "lastmodifieddate", 0, 200, after="9900")
        self.assertEqual(st, 400)
        st, _, body = self.search("contacts", "lastmodifieddate", 0, 200, after="9800")
        self.assertEqual((st, body["total"]), (200, 0))

    def test_search_one_sort_rule_and_filter_group_limits(self):
        two = {"sorts": [{"propertyName": "lastmodifieddate"}, {"propertyName": "hs_object_id"}]}
        st, _, body = self.c.hs("/crm/v3/objects/contacts/search", two)
        self.assertEqual((st, body["category"]), (400, "VALIDATION_ERROR"))
        six = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}] * 6}
        self.assertEqual(self.c.hs("/crm/v3/objects/contacts/search", six)[0], 400)

    def test_touch_after_search_moves_records_to_the_end(self):
        self.c.hs(UPSERT, {"inputs": [self.contact("t%d@x.io" % i) for i in range(4)]})
        time.sleep(0.005)
        self.c.hs(UPSERT, {"inputs": [self.contact("u%d@x.io" % i) for i in range(4)]})
        self.c.ctl("POST", "config", {"hubspot_touch_after_search": {"count": 2, "searches": 1}})
        st, _, first = self.search("contacts", "lastmodifieddate", 0, 4, props=("email",))
        emails = [r["properties"]["email"] for r in first["results"]]
        st, _, again = self.search("contacts", "lastmodifieddate", 0, 8, props=("email",))
        order = [r["properties"]["email"] for r in again["results"]]
        self.assertEqual(order[-2:], emails[:2])
        self.assertEqual(self.c.ctl("GET", "config")["hubspot_touch_after_search"]["searches"], 0)

    def test_other_objects_use_hs_lastmodifieddate(self):
        path = "/crm/v3/objects/companies/batch/upsert"
        self.c.hs(path, {"inputs": [{"idProperty": "domain", "id": "acme.io",
                                     "properties": {"name": "Acme"}}]})
        st, _, body = self.search("companies", "hs_lastmodifieddate", 0, 10, props=("name",))
        self.assertEqual((st, body["total"]), (200, 1))
        self.assertIn("hs_lastmodifieddate", body["results"][0]["properties"])
        self.assertEqual(body["results"][0]["properties"]["name"], "Acme")

    def test_control_edit_is_seen_by_search(self):
        self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io"), self.contact("b@x.io")]})
        cursor = max(r["modified_ms"] for r in self.c.ctl("GET", "records/hubspot/contacts"))
        rec = self.c.ctl("PUT", "records/hubspot/contacts/b@x.io", {"properties": {"firstname": "Z"}})
        self.assertGreater(rec["modified_ms"], cursor)
        _, _, body = self.search("contacts", "lastmodifieddate", cursor, 10)
        self.assertEqual([r["properties"]["firstname"] for r in body["results"]], ["Z"])
        # a brand-new record "created in the CRM"
        new = self.c.ctl("PUT", "records/hubspot/contacts/c@x.io", {"properties": {"firstname": "C"}})
        self.assertEqual(new["key"], "c@x.io")
        _, _, body = self.search("contacts", "lastmodifieddate", cursor, 10)
        self.assertEqual(body["total"], 2)
        st, _, deleted = self.c.call("DELETE", "/_control/records/hubspot/contacts/c@x.io")
        self.assertEqual((st, deleted["archived"]), (200, True))
        self.assertEqual(self.c.call("DELETE", "/_control/records/hubspot/contacts/c@x.io")[0], 404)

    def list_page(self, query, obj="contacts", token="hs-test-token"):
        return self.c.call("GET", "/crm/v3/objects/%s%s" % (obj, query),
                           headers={"Authorization": "Bearer " + token})

    def list_all(self, query, obj="contacts"):
        """Every record of a list, following paging.next.after; returns (records, pages)."""
        out, pages, after = [], 0, None
        while True:
            st, _, body = self.list_page(query + ("&after=" + after if after else ""), obj)
            self.assertEqual(st, 200, body)
            out.extend(body["results"])
            pages += 1
            nxt = body.get("paging", {}).get("next")
            if not nxt:
                return out, pages
            self.assertIn("after=" + nxt["after"], nxt["link"])
            after = nxt["after"]

    def test_list_objects_live_and_archived(self):
        _, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("l%02d@x.io" % i, lastname=str(i))
                                                   for i in range(25)]})
        ids = sorted((r["id"] for r in body["results"]), key=int)
        for rid in ids[3:9]:                          # archive 6 through the API ...
            self.c.hs("/crm/v3/objects/contacts/batch/archive", {"inputs": [{"id": rid}]})
        gone = self.c.call("DELETE", "/_control/records/hubspot/contacts/l20@x.io")[2]
        # ... and one "in the CRM": it gets an archivedAt and a newer modification time
        self.assertGreater(gone["modified_ms"], max(
            r["modified_ms"] for r in self.c.ctl("GET", "records/hubspot/contacts")))
        self.assertEqual(gone["archived_ms"], gone["modified_ms"])
        self.assertRegex(gone["archivedAt"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

        # default: live only, 10 per page, id ascending, requested + default properties
        st, _, page = self.list_page("?properties=firstname,lastname")
        self.assertEqual(st, 200)
        self.assertEqual(len(page["results"]), 10)
        first = page["results"][0]
        self.assertEqual(set(first), {"id", "properties", "createdAt", "updatedAt", "archived"})
        self.assertEqual(set(first["properties"]), {"firstname", "lastname", "createdate",
                                                    "lastmodifieddate", "hs_object_id"})
        self.assertFalse(first["archived"])
        live, pages = self.list_all("?limit=7&archived=false&properties=lastname")
        self.assertEqual(pages, 3)
        self.assertEqual([r["id"] for r in live], ids[:3] + ids[9:20] + ids[21:])
        self.assertEqual([r["properties"]["lastname"] for r in live][:4], ["0", "1", "2", "9"])

        # archived=true: only archived ones, with archivedAt
        dead, pages = self.list_all("?limit=4&archived=true&properties=email")
        self.assertEqual(pages, 2)
        self.assertEqual([r["id"] for r in dead], ids[3:9] + [ids[20]])
        self.assertTrue(all(r["archived"] for r in dead))
        self.assertEqual(dead[-1]["archivedAt"], gone["archivedAt"])
        self.assertEqual(dead[-1]["updatedAt"], gone["archivedAt"])
        self.assertEqual(dead[-1]["properties"]["email"], "l20@x.io")
        self.assertLess(dead[0]["archivedAt"], dead[-1]["archivedAt"])
        # repeated properties= also works; a record archived between pages shifts nothing
        st, _, p1 = self.list_page("?limit=2&properties=email&properties=lastname")
        self.assertEqual(set(p1["results"][0]["properties"]) & {"email", "lastname"},
                         {"email", "lastname"})
        self.c.call("DELETE", "/_control/records/hubspot/contacts/" + ids[0])
        _, _, p2 = self.list_page("?limit=2&after=" + p1["paging"]["next"]["after"])
        self.assertEqual([r["id"] for r in p2["results"]], [ids[2], ids[9]])

        # limits, bad parameters, auth, other objects
        self.assertEqual(len(self.list_page("?limit=100")[2]["results"]), 17)
        for bad in ("?limit=101", "?limit=0", "?limit=x", "?archived=maybe", "?after=zz"):
            st, _, err = self.list_page(bad)
            self.assertEqual((st, err["category"]), (400, "VALIDATION_ERROR"), bad)
        self.assertEqual(self.list_page("", token="wrong")[0], 401)
        st, _, empty = self.list_page("?archived=true", obj="deals")
        self.assertEqual((st, empty), (200, {"results": []}))
        self.c.hs("/crm/v3/objects/companies/batch/upsert",
                  {"inputs": [{"idProperty": "domain", "id": "a.io", "properties": {}}]})
        st, _, co = self.list_page("", obj="companies")
        self.assertIn("hs_lastmodifieddate", co["results"][0]["properties"])

    def test_writes_strictly_ordered_and_pullable(self):
        """Every write (upsert, control PUT, archive) gets a strictly newer stamp, so a puller
        that searches GT its previous cursor sees exactly the record just written."""
        self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io"), self.contact("b@x.io")]})
        cursor = max(r["modified_ms"] for r in self.c.ctl("GET", "records/hubspot/contacts"))
        for i in range(6):
            key = "ab"[i % 2] + "@x.io"
            if i == 3:
                self.c.hs(UPSERT, {"inputs": [self.contact(key, firstname="U")]})
                rec = self.c.ctl("GET", "records/hubspot/contacts/" + key)
            else:
                rec = self.c.ctl("PUT", "records/hubspot/contacts/" + key,
                                 {"properties": {"firstname": "P%d" % i}})
            self.assertGreater(rec["modified_ms"], cursor)
            st, _, body = self.search("contacts", "lastmodifieddate", cursor, 10)
            self.assertEqual([r["id"] for r in body["results"]], [rec["id"]])
            self.assertEqual(body["results"][0]["properties"]["lastmodifieddate"],
                             rec["updatedAt"])
            cursor = rec["modified_ms"]
        rec = self.c.ctl("PUT", "records/hubspot/companies/c.io", {"properties": {"name": "C"}})
        self.assertGreater(rec["modified_ms"], cursor)
        st, _, body = self.search("companies", "hs_lastmodifieddate", cursor, 10, props=("name",))
        self.assertEqual([r["properties"]["name"] for r in body["results"]], ["C"])
        gone = self.c.call("DELETE", "/_control/records/hubspot/companies/c.io")[2]
        self.assertGreater(gone["modified_ms"], rec["modified_ms"])


# --------------------------------------------------------------------------- Salesforce

class SalesforceTests(Base):
    V = "/services/data/v59.0"

    def setUp(self):
        super().setUp()
        st, _, tok = self.c.sf_token()
        self.assertEqual(st, 200)
        self.token = tok["access_token"]
        self.auth = {"Authorization": "Bearer " + self.token}

    def upsert(self, records, obj="Contact", ext="Ext__c", all_or_none=False, auth=None):
        return self.c.call("PATCH", "%s/composite/sobjects/%s/%s" % (self.V, obj, ext),
                           {"allOrNone": all_or_none,
                            "records": [dict({"attributes": {"type": obj}}, **r) for r in records]},
                           auth or self.auth)

    def query(self, soql, endpoint="query"):
        return self.c.call("GET", "%s/%s?%s" % (self.V, endpoint, urllib.parse.urlencode({"q": soql})),
                           headers=self.auth)

    def query_rows(self, soql, endpoint="query"):
        """All rows of a query, following nextRecordsUrl; returns (rows, pages)."""
        st, _, page = self.query(soql, endpoint)
        self.assertEqual(st, 200, page)
        rows, pages = list(page["records"]), 1
        while not page["done"]:
            st, _, page = self.c.call("GET", page["nextRecordsUrl"], headers=self.auth)
            self.assertEqual(st, 200, page)
            rows.extend(page["records"])
            pages += 1
        return rows, pages

    def test_token(self):
        st, _, tok = self.c.sf_token()
        self.assertEqual(st, 200)
        self.assertEqual(tok["instance_url"], self.c.base)
        self.assertEqual(tok["token_type"], "Bearer")
        for k in ("access_token", "issued_at", "signature"):
            self.assertTrue(tok[k])
        st, _, err = self.c.sf_token(secret="nope")
        self.assertEqual((st, err["error"]), (400, "invalid_client"))
        self.assertEqual(err["error_description"], "invalid client credentials")

    def test_upsert(self):
        st, _, res = self.upsert([{"Ext__c": "k1", "LastName": "One"},
                                  {"LastName": "NoKey"},
                                  {"Ext__c": "k2", "LastName": "Two"},
                                  {"Ext__c": "k3"}])
        self.assertEqual(st, 200)
        self.assertEqual([r["success"] for r in res], [True, False, True, False])
        self.assertTrue(res[0]["created"])
        self.assertEqual(len(res[0]["id"]), 18)
        self.assertTrue(res[0]["id"].startswith("003"))
        self.assertEqual(res[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING")
        self.assertEqual(res[1]["errors"][0]["fields"], ["Ext__c"])
        self.assertEqual(res[3]["errors"][0]["fields"], ["LastName"])
        st, _, again = self.upsert([{"Ext__c": "k1", "LastName": "Uno", "Email": None}])
        self.assertEqual((again[0]["id"], again[0]["created"]), (res[0]["id"], False))
        recs = {r["key"]: r for r in self.c.ctl("GET", "records/salesforce/Contact")}
        self.assertEqual(recs["k1"]["properties"]["LastName"], "Uno")
        self.assertEqual(set(recs), {"k1", "k2"})

    def test_upsert_limits_and_all_or_none(self):
        st, _, err = self.upsert([{"Ext__c": str(i), "LastName": "x"} for i in range(201)])
        self.assertEqual((st, err[0]["errorCode"]), (400, "INVALID_FIELD"))
        st, _, res = self.upsert([{"Ext__c": "a", "LastName": "A"}, {"Ext__c": "b"}],
                                 all_or_none=True)
        self.assertEqual([r["success"] for r in res], [False, False])
        self.assertEqual(res[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK")
        self.assertEqual(self.c.ctl("GET", "records/salesforce/Contact"), [])

    def test_delete(self):
        _, _, res = self.upsert([{"Ext__c": "k1", "LastName": "A"}, {"Ext__c": "k2", "LastName": "B"}])
        ids = [r["id"] for r in res]
        path = self.V + "/composite/sobjects?ids=%s,%s&allOrNone=false" % (ids[0], "001000000000000AAA")
        st, _, out = self.c.call("DELETE", path, headers=self.auth)
        self.assertEqual(st, 200)
        self.assertEqual([r["success"] for r in out], [True, False])
        self.assertEqual(out[1]["errors"][0]["statusCode"], "INVALID_CROSS_REFERENCE_KEY")
        _, _, out = self.c.call("DELETE", path, headers=self.auth)
        self.assertEqual(out[0]["errors"][0]["statusCode"], "ENTITY_IS_DELETED")
        _, _, q = self.query("SELECT Id FROM Contact")
        self.assertEqual([r["Id"] for r in q["records"]], [ids[1]])

    def test_query_paging(self):
        self.c.ctl("POST", "config", {"sf_page_size": 3})
        self.upsert([{"Ext__c": "old", "LastName": "Old"}])
        cursor = self.c.ctl("GET", "records/salesforce/Contact")[0]["SystemModstamp"]
        cursor = cursor.replace("+0000", "Z")
        for i in range(7):
            self.upsert([{"Ext__c": "k%d" % i, "LastName": "L%d" % i}])
        st, _, page = self.query("SELECT Id, SystemModstamp, Ext__c, LastName FROM Contact "
                                 "WHERE SystemModstamp > %s ORDER BY SystemModstamp" % cursor)
        self.assertEqual(st, 200)
        self.assertEqual(page["totalSize"], 7)
        rows, pages = list(page["records"]), 1
        while not page["done"]:
            self.assertRegex(page["nextRecordsUrl"], r"^/services/data/v59\.0/query/01g\w+-\d+$")
            st, _, page = self.c.call("GET", page["nextRecordsUrl"], headers=self.auth)
            self.assertEqual(st, 200)
            rows.extend(page["records"])
            pages += 1
        self.assertEqual(pages, 3)
        self.assertNotIn("nextRecordsUrl", page)
        self.assertEqual([r["Ext__c"] for r in rows], ["k%d" % i for i in range(7)])
        self.assertEqual(rows[0]["attributes"]["type"], "Contact")
        self.assertTrue(rows[0]["attributes"]["url"].endswith(rows[0]["Id"]))
        self.assertRegex(rows[0]["SystemModstamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")
        stamps = [r["SystemModstamp"] for r in rows]
        self.assertEqual(stamps, sorted(stamps))
        st, _, err = self.query("SELEC nonsense")
        self.assertEqual((st, err[0]["errorCode"]), (400, "MALFORMED_QUERY"))

    def test_where_with_or_not_and_parentheses(self):
        for i in range(4):
            self.upsert([{"Ext__c": "w%d" % i, "LastName": "L%d" % (i % 2)}])
        recs = {r["Ext__c"]: r for r in self.query_rows("SELECT Id, SystemModstamp, Ext__c FROM Contact")[0]}
        stamp = recs["w1"]["SystemModstamp"].replace("+0000", "Z")
        rid = recs["w1"]["Id"]
        rows, _ = self.query_rows("SELECT Id, Ext__c FROM Contact WHERE (SystemModstamp > %s OR "
                                  "(SystemModstamp = %s AND Id > '%s')) ORDER BY SystemModstamp ASC, Id ASC "
                                  "LIMIT 2" % (stamp, stamp, rid))
        self.assertEqual([r["Ext__c"] for r in rows], ["w2", "w3"])
        rows, _ = self.query_rows("SELECT Id, Ext__c FROM Contact WHERE NOT LastName = 'L0' AND "
                                  "(Ext__c = 'w1' or Ext__c = 'w0') ORDER BY Id")
        self.assertEqual([r["Ext__c"] for r in rows], ["w1"])
        for bad in ("SELECT Id FROM Contact WHERE (LastName = 'x'", "SELECT Id FROM Contact WHERE LastName = 'x' OR"):
            st, _, err = self.query(bad)
            self.assertEqual((st, err[0]["errorCode"]), (400, "MALFORMED_QUERY"), bad)

    def test_sessions(self):
        st, _, err = self.query("SELECT Id FROM Contact")
        self.assertEqual(st, 200)
        self.assertEqual(self.c.ctl("POST", "expire_tokens")["expired"], 1)
        st, _, err = self.query("SELECT Id FROM Contact")
        self.assertEqual(st, 401)
        self.assertEqual(err, [{"message": "Session expired or invalid",
                                "errorCode": "INVALID_SESSION_ID"}])
        st, _, _ = self.upsert([{"Ext__c": "a", "LastName": "A"}],
                               auth={"Authorization": "Bearer made-up"})
        self.assertEqual(st, 401)
        self.setUp()
        self.assertEqual(self.query("SELECT Id FROM Contact")[0], 200)

    def test_expired_locator_is_invalid_query_locator(self):
        self.c.ctl("POST", "config", {"sf_page_size": 1})
        self.upsert([{"Ext__c": "a", "LastName": "A"}, {"Ext__c": "b", "LastName": "B"}])
        st, _, page = self.query("SELECT Id FROM Contact")
        self.assertEqual(st, 200)
        self.assertFalse(page["done"])
        self.assertEqual(self.c.ctl("POST", "expire_locators")["expired"], 1)
        st, _, err = self.c.call("GET", page["nextRecordsUrl"], headers=self.auth)
        self.assertEqual(st, 400)
        self.assertEqual(err[0]["errorCode"], "INVALID_QUERY_LOCATOR")

    def test_control_edit_is_seen_by_query(self):
        self.upsert([{"Ext__c": "k1", "LastName": "A"}])
        cursor = self.c.ctl("GET", "records/salesforce/Contact/k1")["SystemModstamp"]
        rec = self.c.ctl("PUT", "records/salesforce/Contact/k9", {"properties": {"LastName": "Nine"}})
        self.assertEqual(rec["key"], "k9")
        _, _, q = self.query("SELECT Id, LastName FROM Contact WHERE SystemModstamp > %s "
                             "ORDER BY SystemModstamp" % cursor.replace("+0000", "Z"))
        self.assertEqual([r["LastName"] for r in q["records"]], ["Nine"])
        self.assertEqual(self.c.call("DELETE", "/_control/records/salesforce/Contact/k9")[0], 200)
        _, _, q = self.query("SELECT Id FROM Contact")
        self.assertEqual(q["totalSize"], 1)

    def test_query_all_returns_deleted(self):
        self.c.ctl("POST", "config", {"sf_page_size": 2})
        _, _, res = self.upsert([{"Ext__c": "k%d" % i, "LastName": "L%d" % i} for i in range(6)])
        ids = [r["id"] for r in res]
        cursor = self.c.ctl("GET", "records/salesforce/Contact/k0")["SystemModstamp"]
        st, _, out = self.c.call("DELETE", self.V + "/composite/sobjects?ids=%s,%s&allOrNone=false"
                                 % (ids[1], ids[2]), headers=self.auth)
        self.assertEqual([r["success"] for r in out], [True, True])
        gone = self.c.call("DELETE", "/_control/records/salesforce/Contact/k4")[2]
        api_deleted = self.c.call("GET", "/_control/records/salesforce/Contact?include_archived=1")[2]
        stamps = {r["id"]: r for r in api_deleted}
        self.assertGreater(stamps[ids[1]]["modified_ms"], stamps[ids[0]]["modified_ms"])
        self.assertGreater(gone["modified_ms"], stamps[ids[1]]["modified_ms"])
        self.assertEqual(gone["archived_ms"], gone["modified_ms"])

        # plain query still excludes them, also when asked for IsDeleted = true
        rows, _ = self.query_rows("SELECT Id, IsDeleted FROM Contact")
        self.assertEqual([r["Id"] for r in rows], [ids[0], ids[3], ids[5]])
        self.assertEqual({r["IsDeleted"] for r in rows}, {False})
        self.assertEqual(self.query_rows("SELECT Id FROM Contact WHERE IsDeleted = true")[0], [])

        # queryAll: everything, deleted ones flagged, SystemModstamp = deletion time
        rows, pages = self.query_rows("SELECT Id, Ext__c, IsDeleted, SystemModstamp FROM Contact "
                                      "ORDER BY SystemModstamp", "queryAll")
        self.assertEqual(pages, 3)
        self.assertEqual(len(rows), 6)
        by_key = {r["Ext__c"]: r for r in rows}
        self.assertEqual({k for k, r in by_key.items() if r["IsDeleted"]}, {"k1", "k2", "k4"})
        self.assertEqual(by_key["k4"]["SystemModstamp"], gone["SystemModstamp"])
        self.assertEqual([r["Ext__c"] for r in rows][-3:], ["k1", "k2", "k4"])

        # the deletion pull: IsDeleted = true [AND SystemModstamp > cursor]
        rows, pages = self.query_rows("SELECT Id, Ext__c FROM Contact WHERE IsDeleted = true "
                                      "ORDER BY SystemModstamp", "queryAll")
        self.assertEqual([r["Ext__c"] for r in rows], ["k1", "k2", "k4"])
        self.assertEqual(pages, 2)
        since_api = stamps[ids[1]]["SystemModstamp"].replace("+0000", "Z")
        rows, _ = self.query_rows("SELECT Id, IsDeleted, SystemModstamp FROM Contact WHERE "
                                  "IsDeleted = true AND SystemModstamp > %s "
                                  "ORDER BY SystemModstamp" % since_api, "queryAll")
        self.assertEqual([(r["Id"], r["IsDeleted"]) for r in rows], [(gone["id"], True)])
        rows, _ = self.query_rows("SELECT Id FROM Contact WHERE SystemModstamp > %s AND "
                                  "IsDeleted = TRUE" % cursor.replace("+0000", "Z"), "queryAll")
        self.assertEqual(len(rows), 3)
        # the next URL may also be written in the queryAll form
        st, _, page = self.query("SELECT Id FROM Contact", "queryAll")
        self.assertRegex(page["nextRecordsUrl"], r"^/services/data/v59\.0/query/01g\w+-2$")
        st, _, more = self.c.call("GET", page["nextRecordsUrl"].replace("/query/", "/queryAll/"),
                                  headers=self.auth)
        self.assertEqual((st, len(more["records"])), (200, 2))
        # a re-created key is a new, live record; the deleted one stays deleted
        self.upsert([{"Ext__c": "k4", "LastName": "Again"}])
        rows, _ = self.query_rows("SELECT Id, IsDeleted FROM Contact WHERE Ext__c = 'k4'",
                                  "queryAll")
        self.assertEqual(sorted(r["IsDeleted"] for r in rows), [False, True])
        # auth and syntax as for query
        self.assertEqual(self.c.call("GET", self.V + "/queryAll?q=SELECT+Id+FROM+Contact")[0], 401)
        st, _, err = self.query("SELEC x", "queryAll")
        self.assertEqual((st, err[0]["errorCode"]), (400, "MALFORMED_QUERY"))

    def test_control_edits_strictly_ordered_for_soql(self):
        self.upsert([{"Ext__c": "k1", "LastName": "A"}, {"Ext__c": "k2", "LastName": "B"}])
        cursor = self.c.ctl("GET", "records/salesforce/Contact/k1")["SystemModstamp"]
        for i in range(4):
            rec = self.c.ctl("PUT", "records/salesforce/Contact/k%d" % (1 + i % 2),
                             {"properties": {"LastName": "E%d" % i}})
            self.assertGreater(rec["SystemModstamp"], cursor)
            rows, _ = self.query_rows("SELECT Id, LastName, SystemModstamp, LastModifiedDate "
                                      "FROM Contact WHERE SystemModstamp > %s"
                                      % cursor.replace("+0000", "Z"))
            self.assertEqual([(r["Id"], r["LastName"]) for r in rows], [(rec["id"], "E%d" % i)])
            self.assertEqual(rows[0]["SystemModstamp"], rec["SystemModstamp"])
            self.assertEqual(rows[0]["LastModifiedDate"], rec["SystemModstamp"])
            cursor = rec["SystemModstamp"]


# --------------------------------------------------------------------------- webhooks, OpenAI

class WebhookTests(Base):
    def post(self, name, body, sig=WH_SIG, msg_id=WH_ID, ts=WH_TS):
        hdrs = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}
        return self.c.call("POST", "/hooks/" + name, raw=body, headers=hdrs)

    def test_signature_vector(self):
        st, _, _ = self.post("orders", WH_BODY)
        self.assertEqual(st, 200)
        self.post("orders", WH_BODY, sig="v1,AAAA v1," + WH_SIG[3:])   # any listed signature
        ev = self.c.ctl("GET", "hooks/orders")
        self.assertEqual([e["verified"] for e in ev], [True, True])
        self.assertEqual([e["attempt"] for e in ev], [1, 2])
        self.assertEqual(ev[0]["body"], {"test": 2432232314})
        self.assertEqual(ev[0]["headers"]["webhook-id"], WH_ID)

    def test_bad_signatures(self):
        self.post("h", WH_BODY.replace("2", "3"))
        self.post("h", WH_BODY, ts="1614265331")
        self.c.call("POST", "/hooks/h", raw=WH_BODY)
        self.assertEqual([e["verified"] for e in self.c.ctl("GET", "hooks/h")], [False] * 3)

    def test_gone(self):
        self.c.ctl("PUT", "hooks/old", {"status": 410})
        self.assertEqual(self.post("old", WH_BODY)[0], 410)
        self.assertEqual(self.post("other", WH_BODY)[0], 200)
        self.c.ctl("DELETE", "hooks/old")
        self.assertEqual(self.post("old", WH_BODY)[0], 200)


class OpenAITests(Base):
    def chat(self, text):
        return self.c.call("POST", "/v1/chat/completions",
                           {"model": "gpt-4o-mini", "response_format": {"type": "json_object"},
                            "messages": [{"role": "system", "content": "score it"},
                                         {"role": "user", "content": text}]},
                           {"Authorization": "Bearer sk-test"})

    def test_default_echo(self):
        st, _, body = self.chat("hello")
        self.assertEqual(st, 200)
        msg = body["choices"][0]["message"]
        self.assertEqual(msg["role"], "assistant")
        self.assertEqual(json.loads(msg["content"]), {"score": 5})

    def test_configured_content(self):
        self.c.ctl("POST", "openai", {"content": {"segment": "enterprise"}})
        self.assertEqual(json.loads(self.chat("x")[2]["choices"][0]["message"]["content"]),
                         {"segment": "enterprise"})
        self.c.ctl("POST", "openai", {"content": "not json"})
        self.assertEqual(self.chat("x")[2]["choices"][0]["message"]["content"], "not json")

    def test_rules_latency_usage_malformed(self):
        self.c.ctl("POST", "openai", {"content": None, "rules": [{"match": "vip", "content": {"score": 99}}],
                                      "usage": {"prompt_tokens": 11, "completion_tokens": 3}})
        body = self.chat("a vip lead")[2]
        self.assertEqual(json.loads(body["choices"][0]["message"]["content"]), {"score": 99})
        self.assertEqual(body["usage"]["prompt_tokens"], 11)
        self.assertEqual(json.loads(self.chat("plain")[2]["choices"][0]["message"]["content"]), {"score": 5})
        self.c.ctl("POST", "openai", {"latency_ms": 300})
        t0 = time.monotonic()
        self.chat("x")
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.c.ctl("POST", "openai", {"latency_ms": 0, "rules": [], "malformed": True})
        content = self.chat("hello")[2]["choices"][0]["message"]["content"]
        self.assertRaises(ValueError, json.loads, content)

    def test_quota_and_rate_limit_429(self):
        self.c.ctl("POST", "openai", {"error": {"kind": "insufficient_quota", "count": 1}})
        st, _, body = self.chat("x")
        self.assertEqual((st, body["error"]["code"]), (429, "insufficient_quota"))
        self.assertEqual(self.chat("x")[0], 200)
        self.c.ctl("POST", "openai", {"error": {"kind": "rate_limit", "count": 1, "retry_after": 2,
                                                "reset_requests": "1s"}})
        st, hdrs, body = self.chat("x")
        self.assertEqual((st, body["error"]["code"], hdrs["Retry-After"], hdrs["x-ratelimit-reset-requests"]),
                         (429, "rate_limit_exceeded", "2", "1s"))
        self.assertEqual(self.chat("x")[0], 200)


class EnrichTests(Base):
    def test_default_and_configured_answers(self):
        st, _, body = self.c.call("POST", "/enrich/firmo", {"email": "ada@acme.io"})
        self.assertEqual((st, body["domain"], body["employees"]), (200, "acme.io", 70))
        self.assertEqual(self.c.call("POST", "/enrich/firmo", [1])[0], 422)
        self.c.ctl("PUT", "enrich/firmo", {"status": 503, "body": {"error": "down"}})
        self.assertEqual(self.c.call("POST", "/enrich/firmo", {"email": "a@b.c"})[0], 503)
        self.c.ctl("DELETE", "enrich/firmo")
        self.assertEqual(self.c.call("POST", "/enrich/firmo", {"email": "a@b.c"})[0], 200)


# --------------------------------------------------------------------------- faults

class FaultTests(Base):
    def fault(self, **spec):
        st, _, body = self.c.call("POST", "/_control/faults", spec)
        self.assertEqual(st, 201, body)
        return body

    def test_status_fault(self):
        rl = {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
              "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}
        self.fault(path_prefix=UPSERT, kind="status", status=429, retry_after="2", body=rl, count=2)
        for _ in range(2):
            st, hdrs, body = self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
            self.assertEqual((st, hdrs["Retry-After"], body), (429, "2", rl))
        self.assertEqual(self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})[0], 200)
        self.assertEqual(self.c.ctl("GET", "faults")[0]["hits"], 2)
        log = self.c.ctl("GET", "requests")
        self.assertEqual([r["status"] for r in log], [429, 429, 200])
        self.assertEqual(self.c.ctl("GET", "stats")["faults_applied"], {"status": 2})

    def test_status_default_body_and_clear(self):
        self.fault(kind="status", status=503)          # all paths, until cleared
        for _ in range(3):
            st, _, body = self.c.hs(UPSERT, {"inputs": []})
            self.assertEqual((st, body["status"]), (503, "error"))
        st, _, body = self.c.sf_token()
        self.assertEqual((st, body[0]["errorCode"]), (503, "SERVER_UNAVAILABLE"))
        self.assertEqual(self.c.ctl("DELETE", "faults")["cleared"], 1)
        self.assertEqual(self.c.hs(UPSERT, {"inputs": []})[0], 200)

    def test_path_prefix_and_method(self):
        self.fault(path_prefix="/crm/v3/objects/contacts", kind="status", status=500)
        self.fault(path_prefix="/hooks/", method="GET", kind="status", status=500)
        self.assertEqual(self.c.hs(UPSERT, {"inputs": []})[0], 500)
        self.assertEqual(self.c.hs("/crm/v3/objects/companies/batch/upsert", {"inputs": []})[0], 200)
        self.assertEqual(self.c.call("POST", "/hooks/x", {"id": "e"})[0], 200)
        st, _, err = self.c.call("POST", "/_control/faults", {"kind": "explode"})
        self.assertEqual(st, 400)

    def test_timeout(self):
        self.fault(path_prefix=UPSERT, kind="timeout", delay_ms=1500, count=1)
        t0 = time.monotonic()
        with self.assertRaises((socket.timeout, urllib.error.URLError, TimeoutError)):
            self.c.call("POST", UPSERT, {"inputs": []}, HS_AUTH, timeout=0.3)
        self.assertLess(time.monotonic() - t0, 1.2)
        self.assertEqual(self.c.ctl("GET", "requests")[0]["fault"], "timeout")
        self.assertEqual(self.c.hs(UPSERT, {"inputs": []})[0], 200)
        self.assertEqual(self.c.ctl("GET", "stats")["in_flight"], 1)     # still sleeping
        self.c.ctl("POST", "reset")                                      # survives a reset
        self.assertEqual(self.c.ctl("GET", "stats")["in_flight"], 1)
        deadline = time.monotonic() + 3
        while self.c.ctl("GET", "stats")["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.c.ctl("GET", "stats")["in_flight"], 0)

    def test_slow(self):
        self.fault(kind="slow", delay_ms=300, count=1)
        t0 = time.monotonic()
        st, _, _ = self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)

    def test_drop(self):
        self.fault(path_prefix=UPSERT, kind="drop", count=1)
        with self.assertRaises((http.client.RemoteDisconnected, urllib.error.URLError,
                                ConnectionError)):
            self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
        self.assertEqual(self.c.ctl("GET", "records/hubspot/contacts"), [])
        # drop after applying: the write happened, the answer was lost
        self.fault(path_prefix=UPSERT, kind="drop", apply=True, count=1)
        with self.assertRaises((http.client.RemoteDisconnected, urllib.error.URLError,
                                ConnectionError)):
            self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
        self.assertEqual(len(self.c.ctl("GET", "records/hubspot/contacts")), 1)
        self.assertEqual(self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})[0], 200)

    def test_deep(self):
        self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
        self.fault(path_prefix="/crm/v3/objects/contacts/search", kind="deep", depth=5, count=1)
        st, _, body = self.c.hs("/crm/v3/objects/contacts/search", {"limit": 10})
        self.assertEqual(st, 200)
        self.assertEqual(body["results"][0]["properties"]["hostile"], [[[[[]]]]])
        # the default depth is far beyond what Python's own json module could write
        self.fault(path_prefix="/crm/v3/objects/contacts/search", kind="deep", count=1)
        st, _, body = self.c.hs("/crm/v3/objects/contacts/search", {"limit": 10})
        self.assertEqual(st, 200)
        self.assertIn("[" * 100000 + "]" * 100000, body)

    def test_reject_hubspot(self):
        self.fault(path_prefix=UPSERT, kind="reject", reject_ids=["b@x.io"], count=1)
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact(e) for e in
                                                    ("a@x.io", "b@x.io", "c@x.io")]})
        self.assertEqual(st, 207)
        self.assertEqual(sorted(r["properties"]["email"] for r in body["results"]),
                         ["a@x.io", "c@x.io"])
        self.assertEqual(body["errors"][0]["context"]["objectWriteTraceId"], ["trace-b@x.io"])
        self.assertEqual(self.c.hs(UPSERT, {"inputs": [self.contact("b@x.io")]})[0], 200)

    def test_reject_salesforce(self):
        tok = self.c.sf_token()[2]["access_token"]
        self.fault(kind="reject", reject_ids=["k2"])
        st, _, res = self.c.call(
            "PATCH", "/services/data/v59.0/composite/sobjects/Account/Ext__c",
            {"allOrNone": False, "records": [
                {"attributes": {"type": "Account"}, "Ext__c": k, "Name": k} for k in ("k1", "k2")]},
            {"Authorization": "Bearer " + tok})
        self.assertEqual(st, 200)
        self.assertEqual([r["success"] for r in res], [True, False])
        self.assertEqual(res[1]["errors"][0]["statusCode"], "FIELD_CUSTOM_VALIDATION_EXCEPTION")

    def test_reject_webhook(self):
        self.fault(path_prefix="/hooks/", kind="reject", reject_ids=["42"], status=422)
        ok = self.c.call("POST", "/hooks/a", {"type": "t.insert", "id": "e1", "data": {"id": 1}})
        bad = self.c.call("POST", "/hooks/a", {"type": "t.insert", "id": "e2", "data": {"id": 42}})
        self.assertEqual((ok[0], bad[0]), (200, 422))


# --------------------------------------------------------------------------- control API

class ControlTests(Base):
    def test_requests_log(self):
        self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
        self.c.call("POST", "/hooks/x", {"id": "e1"})
        log = self.c.ctl("GET", "requests")
        self.assertEqual([r["path"] for r in log], [UPSERT, "/hooks/x"])
        first = log[0]
        self.assertEqual(first["method"], "POST")
        self.assertEqual(first["body"]["inputs"][0]["id"], "a@x.io")
        self.assertEqual(first["headers"]["authorization"], "Bearer hs-test-token")
        self.assertIsInstance(first["at_ms"], int)
        since = self.c.call("GET", "/_control/requests?since=%d" % first["seq"])[2]
        self.assertEqual([r["path"] for r in since], ["/hooks/x"])
        hooks = self.c.call("GET", "/_control/requests?path_prefix=/hooks")[2]
        self.assertEqual(len(hooks), 1)
        self.c.ctl("DELETE", "requests")
        self.assertEqual(self.c.ctl("GET", "requests"), [])

    def test_stats_keepalive_and_concurrency(self):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
        for _ in range(3):
            conn.request("POST", UPSERT, json.dumps({"inputs": []}),
                         dict(HS_AUTH, **{"Content-Type": "application/json"}))
            r = conn.getresponse()
            self.assertEqual((r.status, json.loads(r.read())["status"]), (200, "COMPLETE"))
            self.assertEqual(r.getheader("Content-Length") is not None, True)
        stats = self.c.ctl("GET", "stats")
        self.assertEqual(stats["connections"], 1)
        self.assertEqual(stats["paths"][UPSERT], 3)
        self.c.ctl("POST", "reset")            # the same connection is counted again
        conn.request("POST", "/hooks/k", "{}")
        conn.getresponse().read()
        conn.close()
        self.assertEqual(self.c.ctl("GET", "stats")["connections"], 1)

        self.c.ctl("POST", "faults", {"kind": "slow", "delay_ms": 300})
        threads = [threading.Thread(target=self.c.call, args=("POST", "/hooks/c", {"id": i}))
                   for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = self.c.ctl("GET", "stats")
        self.assertGreaterEqual(stats["max_concurrent"], 5)
        self.assertEqual(stats["in_flight"], 0)

    def test_rate_limit(self):
        self.c.ctl("POST", "config", {"hubspot_rate": "3/10s"})
        codes = [self.c.hs(UPSERT, {"inputs": []}) for _ in range(4)]
        self.assertEqual([c[0] for c in codes], [200, 200, 200, 429])
        st, hdrs, body = codes[3]
        self.assertEqual(body["policyName"], "TEN_SECONDLY_ROLLING")
        self.assertGreaterEqual(int(hdrs["Retry-After"]), 1)
        self.assertEqual(self.c.ctl("GET", "stats")["rate_limited"], {"hubspot": 1})
        self.c.ctl("POST", "config", {"hubspot_rate": None, "hubspot_search_rate": "1/10s",
                                      "sf_rate": "1/1h"})
        search = [self.c.hs("/crm/v3/objects/contacts/search", {"limit": 0})[0] for _ in range(2)]
        self.assertEqual(search, [200, 429])
        tok = self.c.sf_token()[2]["access_token"]
        q = [self.c.call("GET", "/services/data/v59.0/query?q=SELECT+Id+FROM+Lead",
                         headers={"Authorization": "Bearer " + tok}) for _ in range(2)]
        self.assertEqual(q[0][0], 200)
        self.assertEqual((q[1][0], q[1][2][0]["errorCode"]), (403, "REQUEST_LIMIT_EXCEEDED"))
        self.assertEqual(self.c.ctl("GET", "stats")["rate_limited"],
                         {"hubspot": 1, "hubspot_search": 1, "salesforce": 1})
        st, _, err = self.c.call("POST", "/_control/config", {"hubspot_rate": "lots"})
        self.assertEqual(st, 400)

    def test_reset(self):
        self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io")]})
        self.c.ctl("POST", "faults", {"kind": "status", "path_prefix": "/v1/"})
        self.c.ctl("POST", "config", {"hubspot_token": "other"})
        self.assertEqual(self.c.hs(UPSERT, {"inputs": []})[0], 401)
        self.c.ctl("POST", "reset")
        self.assertEqual(self.c.ctl("GET", "records/hubspot/contacts"), [])
        self.assertEqual(self.c.ctl("GET", "faults"), [])
        self.assertEqual(self.c.ctl("GET", "requests"), [])
        self.assertEqual(self.c.hs(UPSERT, {"inputs": []})[0], 200)


# --------------------------------------------------------------------------- WooCommerce

WOO = "/wp-json/wc/v3"
WOO_AUTH = {"Authorization": "Basic " + __import__("base64").b64encode(b"ck_test:cs_test").decode()}


class Receiver:
    """A tiny HTTP server standing in for switchboard's receiver: records what it got and
    answers with the status the test sets."""

    def __init__(self):
        import http.server
        outer = self
        self.got = []
        self.status = 200

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.got.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "body": self.rfile.read(n)})
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/inbound/tok" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WooCommerceTests(Base):
    def woo(self, method, path, body=None, headers=WOO_AUTH):
        return self.c.call(method, WOO + path, body, headers)

    def test_basic_auth_and_error_format(self):
        for headers in ({}, {"Authorization": "Basic Y2tfdGVzdDp3cm9uZw=="}, {"Authorization": "Bearer x"}):
            st, _, body = self.woo("GET", "/orders", headers=headers)
            self.assertEqual(st, 401)
            self.assertEqual(body["code"], "woocommerce_rest_cannot_view")
            self.assertEqual(body["data"]["status"], 401)
        st, _, body = self.woo("GET", "/nothing")
        self.assertEqual(st, 404)
        self.assertEqual(body["code"], "rest_no_route")

    def test_batch_create_update_delete_with_per_object_errors(self):
        st, _, body = self.woo("POST", "/customers/batch", {"create": [{"email": "a@x.io", "first_name": "A"},
                                                                        {"email": "b@x.io"}]})
        self.assertEqual(st, 200)
        ids = [r["id"] for r in body["create"]]
        self.assertTrue(all(isinstance(i, int) and i > 0 for i in ids))
        st, _, body = self.woo("POST", "/customers/batch", {
            "create": [{"email": "A@x.io"}, {"email": "c@x.io"}],
            "update": [{"id": ids[0], "first_name": "Ann"}, {"id": 99999, "first_name": "x"}],
            "delete": [ids[1], 88888]})
        self.assertEqual(st, 200)
        self.assertEqual(body["create"][0]["error"]["code"], "registration-error-email-exists")
        self.assertEqual(body["create"][0]["id"], 0)
        self.assertEqual(body["create"][1]["email"], "c@x.io")
        self.assertEqual(body["update"][0]["first_name"], "Ann")
        self.assertEqual(body["update"][1]["error"]["code"], "woocommerce_rest_invalid_id")
        self.assertEqual(body["delete"][0]["id"], ids[1])
        self.assertIn("error", body["delete"][1])
        st, _, body = self.woo("POST", "/orders/batch", {"create": [{}] * 101})
        self.assertEqual(st, 413)
        self.assertEqual(body["code"], "rest_request_entity_too_large")

    def test_reject_fault_fails_named_objects(self):
        self.c.ctl("POST", "faults", {"kind": "reject", "path_prefix": WOO + "/customers/batch",
                                       "reject_ids": ["bad@x.io"]})
        st, _, body = self.woo("POST", "/customers/batch", {"create": [{"email": "ok@x.io"}, {"email": "bad@x.io"}]})
        self.assertEqual(st, 200)
        self.assertNotIn("error", body["create"][0])
        self.assertIn("error", body["create"][1])

    def test_list_by_modified_after_with_paging_headers(self):
        base = 1795514400000
        for i in range(5):
            self.c.ctl("POST", "woocommerce/orders", {"status": "processing", "modified_ms": base + i * 1000,
                                                      "notify": False})
        st, h, body = self.woo("GET", "/orders?modified_after=2026-11-24T10:00:00&dates_are_gmt=true"
                                      "&orderby=modified&order=asc&per_page=2&page=1")
        self.assertEqual(st, 200)
        self.assertEqual(h["X-WP-Total"], "4")
        self.assertEqual(h["X-WP-TotalPages"], "2")
        self.assertEqual([r["date_modified_gmt"] for r in body], ["2026-11-24T10:00:01", "2026-11-24T10:00:02"])
        st, h, body = self.woo("GET", "/orders?modified_after=2026-11-24T10:00:00&orderby=modified&order=asc"
                                      "&per_page=2&page=2")
        self.assertEqual([r["date_modified_gmt"] for r in body], ["2026-11-24T10:00:03", "2026-11-24T10:00:04"])
        st, _, body = self.woo("GET", "/orders?per_page=101")
        self.assertEqual(st, 400)
        self.assertEqual(body["code"], "rest_invalid_param")
        st, _, body = self.woo("GET", "/orders?modified_after=yesterday")
        self.assertEqual(st, 400)

    def test_the_shop_sends_signed_webhooks_until_acknowledged(self):
        receiver = Receiver()
        try:
            receiver.status = 503
            self.c.ctl("POST", "woocommerce/hooks", {"topic": "order.*", "delivery_url": receiver.url,
                                                     "secret": "wh-secret", "retry_ms": 50})
            order = self.c.ctl("POST", "woocommerce/orders", {"status": "pending"})
            deadline = time.time() + 5
            while len(receiver.got) < 2 and time.time() < deadline:
                time.sleep(0.02)
            receiver.status = 200
            while self.c.ctl("GET", "woocommerce/deliveries")["pending"] and time.time() < deadline:
                time.sleep(0.02)
            got = receiver.got[-1]
            self.assertGreaterEqual(len(receiver.got), 2)
            self.assertEqual(got["headers"]["x-wc-webhook-topic"], "order.created")
            sig = __import__("base64").b64encode(__import__("hmac").new(
                b"wh-secret", got["body"], "sha256").digest()).decode()
            self.assertEqual(got["headers"]["x-wc-webhook-signature"], sig)
            self.assertEqual(json.loads(got["body"])["id"], order["id"])
            statuses = [d["status"] for d in self.c.ctl("GET", "woocommerce/deliveries")["deliveries"]]
            self.assertEqual(statuses[0], 503)
            self.assertEqual(statuses[-1], 200)
        finally:
            receiver.close()


class SenderTests(Base):
    def test_each_scheme_signed_forged_and_redelivered(self):
        receiver = Receiver()
        try:
            r = self.c.ctl("POST", "send", {"url": receiver.url, "scheme": "standard", "secret": WH_SECRET,
                                            "body": {"type": "a.b", "data": {"id": 1}}, "times": 2})
            self.assertEqual(r["status"], 200)
            first, second = receiver.got[-2:]
            self.assertEqual(first["headers"]["webhook-id"], second["headers"]["webhook-id"])
            self.assertEqual(first["headers"]["webhook-signature"], second["headers"]["webhook-signature"])
            key = __import__("base64").b64decode(WH_SECRET[6:])
            signed = (first["headers"]["webhook-id"] + "." + first["headers"]["webhook-timestamp"] + ".").encode() \
                + first["body"]
            expected = "v1," + __import__("base64").b64encode(
                __import__("hmac").new(key, signed, "sha256").digest()).decode()
            self.assertEqual(first["headers"]["webhook-signature"], expected)

            r = self.c.ctl("POST", "send", {"url": receiver.url, "scheme": "hubspot", "secret": "cs",
                                            "body": [{"eventId": 1, "objectId": 2}], "age_s": 400})
            got = receiver.got[-1]
            ts = got["headers"]["x-hubspot-request-timestamp"]
            self.assertLess(int(ts), int(time.time() * 1000) - 399000)
            msg = b"POST" + receiver.url.encode() + got["body"] + ts.encode()
            self.assertEqual(got["headers"]["x-hubspot-signature-v3"], __import__("base64").b64encode(
                __import__("hmac").new(b"cs", msg, "sha256").digest()).decode())

            self.c.ctl("POST", "send", {"url": receiver.url, "scheme": "woocommerce", "secret": "s",
                                        "body": {"id": 3}, "forge": True})
            got = receiver.got[-1]
            self.assertNotEqual(got["headers"]["x-wc-webhook-signature"], __import__("base64").b64encode(
                __import__("hmac").new(b"s", got["body"], "sha256").digest()).decode())
        finally:
            receiver.close()

    def test_unreachable_receiver_is_status_zero(self):
        r = self.c.ctl("POST", "send", {"url": "http://127.0.0.1:9/inbound/x", "scheme": "woocommerce",
                                        "secret": "s", "body": {"id": 1}, "timeout_s": 2})
        self.assertEqual(r["status"], 0)


class HubSpotBatchReadTests(Base):
    def test_batch_read_returns_asked_properties_and_names_missing_ids(self):
        st, _, body = self.c.hs(UPSERT, {"inputs": [self.contact("a@x.io", lastname="L")]})
        rid = body["results"][0]["id"]
        st, _, body = self.c.hs("/crm/v3/objects/contacts/batch/read",
                                {"properties": ["firstname", "email"], "inputs": [{"id": rid}]})
        self.assertEqual(st, 200)
        props = body["results"][0]["properties"]
        self.assertEqual(props["email"], "a@x.io")
        self.assertIn("lastmodifieddate", props)
        self.assertNotIn("lastname", props)
        st, _, body = self.c.hs("/crm/v3/objects/contacts/batch/read",
                                {"properties": ["email"], "inputs": [{"id": rid}, {"id": "424242"}]})
        self.assertEqual(st, 207)
        self.assertEqual(body["errors"][0]["context"]["ids"], ["424242"])
        self.assertEqual(len(body["results"]), 1)


class CliTests(unittest.TestCase):
    def test_port_file_log_file_token_and_sigterm(self):
        with tempfile.TemporaryDirectory() as tmp:
            pf, lf = os.path.join(tmp, "port"), os.path.join(tmp, "log")
            proc, port = start_double("--port-file", pf, "--log-file", lf,
                                      "--hubspot-token", "tok2", "--hubspot-rate", "1/10s")
            try:
                with open(pf) as fh:
                    self.assertEqual(int(fh.read()), port)
                c = Client(port)
                self.assertEqual(c.hs(UPSERT, {"inputs": []}, token="tok2")[0], 200)
                self.assertEqual(c.hs(UPSERT, {"inputs": []}, token="tok2")[0], 429)
                with open(lf) as fh:
                    lines = fh.read().splitlines()
                self.assertEqual(len(lines), 2)
                self.assertIn("POST %s 200" % UPSERT, lines[0])
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(5), 0)
                self.assertIn("STOPPED", proc.stdout.read())
            finally:
                stop_double(proc)


if __name__ == "__main__":
    unittest.main()
