#include "http/exact_json.h"

#include <cctype>
#include <cstdlib>
#include <utility>
#include <vector>

#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// Builds the value as nlohmann's own parser would, but with numbers a double would round kept
// as their text.
class KeepingDigits : public nlohmann::json_sax<Json> {
public:
	Json root;
	bool failed = false;

	bool null() override { return Put(nullptr); }
	bool boolean(bool value) override { return Put(value); }
	bool number_integer(number_integer_t value) override { return Put(value); }
	bool number_unsigned(number_unsigned_t value) override { return Put(value); }
	bool number_float(number_float_t value, const string_t &text) override
	{
		return DoubleHoldsExactly(text) ? Put(value) : Put(text);
	}
	bool string(string_t &value) override { return Put(std::move(value)); }
	bool binary(binary_t &) override { return false; } // not in JSON text
	bool start_object(std::size_t) override { return Open(Json::object()); }
	bool key(string_t &name) override
	{
		key_ = std::move(name);
		return true;
	}
	bool end_object() override { return Close(); }
	bool start_array(std::size_t) override { return Open(Json::array()); }
	bool end_array() override { return Close(); }
	bool parse_error(std::size_t, const std::string &, const nlohmann::detail::exception &) override
	{
		failed = true;
		return false;
	}

private:
	// The slot of the next value: the root, the end of the open array, or the open object's key.
	// The pointers on open_ stay valid: only the innermost open container ever changes.
	Json *Slot()
	{
		if (open_.empty())
			return &root;
		Json &top = *open_.back();
		if (top.is_array()) {
			top.push_back(nullptr);
			return &top.back();
		}
		return &top[key_];
	}
	template <typename T>
	bool Put(T &&value)
	{
		*Slot() = std::forward<T>(value);
		return true;
	}
	bool Open(Json container)
	{
		Json *slot = Slot();
		*slot = std::move(container);
		open_.push_back(slot);
		return true;
	}
	bool Close()
	{
		open_.pop_back();
		return true;
	}

	std::vector<Json *> open_;
	std::string key_;
};

} // namespace

bool
DoubleHoldsExactly(const std::string &number)
{
	size_t i = 0, n = number.size();
	if (i < n && number[i] == '-')
		i++;
	// The digits of the mantissa without leading and trailing zeros, and where its point is.
	std::string digits;
	long point = -1; // digits before the point
	for (; i < n && (std::isdigit(static_cast<unsigned char>(number[i])) || number[i] == '.'); i++) {
		if (number[i] == '.')
			point = static_cast<long>(digits.size());
		else
			digits += number[i];
	}
	if (point < 0)
		point = static_cast<long>(digits.size());
	long exponent = 0;
	if (i < n && (number[i] == 'e' || number[i] == 'E')) {
		const std::string e = number.substr(i + 1);
		if (e.size() > 6) // beyond any double either way
			return false;
		exponent = std::strtol(e.c_str(), nullptr, 10);
	}
	size_t first = digits.find_first_not_of('0');
	if (first == std::string::npos)
		return true; // zero
	size_t last = digits.find_last_not_of('0');
	// The decimal exponent of the first significant digit: 1.5e3 → 3, 0.001 → -3.
	long magnitude = point - static_cast<long>(first) - 1 + exponent;
	return last - first + 1 <= 15 && magnitude > -290 && magnitude < 290;
}

Json
ParseKeepingDigits(const std::string &text)
{
	KeepingDigits builder;
	bool ok = false;
	try {
		ok = Json::sax_parse(text, &builder);
	} catch (const Json::exception &) {
		ok = false;
	}
	if (!ok || builder.failed)
		return Json(Json::value_t::discarded);
	return std::move(builder.root);
}

} // namespace switchboard
