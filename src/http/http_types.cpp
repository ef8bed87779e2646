#include "http/http_types.h"

#include <cctype>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

std::string
HeaderValue(const Headers &headers, const std::string &name)
{
	auto same = [](const std::string &a, const std::string &b) {
		if (a.size() != b.size())
			return false;
		for (size_t i = 0; i < a.size(); ++i)
			if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
				return false;
		return true;
	};
	for (const auto &header : headers)
		if (same(header.first, name))
			return header.second;
	return std::string();
}

} // namespace switchboard
