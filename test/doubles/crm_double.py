#!/usr/bin/env python3
"""Stateful CRM test double for switchboard (Python 3 standard library only).

One HTTP/1.1 server on 127.0.0.1 that imitates, under a single base URL:

  * HubSpot CRM v3      /crm/v3/objects/{object}/batch/upsert | batch/archive | search,
                        GET /crm/v3/objects/{object}[/{id}] (list, with archived=true; get)
  * Salesforce REST     /services/oauth2/token, /services/data/vXX.X/composite/sobjects...,
                        /services/data/vXX.X/query, /services/data/vXX.X/queryAll
  * a webhook sink      /hooks/{name}   (Standard Webhooks signature verification)
  * OpenAI              /v1/chat/completions
  * a control API       /_control/...   (faults, request log, records, stats, reset)

See README.md next to this file for the command line and the control API.
"""

import argparse
import base64
import bisect
import collections
import datetime
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_LOGGED_REQUESTS = 100000


# --------------------------------------------------------------------------- helpers

def now_ms():
    return int(time.time() * 1000)


def iso_z(ms):
    """HubSpot style: 2026-11-24T10:00:00.123Z"""
    dt = datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ms % 1000)


def iso_sf(ms):
    """Salesforce style: 2026-11-24T10:00:00.123+0000"""
    dt = datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".%03d+0000" % (ms % 1000)


_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})$")


def parse_iso_ms(text):
    """Parse an ISO-8601 timestamp (Z or +hh:mm / +hhmm offset) into epoch ms, or None."""
    m = _ISO_RE.match(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    ms = int((frac or "0").ljust(3, "0")[:3])
    dt = datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s),
                           tzinfo=datetime.timezone.utc)
    epoch = int(dt.timestamp()) * 1000 + ms
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        epoch -= sign * (int(digits[:2]) * 60 + int(digits[2:])) * 60000
    return epoch


def parse_rate(spec):
    """'100/10s' -> (100, 10.0). Units: ms, s, m, h; a missing number means 1."""
    if not spec:
        return None
    m = re.match(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(ms|s|m|h)?\s*$", spec)
    if not m:
        raise ValueError("bad rate %r (expected e.g. 100/10s)" % spec)
    count, amount, unit = int(m.group(1)), m.group(2), m.group(3) or "s"
    seconds = float(amount) if amount else 1.0
    seconds *= {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return count, seconds


class Response:
    """What a system handler answers. body: dict/list (JSON), bytes, or None (empty)."""

    def __init__(self, status, body=None, headers=None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class Request:
    """A parsed incoming request, as seen by the system handlers."""

    def __init__(self, method, path, query, headers, raw, query_lists=None):
        self.method = method
        self.path = path
        self.query = query            # dict name -> first value
        self.query_lists = query_lists if query_lists is not None else \
            {k: [v] for k, v in query.items()}    # dict name -> every value, in order
        self.headers = headers        # dict, lower-case names
        self.raw = raw                # bytes
        self.reject = None            # None, or a set of keys to reject (kind "reject"), "*" = all
        self.reject_status = None

    def json(self):
        return json.loads(self.raw.decode("utf-8"))

    def bearer(self):
        auth = self.headers.get("authorization", "")
        parts = auth.split(None, 1)
        if len(parts) == 2 and parts[0].lower() in ("bearer", "oauth"):
            return parts[1].strip()
        return None

    def rejects(self, *keys):
        if self.reject is None:
            return False
        if self.reject == "*":
            return True
        return any(k is not None and str(k) in self.reject for k in keys)

    def body_for_log(self):
        if not self.raw:
            return None
        ctype = self.headers.get("content-type", "")
        text = self.raw.decode("utf-8", "replace")
        if "application/x-www-form-urlencoded" in ctype:
            return {k: v[0] for k, v in urllib.parse.parse_qs(text).items()}
        try:
            return json.loads(text)
        except ValueError:
            return text


class Clock:
    """Modification clock: one timestamp per write request, strictly increasing between requests
    (records written by the same batch share a timestamp, like a real CRM)."""

    def __init__(self):
        self.last = 0

    def tick(self):
        self.last = max(now_ms(), self.last + 1)
        return self.last


class RateLimiter:
    """Sliding-window limiter: at most `count` accepted requests in any `window` seconds."""

    def __init__(self, count, window):
        self.count, self.window = count, window
        self.stamps = collections.deque()

    def check(self):
        """Returns None when allowed (and counts it), else seconds until a slot frees."""
        t = time.monotonic()
        while self.stamps and self.stamps[0] <= t - self.window:
            self.stamps.popleft()
        if len(self.stamps) < self.count:
            self.stamps.append(t)
            return None
        return max(self.stamps[0] + self.window - t, 0.001)


# --------------------------------------------------------------------------- record store

class Record:
    def __init__(self, rid, props, ms):
        self.id = rid
        self.props = props
        self.created_ms = ms
        self.modified_ms = ms
        self.archived = False
        self.archived_ms = None       # when it was archived (HubSpot) / deleted (Salesforce)
        self.writes = 0


class ObjectStore:
    """Records of one remote object type, with lazily built value indexes per field
    (so upserts keyed by any field stay O(1))."""

    def __init__(self, name, key_field):
        self.name = name
        self.key_field = key_field
        self.records = {}        # id -> Record, in creation order
        self.indexes = {}        # field -> {str(value) -> id} over live records

    def _index(self, field):
        idx = self.indexes.get(field)
        if idx is None:
            idx = {}
            for rec in self.records.values():
                v = rec.props.get(field)
                if not rec.archived and v is not None and v != "":
                    idx[str(v)] = rec.id
            self.indexes[field] = idx
        return idx

    def _unindex(self, rec):
        for field, idx in self.indexes.items():
            v = rec.props.get(field)
            if v is not None and idx.get(str(v)) == rec.id:
                del idx[str(v)]

    def _reindex(self, rec):
        if rec.archived:
            return
        for field, idx in self.indexes.items():
            v = rec.props.get(field)
            if v is not None and v != "":
                idx[str(v)] = rec.id

    def find(self, field, value):
        rid = self._index(field).get(str(value))
        return self.records.get(rid) if rid else None

    def create(self, rid, props, ms):
        rec = Record(rid, {}, ms)
        self.records[rid] = rec
        self.update(rec, props, ms)
        return rec

    def update(self, rec, props, ms, clear_values=("", None)):
        self._unindex(rec)
        for k, v in props.items():
            if v in clear_values:
                rec.props.pop(k, None)
            else:
                rec.props[k] = v
        rec.modified_ms = ms
        rec.writes += 1
        self._reindex(rec)

    def archive(self, rec, ms):
        self._unindex(rec)
        rec.archived = True
        rec.archived_ms = ms
        rec.modified_ms = ms

    def live(self):
        return [r for r in self.records.values() if not r.archived]


# --------------------------------------------------------------------------- HubSpot

class HubSpot:
    MAX_BATCH = 100
    MAX_SEARCH_LIMIT = 200
    SEARCH_WINDOW = 10000
    ROUTES = [
        ("POST", re.compile(r"^/crm/v3/objects/([^/]+)/batch/upsert$"), "upsert"),
        ("POST", re.compile(r"^/crm/v3/objects/([^/]+)/batch/archive$"), "archive"),
        ("POST", re.compile(r"^/crm/v3/objects/([^/]+)/search$"), "search"),
        ("POST", re.compile(r"^/crm/v3/objects/([^/]+)/batch/read$"), "batch_read"),
        ("GET", re.compile(r"^/crm/v3/objects/([^/]+)/([^/]+)$"), "get_one"),
        ("GET", re.compile(r"^/crm/v3/objects/([^/]+)/?$"), "list_objects"),
    ]
    MAX_LIST_LIMIT = 100

    def __init__(self, double):
        self.d = double
        self.reset()

    def reset(self):
        self.stores = {}
        self.next_id = 1001

    @staticmethod
    def default_key_field(obj):
        return {"contacts": "email", "companies": "domain"}.get(obj, "external_id")

    def store(self, obj):
        s = self.stores.get(obj)
        if s is None:
            s = self.stores[obj] = ObjectStore(obj, self.default_key_field(obj))
        return s

    def new_id(self):
        rid = str(self.next_id)
        self.next_id += 1
        return rid

    # -- responses

    @staticmethod
    def error(status, message, category="VALIDATION_ERROR", **extra):
        body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                "category": category}
        body.update(extra)
        return Response(status, body)

    @staticmethod
    def rate_limit_body(policy="TEN_SECONDLY_ROLLING"):
        return {"status": "error",
                "message": "You have reached your %s limit." % policy.lower(),
                "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                "policyName": policy, "groupName": "publicapi:private-app:double"}

    def prop_value(self, obj, rec, name):
        if name == "hs_object_id":
            return rec.id
        if name in ("createdate", "hs_createdate"):
            return iso_z(rec.created_ms)
        if name in ("lastmodifieddate", "hs_lastmodifieddate"):
            return iso_z(rec.modified_ms)
        return rec.props.get(name)

    def default_props(self, obj):
        if obj == "contacts":
            return ["createdate", "hs_object_id", "lastmodifieddate"]
        return ["createdate", "hs_lastmodifieddate", "hs_object_id"]

    def full_props(self, obj, rec):
        props = dict(rec.props)
        for name in self.default_props(obj):
            props[name] = self.prop_value(obj, rec, name)
        return props

    def record_json(self, obj, rec, props=None):
        return {"id": rec.id, "properties": props if props is not None else self.full_props(obj, rec),
                "createdAt": iso_z(rec.created_ms), "updatedAt": iso_z(rec.modified_ms),
                "archived": rec.archived}

    def requested_props(self, req):
        """Names from ?properties=a,b (also repeated ?properties=a&properties=b)."""
        names = []
        for value in req.query_lists.get("properties", []):
            names.extend(n.strip() for n in value.split(",") if n.strip())
        return names

    # -- dispatch

    def handle(self, req):
        if req.bearer() != self.d.config["hubspot_token"]:
            return self.error(401, "Authentication credentials not found. This API supports "
                              "OAuth 2.0 authentication and you can find more details at "
                              "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                              "INVALID_AUTHENTICATION")
        matched_path = False
        for method, rx, name in self.ROUTES:
            m = rx.match(req.path)
            if m:
                matched_path = True
                if method == req.method:
                    if name == "search":
                        wait = self.d.check_rate("hubspot_search")
                        if wait is not None:
                            return self.d.rate_limited("hubspot_search", wait,
                                                       self.rate_limit_body("SECONDLY"))
                    wait = self.d.check_rate("hubspot")
                    if wait is not None:
                        return self.d.rate_limited("hubspot", wait, self.rate_limit_body())
                    try:
                        body = req.json() if req.method != "GET" else None
                    except ValueError as e:
                        return self.error(400, "Invalid input JSON: %s" % e)
                    with self.d.lock:
                        return getattr(self, name)(req, body, *m.groups())
        if matched_path:
            return self.error(405, "Method %s not allowed" % req.method, "VALIDATION_ERROR")
        return self.error(404, "No route for %s %s" % (req.method, req.path), "OBJECT_NOT_FOUND")

    def _inputs(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            return None, self.error(400, "Invalid input JSON: expected an object with 'inputs' array")
        inputs = body["inputs"]
        if len(inputs) > self.MAX_BATCH:
            return None, self.error(400, "Batch input size %d is larger than the limit of %d"
                                    % (len(inputs), self.MAX_BATCH))
        return inputs, None

    # -- endpoints

    def upsert(self, req, body, obj):
        inputs, err = self._inputs(body)
        if err:
            return err
        seen = set()
        for i, inp in enumerate(inputs):
            if not isinstance(inp, dict):
                return self.error(400, "inputs[%d] is not an object" % i)
            if not isinstance(inp.get("idProperty"), str) or not inp["idProperty"]:
                return self.error(400, "inputs[%d].idProperty is required for upsert" % i)
            if isinstance(inp.get("id"), bool) or not isinstance(inp.get("id"), (str, int)) \
                    or str(inp["id"]) == "":
                return self.error(400, "inputs[%d].id is required for upsert" % i)
            props = inp.get("properties", {})
            if not isinstance(props, dict):
                return self.error(400, "inputs[%d].properties must be an object" % i)
            for k, v in props.items():
                if not isinstance(v, str):
                    return self.error(400, "Invalid input JSON on inputs[%d].properties.%s: "
                                      "property values must be strings, got %s"
                                      % (i, k, type(v).__name__ if v is not None else "null"))
            key = str(inp["id"])
            # Like HubSpot: ids that differ only in case name the same record (emails,
            # domains), so the whole batch is refused.
            if key.lower() in seen:
                return self.error(400, "Duplicate IDs found in batch input: [%s]. IDs must be "
                                  "unique" % key.lower())
            seen.add(key.lower())

        st = self.store(obj)
        if not st.records and inputs:
            st.key_field = inputs[0]["idProperty"]
        # hubspot_frozen_ms: every batch stamped with that one millisecond (a bulk import)
        ms = self.d.config.get("hubspot_frozen_ms") or self.d.clock.tick()
        results, errors = [], []
        for inp in inputs:
            key, idp = str(inp["id"]), inp["idProperty"]
            props = dict(inp.get("properties") or {})
            trace = inp.get("objectWriteTraceId")
            bad = None
            if req.rejects(key, trace):
                bad = "Property values were not valid: injected rejection of %s=%s" % (idp, key)
            else:
                email = props.get("email", key if idp == "email" else "")
                if email and "@" not in email:
                    bad = ('Property values were not valid: [{"isValid":false,"message":"Email '
                           'address %s is invalid","error":"INVALID_EMAIL","name":"email"}]' % email)
            if bad:
                ctx = {"ids": [key]}
                if trace is not None:
                    ctx["objectWriteTraceId"] = [trace]
                errors.append({"status": "error", "category": "VALIDATION_ERROR",
                               "message": bad, "context": ctx})
                continue
            props[idp] = key
            rec = st.find(idp, key)
            created = rec is None
            if created:
                rec = st.create(self.new_id(), props, ms)
            else:
                st.update(rec, props, ms)
            out = self.full_props(obj, rec)
            out[idp] = key
            results.append({"id": rec.id, "properties": out, "createdAt": iso_z(rec.created_ms),
                            "updatedAt": iso_z(rec.modified_ms), "archived": False,
                            "new": created})
        stamp = iso_z(now_ms())
        if self.d.config.get("hubspot_results_order") == "reversed":
            results.reverse()  # HubSpot does not promise input order
        resp = {"status": "COMPLETE", "results": results, "startedAt": stamp,
                "completedAt": stamp}
        if errors:
            resp["numErrors"] = len(errors)
            resp["errors"] = errors
            return Response(207, resp)
        return Response(200, resp)

    def archive(self, req, body, obj):
        inputs, err = self._inputs(body)
        if err:
            return err
        st = self.store(obj)
        ms = self.d.clock.tick()
        for inp in inputs:
            if not isinstance(inp, dict) or "id" not in inp:
                return self.error(400, "archive inputs need an 'id'")
        for inp in inputs:
            if inp.get("idProperty"):
                rec = st.find(inp["idProperty"], inp["id"])
            else:
                rec = st.records.get(str(inp["id"]))
            if rec is not None and not rec.archived:
                st.archive(rec, ms)
        return Response(204)

    def batch_read(self, req, body, obj):
        """What an inbound HubSpot event is read back with: the named records (by id, or by
        idProperty) with the asked properties; missing ones in errors[] (207)."""
        inputs, err = self._inputs(body)
        if err:
            return err
        st = self.store(obj)
        names = body.get("properties") or self.default_props(obj)
        id_property = body.get("idProperty")
        results, missing = [], []
        for item in inputs:
            rid = str(item.get("id", "")) if isinstance(item, dict) else ""
            rec = st.find(id_property, rid) if id_property else st.records.get(rid)
            if rec is None or rec.archived or req.rejects(rid):
                missing.append(rid)
                continue
            props = {n: self.prop_value(obj, rec, n) for n in names}
            for n in self.default_props(obj):
                props[n] = self.prop_value(obj, rec, n)
            results.append(self.record_json(obj, rec, props))
        out = {"status": "COMPLETE", "results": results, "startedAt": iso_z(now_ms()),
               "completedAt": iso_z(now_ms())}
        if missing:
            out["numErrors"] = 1
            out["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                              "message": "Could not get some %s objects, they may be deleted or not exist."
                              % obj.upper(), "context": {"ids": missing}}]
            return Response(207, out)
        return Response(200, out)

    def get_one(self, req, body, obj, rid):
        st = self.store(obj)
        if req.query.get("idProperty"):
            rec = st.find(req.query["idProperty"], rid)
        else:
            rec = st.records.get(rid)
        if rec is None or rec.archived:
            return self.error(404, "Object not found.  objectId are usually numeric.",
                              "OBJECT_NOT_FOUND")
        return Response(200, self.record_json(obj, rec))

    def list_objects(self, req, body, obj):
        """GET /crm/v3/objects/{object}: every live (or, with archived=true, every archived)
        record, ordered by id; `after` is a keyset token (the next id to return), so records
        archived or created between pages neither shift nor repeat the pages."""
        try:
            limit = int(req.query.get("limit") or 10)
        except ValueError:
            return self.error(400, "limit must be an integer")
        if limit < 1 or limit > self.MAX_LIST_LIMIT:
            return self.error(400, "limit must be between 1 and %d" % self.MAX_LIST_LIMIT)
        after = (req.query.get("after") or "").strip()
        if after and not after.isdigit():
            return self.error(400, "Invalid paging cursor 'after': %s" % after)
        archived = (req.query.get("archived") or "false").strip().lower()
        if archived not in ("true", "false"):
            return self.error(400, "archived must be true or false")
        want_archived = archived == "true"
        start = int(after) if after else 0
        st = self.store(obj)
        hits = sorted((r for r in st.records.values()
                       if r.archived == want_archived and int(r.id) >= start),
                      key=lambda r: int(r.id))
        names = list(dict.fromkeys(self.requested_props(req) + self.default_props(obj)))
        results = []
        for r in hits[:limit]:
            item = self.record_json(obj, r, {n: self.prop_value(obj, r, n) for n in names})
            if r.archived:
                item["archivedAt"] = iso_z(r.archived_ms if r.archived_ms is not None
                                           else r.modified_ms)
            results.append(item)
        resp = {"results": results}
        if len(hits) > limit:
            nxt = str(int(hits[limit - 1].id) + 1)
            query = {"after": nxt, "limit": str(limit)}
            if self.requested_props(req):
                query["properties"] = ",".join(self.requested_props(req))
            if want_archived:
                query["archived"] = "true"
            resp["paging"] = {"next": {"after": nxt, "link": "%s/crm/v3/objects/%s?%s" % (
                self.d.base_url, obj, urllib.parse.urlencode(query))}}
        return Response(200, resp)

    _TIME_PROPS = ("lastmodifieddate", "hs_lastmodifieddate")

    def _fast_search(self, st, obj, groups, sorts, wanted, matches):
        """hubspot_fast_search (bench/run.sh): a search sorted ascending by the modification
        time, every filter group bounded below on it (GT/GTE/EQ), is served from a copy of the
        live records sorted by (time, id), walked from the lowest bound until `wanted` hits (the
        order a full scan gives: by id, then stably by time). None when the search is not of
        that shape. The copy is sorted again when the records' count, newest modification or
        newest archiving changes."""
        if len(sorts) != 1 or not isinstance(sorts[0], dict) or \
                sorts[0].get("propertyName") not in self._TIME_PROPS or \
                (sorts[0].get("direction") or "ASCENDING").upper() != "ASCENDING":
            return None
        bound = None
        for g in groups or [{}]:
            lows = []
            for f in g.get("filters") or []:
                if f.get("propertyName") in self._TIME_PROPS and (f.get("operator") or "EQ").upper() in ("GT", "GTE", "EQ"):
                    try:
                        lows.append(int(str(f.get("value"))))
                    except ValueError:
                        return None
            if not lows:
                return None
            bound = max(lows) if bound is None else min(bound, max(lows))
        cache = self.__dict__.setdefault("_search_cache", {})
        sig = (len(st.records), max((r.modified_ms for r in st.records.values()), default=0),
               max((r.archived_ms or 0 for r in st.records.values()), default=0))
        entry = cache.get(obj)
        if entry is None or entry[0] != sig:
            pool = sorted(st.live(), key=lambda r: (r.modified_ms, int(r.id)))
            entry = cache[obj] = (sig, pool, [r.modified_ms for r in pool])
        _, pool, stamps = entry
        hits = []
        for i in range(bisect.bisect_left(stamps, bound), len(pool)):
            if matches(pool[i]):
                hits.append(pool[i])
                if len(hits) >= wanted:
                    break
        return hits

    def _sort_value(self, obj, rec, name):
        if name in ("lastmodifieddate", "hs_lastmodifieddate"):
            return rec.modified_ms
        if name in ("createdate", "hs_createdate"):
            return rec.created_ms
        if name == "hs_object_id":
            return int(rec.id)
        return rec.props.get(name)

    def _filter_ok(self, obj, rec, f):
        name, op = f.get("propertyName"), (f.get("operator") or "EQ").upper()
        actual = self._sort_value(obj, rec, name)
        if op == "HAS_PROPERTY":
            return actual not in (None, "")
        if op == "NOT_HAS_PROPERTY":
            return actual in (None, "")
        if actual is None:
            return op == "NEQ"

        def conv(v):
            if isinstance(actual, int):
                if isinstance(v, (int, float)):
                    return v
                s = str(v)
                if re.match(r"^-?\d+(\.\d+)?$", s):
                    return float(s)
                iso = parse_iso_ms(s)
                if iso is not None:
                    return iso
                raise ValueError("cannot compare %s with %r" % (name, v))
            return str(v)

        if op in ("IN", "NOT_IN"):
            if len(f.get("values") or []) > 100:   # the most values switchboard assumes HubSpot takes
                raise ValueError("at most 100 values in an %s filter" % op)
            vals = [conv(v) for v in f.get("values") or []]
            return (actual in vals) == (op == "IN")
        value = conv(f.get("value"))
        try:
            return {"EQ": actual == value, "NEQ": actual != value, "GT": actual > value,
                    "GTE": actual >= value, "LT": actual < value, "LTE": actual <= value,
                    "CONTAINS_TOKEN": str(value).strip("*") in str(actual)}[op]
        except KeyError:
            raise ValueError("unsupported operator %s" % op)

    def search(self, req, body, obj):
        if not isinstance(body, dict):
            return self.error(400, "Invalid input JSON: expected an object")
        try:
            limit = int(body.get("limit", 10))
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            return self.error(400, "limit and after must be integers")
        if limit < 0 or limit > self.MAX_SEARCH_LIMIT:
            return self.error(400, "limit must be between 0 and %d" % self.MAX_SEARCH_LIMIT)
        if after + limit > self.SEARCH_WINDOW:
            return self.error(400, "There was a problem with the request: paging is limited to "
                              "%d results (after=%d, limit=%d)" % (self.SEARCH_WINDOW, after, limit))
        groups = body.get("filterGroups") or []
        sorts = body.get("sorts") or []
        # HubSpot's documented limits: "Only one sorting rule can be applied to any search";
        # at most five filterGroups of at most six filters, 18 filters in all.
        if len(sorts) > 1:
            return self.error(400, "Only one sorting rule can be applied to any search (got %d)" % len(sorts))
        if len(groups) > 5 or any(len(g.get("filters") or []) > 6 for g in groups) or \
                sum(len(g.get("filters") or []) for g in groups) > 18:
            return self.error(400, "at most 5 filterGroups of at most 6 filters, 18 filters in all")
        st = self.store(obj)

        def matches(r):
            return not groups or any(all(self._filter_ok(obj, r, f) for f in g.get("filters") or [])
                                     for g in groups)
        fast = self._fast_search(st, obj, groups, sorts, after + limit + 1, matches) \
            if self.d.config.get("hubspot_fast_search") else None
        try:
            hits = fast if fast is not None else [r for r in st.live() if matches(r)]
        except ValueError as e:
            return self.error(400, str(e))
        if fast is None:
            hits.sort(key=lambda r: int(r.id))
        for s in [] if fast is not None else reversed(body.get("sorts") or []):
            if isinstance(s, str):
                s = {"propertyName": s.lstrip("-"),
                     "direction": "DESCENDING" if s.startswith("-") else "ASCENDING"}
            name = s.get("propertyName")
            desc = (s.get("direction") or "ASCENDING").upper() == "DESCENDING"

            def sort_key(r, name=name):
                v = self._sort_value(obj, r, name)
                if v is None:
                    return (1, 0, "")
                if isinstance(v, (int, float)):
                    return (0, v, "")
                return (0, 0, str(v))
            hits.sort(key=sort_key, reverse=desc)
        wanted = body.get("properties") or []
        names = list(dict.fromkeys(list(wanted) + self.default_props(obj)))
        page = hits[after:after + limit]
        results = [self.record_json(obj, r, {n: self.prop_value(obj, r, n) for n in names})
                   for r in page]
        # (The fast path stops after the page: its total counts only the hits it walked.)
        resp = {"total": len(hits), "results": results}
        if limit > 0 and after + limit < len(hits):
            nxt = str(after + limit)
            resp["paging"] = {"next": {"after": nxt, "link": "?after=" + nxt}}
        # hubspot_touch_after_search {"count": N, "searches": K}: after each of the next K
        # searches that found records, the first N records of the answer are modified (same
        # values, a new modification time), as a push landing between two pages would: they
        # move to the end of a result sorted by modification time.
        touch = self.d.config.get("hubspot_touch_after_search")
        if touch and page and int(touch.get("searches", 0)) > 0:
            ms = self.d.clock.tick()
            for r in page[:int(touch.get("count", 1))]:
                st.update(r, {}, ms)
            touch = dict(touch, searches=int(touch["searches"]) - 1)
            self.d.config["hubspot_touch_after_search"] = touch
        return Response(200, resp)

    # -- control helpers

    def control_put(self, obj, key, props, key_field=None, ms=None):
        st = self.store(obj)
        field = key_field or st.key_field
        ms = ms if ms is not None else self.d.clock.tick()
        rec = st.find(field, key)
        if rec is None and key in st.records and not st.records[key].archived:
            rec = st.records[key]          # addressed by HubSpot object id

        def as_text(v):                    # HubSpot stores every property as text
            if v is None or isinstance(v, str):
                return v
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return str(v)
            return json.dumps(v)
        props = {k: as_text(v) for k, v in props.items()}
        if rec is None:
            props[field] = key
            rec = st.create(self.new_id(), props, ms)
        else:
            st.update(rec, props, ms)
        return rec

    def control_delete(self, obj, key):
        st = self.store(obj)
        rec = st.find(st.key_field, key) or st.records.get(key)
        if rec is None or rec.archived:
            return None
        st.archive(rec, self.d.clock.tick())
        return rec

    def control_json(self, obj, rec):
        st = self.store(obj)
        return {"id": rec.id, "key": rec.props.get(st.key_field), "properties": dict(rec.props),
                "createdAt": iso_z(rec.created_ms), "updatedAt": iso_z(rec.modified_ms),
                "created_ms": rec.created_ms, "modified_ms": rec.modified_ms,
                "archived": rec.archived, "writes": rec.writes,
                "archived_ms": rec.archived_ms,
                "archivedAt": iso_z(rec.archived_ms) if rec.archived_ms is not None else None}


# --------------------------------------------------------------------------- Salesforce

class Salesforce:
    MAX_RECORDS = 200
    KEY_PREFIX = {"Account": "001", "Contact": "003", "Opportunity": "006", "Lead": "00Q",
                  "Case": "500", "User": "005"}
    REQUIRED_ON_CREATE = {"Contact": ["LastName"], "Lead": ["LastName", "Company"],
                          "Account": ["Name"]}
    ROUTES = [
        ("POST", re.compile(r"^/services/oauth2/token$"), "token"),
        ("PATCH", re.compile(r"^/services/data/v(\d+\.\d+)/composite/sobjects/(\w+)/(\w+)$"),
         "upsert"),
        ("DELETE", re.compile(r"^/services/data/v(\d+\.\d+)/composite/sobjects/?$"), "delete"),
        ("GET", re.compile(r"^/services/data/v(\d+\.\d+)/query/?$"), "query"),
        ("GET", re.compile(r"^/services/data/v(\d+\.\d+)/query/([^/]+)$"), "query_more"),
        ("GET", re.compile(r"^/services/data/v(\d+\.\d+)/queryAll/?$"), "query_all"),
        ("GET", re.compile(r"^/services/data/v(\d+\.\d+)/queryAll/([^/]+)$"), "query_more"),
    ]

    def __init__(self, double):
        self.d = double
        self.reset()

    def reset(self):
        self.stores = {}
        self.by_id = {}          # Id -> (object, Record), including deleted ones
        self.next_seq = 1
        self.tokens = set()
        self.cursors = {}        # locator -> {"ver", "records": [json...]}
        self.next_cursor = 1

    def store(self, obj):
        s = self.stores.get(obj)
        if s is None:
            s = self.stores[obj] = ObjectStore(obj, "External_Id__c")
        return s

    def new_id(self, obj):
        prefix = self.KEY_PREFIX.get(obj, "a0" + chr(ord("A") + len(obj) % 26))
        n, digits = self.next_seq, ""
        self.next_seq += 1
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        while n:
            n, r = divmod(n, 36)
            digits = alphabet[r] + digits
        base = prefix + "5g" + digits.rjust(10, "0")
        suffix = ""
        for i in range(3):     # Salesforce's 15 -> 18 character case-safe suffix
            chunk = base[i * 5:i * 5 + 5]
            bits = sum(1 << j for j, c in enumerate(chunk) if "A" <= c <= "Z")
            suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
        return base + suffix

    @staticmethod
    def error(status, message, code, fields=None):
        item = {"message": message, "errorCode": code}
        if fields is not None:
            item["fields"] = fields
        return Response(status, [item])

    # -- dispatch

    def handle(self, req):
        matched_path = False
        for method, rx, name in self.ROUTES:
            m = rx.match(req.path)
            if not m:
                continue
            matched_path = True
            if method != req.method:
                continue
            if name != "token":
                with self.d.lock:
                    valid = req.bearer() in self.tokens
                if not valid:
                    return self.error(401, "Session expired or invalid", "INVALID_SESSION_ID")
                wait = self.d.check_rate("salesforce")
                if wait is not None:
                    return self.d.rate_limited("salesforce", wait, [
                        {"message": "TotalRequests Limit exceeded.",
                         "errorCode": "REQUEST_LIMIT_EXCEEDED"}], status=403)
            with self.d.lock:
                return getattr(self, name)(req, *m.groups())
        if matched_path:
            return self.error(405, "HTTP Method '%s' not allowed" % req.method,
                              "METHOD_NOT_ALLOWED")
        return self.error(404, "The requested resource does not exist", "NOT_FOUND")

    # -- endpoints

    def token(self, req):
        form = {k: v[0] for k, v in
                urllib.parse.parse_qs(req.raw.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type",
                                  "error_description": "grant type not supported"})
        cfg = self.d.config
        if form.get("client_id") != cfg["sf_client_id"] or \
                form.get("client_secret") != cfg["sf_client_secret"]:
            return Response(400, {"error": "invalid_client",
                                  "error_description": "invalid client credentials"})
        token = "00D5g000000DOUBLE!" + secrets.token_urlsafe(40)
        self.tokens.add(token)
        issued = str(now_ms())
        instance = self.d.base_url
        sig = base64.b64encode(hmac.new(cfg["sf_client_secret"].encode(),
                                        (instance + issued).encode(),
                                        hashlib.sha256).digest()).decode()
        return Response(200, {"access_token": token, "instance_url": instance,
                              "id": instance + "/id/00D5g000000DOUBLE/0055g000000DOUBLE",
                              "token_type": "Bearer", "issued_at": issued, "signature": sig,
                              "scope": "api"})

    def upsert(self, req, ver, obj, ext_field):
        try:
            body = req.json()
        except ValueError as e:
            return self.error(400, "JSON parse error: %s" % e, "JSON_PARSER_ERROR")
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return self.error(400, "Expected an object with a 'records' array", "INVALID_FIELD")
        records = body["records"]
        if len(records) > self.MAX_RECORDS:
            return self.error(400, "Maximum number of records exceeded: %d (limit %d)"
                              % (len(records), self.MAX_RECORDS), "INVALID_FIELD", [])
        all_or_none = bool(body.get("allOrNone", False))
        st = self.store(obj)
        if not st.records:
            st.key_field = ext_field
        plan = []                 # (index, key, fields) of records that pass validation
        results = [None] * len(records)
        pending_keys = set()
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                results[i] = self._fail("JSON_PARSER_ERROR", "record is not an object", [])
                continue
            attrs = rec.get("attributes") or {}
            if attrs.get("type") not in (None, obj):
                results[i] = self._fail("INVALID_TYPE", "attributes.type %r does not match %s"
                                        % (attrs.get("type"), obj), [])
                continue
            key = rec.get(ext_field)
            if key is None or key == "":
                results[i] = self._fail("REQUIRED_FIELD_MISSING",
                                        "Required fields are missing: [%s]" % ext_field,
                                        [ext_field])
                continue
            if req.rejects(key):
                results[i] = self._fail("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                        "injected validation rule rejected %s=%s"
                                        % (ext_field, key), [])
                continue
            fields = {k: v for k, v in rec.items() if k not in ("attributes", "Id")}
            if st.find(ext_field, key) is None and str(key) not in pending_keys:
                missing = [f for f in self.REQUIRED_ON_CREATE.get(obj, [])
                           if fields.get(f) in (None, "")]
                if missing:
                    results[i] = self._fail("REQUIRED_FIELD_MISSING",
                                            "Required fields are missing: [%s]"
                                            % ", ".join(missing), missing)
                    continue
            pending_keys.add(str(key))
            plan.append((i, key, fields))
        if all_or_none and len(plan) != len(records):
            for i, _, _ in plan:
                results[i] = self._fail(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request "
                    "was using AllOrNone header", [])
            return Response(200, results)
        ms = self.d.clock.tick()
        for i, key, fields in plan:
            rec = st.find(ext_field, key)
            created = rec is None
            if created:
                rid = self.new_id(obj)
                rec = st.create(rid, fields, ms)
                self.by_id[rid] = (obj, rec)
            else:
                st.update(rec, fields, ms, clear_values=(None,))
            results[i] = {"id": rec.id, "success": True, "created": created, "errors": []}
        return Response(200, results)

    @staticmethod
    def _fail(code, message, fields):
        return {"success": False, "errors": [{"statusCode": code, "message": message,
                                                "fields": fields}]}

    def delete(self, req, ver):
        ids = [i for i in (req.query.get("ids") or "").split(",") if i]
        if not ids:
            return self.error(400, "Missing parameter: ids", "MISSING_ARGUMENT")
        if len(ids) > self.MAX_RECORDS:
            return self.error(400, "Maximum number of ids exceeded (%d)" % self.MAX_RECORDS,
                              "INVALID_FIELD", [])
        ms = self.d.clock.tick()
        out = []
        for rid in ids:
            found = self.by_id.get(rid)
            if found is None:
                out.append({"id": rid, "success": False, "errors": [{
                    "statusCode": "INVALID_CROSS_REFERENCE_KEY",
                    "message": "invalid cross reference id", "fields": []}]})
                continue
            obj, rec = found
            st = self.store(obj)
            if rec.archived:
                out.append({"id": rid, "success": False, "errors": [{
                    "statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted",
                    "fields": []}]})
            elif req.rejects(rid, rec.props.get(st.key_field)):
                out.append({"id": rid, "success": False, "errors": [{
                    "statusCode": "DELETE_FAILED", "message": "injected delete rejection",
                    "fields": []}]})
            else:
                st.archive(rec, ms)
                out.append({"id": rid, "success": True, "errors": []})
        return Response(200, out)

    # -- SOQL (just enough of it)

    _SOQL = re.compile(r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>\w+)"
                       r"(?:\s+WHERE\s+(?P<where>.+?))?"
                       r"(?:\s+ORDER\s+BY\s+(?P<order>.+?))?"
                       r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$", re.I | re.S)
    _TOKEN = re.compile(r"\s*(?:('(?:\\.|[^'\\])*')|(>=|<=|!=|<>|=|>|<)|([()])|([^\s()=<>!']+))", re.S)

    def _where(self, text):
        """The WHERE clause as a predicate: comparisons of a field with a literal, combined with
        AND, OR, NOT and parentheses (AND binding tighter than OR)."""
        tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            t = self._TOKEN.match(text, pos)
            if not t or t.end() == pos:
                raise ValueError("unexpected token near: %s" % text[pos:pos + 20])
            pos = t.end()
            quoted, op, paren, word = t.groups()
            if quoted is not None:
                tokens.append(("lit", quoted))
            elif op is not None:
                tokens.append(("op", op))
            elif paren is not None:
                tokens.append((paren, paren))
            elif word is not None:
                up = word.upper()
                tokens.append((up, word) if up in ("AND", "OR", "NOT") else ("word", word))
        at = [0]

        def peek():
            return tokens[at[0]][0] if at[0] < len(tokens) else None

        def take(kind=None):
            if at[0] >= len(tokens) or (kind and tokens[at[0]][0] != kind):
                raise ValueError("unexpected token: %s" % (tokens[at[0]][1] if at[0] < len(tokens) else "end"))
            at[0] += 1
            return tokens[at[0] - 1][1]

        def disjunction():
            parts = [conjunction()]
            while peek() == "OR":
                take()
                parts.append(conjunction())
            return lambda r: any(p(r) for p in parts)

        def conjunction():
            parts = [factor()]
            while peek() == "AND":
                take()
                parts.append(factor())
            return lambda r: all(p(r) for p in parts)

        def factor():
            if peek() == "NOT":
                take()
                inner = factor()
                return lambda r: not inner(r)
            if peek() == "(":
                take("(")
                inner = disjunction()
                take(")")
                return inner
            field = take("word")
            op = take("op")
            kind = peek()
            if kind not in ("lit", "word"):
                raise ValueError("expected a value after %s %s" % (field, op))
            lit = self._literal(take())
            return lambda r: self._compare(self._value(r, field), op, lit)

        pred = disjunction()
        if at[0] != len(tokens):
            raise ValueError("unexpected token: %s" % tokens[at[0]][1])
        return pred

    def _literal(self, text):
        if text.lower() == "null":
            return None
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        if len(text) >= 2 and text[0] == text[-1] == "'":
            return text[1:-1].replace("\\'", "'")
        ms = parse_iso_ms(text)
        if ms is not None:
            return ("datetime", ms)
        try:
            return float(text)
        except ValueError:
            raise ValueError("unexpected token: '%s'" % text)

    def _value(self, rec, field):
        low = field.lower()
        if low == "id":
            return rec.id
        if low in ("systemmodstamp", "lastmodifieddate"):
            return ("datetime", rec.modified_ms)
        if low == "createddate":
            return ("datetime", rec.created_ms)
        if low == "isdeleted":
            return rec.archived
        for k, v in rec.props.items():
            if k.lower() == low:
                return v
        return None

    def _out_value(self, rec, field):
        v = self._value(rec, field)
        if isinstance(v, tuple):
            return iso_sf(v[1])
        return v

    def _out_name(self, rec, field):
        canonical = {"id": "Id", "systemmodstamp": "SystemModstamp",
                     "lastmodifieddate": "LastModifiedDate", "createddate": "CreatedDate",
                     "isdeleted": "IsDeleted"}
        low = field.lower()
        if low in canonical:
            return canonical[low]
        for k in rec.props:
            if k.lower() == low:
                return k
        return field

    @staticmethod
    def _compare(a, op, b):
        if op in ("=", "!=", "<>"):
            eq = a == b if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) \
                else float(a) == float(b)
            return eq if op == "=" else not eq
        if a is None or b is None:
            return False
        if isinstance(b, (int, float)) and isinstance(a, str):
            try:
                a = float(a)
            except ValueError:
                return False
        try:
            return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
        except TypeError:
            return False

    def query(self, req, ver):
        return self._run_query(req, ver, include_deleted=False)

    def query_all(self, req, ver):
        """queryAll: like query, but deleted records (IsDeleted = true, SystemModstamp = the
        deletion time) are included; next pages use the same /query/<locator> form."""
        return self._run_query(req, ver, include_deleted=True)

    def _run_query(self, req, ver, include_deleted):
        q = req.query.get("q")
        if not q:
            return self.error(400, "Missing query parameter q", "MALFORMED_QUERY")
        m = self._SOQL.match(q)
        if not m:
            return self.error(400, "unexpected token in query: %s" % q, "MALFORMED_QUERY")
        fields = [f.strip() for f in m.group("fields").split(",") if f.strip()]
        obj = m.group("obj")
        try:
            where = self._where(m.group("where")) if m.group("where") else (lambda r: True)
        except ValueError as e:
            return self.error(400, str(e), "MALFORMED_QUERY")
        st = self.store(obj)
        order = re.sub(r"\s+", " ", (m.group("order") or "").strip()).lower()
        keyset = bool(self.d.config.get("sf_fast_query") and m.group("limit") and order == "systemmodstamp asc, id asc")
        if keyset:
            hits = self._keyset_hits(st, obj, include_deleted, m.group("where") or "", where, int(m.group("limit")))
        else:
            pool = list(st.records.values()) if include_deleted else st.live()
            hits = [r for r in pool if where(r)]
        if m.group("order") and not keyset:
            for item in reversed([x.strip() for x in m.group("order").split(",")]):
                words = item.split()
                field, desc = words[0], len(words) > 1 and words[1].upper() == "DESC"

                def sort_key(r, field=field):
                    v = self._value(r, field)
                    if isinstance(v, tuple):
                        v = v[1]
                    return (v is None, v if isinstance(v, (int, float)) else str(v or ""))
                hits.sort(key=sort_key, reverse=desc)
        if m.group("limit"):
            hits = hits[:int(m.group("limit"))]
        rows = []
        for r in hits:
            row = {"attributes": {"type": obj,
                                  "url": "/services/data/v%s/sobjects/%s/%s" % (ver, obj, r.id)}}
            for f in fields:
                row[self._out_name(r, f)] = self._out_value(r, f)
            rows.append(row)
        locator = "01g5g%013dDBL" % self.next_cursor
        self.next_cursor += 1
        self.cursors[locator] = {"ver": ver, "rows": rows}
        return Response(200, self._page(locator, 0))

    _LOWER_BOUND = re.compile(r"\s*(?:IsDeleted\s*=\s*true\s+AND\s+)?\(?\s*SystemModstamp\s*>=?\s*([^\s()]+)", re.I)

    def _keyset_hits(self, st, obj, include_deleted, where_text, where, limit):
        """sf_fast_query: the first `limit` records matching `where` in (SystemModstamp, Id)
        order, from a sorted copy, starting at the query's leading SystemModstamp bound."""
        cache = getattr(self, "_keyset_cache", None)
        if cache is None:
            cache = self._keyset_cache = {}
        sig = (len(st.records), max((r.modified_ms for r in st.records.values()), default=0))
        entry = cache.get((obj, include_deleted))
        if entry is None or entry[0] != sig:
            pool = list(st.records.values()) if include_deleted else st.live()
            pool.sort(key=lambda r: (r.modified_ms, r.id))
            entry = cache[(obj, include_deleted)] = (sig, pool, [r.modified_ms for r in pool])
        _, pool, stamps = entry
        start = 0
        bound = self._LOWER_BOUND.match(where_text)
        if bound:
            lit = self._literal(bound.group(1))
            if isinstance(lit, tuple):
                start = bisect.bisect_left(stamps, lit[1])
        hits = []
        for i in range(start, len(pool)):
            if where(pool[i]):
                hits.append(pool[i])
                if len(hits) >= limit:
                    break
        return hits

    def _page(self, locator, offset):
        cur = self.cursors[locator]
        size = max(1, int(self.d.config["sf_page_size"]))
        rows = cur["rows"]
        page = rows[offset:offset + size]
        done = offset + size >= len(rows)
        resp = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            resp["nextRecordsUrl"] = "/services/data/v%s/query/%s-%d" % (
                cur["ver"], locator, offset + size)
        else:
            self.cursors.pop(locator, None)
        return resp

    def query_more(self, req, ver, token):
        locator, _, offset = token.rpartition("-")
        if not locator or locator not in self.cursors or not offset.isdigit():
            return self.error(400, "invalid query locator", "INVALID_QUERY_LOCATOR")
        return Response(200, self._page(locator, int(offset)))

    # -- control helpers

    def control_put(self, obj, key, props, key_field=None, ms=None):
        st = self.store(obj)
        field = key_field or st.key_field
        ms = ms if ms is not None else self.d.clock.tick()
        rec = st.find(field, key)
        found = self.by_id.get(key)
        if rec is None and found and found[0] == obj and not found[1].archived:
            rec = found[1]                 # addressed by Salesforce Id
        if rec is None:
            props = dict(props)
            props[field] = key
            rid = self.new_id(obj)
            rec = st.create(rid, props, ms)
            self.by_id[rid] = (obj, rec)
        else:
            st.update(rec, props, ms, clear_values=(None,))
        return rec

    def control_delete(self, obj, key):
        st = self.store(obj)
        found = self.by_id.get(key)
        rec = st.find(st.key_field, key) or (found[1] if found and found[0] == obj else None)
        if rec is None or rec.archived:
            return None
        st.archive(rec, self.d.clock.tick())
        return rec

    def control_json(self, obj, rec):
        st = self.store(obj)
        return {"id": rec.id, "key": rec.props.get(st.key_field), "properties": dict(rec.props),
                "SystemModstamp": iso_sf(rec.modified_ms), "CreatedDate": iso_sf(rec.created_ms),
                "created_ms": rec.created_ms, "modified_ms": rec.modified_ms,
                "archived": rec.archived, "writes": rec.writes,
                "archived_ms": rec.archived_ms}


# --------------------------------------------------------------------------- webhook sink

class WebhookSink:
    ROUTE = re.compile(r"^/hooks/([^/]+)$")

    def __init__(self, double):
        self.d = double
        self.reset()

    def reset(self):
        self.events = []          # all events, in arrival order
        self.answers = {}         # hook name -> {"status", "body"}
        self.attempts = collections.Counter()   # webhook-id -> times seen
        self.next_seq = 1

    def verify(self, req):
        """True/False when a secret is configured, None when there is nothing to verify."""
        secret = self.d.config.get("webhook_secret")
        if not secret:
            return None
        msg_id = req.headers.get("webhook-id")
        ts = req.headers.get("webhook-timestamp")
        sig_header = req.headers.get("webhook-signature")
        if not (msg_id and ts and sig_header):
            return False
        tolerance = self.d.config.get("webhook_tolerance") or 0
        if tolerance:
            try:
                if abs(time.time() - int(ts)) > tolerance:
                    return False
            except ValueError:
                return False
        try:
            key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_")
                                   else secret)
        except ValueError:
            return False
        signed = msg_id.encode() + b"." + ts.encode() + b"." + req.raw
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for part in sig_header.split():
            version, _, sig = part.partition(",")
            if version == "v1" and hmac.compare_digest(sig, expected):
                return True
        return False

    @staticmethod
    def _event_keys(body):
        keys = []
        if isinstance(body, dict):
            keys.append(body.get("id"))
            data = body.get("data")
            if isinstance(data, dict):
                keys.extend(v for v in data.values() if isinstance(v, (str, int, float)))
        return keys

    def handle(self, req):
        m = self.ROUTE.match(req.path)
        if not m:
            return Response(404, {"error": "no such hook path"})
        if req.method != "POST":
            return Response(405, {"error": "method not allowed"})
        name = urllib.parse.unquote(m.group(1))
        wait = self.d.check_rate("webhook")
        if wait is not None:
            return self.d.rate_limited("webhook", wait, {"error": "rate limited"})
        verified = self.verify(req)
        body = req.body_for_log()
        with self.d.lock:
            msg_id = req.headers.get("webhook-id")
            if msg_id:
                self.attempts[msg_id] += 1
            answer = self.answers.get(name)
            if answer:
                resp = Response(answer.get("status", 410), answer.get("body", {"error": "gone"}))
            elif self.d.config.get("webhook_enforce") and verified is False:
                resp = Response(401, {"error": "invalid signature"})
            elif req.rejects(*self._event_keys(body)):
                resp = Response(req.reject_status or 400, {"error": "event rejected"})
            else:
                resp = Response(200, {"ok": True})
            self.events.append({
                "seq": self.next_seq, "name": name, "headers": dict(req.headers),
                "body": body, "raw": req.raw.decode("utf-8", "replace"),
                "verified": verified, "attempt": self.attempts[msg_id] if msg_id else 1,
                "status": resp.status, "at_ms": now_ms()})
            self.next_seq += 1
        return resp


# --------------------------------------------------------------------------- OpenAI

class OpenAI:
    """OpenAI-compatible chat completions. Configured by POST /_control/openai with any of:
    content (the answer's message content: a string, or JSON sent as its text; null: the
    default {"score": length of the last user message}), rules ([{"match": substring of the
    last user message, "content": ...}], first match wins), latency_ms, usage ({"prompt_tokens",
    "completion_tokens"} to report), malformed (true: content cut off mid-JSON), error
    ({"kind": "insufficient_quota" | "rate_limit", "count": n (-1: always), "retry_after": s,
    "reset_requests": "1s"}: 429 answers)."""

    def __init__(self, double):
        self.d = double
        self.reset()

    def reset(self):
        self.content = None       # None: echo {"score": len(last user message)}
        self.rules = []
        self.latency_ms = 0
        self.usage = None
        self.malformed = False
        self.error = None
        self.calls = 0

    def configure(self, body):
        for name in ("content", "rules", "latency_ms", "usage", "malformed", "error"):
            if name in body:
                setattr(self, name, body[name] if body[name] is not None or name == "content"
                        else OpenAI.__dict__.get(name, None))
        if self.rules is None:
            self.rules = []
        if self.latency_ms is None:
            self.latency_ms = 0
        return {"content": self.content, "rules": self.rules, "latency_ms": self.latency_ms,
                "usage": self.usage, "malformed": bool(self.malformed), "error": self.error}

    def error_answer(self):
        """The configured 429, or None (called with the lock held)."""
        e = self.error
        if not e or e.get("count", -1) == 0:
            return None
        if e.get("count", -1) > 0:
            e["count"] -= 1
        if e.get("kind") == "insufficient_quota":
            return Response(429, {"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}})
        headers = {}
        if e.get("retry_after") is not None:
            headers["Retry-After"] = str(e["retry_after"])
        if e.get("reset_requests"):
            headers["x-ratelimit-reset-requests"] = str(e["reset_requests"])
        return Response(429, {"error": {
            "message": "Rate limit reached for requests", "type": "requests", "param": None,
            "code": "rate_limit_exceeded"}}, headers)

    def handle(self, req):
        if req.path != "/v1/chat/completions":
            return Response(404, {"error": {"message": "Unknown path", "type":
                                            "invalid_request_error", "code": None}})
        if req.method != "POST":
            return Response(405, {"error": {"message": "Method not allowed",
                                            "type": "invalid_request_error", "code": None}})
        key = self.d.config.get("openai_key")
        if key and req.bearer() != key:
            return Response(401, {"error": {"message": "Incorrect API key provided.",
                                            "type": "invalid_request_error", "param": None,
                                            "code": "invalid_api_key"}})
        try:
            body = req.json()
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            return Response(400, {"error": {"message": "'messages' is a required property",
                                            "type": "invalid_request_error", "code": None}})
        last_user = ""
        for msg in messages:
            if isinstance(msg, dict) and msg.get("role") == "user":
                c = msg.get("content")
                if isinstance(c, list):
                    c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
                last_user = c if isinstance(c, str) else json.dumps(c)
        with self.d.lock:
            self.calls += 1
            n = self.calls
            refused = self.error_answer()
            content = self.content
            for rule in self.rules:
                if isinstance(rule, dict) and str(rule.get("match", "")) in last_user:
                    content = rule.get("content")
                    break
            latency_ms = self.latency_ms
            usage = self.usage
            malformed = self.malformed
        if latency_ms:
            time.sleep(latency_ms / 1000.0)
        if refused is not None:
            return refused
        if content is None:
            content = json.dumps({"score": len(last_user)})
        elif not isinstance(content, str):
            content = json.dumps(content)
        if malformed:
            content = content[:max(1, len(content) // 2)]
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 1
                            for m in messages if isinstance(m, dict))
        completion_tokens = len(content) // 4 + 1
        if isinstance(usage, dict):
            prompt_tokens = int(usage.get("prompt_tokens", prompt_tokens))
            completion_tokens = int(usage.get("completion_tokens", completion_tokens))
        return Response(200, {
            "id": "chatcmpl-double%06d" % n, "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "gpt-double"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})


# --------------------------------------------------------------------------- generic enrichment

class Enrich:
    """A generic JSON enrichment API: POST /enrich/{name} with a JSON object answers
    {"input": <the body>, "domain": <domain of body.email>, "employees": <len(domain) * 10>}, or
    what PUT /_control/enrich/{name} {"status", "body", "latency_ms"} configured."""

    ROUTE = re.compile(r"^/enrich/([^/]+)$")

    def __init__(self, double):
        self.d = double
        self.reset()

    def reset(self):
        self.answers = {}
        self.calls = collections.Counter()

    def handle(self, req):
        m = self.ROUTE.match(req.path)
        if not m:
            return Response(404, {"error": "unknown path"})
        if req.method != "POST":
            return Response(405, {"error": "method not allowed"})
        name = m.group(1)
        try:
            body = req.json()
        except ValueError:
            return Response(400, {"error": "body is not JSON"})
        if not isinstance(body, dict):
            return Response(422, {"error": "body must be a JSON object"})
        with self.d.lock:
            self.calls[name] += 1
            answer = self.answers.get(name)
        if answer and answer.get("latency_ms"):
            time.sleep(answer["latency_ms"] / 1000.0)
        if answer and ("status" in answer or "body" in answer):
            return Response(int(answer.get("status", 200)), answer.get("body", {}))
        email = body.get("email") if isinstance(body.get("email"), str) else ""
        domain = email.split("@", 1)[1] if "@" in email else ""
        return Response(200, {"input": body, "domain": domain, "employees": len(domain) * 10})


# --------------------------------------------------------------------------- faults

class Faults:
    KINDS = ("status", "timeout", "drop", "slow", "reject", "deep")

    def __init__(self):
        self.items = []
        self.next_id = 1

    def add(self, spec):
        kind = spec.get("kind")
        if kind not in self.KINDS:
            raise ValueError("kind must be one of %s" % ", ".join(self.KINDS))
        count = int(spec.get("count", -1))
        if count == 0 or count < -1:
            raise ValueError("count must be a positive number or -1")
        fault = {
            "id": self.next_id, "kind": kind, "path_prefix": spec.get("path_prefix") or "",
            "method": (spec.get("method") or "").upper() or None,
            "status": int(spec.get("status", 400 if kind == "reject" else 503)),
            "retry_after": None if spec.get("retry_after") is None else str(spec["retry_after"]),
            "body": spec.get("body"), "headers": spec.get("headers") or {},
            "delay_ms": int(spec.get("delay_ms", 60000 if kind == "timeout" else 0 if kind == "drop" else 1000)),
            "count": count, "hits": 0,
            "reject_ids": None if spec.get("reject_ids") is None
            else [str(x) for x in spec["reject_ids"]],
            "apply": bool(spec.get("apply", False)),
            "depth": int(spec.get("depth", 100000)),
        }
        self.next_id += 1
        self.items.append(fault)
        return fault

    def take(self, method, path):
        """The first live fault matching the request (consuming one use), or None."""
        for f in self.items:
            if f["count"] == 0 or not path.startswith(f["path_prefix"]):
                continue
            if f["method"] and f["method"] != method:
                continue
            if f["count"] > 0:
                f["count"] -= 1
            f["hits"] += 1
            return dict(f)
        return None


DEEP_MARK = "__crm_double_deep_value__"


def deepen(resp, depth):
    """A hostile answer: the normal one, with a value nested depth levels deep ([[[...]]]) in a
    property of its first record (HubSpot properties, a Salesforce record), or at the top."""
    body = resp.body
    if not isinstance(body, (dict, list)):
        return resp
    target = body
    if isinstance(body, dict):
        records = body.get("results") or body.get("records")
        if isinstance(records, list) and records and isinstance(records[0], dict):
            target = records[0].get("properties", records[0])
            if not isinstance(target, dict):
                target = records[0]
    if isinstance(target, dict):
        target["hostile"] = DEEP_MARK
    elif target:
        target.append(DEEP_MARK)
    # json.dumps would recurse once per level: splice the nesting into the text instead.
    text = json.dumps(body).replace(json.dumps(DEEP_MARK), "[" * depth + "]" * depth, 1)
    return Response(resp.status, text.encode("utf-8"), resp.headers)


def injected_body(path, status):
    """A plausible default body for an injected status, in the style of the system hit."""
    if status == 204:
        return None
    if path.startswith("/crm/"):
        if status == 429:
            return HubSpot.rate_limit_body()
        category = {423: "LOCKED", 401: "INVALID_AUTHENTICATION"}.get(
            status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
        return {"status": "error", "message": "injected fault: HTTP %d" % status,
                "correlationId": str(uuid.uuid4()), "category": category}
    if path.startswith("/services/"):
        code = {403: "REQUEST_LIMIT_EXCEEDED", 401: "INVALID_SESSION_ID",
                503: "SERVER_UNAVAILABLE"}.get(status, "UNKNOWN_EXCEPTION")
        return [{"message": "injected fault: HTTP %d" % status, "errorCode": code}]
    if path.startswith("/wp-json/"):
        return {"code": "injected_fault", "message": "injected fault: HTTP %d" % status,
                "data": {"status": status}}
    if path.startswith("/v1/"):
        return {"error": {"message": "injected fault: HTTP %d" % status,
                          "type": "rate_limit_exceeded" if status == 429 else "server_error",
                          "param": None, "code": None}}
    return {"error": "injected fault", "status": status}


# --------------------------------------------------------------------------- WooCommerce

def woo_gmt(ms):
    """WooCommerce style, UTC without a zone, whole seconds: 2026-11-24T10:00:00"""
    dt = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S")


def woo_parse_gmt(text):
    """'2026-11-24T10:00:00' (UTC; a zone is accepted too) -> epoch ms, or None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$", text):
        text += "Z"
    return parse_iso_ms(text)


class WooCommerce:
    """WooCommerce REST API v3 (/wp-json/wc/v3/...): Basic auth (consumer key/secret), lists
    with modified_after paging (X-WP-Total, X-WP-TotalPages), batch create/update/delete with
    per-object results, the {"code","message","data":{"status"}} error format; webhooks the
    shop sends (signed X-WC-Webhook-Signature) when a record changes, retried until 2xx."""

    RESOURCES = ("orders", "products", "coupons", "customers")
    TOPIC = {"orders": "order", "products": "product", "coupons": "coupon", "customers": "customer"}
    MAX_BATCH = 100
    MAX_PER_PAGE = 100
    ROUTES = [
        ("POST", re.compile(r"^/wp-json/wc/v3/([a-z]+)/batch$"), "batch"),
        ("GET", re.compile(r"^/wp-json/wc/v3/([a-z]+)/(\d+)$"), "get_one"),
        ("GET", re.compile(r"^/wp-json/wc/v3/([a-z]+)/?$"), "list_objects"),
    ]

    def __init__(self, double):
        self.d = double
        self.reset()

    def reset(self):
        self.records = {r: {} for r in self.RESOURCES}   # resource -> id -> dict
        self.next_id = 101
        self.hooks = []            # registered webhooks: {"topic","delivery_url","secret"}
        self.deliveries = []       # every webhook attempt the shop made
        self.pending = 0           # webhooks not yet acknowledged with a 2xx

    @staticmethod
    def error(status, code, message):
        return Response(status, {"code": code, "message": message, "data": {"status": status}})

    def authorized(self, req):
        auth = req.headers.get("authorization", "")
        parts = auth.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(parts[1]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (hmac.compare_digest(user, self.d.config["woo_consumer_key"]) and
                hmac.compare_digest(password, self.d.config["woo_consumer_secret"]))

    def handle(self, req):
        if not self.authorized(req):
            return self.error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
        for method, rx, name in self.ROUTES:
            m = rx.match(req.path)
            if m and method == req.method:
                if m.group(1) not in self.RESOURCES:
                    return self.error(404, "rest_no_route", "No route was found matching the URL and request method.")
                try:
                    body = req.json() if req.method != "GET" else None
                except ValueError:
                    return self.error(400, "rest_invalid_json", "Invalid JSON body passed.")
                with self.d.lock:
                    return getattr(self, name)(req, body, *m.groups())
        return self.error(404, "rest_no_route", "No route was found matching the URL and request method.")

    # -- records

    def put(self, resource, rid, fields, ms=None, notify=True):
        """Create (rid None) or update a record as the shop's admin would; sends webhooks."""
        ms = ms if ms is not None else self.d.clock.tick()
        recs = self.records[resource]
        if rid is None or int(rid) not in recs:
            rid = int(rid) if rid is not None else self.next_id
            self.next_id = max(self.next_id, rid) + 1
            rec = {"id": rid, "date_created_gmt": woo_gmt(ms)}
            recs[rid] = rec
            action = "created"
        else:
            rec = recs[int(rid)]
            action = "updated"
        for k, v in fields.items():
            if k not in ("id", "date_created_gmt", "date_modified_gmt"):
                rec[k] = v
        rec["date_modified_gmt"] = woo_gmt(ms)
        rec["_modified_ms"] = ms
        if notify:
            self.notify(resource, action, rec)
        return rec

    def delete(self, resource, rid, notify=True):
        rec = self.records[resource].pop(int(rid), None)
        if rec is not None and notify:
            self.notify(resource, "deleted", {"id": rec["id"]})
        return rec

    @staticmethod
    def public(rec):
        return {k: v for k, v in rec.items() if not k.startswith("_")}

    # -- REST

    def get_one(self, req, body, resource, rid):
        rec = self.records[resource].get(int(rid))
        if rec is None:
            return self.error(404, "woocommerce_rest_invalid_id", "Invalid ID.")
        return Response(200, self.public(rec))

    def list_objects(self, req, body, resource):
        try:
            per_page = int(req.query.get("per_page", 10))
            page = int(req.query.get("page", 1))
        except ValueError:
            return self.error(400, "rest_invalid_param", "Invalid parameter(s): per_page, page")
        if per_page < 1 or per_page > self.MAX_PER_PAGE or page < 1:
            return self.error(400, "rest_invalid_param",
                              "Invalid parameter(s): per_page (between 1 and 100), page")
        since = req.query.get("modified_after")
        fast_key = (resource, since, req.query.get("status"), req.query.get("orderby"), req.query.get("order"))
        fast = self.d.config.get("woo_fast_list")
        if fast:
            # bench/run.sh: a page walk re-filters and re-sorts every record for each page; the
            # result is kept while the resource's count and newest modification are unchanged.
            cache = self.__dict__.setdefault("_list_cache", {})
            sig = (len(self.records[resource]),
                   max((r["_modified_ms"] for r in self.records[resource].values()), default=0))
            hit = cache.get(fast_key)
            if hit is not None and hit[0] == sig:
                recs = hit[1]
                total = len(recs)
                pages = (total + per_page - 1) // per_page
                chunk = recs[(page - 1) * per_page: page * per_page]
                return Response(200, [self.public(r) for r in chunk],
                                {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)})
        recs = list(self.records[resource].values())
        if since is not None:
            since_ms = woo_parse_gmt(since)
            if since_ms is None:
                return self.error(400, "rest_invalid_param", "Invalid parameter(s): modified_after")
            # whole seconds, as WooCommerce stores them: strictly after the given second
            recs = [r for r in recs if r["_modified_ms"] // 1000 * 1000 > since_ms]
        status = req.query.get("status")
        if status == "trash":
            recs = [r for r in recs if r.get("status") == "trash"]
        if req.query.get("orderby") == "modified":
            recs.sort(key=lambda r: (r["_modified_ms"] // 1000, r["id"]),
                      reverse=req.query.get("order") == "desc")
        else:
            recs.sort(key=lambda r: r["id"], reverse=req.query.get("order", "desc") == "desc")
        if fast:
            self._list_cache[fast_key] = (sig, recs)
        total = len(recs)
        pages = (total + per_page - 1) // per_page
        chunk = recs[(page - 1) * per_page: page * per_page]
        return Response(200, [self.public(r) for r in chunk],
                        {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)})

    def _find_key(self, resource, obj):
        """A record with the same unique field (customers: email, products: sku, coupons: code)."""
        field = {"customers": "email", "products": "sku", "coupons": "code"}.get(resource)
        value = obj.get(field) if field else None
        if not value:
            return None
        for rec in self.records[resource].values():
            if str(rec.get(field, "")).lower() == str(value).lower():
                return field
        return None

    def batch(self, req, body, resource):
        if not isinstance(body, dict):
            return self.error(400, "rest_invalid_param", "Invalid parameter(s): create, update, delete")
        lists = {k: body.get(k) or [] for k in ("create", "update", "delete")}
        if not all(isinstance(v, list) for v in lists.values()):
            return self.error(400, "rest_invalid_param", "Invalid parameter(s): create, update, delete")
        if sum(len(v) for v in lists.values()) > self.MAX_BATCH:
            return self.error(413, "rest_request_entity_too_large",
                              "Unable to accept more than %d items for this request." % self.MAX_BATCH)
        out = {}
        invalid_id = {"orders": "woocommerce_rest_shop_order_invalid_id"}.get(
            resource, "woocommerce_rest_invalid_id")

        def item_error(rid, code, message, status=400):
            return {"id": rid, "error": {"code": code, "message": message, "data": {"status": status}}}

        if lists["create"]:
            out["create"] = []
            for obj in lists["create"]:
                if not isinstance(obj, dict):
                    out["create"].append(item_error(0, "rest_invalid_param", "Invalid item."))
                elif req.rejects(obj.get("email"), obj.get("sku"), obj.get("code")):
                    out["create"].append(item_error(0, "rest_invalid_param", "rejected by the double",
                                                    req.reject_status or 400))
                elif self._find_key(resource, obj):
                    field = self._find_key(resource, obj)
                    code = {"email": "registration-error-email-exists",
                            "sku": "product_invalid_sku"}.get(field, "woocommerce_rest_coupon_code_already_exists")
                    out["create"].append(item_error(0, code, "The %s is already in use." % field))
                else:
                    out["create"].append(self.public(self.put(resource, None, obj)))
        if lists["update"]:
            out["update"] = []
            for obj in lists["update"]:
                rid = obj.get("id") if isinstance(obj, dict) else None
                try:
                    rid = int(rid)
                except (TypeError, ValueError):
                    rid = None
                if rid is None or rid not in self.records[resource]:
                    out["update"].append(item_error(rid or 0, invalid_id, "Invalid ID."))
                elif req.rejects(rid, obj.get("email"), obj.get("sku")):
                    out["update"].append(item_error(rid, "rest_invalid_param", "rejected by the double",
                                                    req.reject_status or 400))
                else:
                    out["update"].append(self.public(self.put(resource, rid, obj)))
        if lists["delete"]:
            out["delete"] = []
            for rid in lists["delete"]:
                try:
                    rid = int(rid)
                except (TypeError, ValueError):
                    rid = 0
                rec = self.delete(resource, rid) if rid in self.records[resource] else None
                out["delete"].append(self.public(rec) if rec else item_error(rid, invalid_id, "Invalid ID."))
        return Response(200, out)

    # -- webhooks the shop sends

    def notify(self, resource, action, rec):
        topic = "%s.%s" % (self.TOPIC[resource], action)
        for hook in self.hooks:
            if hook["topic"] in (topic, "%s.*" % self.TOPIC[resource], "*"):
                body = json.dumps(self.public(rec), separators=(",", ":")).encode()
                headers = {"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Resource": self.TOPIC[resource],
                           "X-WC-Webhook-Event": action, "X-WC-Webhook-ID": str(hook["id"]),
                           "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex}
                self.pending += 1
                threading.Thread(target=self._deliver, args=(hook, body, headers), daemon=True).start()

    def _deliver(self, hook, body, headers):
        """Signed, retried every retry_ms until a 2xx (or max_attempts): what the tests need to
        show that an answer is given only after commit."""
        attempts = 0
        try:
            while attempts < hook.get("max_attempts", 50) and not self.d.stop_event.is_set():
                attempts += 1
                result = send_signed(hook["delivery_url"], "woocommerce", hook["secret"], body,
                                     headers=headers, timeout=hook.get("timeout_s", 10))
                with self.d.lock:
                    self.deliveries.append({"topic": headers["X-WC-Webhook-Topic"], "attempt": attempts,
                                            "status": result["status"], "at_ms": now_ms(),
                                            "body": body.decode()})
                if 200 <= result["status"] < 300:
                    return
                self.d.stop_event.wait(hook.get("retry_ms", 200) / 1000.0)
        finally:
            with self.d.lock:
                self.pending -= 1

    def control(self, m, parts, body):
        """/_control/woocommerce/hooks | deliveries | {resource}[/{id}]"""
        with self.d.lock:
            if parts == ["hooks"]:
                if m == "POST":
                    hook = {"id": len(self.hooks) + 1, "topic": body.get("topic", "*"),
                            "delivery_url": body["delivery_url"], "secret": body["secret"],
                            "retry_ms": int(body.get("retry_ms", 200)),
                            "max_attempts": int(body.get("max_attempts", 50)),
                            "timeout_s": float(body.get("timeout_s", 10))}
                    self.hooks.append(hook)
                    return Response(201, hook)
                if m == "GET":
                    return Response(200, self.hooks)
                if m == "DELETE":
                    self.hooks = []
                    return Response(200, {"ok": True})
            if parts == ["deliveries"] and m == "GET":
                return Response(200, {"pending": self.pending, "deliveries": list(self.deliveries)})
            if parts and parts[0] in self.RESOURCES:
                resource = parts[0]
                if len(parts) == 1 and m == "GET":
                    return Response(200, [self.public(r) for r in self.records[resource].values()])
                if len(parts) == 1 and m == "POST":
                    items = body if isinstance(body, list) else [body]
                    out = [self.public(self.put(resource, None, dict(i), i.get("modified_ms"),
                                                bool(i.get("notify", True)))) for i in items]
                    return Response(201, out if isinstance(body, list) else out[0])
                if len(parts) == 2 and m == "GET":
                    rec = self.records[resource].get(int(parts[1]))
                    return Response(200, self.public(rec)) if rec else Response(404, {"error": "no such record"})
                if len(parts) == 2 and m in ("PUT", "PATCH"):
                    rec = self.put(resource, int(parts[1]), body, body.get("modified_ms"))
                    return Response(200, self.public(rec))
                if len(parts) == 2 and m == "DELETE":
                    rec = self.delete(resource, int(parts[1]))
                    return Response(200, self.public(rec)) if rec else Response(404, {"error": "no such record"})
        return Response(404, {"error": "unknown woocommerce control %s %s" % (m, "/".join(parts))})


# --------------------------------------------------------------------------- webhook sender

def sign_webhook(scheme, secret, body, url="", method="POST", event_id=None, timestamp=None):
    """The signature headers a sender of that scheme puts on a request (body: bytes).
    scheme: woocommerce | hubspot (v3) | standard (Standard Webhooks)."""
    if scheme == "woocommerce":
        sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        return {"X-WC-Webhook-Signature": sig}
    if scheme == "hubspot":
        ts = str(timestamp if timestamp is not None else now_ms())
        msg = method.encode() + url.encode() + body + ts.encode()
        sig = base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()
        return {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": ts}
    if scheme == "standard":
        ts = str(timestamp if timestamp is not None else int(time.time()))
        msg_id = event_id or "msg_" + uuid.uuid4().hex
        key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
        signed = msg_id.encode() + b"." + ts.encode() + b"." + body
        sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": "v1," + sig}
    raise ValueError("unknown scheme %r (woocommerce, hubspot, standard)" % scheme)


def send_signed(url, scheme, secret, body, headers=None, event_id=None, timestamp=None,
                forge=False, timeout=10, slow_ms=0):
    """POSTs one signed webhook; returns {"status", "body", "headers"} (status 0: no answer).
    forge: the signature is made with another secret. slow_ms: the body trickles out."""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body, separators=(",", ":")).encode()
    all_headers = {"Content-Type": "application/json", "User-Agent": "crm-double-sender/1.0"}
    all_headers.update(headers or {})
    all_headers.update(sign_webhook(scheme, (secret + "-forged") if forge else secret, body, url,
                                    event_id=event_id, timestamp=timestamp))
    if slow_ms:
        return _send_slowly(url, all_headers, body, slow_ms, timeout)
    request = urllib.request.Request(url, data=body, method="POST", headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return {"status": answer.status, "body": answer.read().decode("utf-8", "replace"),
                    "headers": dict(answer.headers), "sent_headers": all_headers}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode("utf-8", "replace"),
                "headers": dict(e.headers), "sent_headers": all_headers}
    except (urllib.error.URLError, OSError) as e:
        return {"status": 0, "body": str(e), "headers": {}, "sent_headers": all_headers}


def _send_slowly(url, headers, body, slow_ms, timeout):
    """Headers at once, then the body one byte per slow_ms: a slow client."""
    parts = urllib.parse.urlsplit(url)
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    except OSError as e:
        return {"status": 0, "body": str(e), "headers": {}}
    try:
        head = "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n" % (
            parts.path + ("?" + parts.query if parts.query else ""), parts.netloc, len(body))
        head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        for i in range(len(body)):
            sock.sendall(body[i:i + 1])
            time.sleep(slow_ms / 1000.0)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        return {"status": 0, "body": "cut off: %s" % e, "headers": {}}
    finally:
        sock.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return {"status": int(m.group(1)) if m else 0, "body": data.decode("utf-8", "replace"), "headers": {}}


# --------------------------------------------------------------------------- the double

class CrmDouble:
    """All state of the double, shared by the handler threads (guarded by self.lock)."""

    RATE_KEYS = {"hubspot": "hubspot_rate", "hubspot_search": "hubspot_search_rate",
                 "salesforce": "sf_rate", "webhook": "webhook_rate"}

    def __init__(self, config, log_file=None, max_logged=MAX_LOGGED_REQUESTS):
        self.lock = threading.RLock()
        self.max_logged = max_logged
        self.stop_event = threading.Event()
        self.initial_config = dict(config)
        self.log_file = log_file
        self.base_url = ""
        self.hubspot = HubSpot(self)
        self.salesforce = Salesforce(self)
        self.hooks = WebhookSink(self)
        self.openai = OpenAI(self)
        self.enrich = Enrich(self)
        self.woo = WooCommerce(self)
        self.generation = 0
        self.stats = {"in_flight": 0}
        self.reset()

    def reset(self):
        with self.lock:
            # requests still in flight (e.g. sleeping in a fault) survive a reset: keep counting
            # them, and count keep-alive connections again when they next carry a request
            in_flight = self.stats["in_flight"]
            self.generation += 1
            self.config = dict(self.initial_config)
            self.clock = Clock()
            self.faults = Faults()
            self.requests = collections.deque(maxlen=self.max_logged)
            self.seq = 0
            self.limiters = {}
            self.stats = {"requests": 0, "paths": collections.Counter(),
                          "statuses": collections.Counter(), "connections": 0,
                          "connections_total": 0, "in_flight": in_flight,
                          "max_concurrent": in_flight,
                          "rate_limited": collections.Counter(),
                          "faults_applied": collections.Counter()}
            for system in (self.hubspot, self.salesforce, self.hooks, self.openai, self.enrich, self.woo):
                system.reset()

    def set_config(self, changes):
        with self.lock:
            for k, v in changes.items():
                if k not in self.config:
                    raise ValueError("unknown config key %r" % k)
                if k in self.RATE_KEYS.values():
                    parse_rate(v)
                self.config[k] = v
            self.limiters = {}

    # -- rate limits

    def check_rate(self, system):
        with self.lock:
            spec = self.config.get(self.RATE_KEYS[system])
            if not spec:
                return None
            lim = self.limiters.get(system)
            if lim is None:
                lim = self.limiters[system] = RateLimiter(*parse_rate(spec))
            return lim.check()

    def rate_limited(self, system, wait, body, status=429):
        with self.lock:
            self.stats["rate_limited"][system] += 1
        return Response(status, body, {"Retry-After": str(max(1, math.ceil(wait)))})

    # -- routing

    def system_for(self, path):
        if path.startswith("/crm/"):
            return self.hubspot
        if path.startswith("/services/"):
            return self.salesforce
        if path.startswith("/hooks/"):
            return self.hooks
        if path.startswith("/v1/"):
            return self.openai
        if path.startswith("/enrich/"):
            return self.enrich
        if path.startswith("/wp-json/"):
            return self.woo
        return None

    def log_line(self, method, path, status, started, fault):
        if not self.log_file:
            return
        line = "%s %s %s %s %dms%s\n" % (
            iso_z(now_ms()), method, path, status, (time.monotonic() - started) * 1000,
            " fault=" + fault if fault else "")
        with self.lock:
            with open(self.log_file, "a") as fh:
                fh.write(line)


class Control:
    """The /_control API."""

    def __init__(self, double):
        self.d = double

    def handle(self, req):
        d = self.d
        parts = [urllib.parse.unquote(p) for p in req.path.split("/")[2:] if p]
        head = parts[0] if parts else ""
        m = req.method
        try:
            body = req.json() if req.raw else {}
        except ValueError as e:
            return Response(400, {"error": "invalid JSON: %s" % e})
        try:
            if head == "health" and m == "GET":
                return Response(200, {"ok": True, "base_url": d.base_url})
            if head == "faults":
                return self.faults(m, body)
            if head == "requests":
                return self.requests(m, req)
            if head == "records":
                return self.records(m, parts[1:], body, req)
            if head == "hooks":
                return self.hooks(m, parts[1:], body)
            if head == "expire_locators" and m == "POST":
                # Salesforce drops a query's locator after a while (15 minutes idle): the next
                # page of it answers 400 INVALID_QUERY_LOCATOR.
                with d.lock:
                    n = len(d.salesforce.cursors)
                    d.salesforce.cursors.clear()
                return Response(200, {"expired": n})
            if head == "expire_tokens" and m == "POST":
                with d.lock:
                    n = len(d.salesforce.tokens)
                    d.salesforce.tokens.clear()
                return Response(200, {"expired": n})
            if head == "reset" and m == "POST":
                d.reset()
                return Response(200, {"ok": True})
            if head == "stats" and m == "GET":
                with d.lock:
                    return Response(200, json.loads(json.dumps(d.stats)))
            if head == "config":
                if m in ("POST", "PUT", "PATCH"):
                    d.set_config(body)
                elif m != "GET":
                    return Response(405, {"error": "method not allowed"})
                with d.lock:
                    return Response(200, dict(d.config))
            if head == "woocommerce":
                return d.woo.control(m, parts[1:], body)
            if head == "send" and m == "POST":
                # Outside the lock: the receiver may be slow, or be this double itself.
                return Response(200, self.send(body))
            if head == "openai" and m in ("POST", "PUT"):
                with d.lock:
                    return Response(200, d.openai.configure(body))
            if head == "enrich" and len(parts) == 2 and m in ("PUT", "POST"):
                with d.lock:
                    d.enrich.answers[parts[1]] = body
                return Response(200, body)
            if head == "enrich" and len(parts) == 2 and m == "DELETE":
                with d.lock:
                    d.enrich.answers.pop(parts[1], None)
                return Response(200, {"ok": True})
        except (ValueError, TypeError) as e:
            return Response(400, {"error": str(e)})
        return Response(404, {"error": "unknown control endpoint %s %s" % (m, req.path)})

    @staticmethod
    def send(body):
        """POST /_control/send: one signed webhook to body["url"] (see send_signed); with
        "times": N the same request (same event id and timestamp) N times, as a redelivery."""
        scheme = body["scheme"]
        event_id = body.get("event_id") or ("msg_" + uuid.uuid4().hex)
        timestamp = body.get("timestamp")
        if timestamp is None:
            offset = float(body.get("age_s", 0))
            timestamp = int(now_ms() - offset * 1000) if scheme == "hubspot" else int(time.time() - offset)
        results = []
        for _ in range(int(body.get("times", 1))):
            results.append(send_signed(body["url"], scheme, body.get("secret", ""), body.get("body", {}),
                                       headers=body.get("headers"), event_id=event_id, timestamp=timestamp,
                                       forge=bool(body.get("forge")), timeout=float(body.get("timeout_s", 10)),
                                       slow_ms=int(body.get("slow_ms", 0))))
        return {"event_id": event_id, "timestamp": timestamp, "results": results,
                "status": results[-1]["status"] if results else None}

    def faults(self, m, body):
        d = self.d
        with d.lock:
            if m == "POST":
                specs = body if isinstance(body, list) else [body]
                added = [d.faults.add(s) for s in specs]
                return Response(201, added if isinstance(body, list) else added[0])
            if m == "GET":
                return Response(200, json.loads(json.dumps(d.faults.items)))
            if m == "DELETE":
                n = len(d.faults.items)
                d.faults.items = []
                return Response(200, {"cleared": n})
        return Response(405, {"error": "method not allowed"})

    def requests(self, m, req):
        d = self.d
        with d.lock:
            if m == "DELETE":
                n = len(d.requests)
                d.requests.clear()
                return Response(200, {"cleared": n})
            if m == "GET":
                prefix = req.query.get("path_prefix") or ""
                since = int(req.query.get("since") or 0)
                method = (req.query.get("method") or "").upper()
                out = [r for r in d.requests if r["seq"] > since and r["path"].startswith(prefix)
                       and (not method or r["method"] == method)]
                return Response(200, json.loads(json.dumps(out)))
        return Response(405, {"error": "method not allowed"})

    def records(self, m, parts, body, req):
        d = self.d
        if not parts or parts[0] not in ("hubspot", "salesforce"):
            return Response(404, {"error": "system must be hubspot or salesforce"})
        system = d.hubspot if parts[0] == "hubspot" else d.salesforce
        with d.lock:
            if len(parts) == 1 and m == "GET":
                return Response(200, {obj: {"key_field": st.key_field, "live": len(st.live()),
                                            "total": len(st.records)}
                                      for obj, st in system.stores.items()})
            if len(parts) == 2 and m == "GET":
                st = system.store(parts[1])
                include = req.query.get("include_archived", "") in ("1", "true", "yes")
                recs = st.records.values() if include else st.live()
                return Response(200, [system.control_json(parts[1], r) for r in recs])
            if len(parts) == 3 and m == "GET":
                st = system.store(parts[1])
                rec = st.find(st.key_field, parts[2]) or st.records.get(parts[2])
                if rec is None:
                    return Response(404, {"error": "no such record"})
                return Response(200, system.control_json(parts[1], rec))
            if len(parts) == 2 and m == "POST" and isinstance(body, list):
                # Bulk seeding (bench/run.sh): [{"key", "properties", "key_field", "modified_ms"}].
                for item in body:
                    system.control_put(parts[1], str(item["key"]), dict(item.get("properties", {})),
                                       item.get("key_field"), item.get("modified_ms"))
                return Response(200, {"put": len(body)})
            if len(parts) == 3 and m in ("PUT", "POST", "PATCH"):
                props = body.get("properties", {})
                if not isinstance(props, dict):
                    return Response(400, {"error": "properties must be an object"})
                rec = system.control_put(parts[1], parts[2], props, body.get("key_field"),
                                         body.get("modified_ms"))
                return Response(200, system.control_json(parts[1], rec))
            if len(parts) == 3 and m == "DELETE":
                rec = system.control_delete(parts[1], parts[2])
                if rec is None:
                    return Response(404, {"error": "no such record"})
                return Response(200, system.control_json(parts[1], rec))
        return Response(405, {"error": "method not allowed"})

    def hooks(self, m, parts, body):
        sink = self.d.hooks
        with self.d.lock:
            if not parts and m == "GET":
                return Response(200, list(sink.events))
            if not parts and m == "DELETE":
                sink.reset()
                return Response(200, {"ok": True})
            if len(parts) == 1:
                name = parts[0]
                if m == "GET":
                    return Response(200, [e for e in sink.events if e["name"] == name])
                if m in ("PUT", "POST"):
                    sink.answers[name] = {"status": int(body.get("status", 410)),
                                          "body": body.get("body", {"error": "gone"})}
                    return Response(200, sink.answers[name])
                if m == "DELETE":
                    sink.answers.pop(name, None)
                    sink.events = [e for e in sink.events if e["name"] != name]
                    return Response(200, {"ok": True})
        return Response(405, {"error": "method not allowed"})


# --------------------------------------------------------------------------- HTTP plumbing

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crm-double/1.0"
    sys_version = ""
    timeout = 300                      # idle keep-alive connections are closed after this

    double = None                      # set by make_server
    control = None

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the
        # client's delayed ACK would add ~40 ms to every answer and distort latency figures.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counted = None                # generation of the double it was counted in
        with self.double.lock:
            self.double.stats["connections_total"] += 1

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self):
        d = self.double
        started = time.monotonic()
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path
        query_lists = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        query = {k: v[0] for k, v in query_lists.items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, path, query, headers, self.read_body(), query_lists)

        if path.startswith("/_control"):
            self.send(self.safe(self.control.handle, req))
            return

        with d.lock:
            d.seq += 1
            entry = {"seq": d.seq, "method": self.command, "path": path, "query": query,
                     "headers": headers, "body": req.body_for_log(), "at_ms": now_ms(),
                     "status": None, "fault": None}
            d.requests.append(entry)
            st = d.stats
            st["requests"] += 1
            st["paths"][path] += 1
            if self.counted != d.generation:
                self.counted = d.generation
                st["connections"] += 1
            st["in_flight"] += 1
            st["max_concurrent"] = max(st["max_concurrent"], st["in_flight"])
            fault = d.faults.take(self.command, path)
            if fault:
                entry["fault"] = fault["kind"]
                st["faults_applied"][fault["kind"]] += 1
        try:
            resp = self.respond(req, fault)
            with d.lock:
                entry["status"] = resp.status if resp else "dropped"
                if resp:
                    d.stats["statuses"][str(resp.status)] += 1
            # log before answering, so a client that got its answer also finds the log line
            d.log_line(self.command, self.path, entry["status"], started,
                       fault and fault["kind"])
            if resp is None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            else:
                self.send(resp)
        finally:
            with d.lock:
                d.stats["in_flight"] -= 1

    def respond(self, req, fault):
        """The response for a non-control request, None meaning: drop the connection."""
        d = self.double
        if fault:
            kind = fault["kind"]
            if kind in ("timeout", "slow"):
                d.stop_event.wait(fault["delay_ms"] / 1000.0)
            elif kind == "drop":
                if fault["delay_ms"] > 0:  # held in flight first (a remote that dies mid-request)
                    d.stop_event.wait(fault["delay_ms"] / 1000.0)
                if fault["apply"]:
                    self.route(req)
                return None
            elif kind == "status":
                body = fault["body"] if fault["body"] is not None else \
                    injected_body(req.path, fault["status"])
                headers = dict(fault["headers"])
                if fault["retry_after"] is not None:
                    headers["Retry-After"] = fault["retry_after"]
                return Response(fault["status"], body, headers)
            elif kind == "reject":
                ids = fault["reject_ids"]
                req.reject = "*" if ids is None else set(ids)
                req.reject_status = fault["status"]
            elif kind == "deep":
                return deepen(self.route(req), fault["depth"])
        return self.route(req)

    def route(self, req):
        system = self.double.system_for(req.path)
        if system is None:
            return Response(404, {"error": "no such endpoint: %s %s" % (req.method, req.path)})
        return self.safe(system.handle, req)

    @staticmethod
    def safe(fn, req):
        try:
            return fn(req)
        except Exception as e:  # a bug in the double must not kill the connection silently
            traceback.print_exc()
            return Response(500, {"error": "crm double internal error: %r" % e})

    def send(self, resp):
        body = resp.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode("utf-8")
        try:
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            if resp.status != 204 and resp.status >= 200:
                if body is not None:
                    self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and self.command != "HEAD" and resp.status != 204:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:            # the client went away (e.g. it timed out first)
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def make_server(port, config, log_file=None, max_logged=MAX_LOGGED_REQUESTS):
    double = CrmDouble(config, log_file, max_logged)
    handler = type("BoundHandler", (Handler,), {"double": double, "control": Control(double)})
    server = Server(("127.0.0.1", port), handler)
    double.base_url = "http://127.0.0.1:%d" % server.server_address[1]
    return server, double


def main(argv=None):
    p = argparse.ArgumentParser(description="Stateful HubSpot/Salesforce/webhook/OpenAI "
                                            "test double for switchboard.")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = ephemeral)")
    p.add_argument("--port-file", help="also write the chosen port to this file")
    p.add_argument("--log-file", help="append one line per request to this file")
    p.add_argument("--request-log-size", type=int, default=MAX_LOGGED_REQUESTS,
                   help="how many requests /_control/requests keeps (default 100000)")
    p.add_argument("--hubspot-token", default="hs-test-token")
    p.add_argument("--hubspot-rate", help="e.g. 100/10s: beyond it answer 429 "
                                          "TEN_SECONDLY_ROLLING")
    p.add_argument("--hubspot-search-rate", help="e.g. 5/1s: limit for /search (429 SECONDLY)")
    p.add_argument("--sf-client-id", default="sf-id")
    p.add_argument("--sf-client-secret", default="sf-secret")
    p.add_argument("--sf-page-size", type=int, default=2000)
    p.add_argument("--sf-rate", help="e.g. 1000/1h: beyond it answer 403 REQUEST_LIMIT_EXCEEDED")
    p.add_argument("--webhook-secret", help="whsec_<base64>: verify Standard Webhooks signatures")
    p.add_argument("--webhook-tolerance", type=int, default=0,
                   help="max |now - webhook-timestamp| in seconds (0 = not checked)")
    p.add_argument("--webhook-enforce", action="store_true",
                   help="answer 401 to events whose signature does not verify")
    p.add_argument("--webhook-rate", help="e.g. 50/1s: beyond it answer 429")
    p.add_argument("--openai-key", help="require this bearer token on /v1 (default: any)")
    p.add_argument("--woo-consumer-key", default="ck_test", help="WooCommerce Basic auth user")
    p.add_argument("--woo-consumer-secret", default="cs_test", help="WooCommerce Basic auth password")
    args = p.parse_args(argv)

    for spec in (args.hubspot_rate, args.hubspot_search_rate, args.sf_rate, args.webhook_rate):
        try:
            parse_rate(spec)
        except ValueError as e:
            p.error(str(e))
    config = {"hubspot_token": args.hubspot_token, "hubspot_rate": args.hubspot_rate,
              "hubspot_search_rate": args.hubspot_search_rate,
              "sf_client_id": args.sf_client_id, "sf_client_secret": args.sf_client_secret,
              "sf_page_size": args.sf_page_size, "sf_rate": args.sf_rate,
              "webhook_secret": args.webhook_secret, "webhook_tolerance": args.webhook_tolerance,
              "webhook_enforce": args.webhook_enforce, "webhook_rate": args.webhook_rate,
              "openai_key": args.openai_key, "hubspot_results_order": "input",
              # bench/run.sh: keyset queries (ORDER BY SystemModstamp ASC, Id ASC LIMIT n) are
              # served from a sorted copy of the records, re-sorted when their count or newest
              # SystemModstamp changes (a write with an older modified_ms is not noticed: off in
              # tests); a full scan and sort per page made the double the bottleneck.
              "sf_fast_query": False,
              "woo_fast_list": False,  # bench/run.sh: WooCommerce list pages from a kept sorted copy
              "hubspot_fast_search": False,  # bench/run.sh: searches by modification time from a sorted copy
              "woo_consumer_key": args.woo_consumer_key, "woo_consumer_secret": args.woo_consumer_secret,
              "hubspot_frozen_ms": None, "hubspot_touch_after_search": None}
    server, double = make_server(args.port, config, args.log_file, args.request_log_size)
    port = server.server_address[1]

    def stop(signum, frame):
        double.stop_event.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("PORT %d" % port, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
