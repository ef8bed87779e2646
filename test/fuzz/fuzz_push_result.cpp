// Push results: HubSpot batch upsert/archive and Salesforce composite answers, and the
// webhook connector's (which reads only the status).
#include <exception>
#include <vector>

#include "connectors/connector.h"
#include "fuzz_common.h"

using namespace switchboard;

namespace {

Change
MakeChange(int64_t id, Op op, const std::string &key, const std::string &remote_id)
{
	Change change;
	change.id = id;
	change.op = op;
	change.key = key;
	change.fields = {{"firstname", "F" + std::to_string(id)}};
	change.remote_id = remote_id;
	change.event_id = "evt_" + std::to_string(id);
	change.occurred_at_ms = 1795514400123;
	return change;
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	static const char *kKinds[] = {"hubspot", "salesforce", "webhook", "woocommerce"};
	const std::string kind = kKinds[(data[1] % 3) + ((data[1] & 8) != 0 && data[1] % 3 == 2 ? 1 : 0)];
	const bool deletes = (data[1] & 4) != 0;
	HttpResponse response = fuzz::ResponseFrom(data + 1, size - 1);
	response.status = fuzz::ResponseFrom(data, 1).status;
	std::vector<Change> changes;
	for (int i = 1; i <= 3; ++i)
		changes.push_back(MakeChange(i, deletes ? Op::Delete : Op::Update, "k" + std::to_string(i) + "@x.io",
		                             "10" + std::to_string(i)));
	auto connector = MakeConnector(kind);
	Endpoint endpoint = fuzz::FuzzEndpoint(kind);
	Route route = kind == "salesforce" ? fuzz::FuzzRoute("Contact", "External_Id__c")
	                                   : fuzz::FuzzRoute("contacts", "email");
	Auth auth;
	auth.bearer = endpoint.secret;
	auth.instance_url = "https://acme.my.salesforce.com";
	try {
		std::vector<Call> calls = connector->BuildCalls(endpoint, route, changes, auth);
		for (const Call &call : calls) {
			CallResult result = connector->ParseResult(call, changes, response);
			if (result.results.size() != call.changes.size())
				__builtin_trap(); // the contract: one result per change of the call
		}
	} catch (const std::exception &) {
	}
	return 0;
}
