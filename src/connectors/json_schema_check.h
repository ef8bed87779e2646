// A small JSON Schema validator for the json_schema option of openai enrich steps (SPEC §5,
// §7): a compatible server (a self-hosted model behind base_url) may ignore response_format,
// so the model's answer is checked against the schema before it becomes steps.<name>.
//
// It covers the subset OpenAI's strict structured outputs use: type (a name or an array of
// names; "integer" is a number with no fractional part), properties, required,
// additionalProperties (false or a schema), items, enum, const, anyOf, $ref to "#", "#/$defs/…",
// "#/definitions/…" (any JSON pointer into the schema resolves), true/false schemas, and the
// bounds minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength (in code
// points), minItems, maxItems. Ignored: pattern and format (no regular expression engine is
// run on a model's text), and every keyword it does not know (allOf, oneOf, ...).
//
// Guarded against hostile or careless schemas: nesting (and $ref hops) beyond kMaxSchemaDepth
// and more than kMaxSchemaSteps checks per answer end the check with a mismatch, so a schema
// that refers to itself can neither loop forever nor overflow the stack.
//
// Plain C++ (no postgres.h).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace switchboard {

using Json = nlohmann::json; // the same alias connectors/connector.h declares

// Subschemas entered (properties, items, anyOf branches, $ref targets) along one path.
constexpr int kMaxSchemaDepth = 128;
// $ref followed one after another without entering a property or an item.
constexpr int kMaxSchemaRefHops = 32;
// Subschema checks for one answer, whatever the shape: bounds the time anyOf over $ref takes.
constexpr long kMaxSchemaSteps = 200000;

// The schema a step's json_schema option holds: the option itself, or its "schema" when the
// option is {"name", "schema"} as OpenAI's response_format names it.
const Json &StepJsonSchema(const Json &option);

// "" when the validator can use schema; else why not, with the place in the schema
// ("#/properties/score/type: unknown type \"int\"", "#/items: $ref \"#/$defs/x\" does not
// resolve", "#: $ref loops back to itself without entering a property or an item").
std::string JsonSchemaProblem(const Json &schema);

// "" when value matches schema; else the first mismatch as "path: reason", the path from $
// ("$.score: expected integer, got string", "$: missing required property \"reason\"",
// "$.tags[2]: expected string, got null"). Never throws for any schema and value.
std::string JsonSchemaMismatch(const Json &schema, const Json &value);

} // namespace switchboard
