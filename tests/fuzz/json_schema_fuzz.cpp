// The JSON-Schema subset (proto/json_schema.*): a hostile schema and a hostile document, as the
// server compiles a channel's schema and both the server and the agent validate content with it.
// Input: schema text, then "\n--\n", then the content. Properties: compile and validate never
// crash or run away; findings are bounded and their JSON is valid JSON.
#include <nlohmann/json.hpp>
#include <string>

#include "proto/json_fields.hpp"
#include "proto/json_schema.hpp"
#include "tests/fuzz/fuzz.hpp"

using namespace ringfence;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto [schema_text, content] = fuzz::split(in, "\n--\n");
  auto schema_json = proto::parse_json(schema_text, proto::kMaxContentDepth);
  if (!schema_json) return 0;
  auto schema = proto::compile_schema(*schema_json);
  if (!schema) {
    RF_FUZZ_CHECK(!schema.error().message.empty());
    return 0;
  }
  constexpr std::size_t kMax = 8;
  auto findings = proto::validate_content(*schema, content, 1 << 20, kMax);
  RF_FUZZ_CHECK(findings.size() <= kMax);
  RF_FUZZ_CHECK(nlohmann::json::accept(proto::findings_json(findings)));
  // A copy shares the compiled tree and must judge the same way.
  proto::CompiledSchema copy = *schema;
  RF_FUZZ_CHECK(proto::validate_content(copy, content, 1 << 20, kMax).size() == findings.size());
  return 0;
}
