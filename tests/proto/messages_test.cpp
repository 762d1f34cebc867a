#include "proto/messages.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace ringfence::proto {
namespace {

using nlohmann::json;

constexpr const char* kHost = "123e4567-e89b-12d3-a456-426614174000";
constexpr const char* kSha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

template <typename T>
void expect_invalid(const Expected<T>& r, const std::string& what) {
  ASSERT_FALSE(r) << what;
  EXPECT_EQ(r.error().errc, Errc::InvalidArgument) << what << ": " << r.error().message;
}

TEST(Messages, EnrollRequestRoundTrip) {
  EnrollRequest m{"tok-1", kHost, {{"os", "windows"}, {"site", "fra1"}}, "1.2.3"};
  auto back = decode_enroll_request(encode(m));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->enrollment_token, m.enrollment_token);
  EXPECT_EQ(back->host_id, m.host_id);
  EXPECT_EQ(back->labels, m.labels);
  EXPECT_EQ(back->agent_version, m.agent_version);
}

TEST(Messages, EnrollRequestIsStrict) {
  auto with = [](const std::string& key, const json& value) {
    json j = {{"enrollment_token", "t"},
              {"host_id", kHost},
              {"labels", {{"os", "linux"}}},
              {"agent_version", "1"}};
    if (value.is_discarded()) {
      j.erase(key);
    } else {
      j[key] = value;
    }
    return j.dump();
  };
  json gone(json::value_t::discarded);
  ASSERT_TRUE(decode_enroll_request(with("agent_version", "1")));
  expect_invalid(decode_enroll_request(with("enrollment_token", gone)), "missing token");
  expect_invalid(decode_enroll_request(with("host_id", gone)), "missing host_id");
  expect_invalid(decode_enroll_request(with("host_id", 42)), "host_id number");
  expect_invalid(decode_enroll_request(with("host_id", "123E4567-E89B-12D3-A456-426614174000")),
                 "upper-case uuid");
  expect_invalid(decode_enroll_request(with("host_id", "not-a-uuid")), "invalid uuid");
  expect_invalid(decode_enroll_request(with("enrollment_token", "")), "empty token");
  expect_invalid(decode_enroll_request(with("enrollment_token", std::string(129, 't'))),
                 "long token");
  expect_invalid(decode_enroll_request(with("labels", json::array())), "labels array");
  expect_invalid(decode_enroll_request(with("labels", {{"OS", "x"}})), "bad label key");
  expect_invalid(decode_enroll_request(with("labels", {{"os", 1}})), "label value number");
  expect_invalid(decode_enroll_request(with("labels", {{"os", "a,b"}})), "bad label value");
  json many = json::object();
  for (std::size_t i = 0; i <= kMaxLabels; ++i) many["k" + std::to_string(i)] = "v";
  expect_invalid(decode_enroll_request(with("labels", many)), "too many labels");
  expect_invalid(decode_enroll_request(with("extra", 1)), "unknown field");
  expect_invalid(decode_enroll_request("[]"), "array body");
  expect_invalid(decode_enroll_request("{"), "truncated JSON");
  expect_invalid(decode_enroll_request(""), "empty body");
}

TEST(Messages, EnrollResponseRoundTrip) {
  EnrollResponse m{kHost, "cred", 30, 60};
  auto back = decode_enroll_response(encode(m));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->host_id, m.host_id);
  EXPECT_EQ(back->credential, m.credential);
  EXPECT_EQ(back->heartbeat_s, 30);
  EXPECT_EQ(back->poll_s, 60);
  m.heartbeat_s = 0;
  expect_invalid(decode_enroll_response(encode(m)), "heartbeat 0");
  expect_invalid(decode_enroll_response(R"({"host_id":"h","credential":"c","heartbeat_s":"30",)"
                                        R"("poll_s":60})"),
                 "heartbeat string");
}

DesiredState sample_desired() {
  DesiredState d;
  d.etag = "\"e1\"";
  d.heartbeat_s = 15;
  d.poll_s = 60;
  DesiredChannel c;
  c.channel = "detections";
  c.version = 7;
  c.sha256 = kSha;
  c.size = 10;
  c.url = std::string("/v1/blobs/") + kSha;
  c.manifest = Manifest{"detections", 7, kSha, 10, 1000, 2000};
  c.signature = std::string(86, 'A') + "==";
  c.rollback = true;
  d.channels.push_back(c);
  d.known_bad.push_back({"detections", 8});
  return d;
}

TEST(Messages, DesiredStateRoundTrip) {
  DesiredState d = sample_desired();
  auto back = decode_desired_state(encode(d));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->etag, d.etag);
  EXPECT_EQ(back->heartbeat_s, 15);
  EXPECT_EQ(back->poll_s, 60);
  ASSERT_EQ(back->channels.size(), 1u);
  const auto& c = back->channels[0];
  EXPECT_EQ(c.channel, "detections");
  EXPECT_EQ(c.version, 7);
  EXPECT_EQ(c.sha256, kSha);
  EXPECT_EQ(c.size, 10);
  EXPECT_EQ(c.url, d.channels[0].url);
  EXPECT_EQ(c.signature, d.channels[0].signature);
  EXPECT_TRUE(c.rollback);
  EXPECT_EQ(canonical_bytes(c.manifest), canonical_bytes(d.channels[0].manifest));
  ASSERT_EQ(back->known_bad.size(), 1u);
  EXPECT_EQ(back->known_bad[0].channel, "detections");
  EXPECT_EQ(back->known_bad[0].version, 8);

  d.channels[0].rollback = false;
  EXPECT_EQ(json::parse(encode(d))["channels"][0].count("rollback"), 0u);
  EXPECT_EQ(json::parse(encode(d))["channels"][0]["manifest"].count("rollback_from"), 0u);

  // A downgrade authorisation survives the round trip; one that does not lie above its own
  // version, or is not an integer, is refused.
  d.channels[0].manifest.rollback_from = 9;
  auto signed_back = decode_desired_state(encode(d));
  ASSERT_TRUE(signed_back) << signed_back.error().message;
  EXPECT_EQ(signed_back->channels[0].manifest.rollback_from, 9);
  for (const auto& bad : {json(7), json(0), json("9"), json(9.5)}) {
    auto j = json::parse(encode(d));
    j["channels"][0]["manifest"]["rollback_from"] = bad;
    EXPECT_FALSE(decode_desired_state(j.dump())) << bad.dump();
  }
  auto plain = decode_desired_state(encode(d));
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->channels[0].rollback);
}

TEST(Messages, DesiredStateIsStrict) {
  auto mutate = [](auto f) {
    json j = json::parse(encode(sample_desired()));
    f(j);
    return j.dump();
  };
  expect_invalid(decode_desired_state(mutate([](json& j) { j.erase("channels"); })),
                 "missing channels");
  expect_invalid(decode_desired_state(mutate([](json& j) { j["channels"] = json::object(); })),
                 "channels object");
  expect_invalid(decode_desired_state(mutate([](json& j) {
                   for (std::size_t i = 0; i < kMaxChannels; ++i)
                     j["channels"].push_back(j["channels"][0]);
                 })),
                 "too many channels");
  expect_invalid(decode_desired_state(mutate([](json& j) { j["channels"][0]["version"] = "7"; })),
                 "version string");
  expect_invalid(decode_desired_state(mutate([](json& j) { j["channels"][0]["version"] = 0; })),
                 "version 0");
  expect_invalid(decode_desired_state(mutate([](json& j) { j["channels"][0]["sha256"] = "ab"; })),
                 "bad sha256");
  expect_invalid(
      decode_desired_state(mutate([](json& j) { j["channels"][0]["channel"] = "../etc"; })),
      "bad channel name");
  expect_invalid(decode_desired_state(mutate([](json& j) { j["channels"][0].erase("manifest"); })),
                 "missing manifest");
  expect_invalid(
      decode_desired_state(mutate([](json& j) { j["channels"][0]["manifest"]["extra"] = 1; })),
      "manifest unknown key");
  expect_invalid(
      decode_desired_state(mutate([](json& j) { j["channels"][0]["manifest"].erase("expires"); })),
      "manifest missing expires");
  expect_invalid(
      decode_desired_state(mutate([](json& j) { j["channels"][0]["rollback"] = "yes"; })),
      "rollback string");
  expect_invalid(decode_desired_state(mutate([](json& j) {
                   j["known_bad"] = {{{"channel", 1}}};
                 })),
                 "known_bad entry");
  expect_invalid(decode_desired_state(mutate([](json& j) { j["heartbeat_s"] = 1.5; })),
                 "heartbeat float");
}

TEST(Messages, HeartbeatRoundTrip) {
  Heartbeat h{"boot-1", 3600, {{"detections", {7, "active"}}, {"sensor-config", {3, "staged"}}}};
  auto back = decode_heartbeat(encode(h));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->boot_id, "boot-1");
  EXPECT_EQ(back->uptime_s, 3600);
  ASSERT_EQ(back->channels.size(), 2u);
  EXPECT_EQ(back->channels["detections"].version, 7);
  EXPECT_EQ(back->channels["sensor-config"].state, "staged");
  auto defaulted =
      decode_heartbeat(R"({"boot_id":"b","uptime_s":1,"channels":{"c":{"version":1}}})");
  ASSERT_TRUE(defaulted);
  EXPECT_EQ(defaulted->channels["c"].state, "active");
  EXPECT_TRUE(decode_heartbeat(R"({"boot_id":"b","uptime_s":1,"desired_etag":"x"})"));
}

TEST(Messages, HeartbeatIsStrict) {
  expect_invalid(decode_heartbeat(R"({"boot_id":"b","uptime_s":-1})"), "negative uptime");
  expect_invalid(decode_heartbeat(R"({"uptime_s":1})"), "missing boot_id");
  expect_invalid(decode_heartbeat(R"({"boot_id":"b","uptime_s":1,"cpu":3})"), "unknown field");
  expect_invalid(decode_heartbeat(R"({"boot_id":"b","uptime_s":1,"channels":[]})"),
                 "channels array");
  expect_invalid(
      decode_heartbeat(R"({"boot_id":"b","uptime_s":1,"channels":{"Bad Name":{"version":1}}})"),
      "bad channel name");
  expect_invalid(decode_heartbeat(R"({"boot_id":"b","uptime_s":1,"channels":{"c":1}})"),
                 "channel status not object");
}

Report sample_report(ReportKind kind) {
  Report r;
  r.kind = kind;
  r.time = 1721362140000;
  r.channel = "detections";
  r.version = 7;
  r.boot_id = "boot-1";
  r.detail_json = R"({"module":"csagent.sys","code":"0x50"})";
  return r;
}

TEST(Messages, ReportsRoundTripEveryKind) {
  std::vector<Report> in;
  for (auto k : {ReportKind::Applied, ReportKind::ApplyFailed, ReportKind::Crash,
                 ReportKind::LocalRollback}) {
    in.push_back(sample_report(k));
    EXPECT_EQ(report_kind_from(to_string(k)), k);
  }
  in.back().channel.reset();
  in.back().version.reset();
  in.back().detail_json = "{}";
  auto back = decode_reports(encode(in));
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ((*back)[i].kind, in[i].kind);
    EXPECT_EQ((*back)[i].time, in[i].time);
    EXPECT_EQ((*back)[i].channel, in[i].channel);
    EXPECT_EQ((*back)[i].version, in[i].version);
    EXPECT_EQ((*back)[i].boot_id, in[i].boot_id);
    EXPECT_EQ(json::parse((*back)[i].detail_json), json::parse(in[i].detail_json));
  }
  EXPECT_EQ(to_string(ReportKind::LocalRollback), "local_rollback");
  EXPECT_FALSE(report_kind_from("Crash"));
  EXPECT_FALSE(report_kind_from(""));
}

TEST(Messages, ReportsAreStrict) {
  auto one = [](auto f) {
    json j = json::parse(encode(std::vector<Report>{sample_report(ReportKind::Crash)}));
    f(j[0]);
    return j.dump();
  };
  expect_invalid(decode_reports(one([](json& r) { r["kind"] = "exploded"; })), "unknown kind");
  expect_invalid(decode_reports(one([](json& r) { r["kind"] = 1; })), "kind number");
  expect_invalid(decode_reports(one([](json& r) { r.erase("time"); })), "missing time");
  expect_invalid(decode_reports(one([](json& r) { r["time"] = -1; })), "negative time");
  expect_invalid(decode_reports(one([](json& r) { r.erase("boot_id"); })), "missing boot_id");
  expect_invalid(decode_reports(one([](json& r) { r["version"] = "7"; })), "version string");
  expect_invalid(decode_reports(one([](json& r) { r["channel"] = "UPPER"; })), "bad channel");
  expect_invalid(decode_reports(one([](json& r) { r["detail"] = "text"; })), "detail string");
  expect_invalid(decode_reports(one([](json& r) { r["extra"] = true; })), "unknown field");
  expect_invalid(decode_reports(one([](json& r) {
                   r["detail"] = {{"stack", std::string(kMaxDetailBytes, 'x')}};
                 })),
                 "oversized detail");
  expect_invalid(decode_reports(R"({"kind":"crash"})"), "object, not array");
  expect_invalid(decode_reports("[1]"), "non-object report");

  std::vector<Report> many(kMaxReportsPerBatch + 1, sample_report(ReportKind::Applied));
  auto too_many = decode_reports(encode(many));
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().errc, Errc::PayloadTooLarge);
  std::vector<Report> max(kMaxReportsPerBatch, sample_report(ReportKind::Applied));
  EXPECT_TRUE(decode_reports(encode(max)));
  EXPECT_TRUE(decode_reports("[]"));
}

TEST(Messages, DeepNestingIsRefused) {
  std::string deep = R"([{"kind":"crash","time":1,"boot_id":"b","detail":{"a":)";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  deep += "}}]";
  auto r = decode_reports(deep);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, Errc::InvalidArgument);
  EXPECT_EQ(r.error().code, "invalid_json");
  std::string bomb(100000, '[');
  expect_invalid(decode_heartbeat(bomb), "unbalanced deep array");
}

}  // namespace
}  // namespace ringfence::proto
