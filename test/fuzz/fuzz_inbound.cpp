// Inbound webhooks: signature headers and bodies as a sender controls them. The first byte
// picks the scheme, the input up to the first NUL is the signature header (and the timestamp
// header up to the second), the rest the body. Verification must refuse without throwing;
// parsing events may only throw std::runtime_error; an event Unstorable passes can be stored.
#include <cstring>
#include <exception>
#include <string>

#include "connectors/pull.h"
#include "inbound/verify.h"

using namespace switchboard;
using namespace switchboard::inbound;

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const Scheme schemes[] = {Scheme::HubSpotV3, Scheme::WooCommerce, Scheme::StandardWebhooks};
	Scheme scheme = schemes[data[0] % 3];
	std::string rest(reinterpret_cast<const char *>(data) + 1, size - 1);
	std::string signature, timestamp, body = rest;
	size_t nul = rest.find('\0');
	if (nul != std::string::npos) {
		signature = rest.substr(0, nul);
		body = rest.substr(nul + 1);
		size_t second = body.find('\0');
		if (second != std::string::npos) {
			timestamp = body.substr(0, second);
			body = body.substr(second + 1);
		}
	}
	Request request;
	request.method = "POST";
	request.uri = "https://db.example/inbound/" + signature.substr(0, 40);
	request.body = body;
	request.headers = {{"X-HubSpot-Signature-v3", signature},
	                   {"X-HubSpot-Request-Timestamp", timestamp},
	                   {"X-WC-Webhook-Signature", signature},
	                   {"X-WC-Webhook-Topic", timestamp},
	                   {"webhook-id", timestamp},
	                   {"webhook-timestamp", timestamp},
	                   {"webhook-signature", signature}};
	// A verdict, never an exception, for anything the sender controls.
	Verdict verdict = Verify(scheme, "whsec_c3RhbmQtaW4ta2V5", request, 1795514400000);
	if (verdict.ok)
		__builtin_trap(); // forging a signature by chance would be a finding indeed
	(void) StandardSignatures(signature);
	(void) HubSpotDecodeUri(signature);
	try {
		Parsed parsed = ParseEvents(scheme, request.headers, body);
		for (const auto &event : parsed.events) {
			if (event.event_id.empty() && scheme != Scheme::StandardWebhooks)
				__builtin_trap(); // documented: every HubSpot/WooCommerce event is named
			// What Unstorable passes, the receiver stores: its resource dumps (no exception for
			// invalid UTF-8) without \u0000, its text fields are UTF-8 without NUL.
			if (Unstorable(event).empty()) {
				if (event.resource.dump().find("\\u0000") != std::string::npos)
					__builtin_trap();
				for (const std::string *text : {&event.event_id, &event.object_id, &event.type, &event.property})
					if (!ValidUtf8(*text) || text->find('\0') != std::string::npos)
						__builtin_trap();
			}
		}
		(void) RecordsOf(parsed.events, "email");
	} catch (const std::runtime_error &) {
	}
	// The same bytes as a HubSpot batch/read answer (the read-back of HubSpot events).
	try {
		Endpoint endpoint;
		endpoint.kind = "hubspot";
		endpoint.base_url = "https://api.hubapi.com";
		Route route;
		route.remote_object = "contacts";
		route.match_remote = "email";
		HttpResponse response;
		response.status = data[0] & 4 ? 207 : 200;
		response.body = body;
		(void) ParseReadBackResponse(endpoint, route, response);
	} catch (const std::runtime_error &) {
	}
	return 0;
}
