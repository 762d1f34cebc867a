// decode_heartbeat reads the body from the parser's events (no DOM). Its contract is the DOM
// reading every other message gets: parse_json, then the json_fields checks. This test holds the
// streaming decoder to that contract by comparing it with a DOM decoder written the plain way,
// on hand-written hostile bodies and on thousands of random mutations of valid ones.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "proto/ids.hpp"
#include "proto/json_fields.hpp"
#include "proto/messages.hpp"
#include "proto/try.hpp"

namespace ringfence::proto {
namespace {
using nlohmann::json;

// The reference: the DOM reading of the heartbeat contract (API.md).
Expected<Heartbeat> reference_decode(std::string_view body) {
  RF_TRY(j, parse_json(body));
  RF_CHECK(require_object(j, "heartbeat"));
  RF_CHECK(only_keys(j, {"boot_id", "uptime_s", "channels", "desired_etag", "consumers"}));
  Heartbeat m;
  RF_TRY(boot, get_string(j, "boot_id", 64));
  RF_TRY(up, get_int(j, "uptime_s", 0, 100LL * 365 * 86400));
  m.boot_id = boot;
  m.uptime_s = up;
  auto ch = j.find("channels");
  if (ch != j.end() && !ch->is_null()) {
    if (!ch->is_object() || ch->size() > kMaxChannels) {
      return fail(Errc::InvalidArgument, "field 'channels' must be an object of at most 64");
    }
    for (auto it = ch->begin(); it != ch->end(); ++it) {
      if (!is_name(it.key())) return fail(Errc::InvalidArgument, "invalid channel name");
      RF_CHECK(require_object(*it, "channel status"));
      RF_TRY(version, get_int(*it, "version", 0, 1'000'000'000'000LL));
      RF_TRY(state, get_opt_string(*it, "state", 32));
      m.channels[it.key()] = ChannelStatus{version, state.value_or("active")};
    }
  }
  auto co = j.find("consumers");
  if (co != j.end() && !co->is_null()) {
    if (!co->is_object() || co->size() > kMaxConsumers) {
      return fail(Errc::InvalidArgument, "field 'consumers' must be an object of at most 8");
    }
    for (auto it = co->begin(); it != co->end(); ++it) {
      if (!is_name(it.key())) return fail(Errc::InvalidArgument, "invalid consumer name");
      if (!it->is_string() || !is_consumer_version(it->get<std::string>())) {
        return fail(Errc::InvalidArgument, "bad consumer version");
      }
      m.consumers[it.key()] = it->get<std::string>();
    }
  }
  return m;
}

// Same verdict; same values when accepted; same error class and code when refused.
void expect_same(const std::string& body) {
  auto got = decode_heartbeat(body);
  auto want = reference_decode(body);
  ASSERT_EQ(static_cast<bool>(got), static_cast<bool>(want))
      << body << "\nstreaming: " << (got ? "accepted" : got.error().message)
      << "\nDOM: " << (want ? "accepted" : want.error().message);
  if (want) {
    EXPECT_EQ(got->boot_id, want->boot_id) << body;
    EXPECT_EQ(got->uptime_s, want->uptime_s) << body;
    EXPECT_EQ(got->consumers, want->consumers) << body;
    ASSERT_EQ(got->channels.size(), want->channels.size()) << body;
    for (const auto& [name, c] : want->channels) {
      ASSERT_TRUE(got->channels.count(name)) << body;
      EXPECT_EQ(got->channels.at(name).version, c.version) << body;
      EXPECT_EQ(got->channels.at(name).state, c.state) << body;
    }
  } else {
    EXPECT_EQ(got.error().errc, want.error().errc) << body;
    EXPECT_EQ(got.error().code, want.error().code)
        << body << "\nstreaming: " << got.error().message << "\nDOM: " << want.error().message;
  }
}

const char* const kValid[] = {
    R"({"boot_id":"6f1c2a9e-4b7d-4e55-9a0c-2f3b8d1e7a44","uptime_s":86400,"channels":{"detections":{"version":7,"state":"active"}}})",
    R"({"boot_id":"b","uptime_s":0})",
    R"({"uptime_s":5,"boot_id":"b","channels":null,"desired_etag":"\"abc\""})",
    R"({"boot_id":"b","uptime_s":1,"channels":{"a":{"version":1},"b.c-d_e":{"version":0,"state":null}}})",
    R"({"boot_id":"b","uptime_s":1.0,"channels":{"c":{"version":2.0,"state":"staged","extra":[1,{"x":2}]}}})",
    R"({"boot_id":"b","uptime_s":1,"desired_etag":{"deep":[[[{"a":1}]]]}})",
    R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"7.11.18110","parser":"20"}})",
    R"({"boot_id":"b","uptime_s":1,"consumers":null,"channels":{"c":{"version":1}}})",
};

TEST(HeartbeatDecode, AgreesWithTheDomReadingOnHostileBodies) {
  for (const char* v : kValid) {
    ASSERT_TRUE(decode_heartbeat(v)) << v;
    expect_same(v);
  }
  std::string deep32, deep33;
  for (int i = 0; i < 31; ++i) deep32 += "[";
  for (int i = 0; i < 31; ++i) deep32 += "]";
  deep33 = "[" + deep32 + "]";
  deep32 = R"({"boot_id":"b","uptime_s":1,"desired_etag":)" + deep32 + "}";
  deep33 = R"({"boot_id":"b","uptime_s":1,"desired_etag":)" + deep33 + "}";
  std::string many = R"({"boot_id":"b","uptime_s":1,"channels":{)";
  for (int i = 0; i < 65; ++i) many += (i ? "," : "") + ("\"c" + std::to_string(i) + R"(":{"version":1})");
  many += "}}";
  const std::string hostile[] = {
      "", " ", "null", "[]", "{}", "\"x\"", "7", "{", "}", R"({"boot_id":"b","uptime_s":1)",
      R"({"boot_id":"b","uptime_s":1}x)", R"({"boot_id":"b","uptime_s":1} {})",
      R"({"boot_id":"","uptime_s":1})", R"({"boot_id":null,"uptime_s":1})",
      R"({"boot_id":7,"uptime_s":1})", R"({"boot_id":["b"],"uptime_s":1})",
      R"({"boot_id":{"b":1},"uptime_s":1})", std::string(R"({"boot_id":")") + std::string(65, 'b') + R"(","uptime_s":1})",
      R"({"boot_id":"b","uptime_s":-1})", R"({"boot_id":"b","uptime_s":1.5})",
      R"({"boot_id":"b","uptime_s":"1"})", R"({"boot_id":"b","uptime_s":true})",
      R"({"boot_id":"b","uptime_s":18446744073709551615})", R"({"boot_id":"b","uptime_s":1e300})",
      R"({"boot_id":"b","uptime_s":99999999999})", R"({"boot_id":"b"})",
      R"({"boot_id":"b","uptime_s":1,"cpu":3})", R"({"cpu":3})", R"({"cpu":3,"zzz":[1,2]})",
      R"({"boot_id":"b","uptime_s":1,"channels":[]})", R"({"boot_id":"b","uptime_s":1,"channels":"x"})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"Bad Name":{"version":1}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"":{"version":1}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":1}})", R"({"boot_id":"b","uptime_s":1,"channels":{"c":[1]}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":{}}})", R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":-1}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":{"v":1}}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":1,"state":5}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":1,"state":["a"]}}})",
      std::string(R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":1,"state":")") + std::string(33, 's') + "\"}}}",
      // Repeated keys: the last one counts, as in a DOM.
      R"({"boot_id":7,"uptime_s":1,"boot_id":"b"})", R"({"boot_id":"b","uptime_s":1,"boot_id":""})",
      R"({"boot_id":"b","uptime_s":1,"channels":[],"channels":{"c":{"version":1}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":1}},"channels":null})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":1,"c":{"version":3}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":3},"c":{"version":-3}}})",
      R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":"x","version":4}}})",
      deep32, deep33, many, std::string(100000, '['), std::string(5000, '{'),
      R"({"boot_id":"b\u0000","uptime_s":1})", "{\"boot_id\":\"\xff\xfe\",\"uptime_s\":1}",
      // Consumer versions: host-chosen strings, bounded in number, length and charset.
      R"({"boot_id":"b","uptime_s":1,"consumers":[]})", R"({"boot_id":"b","uptime_s":1,"consumers":"20"})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":20}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":["20"]}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":{"v":"20"}}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":""}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"7 11"}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"-7"}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"7\n"}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"{x}"}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"Bad Name":"1"}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":1,"sensor":"21"}})",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"21"},"consumers":null})",
      std::string(R"({"boot_id":"b","uptime_s":1,"consumers":{"s":")") + std::string(65, '7') + "\"}}",
      R"({"boot_id":"b","uptime_s":1,"consumers":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1"}})",
  };
  for (const auto& h : hostile) expect_same(h);
}

TEST(HeartbeatDecode, AgreesWithTheDomReadingOnRandomMutations) {
  std::mt19937 rng(20261122);
  const std::string alphabet = "{}[]\",:0123456789.-eEtruefalsn \\abc_";
  int accepted = 0, refused = 0;
  for (int n = 0; n < 20000; ++n) {
    std::string s = kValid[rng() % std::size(kValid)];
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      auto pos = rng() % s.size();
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: s[pos] = c; break;
        case 1: s.insert(s.begin() + static_cast<long>(pos), c); break;
        default: s.erase(pos, 1 + rng() % 3); break;
      }
    }
    expect_same(s);
    if (HasFatalFailure()) return;
    (decode_heartbeat(s) ? accepted : refused)++;
  }
  // The mutations reach both sides of the contract.
  EXPECT_GT(accepted, 100);
  EXPECT_GT(refused, 1000);
}

}  // namespace
}  // namespace ringfence::proto
