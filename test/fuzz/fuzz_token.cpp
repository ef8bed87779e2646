// Salesforce OAuth token answers.
#include <exception>

#include "connectors/connector.h"
#include "fuzz_common.h"

using namespace switchboard;

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	try {
		SalesforceToken token = ParseSalesforceToken(fuzz::ResponseFrom(data, size));
		if (token.access_token.empty() || token.instance_url.empty())
			__builtin_trap(); // documented: a token answer without them throws
	} catch (const std::exception &) {
	}
	return 0;
}
