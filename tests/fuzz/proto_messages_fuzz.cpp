// Every agent-protocol codec (proto/messages.*) on arbitrary bytes: enroll request and response,
// desired state (with its signed manifests), heartbeat, reports; plus the JSON and base64
// readers they sit on. Properties: no crash, no sanitizer finding, and whatever decodes
// re-encodes to a text that decodes again to the same encoding (the server and agent exchange
// what they decoded).
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "proto/json_fields.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"
#include "tests/fuzz/fuzz.hpp"

namespace {
using namespace ringfence;

template <class Decode>
void round_trip(std::string_view text, Decode decode) {
  auto first = decode(text);
  if (!first) {
    RF_FUZZ_CHECK(!first.error().message.empty());
    return;
  }
  std::string encoded = proto::encode(*first);
  auto second = decode(encoded);
  RF_FUZZ_CHECK(second.has_value());
  RF_FUZZ_CHECK(proto::encode(*second) == encoded);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  round_trip(text, proto::decode_enroll_request);
  round_trip(text, proto::decode_enroll_response);
  round_trip(text, proto::decode_desired_state);
  round_trip(text, proto::decode_heartbeat);
  round_trip(text, proto::decode_reports);

  if (auto j = proto::parse_json(text)) {
    auto again = proto::parse_json(j->dump());
    RF_FUZZ_CHECK(again.has_value() && *again == *j);
  }
  if (auto bytes = proto::base64_decode(text)) {
    RF_FUZZ_CHECK(proto::base64_decode(proto::base64_encode(*bytes)) == bytes);
  }
  (void)proto::parse_public_key(text);
  return 0;
}
