#include "http/redact.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

const char kMask[] = "****";
const char kElided[] = "/\u2026"; // "/…"

// Keys whose values are credentials. Matched as whole names (password_hint is not one).
const char *const kSecretKeys[] = {"access_token", "refresh_token", "id_token", "client_secret",
                                   "password",     "passwd",        "api_key",  "apikey"};

bool
IsNameChar(char c)
{
	return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

bool
IsSchemeChar(char c)
{
	return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '.' || c == '-';
}

bool
IsSpaceOrControl(char c)
{
	unsigned char u = static_cast<unsigned char>(c);
	return u <= 0x20 || u == 0x7F;
}

// Where a URL quoted in free text ends.
bool
EndsUrl(const std::string &text, size_t i)
{
	char c = text[i];
	if (IsSpaceOrControl(c) || c == '"' || c == '\'' || c == '<' || c == '>' || c == '`')
		return true;
	return c == '\\' && i + 1 < text.size() && text[i + 1] == '"'; // an escaped quote in JSON
}

// Where the authority (user info, host, port) of a URL ends.
bool
EndsAuthority(const std::string &text, size_t i)
{
	char c = text[i];
	return EndsUrl(text, i) || c == '/' || c == '\\' || c == '?' || c == '#' || c == ',' || c == ')' || c == '}' ||
	       c == '|' || c == '^';
}

bool
StartsWithAt(const std::string &text, size_t pos, const char *what)
{
	return text.compare(pos, std::strlen(what), what) == 0;
}

// Masks the URL whose "://" (or JSON-escaped ":\/\/") separator is at sep; scheme_begin is
// where its scheme starts. Appends the masked URL to out and returns the index after it.
size_t
MaskUrlAt(const std::string &text, size_t scheme_begin, size_t sep, size_t sep_len, std::string *out)
{
	out->append(text, scheme_begin, sep + sep_len - scheme_begin);
	size_t host_begin = sep + sep_len;
	size_t i = host_begin;
	while (i < text.size() && !EndsAuthority(text, i))
		i++;
	std::string authority = text.substr(host_begin, i - host_begin);
	size_t at = authority.rfind('@');
	if (at != std::string::npos)
		authority = std::string(kMask) + authority.substr(at);
	out->append(authority);
	size_t rest = i;
	while (i < text.size() && !EndsUrl(text, i))
		i++;
	if (i == rest)
		return i;
	if (i - rest == 1 && text[rest] == '/')
		out->push_back('/'); // just the root: nothing to hide
	else
		out->append(kElided);
	return i;
}

// Finds a URL separator at i: "://" or ":\/\/"; returns its length or 0.
size_t
UrlSeparatorAt(const std::string &text, size_t i)
{
	if (StartsWithAt(text, i, "://"))
		return 3;
	if (StartsWithAt(text, i, ":\\/\\/"))
		return 5;
	return 0;
}

// Length of the credential value at i (a JSON string with its quotes, an escaped JSON
// string, or a bare word), and where its inner text begins/ends; 0 when there is none.
bool
ValueAt(const std::string &text, size_t i, size_t *inner_begin, size_t *inner_end, size_t *after)
{
	if (i >= text.size())
		return false;
	if (StartsWithAt(text, i, "\\\"")) {
		size_t close = text.find("\\\"", i + 2);
		*inner_begin = i + 2;
		*inner_end = close == std::string::npos ? text.size() : close;
		*after = close == std::string::npos ? text.size() : close + 2;
		return true;
	}
	if (text[i] == '"') {
		size_t j = i + 1;
		while (j < text.size() && text[j] != '"')
			j += text[j] == '\\' ? 2 : 1;
		j = std::min(j, text.size());
		*inner_begin = i + 1;
		*inner_end = j;
		*after = j < text.size() ? j + 1 : j;
		return true;
	}
	size_t j = i;
	while (j < text.size() && !IsSpaceOrControl(text[j]) && std::strchr("&,;}])\"'<>\\", text[j]) == nullptr)
		j++;
	if (j == i)
		return false;
	*inner_begin = i;
	*inner_end = j;
	*after = j;
	return true;
}

// If a secret key starts at i (as a whole name), masks its value: appends the key, the
// separator and "****" to out and returns the index after the value; else returns i.
size_t
MaskKeyValueAt(const std::string &text, size_t i, std::string *out)
{
	if (i > 0 && IsNameChar(text[i - 1]))
		return i;
	for (const char *key : kSecretKeys) {
		size_t len = std::strlen(key);
		if (i + len > text.size())
			continue;
		bool same = true;
		for (size_t k = 0; k < len && same; k++)
			same = std::tolower(static_cast<unsigned char>(text[i + k])) == key[k];
		if (!same || (i + len < text.size() && IsNameChar(text[i + len])))
			continue;
		// The key may close its JSON quotes ("key": / \"key\":), then ':' or '='.
		size_t j = i + len;
		if (StartsWithAt(text, j, "\\\""))
			j += 2;
		else if (j < text.size() && text[j] == '"')
			j++;
		while (j < text.size() && (text[j] == ' ' || text[j] == '\t'))
			j++;
		if (j >= text.size() || (text[j] != ':' && text[j] != '='))
			return i;
		j++;
		while (j < text.size() && (text[j] == ' ' || text[j] == '\t'))
			j++;
		size_t inner_begin = 0, inner_end = 0, after = 0;
		if (!ValueAt(text, j, &inner_begin, &inner_end, &after))
			return i;
		out->append(text, i, inner_begin - i);
		out->append(kMask);
		out->append(text, inner_end, after - inner_end);
		return after;
	}
	return i;
}

// "Bearer <token>" / "Basic <credentials>" at i: masks the credential.
size_t
MaskAuthSchemeAt(const std::string &text, size_t i, std::string *out)
{
	if (i > 0 && IsNameChar(text[i - 1]))
		return i;
	for (const char *scheme : {"bearer", "basic"}) {
		size_t len = std::strlen(scheme);
		bool same = i + len < text.size();
		for (size_t k = 0; k < len && same; k++)
			same = std::tolower(static_cast<unsigned char>(text[i + k])) == scheme[k];
		if (!same || text[i + len] != ' ')
			continue;
		size_t j = i + len;
		while (j < text.size() && text[j] == ' ')
			j++;
		size_t token = j;
		while (j < text.size() &&
		       (std::isalnum(static_cast<unsigned char>(text[j])) || std::strchr("-._~+/=!%", text[j]) != nullptr))
			j++;
		// "Basic" is also a plain word: only mask what looks like base64 credentials.
		size_t min_len = scheme[1] == 'a' ? 8 : 1;
		if (j - token < min_len)
			continue;
		out->append(text, i, token - i);
		out->append(kMask);
		return j;
	}
	return i;
}

} // namespace

std::string
MaskUrl(const std::string &url)
{
	size_t sep = url.find("://");
	if (sep == std::string::npos || sep == 0)
		return kElided + 1; // "…"
	std::string out;
	size_t end = MaskUrlAt(url, 0, sep, 3, &out);
	if (end < url.size() && out.compare(out.size() - std::strlen(kElided), std::string::npos, kElided) != 0)
		out.append(kElided);
	return out;
}

std::string
RedactText(const std::string &text)
{
	std::string out;
	out.reserve(text.size());
	size_t i = 0;
	size_t verbatim_from = 0; // out ends with text[verbatim_from, i) copied as is
	while (i < text.size()) {
		size_t sep_len = UrlSeparatorAt(text, i);
		if (sep_len > 0) {
			// Take back the scheme already copied.
			size_t scheme_begin = i;
			while (scheme_begin > verbatim_from && IsSchemeChar(text[scheme_begin - 1]))
				scheme_begin--;
			// Even without a scheme (it may have been masked already) the path is hidden.
			out.erase(out.size() - (i - scheme_begin));
			i = verbatim_from = MaskUrlAt(text, scheme_begin, i, sep_len, &out);
			continue;
		}
		size_t next = MaskKeyValueAt(text, i, &out);
		if (next == i)
			next = MaskAuthSchemeAt(text, i, &out);
		if (next != i) {
			i = verbatim_from = next;
			continue;
		}
		out.push_back(text[i]);
		i++;
	}
	return out;
}

std::string
RedactedExcerpt(const std::string &text, size_t max_bytes)
{
	// Masking reads only a bounded prefix: cutting a secret's value short cannot reveal it.
	const size_t window = std::max<size_t>(4096, 4 * max_bytes);
	std::string masked = RedactText(text.size() > window ? text.substr(0, window) : text);
	std::string out;
	out.reserve(std::min(masked.size(), max_bytes));
	size_t i = 0;
	while (i < masked.size()) {
		unsigned char c = static_cast<unsigned char>(masked[i]);
		size_t len = 1;
		if (c >= 0xF0)
			len = 4;
		else if (c >= 0xE0)
			len = 3;
		else if (c >= 0xC0)
			len = 2;
		if (i + len > masked.size())
			len = masked.size() - i;
		if (out.size() + len > max_bytes)
			return out + "...";
		if (c < 0x20 || c == 0x7F)
			out += ' ';
		else
			out.append(masked, i, len);
		i += len;
	}
	if (text.size() > window)
		out += "...";
	return out;
}

} // namespace switchboard
