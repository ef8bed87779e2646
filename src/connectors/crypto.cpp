#include "connectors/crypto.h"

#include <climits>
#include <stdexcept>
#include <utility>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int
Base64Value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

} // namespace

std::string
Base64Encode(const std::string &bytes)
{
	std::string out;
	out.reserve((bytes.size() + 2) / 3 * 4);
	size_t i = 0;
	for (; i + 3 <= bytes.size(); i += 3) {
		unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
		             static_cast<unsigned char>(bytes[i + 2]);
		out += kAlphabet[(v >> 18) & 63];
		out += kAlphabet[(v >> 12) & 63];
		out += kAlphabet[(v >> 6) & 63];
		out += kAlphabet[v & 63];
	}
	size_t rest = bytes.size() - i;
	if (rest == 1) {
		unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
		out += kAlphabet[(v >> 18) & 63];
		out += kAlphabet[(v >> 12) & 63];
		out += "==";
	} else if (rest == 2) {
		unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8);
		out += kAlphabet[(v >> 18) & 63];
		out += kAlphabet[(v >> 12) & 63];
		out += kAlphabet[(v >> 6) & 63];
		out += '=';
	}
	return out;
}

bool
Base64Decode(const std::string &text, std::string *out)
{
	// Hand-rolled rather than EVP_DecodeBlock: that one accepts whitespace and returns
	// padding bytes as zeros, and a secret that decodes "somehow" would sign with the
	// wrong key without anyone noticing.
	size_t len = text.size();
	size_t padding = 0;
	while (padding < 2 && len > 0 && text[len - 1] == '=') {
		--len;
		++padding;
	}
	if (padding > 0 && (len + padding) % 4 != 0)
		return false;
	if (len % 4 == 1)
		return false;
	std::string decoded;
	decoded.reserve(len / 4 * 3 + 2);
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; ++i) {
		int v = Base64Value(text[i]);
		if (v < 0)
			return false;
		acc = (acc << 6) | static_cast<unsigned>(v);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			decoded += static_cast<char>((acc >> bits) & 0xFF);
		}
	}
	// Leftover bits must be zero, otherwise two encodings would map to one key.
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return false;
	*out = std::move(decoded);
	return true;
}

std::string
HmacSha256(const std::string &key, const std::string &message)
{
	if (key.size() > static_cast<size_t>(INT_MAX))
		throw std::invalid_argument("HMAC key too long");
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	// One-shot HMAC(): OpenSSL keeps no state for us to free, so nothing can leak on a throw.
	if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
	         reinterpret_cast<const unsigned char *>(message.data()), message.size(), digest, &digest_len) == nullptr)
		throw std::runtime_error("HMAC-SHA256 failed");
	return std::string(reinterpret_cast<const char *>(digest), digest_len);
}

} // namespace switchboard
