// The json_schema check of openai enrich answers (connectors/json_schema_check.h): every
// keyword of the subset, paths, $ref (also to itself), the depth and step guards, and the
// write-time problems.
#include <gtest/gtest.h>

#include <string>

#include "connectors/json_schema_check.h"

namespace switchboard {
namespace {

Json
J(const char *text)
{
	return Json::parse(text);
}

std::string
Mismatch(const char *schema, const char *value)
{
	return JsonSchemaMismatch(J(schema), J(value));
}

TEST(JsonSchema, Types)
{
	EXPECT_EQ(Mismatch(R"({"type":"string"})", R"("x")"), "");
	EXPECT_EQ(Mismatch(R"({"type":"string"})", "1"), "$: expected string, got integer");
	EXPECT_EQ(Mismatch(R"({"type":"number"})", "1"), "");
	EXPECT_EQ(Mismatch(R"({"type":"number"})", "1.5"), "");
	EXPECT_EQ(Mismatch(R"({"type":"number"})", R"("1")"), "$: expected number, got string");
	// integer: a number with no fractional part, however it is written.
	EXPECT_EQ(Mismatch(R"({"type":"integer"})", "7"), "");
	EXPECT_EQ(Mismatch(R"({"type":"integer"})", "-7"), "");
	EXPECT_EQ(Mismatch(R"({"type":"integer"})", "7.0"), "");
	EXPECT_EQ(Mismatch(R"({"type":"integer"})", "1e2"), "");
	EXPECT_EQ(Mismatch(R"({"type":"integer"})", "7.5"), "$: expected integer, got number");
	EXPECT_EQ(Mismatch(R"({"type":"boolean"})", "false"), "");
	EXPECT_EQ(Mismatch(R"({"type":"boolean"})", "0"), "$: expected boolean, got integer");
	EXPECT_EQ(Mismatch(R"({"type":"null"})", "null"), "");
	EXPECT_EQ(Mismatch(R"({"type":"object"})", "[]"), "$: expected object, got array");
	EXPECT_EQ(Mismatch(R"({"type":"array"})", "{}"), "$: expected array, got object");
	// An array of types: any of them.
	EXPECT_EQ(Mismatch(R"({"type":["string","null"]})", "null"), "");
	EXPECT_EQ(Mismatch(R"({"type":["string","null"]})", R"("a")"), "");
	EXPECT_EQ(Mismatch(R"({"type":["string","null"]})", "true"), "$: expected string or null, got boolean");
	// No type: anything.
	EXPECT_EQ(Mismatch(R"({})", "[1]"), "");
}

TEST(JsonSchema, ObjectsAndPaths)
{
	const char *schema = R"({"type":"object",
	    "properties":{"score":{"type":"integer"},"reason":{"type":"string"},
	                  "tags":{"type":"array","items":{"type":"string"}},
	                  "contact":{"type":"object","properties":{"first name":{"type":"string"}}}},
	    "required":["score","reason"],"additionalProperties":false})";
	EXPECT_EQ(Mismatch(schema, R"({"score":3,"reason":"ok"})"), "");
	EXPECT_EQ(Mismatch(schema, R"({"score":"3","reason":"ok"})"), "$.score: expected integer, got string");
	EXPECT_EQ(Mismatch(schema, R"({"score":3})"), "$: missing required property \"reason\"");
	EXPECT_EQ(Mismatch(schema, R"({"score":3,"reason":"ok","extra":1})"), "$: unexpected property \"extra\"");
	EXPECT_EQ(Mismatch(schema, R"({"score":3,"reason":"ok","tags":["a",null]})"),
	          "$.tags[1]: expected string, got null");
	EXPECT_EQ(Mismatch(schema, R"({"score":3,"reason":"ok","contact":{"first name":5}})"),
	          "$.contact[\"first name\"]: expected string, got integer");
	// Properties not listed are allowed unless additionalProperties says otherwise; a schema
	// there checks each of them.
	EXPECT_EQ(Mismatch(R"({"properties":{"a":{"type":"string"}}})", R"({"a":"x","b":1})"), "");
	EXPECT_EQ(Mismatch(R"({"additionalProperties":{"type":"integer"}})", R"({"a":1,"b":"2"})"),
	          "$.b: expected integer, got string");
	EXPECT_EQ(Mismatch(R"({"additionalProperties":true})", R"({"a":1})"), "");
	// Object keywords say nothing about other values.
	EXPECT_EQ(Mismatch(R"({"required":["a"]})", "3"), "");
}

TEST(JsonSchema, EnumConstAnyOf)
{
	EXPECT_EQ(Mismatch(R"({"enum":["hot","cold",null,1]})", R"("hot")"), "");
	EXPECT_EQ(Mismatch(R"({"enum":["hot","cold",null,1]})", "null"), "");
	EXPECT_EQ(Mismatch(R"({"enum":["hot","cold",null,1]})", "1.0"), "");
	EXPECT_EQ(Mismatch(R"({"enum":["hot","cold"]})", R"("warm")"), "$: \"warm\" is not one of [\"hot\",\"cold\"]");
	EXPECT_EQ(Mismatch(R"({"const":{"a":1}})", R"({"a":1})"), "");
	EXPECT_EQ(Mismatch(R"({"const":"v1"})", R"("v2")"), "$: expected \"v1\", got \"v2\"");
	const char *any = R"({"properties":{"x":{"anyOf":[{"type":"string"},{"type":"integer"}]}}})";
	EXPECT_EQ(Mismatch(any, R"({"x":"a"})"), "");
	EXPECT_EQ(Mismatch(any, R"({"x":2})"), "");
	EXPECT_EQ(Mismatch(any, R"({"x":[]})"),
	          "$.x: matches none of the 2 anyOf schemas (the first: $.x: expected string, got array)");
	// true and false schemas.
	EXPECT_EQ(Mismatch("true", "[1]"), "");
	EXPECT_EQ(Mismatch(R"({"properties":{"no":false}})", R"({"no":1})"),
	          "$.no: no value is allowed here (the schema is false)");
}

TEST(JsonSchema, Bounds)
{
	EXPECT_EQ(Mismatch(R"({"minimum":0,"maximum":100})", "100"), "");
	EXPECT_EQ(Mismatch(R"({"minimum":0,"maximum":100})", "-1"), "$: -1 is less than the minimum 0");
	EXPECT_EQ(Mismatch(R"({"minimum":0,"maximum":100})", "100.5"), "$: 100.5 is more than the maximum 100");
	EXPECT_EQ(Mismatch(R"({"exclusiveMinimum":0})", "0"), "$: 0 is not more than 0");
	EXPECT_EQ(Mismatch(R"({"exclusiveMaximum":1})", "1"), "$: 1 is not less than 1");
	// Lengths count characters (code points), not bytes.
	EXPECT_EQ(Mismatch(R"({"maxLength":2})", "\"\xC3\xA9\xC3\xA9\""), "");
	EXPECT_EQ(Mismatch(R"({"maxLength":2})", R"("abc")"), "$: 3 characters, more than maxLength 2");
	EXPECT_EQ(Mismatch(R"({"minLength":1})", R"("")"), "$: 0 characters, fewer than minLength 1");
	EXPECT_EQ(Mismatch(R"({"minItems":1})", "[]"), "$: 0 items, fewer than minItems 1");
	EXPECT_EQ(Mismatch(R"({"maxItems":1})", "[1,2]"), "$: 2 items, more than maxItems 1");
	// Bounds apply to their own kind of value only; pattern and format are not checked.
	EXPECT_EQ(Mismatch(R"({"minimum":5,"minLength":9})", R"("abc")"), "$: 3 characters, fewer than minLength 9");
	EXPECT_EQ(Mismatch(R"({"pattern":"^a$","format":"email"})", R"("zzz")"), "");
	// Bounds from C++-built JSON (signed integers) count too.
	EXPECT_EQ(JsonSchemaMismatch({{"maxItems", 1}}, Json::array({1, 2})), "$: 2 items, more than maxItems 1");
}

TEST(JsonSchema, Refs)
{
	const char *defs = R"({"$defs":{"name":{"type":"string"}},"definitions":{"n":{"type":"integer"}},
	    "properties":{"a":{"$ref":"#/$defs/name"},"b":{"$ref":"#/definitions/n"}}})";
	EXPECT_EQ(Mismatch(defs, R"({"a":"x","b":1})"), "");
	EXPECT_EQ(Mismatch(defs, R"({"a":1})"), "$.a: expected string, got integer");
	EXPECT_EQ(Mismatch(defs, R"({"b":"1"})"), "$.b: expected integer, got string");
	// A tree that refers to itself ("#"): checked as deep as the value goes.
	const char *tree = R"({"type":"object","properties":{"name":{"type":"string"},
	    "children":{"type":"array","items":{"$ref":"#"}}},"required":["name"],"additionalProperties":false})";
	EXPECT_EQ(JsonSchemaProblem(J(tree)), "");
	EXPECT_EQ(Mismatch(tree, R"({"name":"a","children":[{"name":"b","children":[{"name":"c"}]}]})"), "");
	EXPECT_EQ(Mismatch(tree, R"({"name":"a","children":[{"name":"b","children":[{"name":3}]}]})"),
	          "$.children[0].children[0].name: expected string, got integer");
	EXPECT_EQ(Mismatch(tree, R"({"name":"a","children":[{"children":[]}]})"),
	          "$.children[0]: missing required property \"name\"");
	// Escaped pointer tokens (~1 is /, ~0 is ~).
	EXPECT_EQ(Mismatch(R"({"$defs":{"a/b~":{"type":"null"}},"$ref":"#/$defs/a~1b~0"})", "1"),
	          "$: expected null, got integer");
	// Not resolvable: a mismatch at run time (write time refuses it first).
	EXPECT_EQ(Mismatch(R"({"$ref":"#/$defs/gone"})", "1"), "$: $ref \"#/$defs/gone\" does not resolve");
}

TEST(JsonSchema, LoopsAndDepthEndTheCheck)
{
	// A $ref to itself that never enters a property: ends, does not loop or overflow.
	std::string r = Mismatch(R"({"$ref":"#"})", "{}");
	EXPECT_NE(r.find("$ref loop"), std::string::npos) << r;
	r = Mismatch(R"({"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"})", "1");
	EXPECT_NE(r.find("$ref loop"), std::string::npos) << r;
	r = Mismatch(R"({"anyOf":[{"$ref":"#"}]})", "1");
	EXPECT_NE(r.find("$ref loop"), std::string::npos) << r;
	// Branching over itself: bounded in steps, not 2^depth.
	r = Mismatch(R"({"anyOf":[{"anyOf":[{"$ref":"#"},{"$ref":"#"}]},{"$ref":"#"},{"$ref":"#"}]})", "1");
	EXPECT_FALSE(r.empty());
	// Deep values under a recursive schema: fine up to the depth limit.
	std::string deep = "1";
	for (int i = 0; i < 60; ++i)
		deep = "[" + deep + "]";
	EXPECT_EQ(Mismatch(R"({"type":["array","integer"],"items":{"$ref":"#"}})", deep.c_str()), "");
	std::string bad = "\"x\"";
	for (int i = 0; i < 60; ++i)
		bad = "[" + bad + "]";
	r = Mismatch(R"({"type":["array","integer"],"items":{"$ref":"#"}})", bad.c_str());
	EXPECT_EQ(r.rfind("$[0][0][0]", 0), 0u) << r;
	EXPECT_NE(r.find(": expected array or integer, got string"), std::string::npos) << r;
	// A schema nested deeper than the limit ends the check with a mismatch.
	Json nested = {{"type", "array"}};
	for (int i = 0; i < kMaxSchemaDepth + 10; ++i)
		nested = {{"items", nested}};
	Json value = 1;
	for (int i = 0; i < kMaxSchemaDepth + 10; ++i)
		value = Json::array({value});
	r = JsonSchemaMismatch(nested, value);
	EXPECT_NE(r.find("deeper than"), std::string::npos) << r;
	EXPECT_NE(JsonSchemaProblem(nested).find("deeper than"), std::string::npos);
}

TEST(JsonSchema, UnknownKeywordsAreIgnored)
{
	EXPECT_EQ(Mismatch(R"({"type":"object","description":"x","title":"t","oneOf":[false],"x-extra":1})", "{}"), "");
	EXPECT_EQ(JsonSchemaProblem(J(R"({"type":"object","description":"x","oneOf":[false],"x-extra":{}})")), "");
}

TEST(JsonSchema, WriteTimeProblems)
{
	auto problem = [](const char *schema) { return JsonSchemaProblem(J(schema)); };
	EXPECT_EQ(problem(R"({"type":"object","properties":{"s":{"type":["integer","null"]}},"required":["s"],
	    "additionalProperties":false,"$defs":{"d":{"enum":[1]}},"items":true,"anyOf":[{"$ref":"#/$defs/d"}],
	    "minimum":0,"maxLength":3})"),
	          "");
	EXPECT_EQ(problem(R"({"type":"int"})"),
	          "#/type: unknown type \"int\" (known: string, number, integer, boolean, object, array, null)");
	EXPECT_EQ(problem(R"({"properties":{"score":{"type":["integer","float"]}}})"),
	          "#/properties/score/type: unknown type \"float\" (known: string, number, integer, boolean, object, "
	          "array, null)");
	EXPECT_EQ(problem(R"({"type":[]})"), "#/type: an empty list of types matches nothing");
	EXPECT_EQ(problem(R"({"items":{"$ref":"#/$defs/x"}})"),
	          "#/items/$ref: \"#/$defs/x\" does not resolve (refs point into this schema: \"#\", \"#/$defs/name\")");
	EXPECT_NE(problem(R"({"$ref":"https://example.com/s.json"})").find("does not resolve"), std::string::npos);
	EXPECT_NE(problem(R"({"$ref":3})").find("must be a string"), std::string::npos);
	EXPECT_NE(problem(R"({"$defs":{"a":1},"$ref":"#/$defs/a"})").find("is not a schema, got 1"), std::string::npos);
	EXPECT_NE(problem(R"({"properties":[]})").find("#/properties: must be an object of schemas"), std::string::npos);
	EXPECT_NE(problem(R"({"properties":{"a":"string"}})").find("#/properties/a: a schema must be"), std::string::npos);
	EXPECT_NE(problem(R"({"required":"a"})").find("#/required: must be an array"), std::string::npos);
	EXPECT_NE(problem(R"({"required":[1]})").find("#/required"), std::string::npos);
	EXPECT_NE(problem(R"({"enum":[]})").find("#/enum"), std::string::npos);
	EXPECT_NE(problem(R"({"anyOf":{}})").find("#/anyOf"), std::string::npos);
	EXPECT_NE(problem(R"({"anyOf":[{"type":"x"}]})").find("#/anyOf/0/type"), std::string::npos);
	EXPECT_NE(problem(R"({"additionalProperties":"no"})").find("#/additionalProperties"), std::string::npos);
	EXPECT_NE(problem(R"({"minLength":-1})").find("#/minLength: must be a non-negative integer"), std::string::npos);
	EXPECT_NE(problem(R"({"maximum":"9"})").find("#/maximum: must be a number"), std::string::npos);
	// Loops that never enter a property or an item.
	EXPECT_EQ(problem(R"({"$ref":"#"})"),
	          "#: $ref \"#\" loops back to a schema it came from without entering a property or an item");
	EXPECT_NE(problem(R"({"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"anyOf":[{"$ref":"#/$defs/a"}]}},
	    "properties":{"x":{"$ref":"#/$defs/a"}}})")
	              .find("loops back"),
	          std::string::npos);
	// Through an item or a property: a recursive schema, fine.
	EXPECT_EQ(problem(R"({"$defs":{"node":{"properties":{"next":{"$ref":"#/$defs/node"}}}},"$ref":"#/$defs/node"})"),
	          "");
}

TEST(JsonSchema, TheStepOption)
{
	Json schema = {{"type", "object"}};
	EXPECT_EQ(StepJsonSchema(schema), schema);
	Json wrapped = {{"name", "n"}, {"schema", schema}, {"strict", true}};
	EXPECT_EQ(StepJsonSchema(wrapped), schema);
	// A schema with a property called "schema" is still the schema itself.
	Json own = {{"type", "object"}, {"properties", {{"schema", {{"type", "string"}}}}}};
	EXPECT_EQ(StepJsonSchema(own), own);
}

} // namespace
} // namespace switchboard
