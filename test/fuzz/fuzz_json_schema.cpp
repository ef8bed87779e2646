// The json_schema check of openai enrich answers: a schema and a value, split from the input
// at its first NUL byte (none: the input is both), each parsed as remote JSON. Any schema,
// also one write time would refuse, must end the check with "" or a mismatch.
#include <cstring>
#include <exception>
#include <string>

#include "connectors/json_schema_check.h"
#include "http/json_limits.h"

using namespace switchboard;

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = reinterpret_cast<const char *>(data);
	const void *nul = std::memchr(text, 0, size);
	size_t split = nul ? static_cast<size_t>(static_cast<const char *>(nul) - text) : size;
	Json schema = TryParseRemoteJson(std::string(text, split));
	Json value = nul ? TryParseRemoteJson(std::string(text + split + 1, size - split - 1)) : schema;
	if (schema.is_discarded() || value.is_discarded())
		return 0;
	try {
		std::string problem = JsonSchemaProblem(schema);
		std::string mismatch = JsonSchemaMismatch(schema, value);
		// A mismatch is "path: reason", the path from $.
		if (!mismatch.empty() && mismatch[0] != '$')
			__builtin_trap();
		(void) Json(problem + mismatch).dump(); // stored as text: valid UTF-8
	} catch (const std::bad_alloc &) {
	}
	return 0;
}
