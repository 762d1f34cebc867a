// The JSON Schema subset against the official JSON-Schema-Test-Suite (Debian package
// json-schema-test-suite). Each file holds groups {description, schema, tests:[{data, valid}]}.
// A group whose schema uses a keyword outside the subset must be refused by compile_schema()
// (and is counted as unsupported); every case of every other group must get the suite's verdict.

#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "proto/json_schema.hpp"

namespace ringfence::proto {
namespace {

using nlohmann::json;

// The keywords of the subset that the suite covers (the suite this Debian package ships has no
// draft 2020-12 directory, so prefixItems is covered by json_schema_test.cpp instead).
const std::vector<std::string> kFiles = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "additionalItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "boolean_schema",
    "default",
};
const std::vector<std::string> kDrafts = {"draft7", "draft6"};

struct Counts {
  int executed = 0;
  int passed = 0;
  int unsupported = 0;  // cases whose group schema compile_schema() refused
  std::vector<std::string> failures;
  std::vector<std::string> refused;  // "group: reason"
};

json load(const std::string& draft, const std::string& file) {
  std::string path = std::string(JSON_SCHEMA_SUITE_DIR) + "/tests/" + draft + "/" + file + ".json";
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "cannot open " << path;
    return json::array();
  }
  return json::parse(in);
}

Counts run_file(const std::string& draft, const std::string& file) {
  Counts c;
  for (const auto& group : load(draft, file)) {
    const std::string desc = group.at("description").get<std::string>();
    auto compiled = compile_schema(group.at("schema"));
    if (!compiled) {
      c.unsupported += static_cast<int>(group.at("tests").size());
      c.refused.push_back(desc + ": " + compiled.error().message);
      continue;
    }
    for (const auto& t : group.at("tests")) {
      ++c.executed;
      bool want = t.at("valid").get<bool>();
      auto findings = validate(*compiled, t.at("data"));
      if (findings.empty() == want) {
        ++c.passed;
      } else {
        std::string why = findings.empty() ? "no findings" : findings[0].message;
        c.failures.push_back(draft + "/" + file + ": " + desc + " / " +
                             t.at("description").get<std::string>() + " (want " +
                             (want ? "valid" : "invalid") + ", " + why + ")");
      }
    }
  }
  return c;
}

class SuiteFile : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(SuiteFile, EveryExecutedCaseMatches) {
  const auto& [draft, file] = GetParam();
  Counts c = run_file(draft, file);
  for (const auto& f : c.failures) ADD_FAILURE() << f;
  for (const auto& r : c.refused) std::cout << "  unsupported: " << r << "\n";
  EXPECT_GT(c.executed, 0) << "no case of " << file << " could run";
  EXPECT_EQ(c.passed, c.executed);
}

// Refusals must come from keywords outside the subset, never from a supported keyword that the
// compiler misread.
TEST_P(SuiteFile, RefusalsNameAnUnsupportedKeyword) {
  const auto& [draft, file] = GetParam();
  for (const auto& r : run_file(draft, file).refused) {
    EXPECT_NE(r.find("is not supported"), std::string::npos) << r;
  }
}

INSTANTIATE_TEST_SUITE_P(JsonSchemaSuite, SuiteFile,
                         ::testing::Combine(::testing::ValuesIn(kDrafts),
                                            ::testing::ValuesIn(kFiles)),
                         [](const auto& param_info) {
                           return std::get<0>(param_info.param) + "_" +
                                  std::get<1>(param_info.param);
                         });

TEST(JsonSchemaSuite, Totals) {
  Counts total;
  for (const auto& draft : kDrafts) {
    Counts d;
    for (const auto& file : kFiles) {
      Counts c = run_file(draft, file);
      d.executed += c.executed;
      d.passed += c.passed;
      d.unsupported += c.unsupported;
    }
    std::cout << draft << ": executed " << d.executed << ", passed " << d.passed << ", unsupported "
              << d.unsupported << "\n";
    ::testing::Test::RecordProperty(draft + "_executed", d.executed);
    ::testing::Test::RecordProperty(draft + "_unsupported", d.unsupported);
    EXPECT_GT(d.executed, 150) << draft;
    EXPECT_EQ(d.passed, d.executed) << draft;
    total.executed += d.executed;
  }
  EXPECT_GT(total.executed, 300);
}

}  // namespace
}  // namespace ringfence::proto
