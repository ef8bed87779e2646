// Inbound webhooks (SPEC §9): verifying a received request's signature before anything is
// stored, and reading the events its body names. The receiver (worker side) hands each
// request here; nothing in this file talks to Postgres or to the network.
//
// Three schemes, chosen by the endpoint kind of the route the token names:
//   hubspot      X-HubSpot-Signature-v3: base64 HMAC-SHA256(client secret,
//                method + full URI + body + X-HubSpot-Request-Timestamp); stale after 5 minutes
//   woocommerce  X-WC-Webhook-Signature: base64 HMAC-SHA256(webhook secret, raw body)
//   any other    Standard Webhooks: webhook-id, webhook-timestamp (unix s, ±5 minutes),
//                webhook-signature "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" (space-
//                separated list), key = base64 of a whsec_ secret
// Every comparison of a signature is constant-time (CRYPTO_memcmp).
//
// Plain C++ (no postgres.h): unit-tested and fuzzed without a server.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "connectors/connector.h" // RemoteRecord
#include "http/http_types.h"

namespace switchboard {
namespace inbound {

using Json = nlohmann::json;

enum class Scheme { HubSpotV3, WooCommerce, StandardWebhooks };

// The scheme a route's endpoint kind receives with: hubspot, woocommerce, else Standard Webhooks.
Scheme SchemeForKind(const std::string &kind);
const char *SchemeName(Scheme scheme); // "hubspot-v3" | "woocommerce" | "standard-webhooks"

// How far a signed timestamp may lie from now (HubSpot: older than this is refused; Standard
// Webhooks: either way, as its reference libraries do).
constexpr int64_t kToleranceMs = 5 * 60 * 1000;

// A received request as the sender signed it.
struct Request {
	std::string method; // "POST"
	// The full URI the sender called (HubSpot signs it): scheme://host[:port]/path[?query].
	// Behind a reverse proxy the receiver rebuilds it from the public scheme and Host.
	std::string uri;
	Headers headers; // any case
	std::string body;
};

struct Verdict {
	bool ok = false;
	// Why a request was refused, for inbound_status.last_error: never the secret, the
	// expected signature or the received one.
	std::string error;
};

// Verifies a request against the route's signing secret; now_ms is the receiver's clock.
// An empty secret refuses everything (a route without one receives nothing). Never throws
// for anything a sender controls.
Verdict Verify(Scheme scheme, const std::string &secret, const Request &request, int64_t now_ms);

// Equal length and equal bytes, in time independent of where they differ.
bool ConstantTimeEquals(const std::string &a, const std::string &b);

// The base64 signatures of the v1 entries of a webhook-signature header
// ("v1,abc= v1,def= v2,xyz"), in order; other versions and malformed entries are skipped.
std::vector<std::string> StandardSignatures(const std::string &header);

// The HubSpot v3 signature of a request (for tests and the double's sender).
std::string HubSpotV3Signature(const std::string &secret, const std::string &method, const std::string &uri,
                               const std::string &body, const std::string &timestamp);
// HubSpot decodes these escapes in the URI before signing: %3A %2F %3F %40 %21 %24 %27 %28
// %29 %2A %2C %3B (its documentation lists them); anything else stays as sent.
std::string HubSpotDecodeUri(const std::string &uri);
// The WooCommerce signature of a body.
std::string WooCommerceSignature(const std::string &secret, const std::string &body);

// One change a verified request announces.
struct Event {
	std::string event_id;    // what a redelivery repeats; unique per route
	std::string object_id;   // HubSpot objectId, WooCommerce resource id, data.id; "" when none
	std::string type;        // subscriptionType, X-WC-Webhook-Topic, Standard Webhooks type
	std::string property;    // HubSpot propertyName ("" for creations and deletions)
	bool deleted = false;    // HubSpot *.deletion, WooCommerce *.deleted, Standard *.delete(d)
	int64_t occurred_ms = 0; // occurredAt / date_modified_gmt / timestamp; 0 when unknown
	Json resource = nullptr; // the record itself (WooCommerce body, Standard Webhooks data)
	bool read_back = false;  // true: only ids came, the record is read from the remote (HubSpot)
};

struct Parsed {
	std::vector<Event> events;
	bool ping = false; // WooCommerce's "webhook_id=N" on creation: answer 200, store nothing
};

// Reads the events of a verified body. Throws std::runtime_error (a short, masked message)
// when the body is not of the scheme's shape: the receiver answers 400 and counts it.
Parsed ParseEvents(Scheme scheme, const Headers &headers, const std::string &body);

// The records events carry themselves (WooCommerce bodies, Standard Webhooks data), as a pull
// page would hold them: remote id, fields, key (route.match_remote), modification time, the
// deleted flag. Events that only name ids (read_back) are not among them.
std::vector<RemoteRecord> RecordsOf(const std::vector<Event> &events, const std::string &match_remote);

// Well-formed UTF-8 as PostgreSQL takes it: no overlong forms, no surrogates, nothing past
// U+10FFFF. A NUL byte is well-formed here (Unstorable refuses it separately).
bool ValidUtf8(const std::string &text);

// Why an event cannot be stored, or "" when it can: a text field (event id, object id, type,
// property; some come from headers) that is not valid UTF-8 or holds a NUL, or a resource
// with a string or key holding U+0000, which jsonb refuses ("\u0000"). The receiver answers
// such a request 400 before storage: stored with the others of its turn, it would fail them all.
std::string Unstorable(const Event &event);

// WooCommerce's ping when a webhook is saved: "webhook_id=<digits>", sent unsigned.
bool IsWooCommercePing(const std::string &body);

} // namespace inbound
} // namespace switchboard
