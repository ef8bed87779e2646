#include "inbound/verify.h"

#include <cctype>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include <openssl/crypto.h>

#include "connectors/connector.h" // Snippet, StandardWebhookSignature
#include "connectors/crypto.h"
#include "connectors/pull.h" // pull::ParseIsoMs, pull::TimeMs, pull::KeyText
#include "http/json_limits.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {
namespace inbound {

namespace {

Verdict
Refuse(const std::string &why)
{
	Verdict verdict;
	verdict.error = why;
	return verdict;
}

Verdict
Accept()
{
	Verdict verdict;
	verdict.ok = true;
	return verdict;
}

// A non-negative decimal of at most 18 digits (fits int64 with room): timestamps.
bool
ParseTimestamp(const std::string &text, int64_t *out)
{
	if (text.empty() || text.size() > 18)
		return false;
	int64_t value = 0;
	for (char c : text) {
		if (c < '0' || c > '9')
			return false;
		value = value * 10 + (c - '0');
	}
	*out = value;
	return true;
}

int64_t
Distance(int64_t a, int64_t b)
{
	return a > b ? a - b : b - a;
}

Verdict
VerifyHubSpot(const std::string &secret, const Request &request, int64_t now_ms)
{
	const std::string signature = HeaderValue(request.headers, "X-HubSpot-Signature-v3");
	const std::string timestamp = HeaderValue(request.headers, "X-HubSpot-Request-Timestamp");
	if (signature.empty())
		return Refuse("no X-HubSpot-Signature-v3 header");
	int64_t sent_ms = 0;
	if (!ParseTimestamp(timestamp, &sent_ms))
		return Refuse("X-HubSpot-Request-Timestamp missing or not epoch milliseconds");
	// HubSpot: "reject the request if the timestamp is older than 5 minutes". A timestamp as
	// far in the future is refused too: otherwise one captured request stays replayable.
	if (now_ms - sent_ms > kToleranceMs)
		return Refuse("stale request: X-HubSpot-Request-Timestamp older than 5 minutes");
	if (sent_ms - now_ms > kToleranceMs)
		return Refuse("X-HubSpot-Request-Timestamp more than 5 minutes in the future");
	std::string expected = HubSpotV3Signature(secret, request.method, request.uri, request.body, timestamp);
	if (!ConstantTimeEquals(expected, signature))
		return Refuse("bad X-HubSpot-Signature-v3");
	return Accept();
}

Verdict
VerifyWooCommerce(const std::string &secret, const Request &request)
{
	const std::string signature = HeaderValue(request.headers, "X-WC-Webhook-Signature");
	if (signature.empty())
		return Refuse("no X-WC-Webhook-Signature header");
	if (!ConstantTimeEquals(WooCommerceSignature(secret, request.body), signature))
		return Refuse("bad X-WC-Webhook-Signature");
	return Accept();
}

Verdict
VerifyStandard(const std::string &secret, const Request &request, int64_t now_ms)
{
	const std::string id = HeaderValue(request.headers, "webhook-id");
	const std::string timestamp = HeaderValue(request.headers, "webhook-timestamp");
	const std::string header = HeaderValue(request.headers, "webhook-signature");
	if (id.empty() || header.empty())
		return Refuse("no webhook-id or webhook-signature header");
	int64_t sent_s = 0;
	if (!ParseTimestamp(timestamp, &sent_s) || sent_s > INT64_MAX / 1000)
		return Refuse("webhook-timestamp missing or not unix seconds");
	if (Distance(now_ms, sent_s * 1000) > kToleranceMs)
		return Refuse("webhook-timestamp more than 5 minutes from now");
	std::string expected;
	try {
		expected = StandardWebhookSignature(secret, id, timestamp, request.body).substr(3); // past "v1,"
	} catch (const std::invalid_argument &) {
		// The route's secret, not the sender, is at fault: say so, never what it holds.
		return Refuse("the route's inbound secret is not a whsec_<base64> key");
	}
	// Any v1 entry may match (a sender rotating keys signs with both); each is compared in
	// constant time, and every entry is compared so the time says nothing about which.
	bool matched = false;
	for (const auto &candidate : StandardSignatures(header))
		matched = ConstantTimeEquals(expected, candidate) || matched;
	if (!matched)
		return Refuse("bad webhook-signature");
	return Accept();
}

bool
EndsWith(const std::string &text, const std::string &suffix)
{
	return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

[[noreturn]] void
BadBody(const std::string &what, const std::string &body)
{
	throw std::runtime_error(what + ": " + (body.empty() ? std::string("(empty body)") : Snippet(body, 120)));
}

Json
ParseBody(const std::string &body, const char *scheme)
{
	std::string refused;
	Json parsed = TryParseRemoteJson(body, &refused);
	if (!refused.empty())
		throw std::runtime_error(std::string(scheme) + " body refused: " + refused);
	if (parsed.is_discarded())
		BadBody(std::string(scheme) + " body is not JSON", body);
	return parsed;
}

int64_t
IsoOrEpochMs(const Json *value)
{
	if (value == nullptr)
		return 0;
	// WooCommerce's *_gmt times carry no zone: they are UTC by name.
	if (value->is_string()) {
		std::string text = value->get<std::string>();
		int64_t ms = 0;
		if (!text.empty() && pull::ParseIsoMs(text, &ms))
			return ms;
		if (!text.empty() && pull::ParseIsoMs(text + "Z", &ms))
			return ms;
	}
	return pull::TimeMs(*value);
}

Parsed
ParseHubSpot(const std::string &body)
{
	Json parsed = ParseBody(body, "hubspot");
	// HubSpot sends an array of up to 100 events; accept a single object too.
	Json events = parsed.is_array() ? parsed : Json::array({parsed});
	Parsed out;
	for (const auto &item : events) {
		if (!item.is_object())
			BadBody("hubspot event that is not an object", body);
		Event event;
		event.event_id = pull::KeyText(pull::Member(item, "eventId"));
		event.object_id = pull::KeyText(pull::Member(item, "objectId"));
		event.type = pull::KeyText(pull::Member(item, "subscriptionType"));
		event.property = pull::KeyText(pull::Member(item, "propertyName"));
		if (event.event_id.empty() || event.object_id.empty())
			BadBody("hubspot event without eventId or objectId", body);
		event.deleted = EndsWith(event.type, ".deletion");
		event.occurred_ms = pull::TimeMs(item.value("occurredAt", Json()));
		event.read_back = !event.deleted;
		out.events.push_back(std::move(event));
	}
	return out;
}

Parsed
ParseWooCommerce(const Headers &headers, const std::string &body)
{
	Parsed out;
	if (IsWooCommercePing(body)) {
		out.ping = true;
		return out;
	}
	Json parsed = ParseBody(body, "woocommerce");
	if (!parsed.is_object())
		BadBody("woocommerce body is not a JSON object", body);
	Event event;
	event.type = HeaderValue(headers, "X-WC-Webhook-Topic");
	event.object_id = pull::KeyText(pull::Member(parsed, "id"));
	if (event.object_id.empty())
		BadBody("woocommerce body without an id", body);
	const Json *modified = pull::Member(parsed, "date_modified_gmt");
	// WooCommerce signs the body only, not the topic header: a deletion is a deletion topic with
	// a deletion's body ({"id": N}, no modification time), so a replayed body of a live record
	// under a forged ".deleted" topic deletes nothing.
	event.deleted = EndsWith(event.type, ".deleted") && modified == nullptr;
	event.occurred_ms = IsoOrEpochMs(modified);
	// The event id is the resource's state (id and modification time), not the delivery id:
	// WooCommerce gives a retry a new X-WC-Webhook-Delivery-ID, and a replayed old body of
	// the same state is then recognised as already applied. Nor the (unsigned) topic: a replay
	// under another topic would otherwise be a new event each time.
	event.event_id = "woocommerce:" + event.object_id + "@" +
	                 (modified != nullptr ? pull::KeyText(modified) : std::string(event.deleted ? "deleted" : ""));
	event.resource = std::move(parsed);
	out.events.push_back(std::move(event));
	return out;
}

Parsed
ParseStandard(const Headers &headers, const std::string &body)
{
	Json parsed = ParseBody(body, "webhook");
	if (!parsed.is_object())
		BadBody("webhook body is not a JSON object", body);
	Event event;
	event.event_id = HeaderValue(headers, "webhook-id");
	event.type = pull::KeyText(pull::Member(parsed, "type"));
	event.deleted = EndsWith(event.type, ".delete") || EndsWith(event.type, ".deleted");
	event.occurred_ms = IsoOrEpochMs(pull::Member(parsed, "timestamp"));
	// A body without a time (the payload's "timestamp" is only a SHOULD of the specification):
	// the signed webhook-timestamp, when the sender signed this delivery, so that an older event
	// delivered after a newer one (in parallel, or held back on the way) is recognised as older.
	// Ties (whole seconds) go by arrival order, as for any two events of one time: the ids
	// Standard Webhooks senders draw (msg_<KSUID>) are ordered only to the second themselves.
	// A sender that retries an older event after a newer one succeeded signs the retry anew; only
	// a time in the body orders that.
	if (event.occurred_ms <= 0) {
		int64_t sent_s = 0;
		if (ParseTimestamp(HeaderValue(headers, "webhook-timestamp"), &sent_s) && sent_s > 0 &&
		    sent_s <= INT64_MAX / 1000)
			event.occurred_ms = sent_s * 1000;
	}
	const Json *data = pull::Member(parsed, "data");
	if (data == nullptr || !data->is_object())
		BadBody("webhook body without a data object", body);
	event.object_id = pull::KeyText(pull::Member(*data, "id"));
	event.resource = *data;
	Parsed out;
	out.events.push_back(std::move(event));
	return out;
}

// A string or key holding U+0000 anywhere in the value (iteratively: no recursion on a
// sender's nesting, though ParseBody bounded it already).
bool
HoldsNul(const Json &value)
{
	std::vector<const Json *> todo{&value};
	while (!todo.empty()) {
		const Json *v = todo.back();
		todo.pop_back();
		if (v->is_string()) {
			if (v->get_ref<const std::string &>().find('\0') != std::string::npos)
				return true;
		} else if (v->is_object()) {
			for (auto it = v->begin(); it != v->end(); ++it) {
				if (it.key().find('\0') != std::string::npos)
					return true;
				todo.push_back(&it.value());
			}
		} else if (v->is_array()) {
			for (const auto &item : *v)
				todo.push_back(&item);
		}
	}
	return false;
}

} // namespace

bool
ValidUtf8(const std::string &text)
{
	const auto *s = reinterpret_cast<const unsigned char *>(text.data());
	size_t n = text.size(), i = 0;
	while (i < n) {
		unsigned char c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		unsigned lo = 0x80, hi = 0xBF; // the allowed range of the second byte
		if (c >= 0xC2 && c <= 0xDF)
			len = 2;
		else if (c >= 0xE0 && c <= 0xEF) {
			len = 3;
			if (c == 0xE0)
				lo = 0xA0; // overlong
			else if (c == 0xED)
				hi = 0x9F; // surrogates
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4;
			if (c == 0xF0)
				lo = 0x90; // overlong
			else if (c == 0xF4)
				hi = 0x8F; // past U+10FFFF
		} else
			return false;
		if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k < len; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xBF)
				return false;
		i += len;
	}
	return true;
}

std::string
Unstorable(const Event &event)
{
	const struct {
		const char *what;
		const std::string &text;
	} fields[] = {{"event id", event.event_id},
	              {"object id", event.object_id},
	              {"event type (body or topic header)", event.type},
	              {"property name", event.property}};
	for (const auto &f : fields) {
		if (!ValidUtf8(f.text))
			return std::string("the ") + f.what + " is not valid UTF-8";
		if (f.text.find('\0') != std::string::npos)
			return std::string("the ") + f.what + " holds a NUL character";
	}
	if (HoldsNul(event.resource))
		return "the body holds a JSON string with \\u0000, which PostgreSQL's jsonb cannot store";
	return "";
}

Scheme
SchemeForKind(const std::string &kind)
{
	if (kind == "hubspot")
		return Scheme::HubSpotV3;
	if (kind == "woocommerce")
		return Scheme::WooCommerce;
	return Scheme::StandardWebhooks;
}

const char *
SchemeName(Scheme scheme)
{
	switch (scheme) {
	case Scheme::HubSpotV3:
		return "hubspot-v3";
	case Scheme::WooCommerce:
		return "woocommerce";
	case Scheme::StandardWebhooks:
		break;
	}
	return "standard-webhooks";
}

bool
ConstantTimeEquals(const std::string &a, const std::string &b)
{
	// The length of a signature is public (the scheme fixes it); only the bytes are secret.
	if (a.size() != b.size())
		return false;
	return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::vector<std::string>
StandardSignatures(const std::string &header)
{
	std::vector<std::string> out;
	size_t pos = 0;
	while (pos < header.size()) {
		size_t end = header.find(' ', pos);
		if (end == std::string::npos)
			end = header.size();
		std::string entry = header.substr(pos, end - pos);
		pos = end + 1;
		if (entry.size() > 3 && entry.compare(0, 3, "v1,") == 0)
			out.push_back(entry.substr(3));
		if (out.size() >= 16)
			break; // a sender rotates between a few keys, never dozens: bound the work
	}
	return out;
}

std::string
HubSpotDecodeUri(const std::string &uri)
{
	static const struct {
		const char *escape;
		char plain;
	} kDecoded[] = {{"3A", ':'},  {"2F", '/'}, {"3F", '?'}, {"40", '@'}, {"21", '!'}, {"24", '$'},
	                {"27", '\''}, {"28", '('}, {"29", ')'}, {"2A", '*'}, {"2C", ','}, {"3B", ';'}};
	std::string out;
	out.reserve(uri.size());
	for (size_t i = 0; i < uri.size(); ++i) {
		if (uri[i] == '%' && i + 2 < uri.size()) {
			std::string hex = uri.substr(i + 1, 2);
			for (char &c : hex)
				c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
			bool done = false;
			for (const auto &entry : kDecoded) {
				if (hex == entry.escape) {
					out += entry.plain;
					i += 2;
					done = true;
					break;
				}
			}
			if (done)
				continue;
		}
		out += uri[i];
	}
	return out;
}

std::string
HubSpotV3Signature(const std::string &secret, const std::string &method, const std::string &uri,
                   const std::string &body, const std::string &timestamp)
{
	return Base64Encode(HmacSha256(secret, method + HubSpotDecodeUri(uri) + body + timestamp));
}

std::string
WooCommerceSignature(const std::string &secret, const std::string &body)
{
	return Base64Encode(HmacSha256(secret, body));
}

Verdict
Verify(Scheme scheme, const std::string &secret, const Request &request, int64_t now_ms)
{
	if (secret.empty())
		return Refuse("the route has no inbound secret: nothing is received");
	switch (scheme) {
	case Scheme::HubSpotV3:
		return VerifyHubSpot(secret, request, now_ms);
	case Scheme::WooCommerce:
		return VerifyWooCommerce(secret, request);
	case Scheme::StandardWebhooks:
		break;
	}
	return VerifyStandard(secret, request, now_ms);
}

bool
IsWooCommercePing(const std::string &body)
{
	const std::string prefix = "webhook_id=";
	if (body.size() <= prefix.size() || body.size() > prefix.size() + 20 || body.compare(0, prefix.size(), prefix) != 0)
		return false;
	for (size_t i = prefix.size(); i < body.size(); ++i)
		if (body[i] < '0' || body[i] > '9')
			return false;
	return true;
}

std::vector<RemoteRecord>
RecordsOf(const std::vector<Event> &events, const std::string &match_remote)
{
	std::vector<RemoteRecord> records;
	for (const auto &event : events) {
		if (event.read_back || event.object_id.empty())
			continue;
		RemoteRecord record;
		record.remote_id = event.object_id;
		record.fields = event.resource.is_object() ? event.resource : Json::object();
		record.key = pull::KeyText(pull::MemberAnyCase(record.fields, match_remote));
		if (record.key.empty() && match_remote == "id")
			record.key = event.object_id;
		record.modified_ms = event.occurred_ms;
		record.deleted = event.deleted;
		records.push_back(std::move(record));
	}
	return records;
}

Parsed
ParseEvents(Scheme scheme, const Headers &headers, const std::string &body)
{
	switch (scheme) {
	case Scheme::HubSpotV3:
		return ParseHubSpot(body);
	case Scheme::WooCommerce:
		return ParseWooCommerce(headers, body);
	case Scheme::StandardWebhooks:
		break;
	}
	return ParseStandard(headers, body);
}

} // namespace inbound
} // namespace switchboard
