// OpenAI chat completion answers (the model's JSON arrives inside a string: parsed twice).
#include <exception>

#include "connectors/connector.h"
#include "fuzz_common.h"

using namespace switchboard;

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	try {
		ChatResult result = ParseChatResult(fuzz::ResponseFrom(data, size));
		if (result.outcome == Outcome::Delivered)
			(void) result.output.dump(); // stored by the worker
	} catch (const std::exception &) {
	}
	return 0;
}
