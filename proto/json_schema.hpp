#pragma once
// A channel's content schema: a strict subset of JSON Schema (draft 2020-12 semantics, with the
// draft-7 array form of `items` also understood) that every release's content is validated
// against before any host sees it. For structured content it pins field counts and types.
//
// Supported keywords:
//   type (a name or an array of names; "integer" accepts 1.0 as well as 1), enum, const,
//   properties, required, additionalProperties (bool or schema), minProperties, maxProperties,
//   prefixItems, items (a schema applied after prefixItems; or the draft-7 array form, with
//   additionalItems), minItems, maxItems, uniqueItems,
//   minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers; compared exactly),
//   minLength, maxLength (counted in Unicode code points).
// Annotations that never change the verdict are accepted and ignored: title, description,
// $schema, $id, $comment, $anchor, examples, default, deprecated, readOnly, writeOnly,
// definitions, $defs. Every other keyword ($ref, pattern, format, oneOf, ...) is refused at
// compile time: a schema must never pass content because a keyword was silently ignored.
//
// Boolean schemas (`true`, `false`) are supported wherever a schema is expected.
//
// Thread-safety: everything here is pure; a CompiledSchema is immutable and may be shared by
// any number of threads.

#include <cstddef>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "proto/error.hpp"

namespace ringfence::proto {

// Limits against hostile schemas and documents.
inline constexpr int kMaxSchemaDepth = 32;             // nesting of sub-schemas
inline constexpr std::size_t kMaxSchemaNodes = 10000;  // sub-schemas in one schema
inline constexpr int kMaxContentDepth = 64;            // nesting accepted by validate_content()

// One reason a document fails its schema.
struct Finding {
  std::string path;     // JSON pointer (RFC 6901) into the document; "" is the whole document
  std::string message;  // a human sentence, e.g. "expected integer, got string"
};

class CompiledSchema {
 public:
  // The `true` schema: accepts every document.
  CompiledSchema();
  ~CompiledSchema();
  CompiledSchema(const CompiledSchema&);
  CompiledSchema& operator=(const CompiledSchema&);
  CompiledSchema(CompiledSchema&&) noexcept;
  CompiledSchema& operator=(CompiledSchema&&) noexcept;

  struct Node;  // defined in json_schema.cpp

 private:
  friend Expected<CompiledSchema> compile_schema(const nlohmann::json& schema);
  friend std::vector<Finding> validate(const CompiledSchema& schema, const nlohmann::json& doc,
                                       std::size_t max_findings);
  explicit CompiledSchema(std::shared_ptr<const Node> root);
  std::shared_ptr<const Node> root_;  // immutable, shared between copies
};

// Compiles a schema. Errors are InvalidArgument (code "invalid_schema") naming the JSON pointer
// of the offending keyword: an unsupported keyword, a keyword of the wrong type or range, nesting
// deeper than kMaxSchemaDepth, or more than kMaxSchemaNodes sub-schemas.
Expected<CompiledSchema> compile_schema(const nlohmann::json& schema);

// Validates doc against schema. Returns every finding, up to max_findings (the rest are not
// reported); an empty vector means the document is valid. Recursion follows the schema, so it is
// bounded by kMaxSchemaDepth whatever the document; comparing values (enum, const,
// uniqueItems) stops at nesting depth 256 and reports the value as too deep.
std::vector<Finding> validate(const CompiledSchema& schema, const nlohmann::json& doc,
                              std::size_t max_findings = 50);

// The whole content check of a release, as the server and the agent both run it: content larger
// than max_bytes, content that is not JSON (or nests deeper than kMaxContentDepth), and content
// that fails the schema each yield findings. max_bytes == 0 means no size limit.
std::vector<Finding> validate_content(const CompiledSchema& schema, std::string_view content,
                                      std::size_t max_bytes, std::size_t max_findings = 50);

// The findings as a JSON object {"findings":[{"path":..,"message":..}, ...]}, e.g. for
// Error::details_json of a 422 answer.
std::string findings_json(const std::vector<Finding>& findings);

}  // namespace ringfence::proto
