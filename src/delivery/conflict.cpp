#include "delivery/conflict.h"

#include <cctype>
#include <cstdlib>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

ConflictWinner
SettleConflict(const std::string &rule, int64_t remote_modified_ms, int64_t local_newest_ms)
{
	if (rule == "remote")
		return ConflictWinner::Remote;
	if (rule == "newest" && remote_modified_ms > local_newest_ms)
		return ConflictWinner::Remote;
	return ConflictWinner::Local;
}

namespace {

// A value as text, the way HubSpot stores every property: strings as they are, null as "".
// nullopt for structured values (never the same as anything but an equal structure).
bool
AsText(const nlohmann::json &value, std::string *out)
{
	if (value.is_null())
		*out = "";
	else if (value.is_string())
		*out = value.get<std::string>();
	else if (value.is_boolean())
		*out = value.get<bool>() ? "true" : "false";
	else if (value.is_number())
		*out = value.dump();
	else
		return false;
	return true;
}

bool
AsNumber(const std::string &text, double *out)
{
	if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) != 0)
		return false;
	char *end = nullptr;
	*out = std::strtod(text.c_str(), &end);
	return end == text.c_str() + text.size();
}

std::string
Lower(const std::string &text)
{
	std::string out = text;
	for (char &c : out)
		c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
	return out;
}

const nlohmann::json *
FieldAnyCase(const nlohmann::json &object, const std::string &name)
{
	if (!object.is_object())
		return nullptr;
	auto exact = object.find(name);
	if (exact != object.end())
		return &*exact;
	const std::string wanted = Lower(name);
	for (auto it = object.begin(); it != object.end(); ++it)
		if (Lower(it.key()) == wanted)
			return &*it;
	return nullptr;
}

} // namespace

bool
SameRemoteValue(const nlohmann::json &pushed, const nlohmann::json &pulled)
{
	std::string a, b;
	if (!AsText(pushed, &a) || !AsText(pulled, &b))
		return pushed == pulled;
	if (a == b)
		return true;
	double x = 0, y = 0;
	return AsNumber(a, &x) && AsNumber(b, &y) && x == y;
}

bool
IsEchoOfPush(const nlohmann::json &pushed, const nlohmann::json &pulled, const std::vector<std::string> &compared)
{
	if (!pushed.is_object() || !pulled.is_object())
		return false;
	int same = 0;
	for (const std::string &field : compared) {
		auto sent = pushed.find(field);
		const nlohmann::json *got = FieldAnyCase(pulled, field);
		if (sent == pushed.end() || got == nullptr)
			continue;
		if (!SameRemoteValue(*sent, *got))
			return false;
		same++;
	}
	return same > 0;
}

} // namespace switchboard
