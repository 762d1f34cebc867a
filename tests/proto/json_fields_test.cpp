#include "proto/json_fields.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace ringfence::proto {
namespace {

using nlohmann::json;

TEST(JsonFields, ParseJson) {
  auto ok = parse_json(R"({"a":[1,2,{"b":null}]})");
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["a"][2]["b"], nullptr);
  EXPECT_TRUE(parse_json("3"));  // scalars parse; callers require objects where they must

  auto bad = parse_json("{\"a\":");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errc, Errc::InvalidArgument);
  EXPECT_EQ(bad.error().code, "invalid_json");
  EXPECT_FALSE(parse_json(""));
  EXPECT_FALSE(parse_json("{} {}"));
  EXPECT_FALSE(parse_json("\"\xff\""));  // invalid UTF-8

  std::string at_limit = std::string(32, '[') + std::string(32, ']');
  EXPECT_TRUE(parse_json(at_limit));
  std::string over = std::string(33, '[') + std::string(33, ']');
  auto deep = parse_json(over);
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.error().code, "invalid_json");
  EXPECT_NE(deep.error().message.find("deeper"), std::string::npos);
  EXPECT_TRUE(parse_json(over, 40));
  EXPECT_FALSE(parse_json(std::string(1'000'000, '[')));  // no stack exhaustion
}

TEST(JsonFields, RequireObjectAndOnlyKeys) {
  EXPECT_TRUE(require_object(json::object(), "x"));
  auto arr = require_object(json::array(), "ring");
  ASSERT_FALSE(arr);
  EXPECT_EQ(arr.error().message, "ring must be a JSON object");

  json j = {{"a", 1}, {"b", 2}};
  EXPECT_TRUE(only_keys(j, {"a", "b", "c"}));
  auto extra = only_keys(j, {"a"});
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.error().code, "unknown_field");
  EXPECT_NE(extra.error().message.find("'b'"), std::string::npos);
}

TEST(JsonFields, Strings) {
  json j = {{"s", "abc"}, {"e", ""}, {"n", 1}, {"z", nullptr}};
  EXPECT_EQ(get_string(j, "s").value(), "abc");
  EXPECT_FALSE(get_string(j, "s", 2));
  EXPECT_TRUE(get_string(j, "s", 3));
  EXPECT_FALSE(get_string(j, "e"));  // required strings are non-empty
  EXPECT_FALSE(get_string(j, "n"));
  EXPECT_FALSE(get_string(j, "z"));
  auto missing = get_string(j, "missing");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message, "field 'missing' is required");

  EXPECT_EQ(get_opt_string(j, "e").value(), std::optional<std::string>(""));
  EXPECT_EQ(get_opt_string(j, "z").value(), std::nullopt);
  EXPECT_EQ(get_opt_string(j, "missing").value(), std::nullopt);
  EXPECT_FALSE(get_opt_string(j, "n"));
  EXPECT_FALSE(get_opt_string(j, "s", 1));
}

TEST(JsonFields, Integers) {
  json j = json::parse(R"({"i":5,"neg":-3,"f":2.0,"frac":2.5,"s":"5","b":true,
                           "big":18446744073709551615,"huge":1e300,"z":null})");
  EXPECT_EQ(get_int(j, "i", 0, 10).value(), 5);
  EXPECT_EQ(get_int(j, "neg", -5, 0).value(), -3);
  EXPECT_EQ(get_int(j, "f", 0, 10).value(), 2);  // integral float accepted
  EXPECT_FALSE(get_int(j, "frac", 0, 10));
  EXPECT_FALSE(get_int(j, "s", 0, 10));
  EXPECT_FALSE(get_int(j, "b", 0, 10));
  EXPECT_FALSE(get_int(j, "big", 0, INT64_MAX));
  EXPECT_FALSE(get_int(j, "huge", 0, INT64_MAX));
  EXPECT_FALSE(get_int(j, "i", 6, 10));
  EXPECT_FALSE(get_int(j, "i", 0, 4));
  EXPECT_FALSE(get_int(j, "z", 0, 10));
  EXPECT_FALSE(get_int(j, "missing", 0, 10));
  auto range = get_int(j, "i", 6, 10);
  EXPECT_EQ(range.error().message, "field 'i' must be between 6 and 10");

  EXPECT_EQ(get_opt_int(j, "missing", 0, 1).value(), std::nullopt);
  EXPECT_EQ(get_opt_int(j, "z", 0, 1).value(), std::nullopt);
  EXPECT_EQ(get_opt_int(j, "i", 0, 10).value(), std::optional<std::int64_t>(5));
  EXPECT_FALSE(get_opt_int(j, "s", 0, 10));
}

TEST(JsonFields, NumbersAndBools) {
  json j = json::parse(R"({"d":0.25,"i":3,"s":"1","b":false,"n":null})");
  EXPECT_DOUBLE_EQ(get_number(j, "d", 0, 1).value(), 0.25);
  EXPECT_DOUBLE_EQ(get_number(j, "i", 0, 10).value(), 3.0);
  EXPECT_FALSE(get_number(j, "d", 0.5, 1));
  EXPECT_FALSE(get_number(j, "s", 0, 10));
  EXPECT_FALSE(get_number(j, "b", 0, 10));
  EXPECT_FALSE(get_number(j, "missing", 0, 10));
  EXPECT_EQ(get_opt_number(j, "n", 0, 1).value(), std::nullopt);

  EXPECT_EQ(get_opt_bool(j, "b").value(), std::optional<bool>(false));
  EXPECT_EQ(get_opt_bool(j, "n").value(), std::nullopt);
  EXPECT_EQ(get_opt_bool(j, "missing").value(), std::nullopt);
  EXPECT_FALSE(get_opt_bool(j, "i"));
  EXPECT_FALSE(get_opt_bool(j, "s"));
}

TEST(JsonFields, ErrorBody) {
  Error e{Errc::Unprocessable, "content fails the schema", "", R"({"findings":[]})"};
  EXPECT_EQ(json::parse(error_body(e)),
            json::parse(R"({"error":{"code":"unprocessable","message":"content fails the schema",)"
                        R"("details":{"findings":[]}}})"));
  Error custom{Errc::InvalidArgument, "bad", "unknown_field", ""};
  EXPECT_EQ(error_body(custom), R"({"error":{"code":"unknown_field","message":"bad"}})");
  Error broken{Errc::Internal, "x", "", "{not json"};
  EXPECT_EQ(json::parse(error_body(broken))["error"].count("details"), 0u);
}

}  // namespace
}  // namespace ringfence::proto
