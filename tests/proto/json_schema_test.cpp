// The JSON Schema subset beyond the official suite: the incident's field-count check, prefixItems
// (2020-12), exact number comparison, code points, refused keywords, hostile schemas, limits.

#include "proto/json_schema.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace ringfence::proto {
namespace {

using nlohmann::json;

CompiledSchema compiled(const char* text) {
  auto s = compile_schema(json::parse(text));
  EXPECT_TRUE(s) << text << ": " << (s ? "" : s.error().message);
  return s ? *s : CompiledSchema();
}

std::vector<Finding> check(const char* schema, const char* doc) {
  return validate(compiled(schema), json::parse(doc));
}

bool valid(const char* schema, const char* doc) { return check(schema, doc).empty(); }

TEST(JsonSchema, TwentyOneDeclaredFieldsTwentySuppliedIsRefused) {
  const char* schema = R"({
    "type": "object", "required": ["template", "fields"], "additionalProperties": false,
    "properties": {
      "template": {"type": "string", "minLength": 1},
      "fields": {"type": "array", "minItems": 21, "maxItems": 21, "items": {"type": "string"}}
    }})";
  json doc = {{"template", "named-pipe"}, {"fields", std::vector<std::string>(20, "*")}};
  auto findings = validate(compiled(schema), doc);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].path, "/fields");
  EXPECT_EQ(findings[0].message, "array has 20 items, fewer than minItems 21");

  doc["fields"].push_back("*");
  EXPECT_TRUE(validate(compiled(schema), doc).empty());
}

TEST(JsonSchema, PrefixItemsPinTupleShape) {
  const char* schema =
      R"({"type":"array","prefixItems":[{"type":"integer"},{"type":"string"}],"items":false})";
  EXPECT_TRUE(valid(schema, R"([1, "a"])"));
  EXPECT_TRUE(valid(schema, R"([1])"));  // prefixItems alone does not require the items
  auto extra = check(schema, R"([1, "a", true])");
  ASSERT_EQ(extra.size(), 1u);
  EXPECT_EQ(extra[0].path, "/2");
  auto wrong = check(schema, R"(["1", 2])");
  ASSERT_EQ(wrong.size(), 2u);
  EXPECT_EQ(wrong[0].path, "/0");
  EXPECT_EQ(wrong[0].message, "expected integer, got string");
  EXPECT_EQ(wrong[1].path, "/1");
  // items applies after the prefix only
  EXPECT_TRUE(
      valid(R"({"prefixItems":[{"type":"string"}],"items":{"type":"integer"}})", R"(["a", 1, 2])"));
  EXPECT_FALSE(valid(R"({"prefixItems":[{"type":"string"}],"items":{"type":"integer"}})",
                     R"(["a", 1, "b"])"));
}

TEST(JsonSchema, Draft7TupleItemsWithAdditionalItems) {
  const char* schema = R"({"items":[{"type":"integer"}],"additionalItems":{"type":"string"}})";
  EXPECT_TRUE(valid(schema, R"([1, "a", "b"])"));
  EXPECT_FALSE(valid(schema, R"([1, 2])"));
}

TEST(JsonSchema, IntegerAndNumber) {
  const char* schema = R"({"type":"integer"})";
  EXPECT_TRUE(valid(schema, "1"));
  EXPECT_TRUE(valid(schema, "1.0"));
  EXPECT_TRUE(valid(schema, "-9223372036854775808"));
  EXPECT_TRUE(valid(schema, "18446744073709551615"));
  auto f = check(schema, "1.5");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].message, "expected integer, got number");
  EXPECT_TRUE(valid(R"({"type":"number"})", "1"));
  EXPECT_FALSE(valid(R"({"type":"number"})", "\"1\""));
  EXPECT_TRUE(valid(R"({"type":["string","null"]})", "null"));
  auto g = check(R"({"type":["string","null"]})", "true");
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].message, "expected null or string, got boolean");
}

TEST(JsonSchema, NumbersCompareExactly) {
  // 2^53 + 1 is not representable as a double; a double comparison would call these equal.
  EXPECT_FALSE(valid(R"({"maximum":9007199254740992})", "9007199254740993"));
  EXPECT_TRUE(valid(R"({"maximum":9007199254740993})", "9007199254740993"));
  EXPECT_FALSE(valid(R"({"exclusiveMaximum":18446744073709551615})", "18446744073709551615"));
  EXPECT_TRUE(valid(R"({"minimum":-9223372036854775808})", "-9223372036854775808"));
  EXPECT_FALSE(valid(R"({"minimum":0.5})", "0"));
  EXPECT_TRUE(valid(R"({"exclusiveMinimum":0})", "0.0000001"));
  EXPECT_FALSE(valid(R"({"exclusiveMinimum":0})", "0"));
  EXPECT_FALSE(valid(R"({"const":9007199254740993})", "9007199254740992"));
  auto f = check(R"({"maximum":10})", "11");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].message, "11 is greater than the maximum 10");
  EXPECT_TRUE(valid(R"({"minimum":1})", "\"strings are not checked\""));
}

TEST(JsonSchema, LengthsCountCodePoints) {
  EXPECT_TRUE(valid(R"({"maxLength":5})", "\"h\u00e9llo\""));      // 6 bytes, 5 code points
  EXPECT_TRUE(valid(R"({"maxLength":1})", "\"\\ud83d\\ude00\""));  // one emoji, 4 bytes
  EXPECT_FALSE(valid(R"({"minLength":2})", "\"\\ud83d\\ude00\""));
  auto f = check(R"({"maxLength":2})", "\"abc\"");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].message, "string has 3 characters, more than maxLength 2");
}

TEST(JsonSchema, ObjectsRequiredAndAdditional) {
  const char* schema = R"({"type":"object","required":["a","b"],
      "properties":{"a":{"type":"integer"},"a/b~c":{"type":"string"}},
      "additionalProperties":false, "maxProperties":3})";
  auto f = check(schema, R"({"a":"x","a/b~c":1,"z":1,"y":2})");
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[0].path, "");
  EXPECT_EQ(f[0].message, "object has 4 properties, more than maxProperties 3");
  EXPECT_EQ(f[1].message, "missing required property 'b'");
  EXPECT_EQ(f[2].path, "/a");
  EXPECT_EQ(f[3].path, "/a~1b~0c");  // JSON pointer escaping
  EXPECT_EQ(f[4].path, "/y");
  EXPECT_EQ(f[4].message, "property 'y' is not allowed");
  EXPECT_EQ(f[5].path, "/z");

  EXPECT_TRUE(valid(R"({"additionalProperties":{"type":"integer"}})", R"({"x":1,"y":2})"));
  EXPECT_FALSE(valid(R"({"additionalProperties":{"type":"integer"}})", R"({"x":1,"y":"2"})"));
  EXPECT_TRUE(valid(R"({"required":["a"]})", "[1]"));  // required applies to objects only
}

TEST(JsonSchema, EnumConstUseJsonEquality) {
  EXPECT_TRUE(valid(R"({"enum":[1, "a", null]})", "1.0"));
  EXPECT_FALSE(valid(R"({"enum":[0]})", "false"));
  EXPECT_FALSE(valid(R"({"enum":[1]})", "true"));
  EXPECT_TRUE(valid(R"({"const":{"b":[1,2],"a":null}})", R"({"a":null,"b":[1.0,2]})"));
  EXPECT_FALSE(valid(R"({"const":{"a":1}})", R"({"a":1,"b":2})"));
  EXPECT_FALSE(valid(R"({"enum":[]})", "1"));
  auto f = check(R"({"enum":["low","high"]})", "\"mid\"");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].message, R"(value "mid" is not one of the allowed values ["low","high"])");
}

TEST(JsonSchema, UniqueItems) {
  const char* schema = R"({"uniqueItems":true})";
  EXPECT_FALSE(valid(schema, "[1, 1.0]"));
  EXPECT_FALSE(valid(schema, R"([{"a":1,"b":[2]},{"b":[2.0],"a":1}])"));
  EXPECT_TRUE(valid(schema, R"([0, false, null, "0", [0], {"0":0}])"));
  EXPECT_TRUE(valid(schema, "[0.5, 0.25, 1e300, 1]"));
  EXPECT_FALSE(valid(schema, "[9007199254740992, 9007199254740992.0]"));
  EXPECT_TRUE(valid(schema, "[9007199254740993, 9007199254740992.0]"));  // exact, not doubles
  EXPECT_TRUE(valid(schema, "[18446744073709551615, 1.8446744073709551615e19]"));  // 2^64-1, 2^64
  auto f = check(schema, "[1, 2, 3, 2]");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].message, "items 1 and 3 are equal but uniqueItems is set");
  EXPECT_TRUE(valid(R"({"uniqueItems":false})", "[1, 1]"));
}

TEST(JsonSchema, BooleanSchemasAndDefault) {
  EXPECT_TRUE(valid("true", "[1]"));
  auto f = check("false", "1");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].message, "no value is allowed here");
  EXPECT_TRUE(validate(CompiledSchema(), json::parse(R"({"anything":[1,2]})")).empty());
  CompiledSchema a = compiled(R"({"type":"string"})");
  CompiledSchema b = a;  // copies share the immutable tree
  CompiledSchema c = std::move(a);
  EXPECT_FALSE(validate(b, json(1)).empty());
  EXPECT_FALSE(validate(c, json(1)).empty());
}

TEST(JsonSchema, AnnotationsAreAccepted) {
  EXPECT_TRUE(compile_schema(json::parse(R"({
    "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:ringfence:x",
    "$comment": "c", "title": "t", "description": "d", "examples": [1], "default": 1,
    "deprecated": false, "readOnly": true, "writeOnly": false, "$defs": {"x": {"$ref": "#"}},
    "type": "integer"})")));
}

TEST(JsonSchema, UnsupportedKeywordsAreRefusedNotIgnored) {
  const char* refused[] = {
      R"({"$ref":"#/$defs/x"})",
      R"({"pattern":"^a"})",
      R"({"oneOf":[true]})",
      R"({"anyOf":[true]})",
      R"({"allOf":[true]})",
      R"({"not":false})",
      R"({"if":true,"then":true})",
      R"({"format":"uuid"})",
      R"({"multipleOf":2})",
      R"({"patternProperties":{"a":true}})",
      R"({"contains":true})",
      R"({"dependentRequired":{}})",
      R"({"unevaluatedProperties":false})",
      R"({"requried":["a"]})",  // a typo must not pass everything
  };
  for (const char* text : refused) {
    auto s = compile_schema(json::parse(text));
    ASSERT_FALSE(s) << text;
    EXPECT_EQ(s.error().errc, Errc::InvalidArgument) << text;
    EXPECT_EQ(s.error().code, "invalid_schema") << text;
    EXPECT_NE(s.error().message.find("is not supported"), std::string::npos) << text;
  }
  auto nested = compile_schema(json::parse(R"({"properties":{"x":{"items":{"pattern":"a"}}}})"));
  ASSERT_FALSE(nested);
  EXPECT_NE(nested.error().message.find("'/properties/x/items/pattern'"), std::string::npos)
      << nested.error().message;
}

TEST(JsonSchema, MalformedKeywordsAreRefused) {
  const char* bad[] = {
      "42",
      R"("string")",
      "null",
      R"({"type":"int"})",
      R"({"type":[]})",
      R"({"type":["string","string"]})",
      R"({"type":3})",
      R"({"properties":[]})",
      R"({"properties":{"a":3}})",
      R"({"required":"a"})",
      R"({"required":[1]})",
      R"({"required":["a","a"]})",
      R"({"additionalProperties":"no"})",
      R"({"minItems":-1})",
      R"({"minItems":1.5})",
      R"({"maxLength":"3"})",
      R"({"minProperties":99999999999})",
      R"({"uniqueItems":1})",
      R"({"enum":{"a":1}})",
      R"({"minimum":"1"})",
      R"({"exclusiveMinimum":true})",  // the draft-4 form
      R"({"prefixItems":[]})",
      R"({"prefixItems":{"type":"string"}})",
      R"({"prefixItems":[true],"items":[true]})",
      R"({"prefixItems":[true],"additionalItems":false})",
      R"({"items":3})",
  };
  for (const char* text : bad) {
    auto s = compile_schema(json::parse(text));
    EXPECT_FALSE(s) << text;
    if (!s) {
      EXPECT_EQ(s.error().errc, Errc::InvalidArgument) << text;
    }
  }
  EXPECT_TRUE(compile_schema(json::parse(R"({"minItems":2.0})")));  // an integral number
}

json nested_items(int levels) {
  json s = {{"type", "integer"}};
  for (int i = 0; i < levels; ++i) s = json{{"items", std::move(s)}};
  return s;
}

TEST(JsonSchema, HostileSchemasAreBounded) {
  EXPECT_TRUE(compile_schema(nested_items(kMaxSchemaDepth)));
  auto deep = compile_schema(nested_items(kMaxSchemaDepth + 1));
  ASSERT_FALSE(deep);
  EXPECT_NE(deep.error().message.find("nested deeper"), std::string::npos);

  json wide = {{"properties", json::object()}};
  for (std::size_t i = 0; i < kMaxSchemaNodes; ++i)
    wide["properties"]["p" + std::to_string(i)] = true;
  auto too_many = compile_schema(wide);
  ASSERT_FALSE(too_many);
  EXPECT_NE(too_many.error().message.find("sub-schemas"), std::string::npos);

  json deep_enum = 1;
  for (int i = 0; i < 300; ++i) deep_enum = json::array({std::move(deep_enum)});
  EXPECT_FALSE(compile_schema(json{{"enum", json::array({deep_enum})}}));
  EXPECT_FALSE(compile_schema(json{{"const", deep_enum}}));
}

TEST(JsonSchema, DeepSchemaValidatesDeepDocument) {
  auto s = compile_schema(nested_items(kMaxSchemaDepth));
  ASSERT_TRUE(s);
  json doc = 1;
  for (int i = 0; i < kMaxSchemaDepth; ++i) doc = json::array({std::move(doc)});
  EXPECT_TRUE(validate(*s, doc).empty());
  json bad = "x";
  for (int i = 0; i < kMaxSchemaDepth; ++i) bad = json::array({std::move(bad)});
  auto f = validate(*s, bad);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].path.size(), 2u * kMaxSchemaDepth);  // "/0" per level
}

TEST(JsonSchema, DeepDocumentValuesAreNotComparedUnbounded) {
  json doc = 1;
  for (int i = 0; i < 300; ++i) doc = json::array({std::move(doc)});
  auto f = validate(compiled(R"({"const":1})"), doc);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].message, "value nests too deeply to compare");
  EXPECT_FALSE(validate(compiled(R"({"uniqueItems":true})"), doc).empty());
  // without value comparisons a deep document is fine: recursion follows the schema
  EXPECT_TRUE(validate(compiled(R"({"type":"array"})"), doc).empty());
}

TEST(JsonSchema, FindingsAreCapped) {
  auto s = compiled(R"({"items":{"type":"string"}})");
  json doc = json::array();
  for (int i = 0; i < 100; ++i) doc.push_back(i);
  EXPECT_EQ(validate(s, doc).size(), 50u);
  EXPECT_EQ(validate(s, doc, 5).size(), 5u);
  EXPECT_EQ(validate(s, doc, 0).size(), 0u);
  EXPECT_EQ(validate(s, doc, 1000).size(), 100u);
}

TEST(JsonSchema, ValidateContent) {
  auto s = compiled(R"({"type":"object","required":["v"]})");
  EXPECT_TRUE(validate_content(s, R"({"v":1})", 1024).empty());
  EXPECT_TRUE(validate_content(s, R"({"v":1})", 0).empty());  // no size limit

  auto big = validate_content(s, R"({"v":1})", 5);
  ASSERT_EQ(big.size(), 1u);
  EXPECT_EQ(big[0].message, "content is 7 bytes, more than the channel's limit of 5");

  auto not_json = validate_content(s, "{\"v\":", 1024);
  ASSERT_EQ(not_json.size(), 1u);
  EXPECT_NE(not_json[0].message.find("not valid JSON"), std::string::npos);

  EXPECT_EQ(validate_content(s, "", 1024).size(), 1u);
  EXPECT_EQ(validate_content(s, "{\"v\":\"\xff\"}", 1024).size(), 1u);  // invalid UTF-8

  std::string deep(kMaxContentDepth + 1, '[');
  deep += std::string(kMaxContentDepth + 1, ']');
  auto too_deep = validate_content(CompiledSchema(), deep, 0);
  ASSERT_EQ(too_deep.size(), 1u);
  EXPECT_NE(too_deep[0].message.find("deeper"), std::string::npos);

  auto missing = validate_content(s, "{}", 1024);
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].message, "missing required property 'v'");
}

TEST(JsonSchema, FindingsJson) {
  std::vector<Finding> f = {{"/a", "bad"}, {"", "caf\xc3\xa9"}};
  auto j = json::parse(findings_json(f));
  EXPECT_EQ(j, json::parse(R"({"findings":[{"path":"/a","message":"bad"},
                                            {"path":"","message":"café"}]})"));
  EXPECT_EQ(findings_json({}), R"({"findings":[]})");
}

TEST(JsonSchema, MessagesStayValidUtf8WhenTruncated) {
  // A long multi-byte const is shown truncated in the message; the JSON of the findings must
  // still be valid (a cut in the middle of a UTF-8 sequence would make dump() throw).
  std::string long_value;
  for (int i = 0; i < 100; ++i) long_value += "\xc3\xa9";
  json schema = {{"const", long_value}};
  auto s = compile_schema(schema);
  ASSERT_TRUE(s);
  auto f = validate(*s, json("x"));
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NO_THROW(json::parse(findings_json(f)));
}

}  // namespace
}  // namespace ringfence::proto
