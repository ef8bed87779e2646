// Pull pages: HubSpot search / archived listings, Salesforce query(All) and WooCommerce list answers.
#include <exception>

#include "connectors/pull.h"
#include "fuzz_common.h"

using namespace switchboard;

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	// Byte 0: status; its low bits also pick kind and phase.
	const bool hubspot = (data[0] & 1) == 0;
	const PullPhase phase = (data[0] & 2) ? PullPhase::Deletions : PullPhase::Changes;
	HttpResponse response = fuzz::ResponseFrom(data, size);
	if (response.status == 201 || response.status == 204)
		response.status = 200;
	// Bit 2 of an odd byte 0: WooCommerce, whose pages are also walked by a header.
	const bool woo = !hubspot && (data[0] & 4) != 0;
	if (woo && size > 1)
		response.headers.emplace_back("x-wp-totalpages", response.body.substr(0, data[1] % 4));
	Endpoint endpoint = fuzz::FuzzEndpoint(hubspot ? "hubspot" : woo ? "woocommerce" : "salesforce");
	Route route = hubspot ? fuzz::FuzzRoute("contacts", "email")
	              : woo   ? fuzz::FuzzRoute("orders", "number")
	                      : fuzz::FuzzRoute("Contact", "Email__c");
	PullCursor cursor = hubspot ? PullCursor{"1795514400123", ""}
	                    : woo   ? PullCursor{"2026-11-24T10:00:00", data[0] & 8 ? "2" : ""}
	                            : PullCursor{"2026-11-24T10:00:00.123Z", ""};
	try {
		PullPage page = ParsePullResponse(endpoint, route, phase, cursor, response);
		// What the worker does with a page next: store fields and build the next request.
		for (const RemoteRecord &record : page.records)
			(void) record.fields.dump();
		Auth auth;
		auth.bearer = endpoint.secret;
		auth.instance_url = "https://acme.my.salesforce.com";
		try {
			(void) BuildPullRequest(endpoint, route, {"firstname"}, phase, page.next, auth);
		} catch (const std::invalid_argument &) {
			// a cursor the remote sent that cannot go into a query: refused, not a crash
		}
	} catch (const std::exception &) {
	}
	return 0;
}
