// The json_schema check of openai enrich answers: see json_schema_check.h for the subset.
#include "connectors/json_schema_check.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

const char *const kTypeNames[] = {"string", "number", "integer", "boolean", "object", "array", "null"};

bool
KnownType(const Json &name)
{
	if (!name.is_string())
		return false;
	for (const char *known : kTypeNames)
		if (name.get_ref<const std::string &>() == known)
			return true;
	return false;
}

// At most max_bytes of text, cut at a UTF-8 character boundary ("…" when cut).
std::string
Cut(const std::string &text, size_t max_bytes)
{
	if (text.size() <= max_bytes)
		return text;
	size_t end = max_bytes;
	while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
		end--;
	return text.substr(0, end) + "\xE2\x80\xA6";
}

// value's JSON text, written only as far as max_bytes: never a whole large answer per check.
void
Brief(const Json &value, size_t max_bytes, std::string *out)
{
	if (out->size() > max_bytes)
		return;
	if (value.is_string()) {
		const std::string &text = value.get_ref<const std::string &>();
		*out += Json(Cut(text, max_bytes)).dump(-1, ' ', false, Json::error_handler_t::replace);
	} else if (value.is_array()) {
		*out += '[';
		for (size_t i = 0; i < value.size() && out->size() <= max_bytes; ++i) {
			if (i)
				*out += ',';
			Brief(value[i], max_bytes, out);
		}
		*out += ']';
	} else if (value.is_object()) {
		*out += '{';
		bool first = true;
		for (auto it = value.begin(); it != value.end() && out->size() <= max_bytes; ++it) {
			if (!first)
				*out += ',';
			first = false;
			Brief(Json(Cut(it.key(), max_bytes)), max_bytes, out);
			*out += ':';
			Brief(it.value(), max_bytes, out);
		}
		*out += '}';
	} else {
		*out += value.dump();
	}
}

std::string
Shown(const Json &value, size_t max_bytes = 80)
{
	std::string text;
	Brief(value, max_bytes, &text);
	return Cut(text, max_bytes);
}

// The JSON pointer "#/a/b" (a $ref inside the schema) resolved against root; nullptr when it
// does not resolve or points outside the schema (another document, a URL).
const Json *
Resolve(const Json &root, const std::string &ref)
{
	if (ref.empty() || ref[0] != '#')
		return nullptr;
	if (ref.size() == 1)
		return &root;
	if (ref[1] != '/')
		return nullptr; // "#name" anchors: not used by OpenAI's schemas
	const Json *at = &root;
	size_t i = 2;
	while (true) {
		size_t slash = ref.find('/', i);
		std::string token = ref.substr(i, slash == std::string::npos ? std::string::npos : slash - i);
		std::string key;
		for (size_t k = 0; k < token.size(); ++k) {
			if (token[k] == '~' && k + 1 < token.size() && (token[k + 1] == '0' || token[k + 1] == '1')) {
				key += token[k + 1] == '0' ? '~' : '/';
				k++;
			} else {
				key += token[k];
			}
		}
		if (at->is_object()) {
			auto it = at->find(key);
			if (it == at->end())
				return nullptr;
			at = &*it;
		} else if (at->is_array()) {
			if (key.empty() || key.size() > 9 || key.find_first_not_of("0123456789") != std::string::npos)
				return nullptr;
			size_t index = std::stoul(key);
			if (index >= at->size())
				return nullptr;
			at = &(*at)[index];
		} else {
			return nullptr;
		}
		if (slash == std::string::npos)
			return at;
		i = slash + 1;
	}
}

// A non-negative integer (parsed JSON holds these unsigned, C++-built JSON signed).
bool
NonNegative(const Json &n, uint64_t *out = nullptr)
{
	if (n.is_number_unsigned() || (n.is_number_integer() && n.get<int64_t>() >= 0)) {
		if (out)
			*out = n.get<uint64_t>();
		return true;
	}
	return false;
}

// ---- write time ----------------------------------------------------------------------------

class SchemaWalk {
public:
	explicit SchemaWalk(const Json &root) : root_(root) {}

	std::string Walk(const Json &schema, const std::string &where, int depth)
	{
		if (depth > kMaxSchemaDepth)
			return where + ": nested deeper than " + std::to_string(kMaxSchemaDepth) + " levels";
		if (schema.is_boolean())
			return std::string();
		if (!schema.is_object())
			return where + ": a schema must be an object (or true/false), got " + Shown(schema);
		nodes_.emplace_back(&schema, where);
		std::string problem;
		auto sub = [&](const Json &s, const std::string &at) {
			if (problem.empty())
				problem = Walk(s, at, depth + 1);
		};
		auto map_of_schemas = [&](const char *keyword) {
			if (!schema.contains(keyword))
				return;
			const Json &m = schema[keyword];
			if (!m.is_object()) {
				problem = where + "/" + keyword + ": must be an object of schemas, got " + Shown(m);
				return;
			}
			for (auto it = m.begin(); it != m.end() && problem.empty(); ++it)
				sub(it.value(), where + "/" + keyword + "/" + Escaped(it.key()));
		};
		auto number = [&](const char *keyword, bool count) {
			if (!problem.empty() || !schema.contains(keyword))
				return;
			const Json &n = schema[keyword];
			bool ok = count ? NonNegative(n) : n.is_number();
			if (!ok)
				problem = where + "/" + keyword + ": must be " + (count ? "a non-negative integer" : "a number") +
				          ", got " + Shown(n);
		};

		if (schema.contains("type")) {
			const Json &type = schema["type"];
			if (type.is_array()) {
				if (type.empty())
					return where + "/type: an empty list of types matches nothing";
				for (const auto &t : type)
					if (!KnownType(t))
						return where + "/type: unknown type " + Shown(t) + " (known: string, number, integer, " +
						       "boolean, object, array, null)";
			} else if (!KnownType(type)) {
				return where + "/type: unknown type " + Shown(type) +
				       " (known: string, number, integer, boolean, object, array, null)";
			}
		}
		if (schema.contains("required")) {
			const Json &required = schema["required"];
			bool ok = required.is_array();
			for (const auto &name : required)
				ok = ok && name.is_string();
			if (!ok)
				return where + "/required: must be an array of property names, got " + Shown(required);
		}
		if (schema.contains("enum") && (!schema["enum"].is_array() || schema["enum"].empty()))
			return where + "/enum: must be a non-empty array, got " + Shown(schema["enum"]);
		if (schema.contains("$ref")) {
			const Json &ref = schema["$ref"];
			if (!ref.is_string())
				return where + "/$ref: must be a string, got " + Shown(ref);
			const Json *target = Resolve(root_, ref.get<std::string>());
			if (!target)
				return where + "/$ref: " + Shown(ref) +
				       " does not resolve (refs point into this schema: \"#\", \"#/$defs/name\")";
			if (!target->is_object() && !target->is_boolean())
				return where + "/$ref: " + Shown(ref) + " is not a schema, got " + Shown(*target);
		}
		if (schema.contains("anyOf")) {
			const Json &any = schema["anyOf"];
			if (!any.is_array() || any.empty())
				return where + "/anyOf: must be a non-empty array of schemas, got " + Shown(any);
			for (size_t i = 0; i < any.size() && problem.empty(); ++i)
				sub(any[i], where + "/anyOf/" + std::to_string(i));
		}
		map_of_schemas("properties");
		map_of_schemas("$defs");
		map_of_schemas("definitions");
		if (problem.empty() && schema.contains("additionalProperties"))
			sub(schema["additionalProperties"], where + "/additionalProperties");
		if (problem.empty() && schema.contains("items"))
			sub(schema["items"], where + "/items");
		number("minimum", false);
		number("maximum", false);
		number("exclusiveMinimum", false);
		number("exclusiveMaximum", false);
		number("minLength", true);
		number("maxLength", true);
		number("minItems", true);
		number("maxItems", true);
		return problem;
	}

	// A $ref or anyOf that comes back to a schema on its own path without entering a property
	// or an item would never end on any value.
	std::string Loops()
	{
		for (const auto &node : nodes_) {
			std::string why;
			if (Visit(node.first, node.second, 0, &why))
				return why;
		}
		return std::string();
	}

private:
	static std::string Escaped(const std::string &key)
	{
		std::string out;
		for (char c : key)
			out += c == '~' ? std::string("~0") : c == '/' ? std::string("~1") : std::string(1, c);
		return out;
	}

	// Depth-first over the edges that do not consume any of the value ($ref, anyOf). Only a
	// $ref can close a loop (anyOf's schemas are inline).
	bool Visit(const Json *node, const std::string &where, int depth, std::string *why)
	{
		int &color = color_[node]; // std::map: stays valid while the map grows
		if (color == 2)
			return false;
		if (depth > kMaxSchemaDepth) {
			*why = where + ": $ref and anyOf nest deeper than " + std::to_string(kMaxSchemaDepth) + " levels";
			return true;
		}
		color = 1;
		if (node->is_object()) {
			if (node->contains("$ref") && (*node)["$ref"].is_string()) {
				const Json *target = Resolve(root_, (*node)["$ref"].get<std::string>());
				if (target && color_[target] == 1) {
					*why = where + ": $ref " + Shown((*node)["$ref"]) +
					       " loops back to a schema it came from without entering a property or an item";
					return true;
				}
				if (target && Visit(target, (*node)["$ref"].get<std::string>(), depth + 1, why))
					return true;
			}
			if (node->contains("anyOf") && (*node)["anyOf"].is_array()) {
				const Json &any = (*node)["anyOf"];
				for (size_t i = 0; i < any.size(); ++i)
					if (Visit(&any[i], where + "/anyOf/" + std::to_string(i), depth + 1, why))
						return true;
			}
		}
		color = 2;
		return false;
	}

	const Json &root_;
	std::vector<std::pair<const Json *, std::string>> nodes_; // every schema met, with where
	std::map<const Json *, int> color_;                       // 1: on the current path, 2: done
};

// ---- the answer ----------------------------------------------------------------------------

const char *
TypeOf(const Json &value)
{
	switch (value.type()) {
	case Json::value_t::null:
		return "null";
	case Json::value_t::boolean:
		return "boolean";
	case Json::value_t::number_integer:
	case Json::value_t::number_unsigned:
		return "integer";
	case Json::value_t::number_float:
		return "number";
	case Json::value_t::string:
		return "string";
	case Json::value_t::array:
		return "array";
	case Json::value_t::object:
		return "object";
	default:
		return "a value of no JSON type";
	}
}

bool
HasType(const Json &value, const std::string &type)
{
	if (type == "integer") {
		if (value.is_number_integer())
			return true;
		if (!value.is_number_float())
			return false;
		double d = value.get<double>();
		return std::isfinite(d) && std::trunc(d) == d;
	}
	if (type == "number")
		return value.is_number();
	return type == TypeOf(value);
}

size_t
CodePoints(const std::string &text)
{
	size_t n = 0;
	for (char c : text)
		n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
	return n;
}

std::string
Number(const Json &n)
{
	return Shown(n, 40);
}

class Checker {
public:
	explicit Checker(const Json &root) : root_(root) {}

	// "" or "path: reason"; path_ holds the value's path while checking it.
	std::string Check(const Json &schema, const Json &value, int depth, int hops)
	{
		if (++steps_ > kMaxSchemaSteps)
			return Abort("the schema takes more than " + std::to_string(kMaxSchemaSteps) +
			             " steps to check (anyOf over $ref?)");
		if (depth > kMaxSchemaDepth)
			return Abort("the schema nests deeper than " + std::to_string(kMaxSchemaDepth) +
			             " levels here (a $ref loop?)");
		if (schema.is_boolean())
			return schema.get<bool>() ? std::string() : Say("no value is allowed here (the schema is false)");
		if (!schema.is_object())
			return std::string(); // JsonSchemaProblem refuses these at write time

		if (schema.contains("$ref") && schema["$ref"].is_string()) {
			const std::string &ref = schema["$ref"].get_ref<const std::string &>();
			if (hops >= kMaxSchemaRefHops)
				return Abort("more than " + std::to_string(kMaxSchemaRefHops) + " $ref in a row (a $ref loop?)");
			const Json *target = Resolve(root_, ref);
			if (!target)
				return Say("$ref " + Shown(ref) + " does not resolve");
			std::string r = Check(*target, value, depth + 1, hops + 1);
			if (!r.empty())
				return r;
		}

		if (schema.contains("type")) {
			const Json &type = schema["type"];
			bool ok = false;
			std::string expected;
			if (type.is_string()) {
				ok = HasType(value, type.get<std::string>());
				expected = type.get<std::string>();
			} else if (type.is_array()) {
				for (const auto &t : type) {
					if (!t.is_string())
						continue;
					ok = ok || HasType(value, t.get<std::string>());
					expected += (expected.empty() ? "" : " or ") + t.get<std::string>();
				}
			} else {
				ok = true;
			}
			if (!ok)
				return Say("expected " + expected + ", got " + TypeOf(value));
		}
		if (schema.contains("enum") && schema["enum"].is_array()) {
			steps_ += static_cast<long>(schema["enum"].size()); // each comparison is work too
			bool found = false;
			for (const auto &option : schema["enum"])
				found = found || option == value;
			if (!found)
				return Say(Shown(value, 60) + " is not one of " + Shown(schema["enum"], 120));
		}
		if (schema.contains("const") && schema["const"] != value)
			return Say("expected " + Shown(schema["const"], 60) + ", got " + Shown(value, 60));
		if (schema.contains("anyOf") && schema["anyOf"].is_array()) {
			std::string first;
			bool matched = false;
			for (const auto &branch : schema["anyOf"]) {
				std::string r = Check(branch, value, depth + 1, hops);
				if (aborted_)
					return r;
				if (r.empty()) {
					matched = true;
					break;
				}
				if (first.empty())
					first = r;
			}
			if (!matched && !schema["anyOf"].empty())
				return Say("matches none of the " + std::to_string(schema["anyOf"].size()) +
				           " anyOf schemas (the first: " + first + ")");
		}

		if (value.is_number()) {
			double v = value.get<double>();
			auto bound = [&](const char *keyword, bool (*fails)(double, double), const char *what) -> std::string {
				if (!schema.contains(keyword) || !schema[keyword].is_number())
					return std::string();
				if (fails(v, schema[keyword].get<double>()))
					return Say(Number(value) + " is " + what + " " + Number(schema[keyword]));
				return std::string();
			};
			std::string r = bound(
			    "minimum", [](double a, double b) { return a < b; }, "less than the minimum");
			if (r.empty())
				r = bound(
				    "maximum", [](double a, double b) { return a > b; }, "more than the maximum");
			if (r.empty())
				r = bound(
				    "exclusiveMinimum", [](double a, double b) { return a <= b; }, "not more than");
			if (r.empty())
				r = bound(
				    "exclusiveMaximum", [](double a, double b) { return a >= b; }, "not less than");
			if (!r.empty())
				return r;
		}
		if (value.is_string()) {
			size_t n = CodePoints(value.get_ref<const std::string &>());
			std::string r = Count(schema, "minLength", "maxLength", n, "characters");
			if (!r.empty())
				return r;
		}

		if (value.is_array()) {
			std::string r = Count(schema, "minItems", "maxItems", value.size(), "items");
			if (!r.empty())
				return r;
			if (schema.contains("items") && (schema["items"].is_object() || schema["items"].is_boolean())) {
				for (size_t i = 0; i < value.size(); ++i) {
					size_t mark = path_.size();
					path_ += "[" + std::to_string(i) + "]";
					r = Check(schema["items"], value[i], depth + 1, 0);
					path_.resize(mark);
					if (!r.empty())
						return r;
				}
			}
		}

		if (value.is_object()) {
			if (schema.contains("required") && schema["required"].is_array())
				for (const auto &name : schema["required"])
					if (name.is_string() && !value.contains(name.get<std::string>()))
						return Say("missing required property " + Shown(name));
			const Json *properties = schema.contains("properties") && schema["properties"].is_object()
			                             ? &schema["properties"]
			                             : nullptr;
			const Json *additional = schema.contains("additionalProperties") ? &schema["additionalProperties"]
			                                                                 : nullptr;
			for (auto it = value.begin(); it != value.end(); ++it) {
				const Json *sub = nullptr;
				if (properties && properties->contains(it.key()))
					sub = &(*properties)[it.key()];
				else if (additional && additional->is_boolean() && !additional->get<bool>())
					return Say("unexpected property " + Shown(Json(it.key())));
				else if (additional && additional->is_object())
					sub = additional;
				if (!sub)
					continue;
				size_t mark = path_.size();
				path_ += Member(it.key());
				std::string r = Check(*sub, it.value(), depth + 1, 0);
				path_.resize(mark);
				if (!r.empty())
					return r;
			}
		}
		return std::string();
	}

private:
	std::string Say(const std::string &reason) const { return Cut(path_, 300) + ": " + reason; }

	std::string Abort(const std::string &reason)
	{
		aborted_ = true;
		return Say(reason);
	}

	std::string Count(const Json &schema, const char *min, const char *max, size_t n, const char *what) const
	{
		uint64_t bound = 0;
		if (schema.contains(min) && NonNegative(schema[min], &bound) && n < bound)
			return Say(std::to_string(n) + " " + what + ", fewer than " + min + " " + Number(schema[min]));
		if (schema.contains(max) && NonNegative(schema[max], &bound) && n > bound)
			return Say(std::to_string(n) + " " + what + ", more than " + max + " " + Number(schema[max]));
		return std::string();
	}

	// ".name", or ["any key"] when the key is not a plain name.
	static std::string Member(const std::string &key)
	{
		bool plain = !key.empty() && !std::isdigit(static_cast<unsigned char>(key[0]));
		for (char c : key)
			plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
		if (plain)
			return "." + Cut(key, 60);
		return "[" + Shown(Json(key), 60) + "]";
	}

	const Json &root_;
	std::string path_ = "$";
	long steps_ = 0;
	bool aborted_ = false;
};

} // namespace

const Json &
StepJsonSchema(const Json &option)
{
	if (option.is_object() && option.contains("schema") && option["schema"].is_object())
		return option["schema"];
	return option;
}

std::string
JsonSchemaProblem(const Json &schema)
{
	SchemaWalk walk(schema);
	std::string problem = walk.Walk(schema, "#", 0);
	if (problem.empty())
		problem = walk.Loops();
	return problem;
}

std::string
JsonSchemaMismatch(const Json &schema, const Json &value)
{
	Checker checker(schema);
	return checker.Check(schema, value, 0, 0);
}

} // namespace switchboard
