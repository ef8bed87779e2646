// The limited parser every remote answer goes through.
#include <exception>
#include <string>

#include "http/json_limits.h"

using namespace switchboard;

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::string text(reinterpret_cast<const char *>(data), size);
	std::string refused;
	Json value = TryParseRemoteJson(text, &refused);
	if (!value.is_discarded()) {
		Json copy = value; // the recursive operations the limit protects
		if (copy != value)
			__builtin_trap();
		(void) copy.dump();
	}
	try {
		(void) ParseRemoteJson(text);
	} catch (const RemoteJsonError &) {
	}
	return 0;
}
