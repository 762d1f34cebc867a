// Ring selectors (server/fleet/selector.*): the label-expression parser on raw text and the
// selector parser on any JSON. Properties: no crash; a selector that parses prints (selector_json)
// to a selector that parses again, prints the same, and matches the same hosts.
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "proto/json_fields.hpp"
#include "server/fleet/selector.hpp"
#include "tests/fuzz/fuzz.hpp"

using namespace ringfence;
using server::fleet::Selector;

namespace {
bool same_matches(const Selector& a, const Selector& b) {
  static const std::map<std::string, std::string> kLabels[] = {
      {},
      {{"os", "windows"}, {"site", "fra1"}, {"tenant", "acme"}},
      {{"os", "linux"}, {"site", "ams2"}, {"tier", ""}},
  };
  static const char* kHosts[] = {"00000000-0000-4000-8000-000000000000",
                                 "123e4567-e89b-42d3-a456-426614174000"};
  for (const auto& labels : kLabels)
    for (const char* host : kHosts)
      for (std::uint32_t bucket : {0u, 1u, 4999u, 9999u})
        if (a.matches(host, bucket, labels) != b.matches(host, bucket, labels)) return false;
  return true;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto clauses = server::fleet::parse_label_expression(text)) {
    // The same expression wrapped as a selector parses too.
    nlohmann::json j = {{"labels", std::string(text)}};
    RF_FUZZ_CHECK(server::fleet::parse_selector(j).has_value());
  }
  auto j = proto::parse_json(text);
  if (!j) return 0;
  auto sel = server::fleet::parse_selector(*j);
  if (!sel) return 0;
  std::string printed = server::fleet::selector_json(*sel);
  auto reparsed_json = proto::parse_json(printed);
  RF_FUZZ_CHECK(reparsed_json.has_value());
  auto again = server::fleet::parse_selector(*reparsed_json);
  RF_FUZZ_CHECK(again.has_value());
  RF_FUZZ_CHECK(server::fleet::selector_json(*again) == printed);
  RF_FUZZ_CHECK(same_matches(*sel, *again));
  return 0;
}
