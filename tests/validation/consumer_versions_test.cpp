// Validation against every consumer version in the field (issue 14): hosts report their
// consumer's version in heartbeats; a channel names its consumer; a new release is checked by the
// channel's validator command once per version running on at least the threshold of hosts, and
// refused naming the version that fails. The real sample sensor as the validator, the 21-field
// release of the July 2024 incident, a Service on a real SQLite store.
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;

std::string sample(const std::string& name) {
  std::ifstream in(std::string(RINGFENCE_SOURCE_DIR) + "/fleetsim/samples/" + name);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class ConsumerVersions : public Harness {
 protected:
  void SetUp() override {
    Harness::SetUp();
    sensor_ = testing::built_program("fleetsim/sample-sensor");
    ASSERT_EQ(::access(sensor_.c_str(), X_OK), 0) << "sample-sensor is not built: " << sensor_;
    for (int i = 0; i < 4; ++i) add_host(i, "rest");
  }
  json validator() const {
    return {{"argv", {sensor_, "--consumer-version", "{consumer_version}", "--check", "{file}"}},
            {"timeout_s", 10}};
  }
  Expected<json> make_channel(json consumer) {
    return service_->put_channel(
        admin_, "det", {{"name", "det"}, {"validator", validator()}, {"consumer", consumer}}, true);
  }
  void runs(int h, const std::string& version) {
    proto::Heartbeat hb{"b1", 100, {}, {{"sensor", version}}};
    ASSERT_TRUE(service_->heartbeat(hosts_[static_cast<std::size_t>(h)], hb));
  }
  Expected<json> create(const std::string& content) {
    return service_->create_release(admin_, "det", {{"sha256", blob(content)}});
  }
  std::string sensor_;
};

TEST_F(ConsumerVersions, The21FieldReleaseIsRefusedWhile20ValueConsumersAreInTheField) {
  ASSERT_TRUE(make_channel({{"name", "sensor"}, {"min_hosts", 1}}));
  runs(0, "20");
  runs(1, "20");
  runs(2, "21");
  runs(3, "21");
  // A good release passes against both versions.
  auto good = create(sample("v1-good.json"));
  ASSERT_TRUE(good) << good.error().message;
  auto checked = (*good)["validation"]["consumers"]["versions"];
  ASSERT_EQ(checked.size(), 2u) << (*good)["validation"].dump();
  EXPECT_EQ(checked[0]["version"], "20");
  EXPECT_EQ(checked[0]["hosts"], 2);
  EXPECT_EQ(checked[1]["version"], "21");
  // The 21-field release: a 21-value consumer loads it, the 20-value ones would crash.
  auto bad = create(sample("v3-bad-21-fields.json"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errc, Errc::Unprocessable);
  EXPECT_EQ(bad.error().code, "validation_failed");
  EXPECT_NE(bad.error().message.find("version(s) 20,"), std::string::npos) << bad.error().message;
  auto details = json::parse(bad.error().details_json, nullptr, false);
  ASSERT_TRUE(details.is_object()) << bad.error().details_json;
  ASSERT_EQ(details["findings"].size(), 1u) << details.dump();
  EXPECT_NE(details["findings"][0]["message"].get<std::string>().find("version 20 (on 2 hosts)"),
            std::string::npos)
      << details.dump();
  ASSERT_EQ(details["consumer_versions"].size(), 2u);
  EXPECT_EQ(details["consumer_versions"][0]["passed"], false);
  EXPECT_NE(details["consumer_versions"][0]["output"].get<std::string>().find("uses field 21"),
            std::string::npos);
  EXPECT_EQ(details["consumer_versions"][1]["passed"], true) << "version 21 loads it";
  // The refusal survives a restart: the versions in the field are stored with the hosts.
  open();
  EXPECT_FALSE(create(sample("v3-bad-21-fields.json")));
  // Once the 20-value consumers are upgraded, only 21-value consumers are in the field: accepted.
  runs(0, "21");
  runs(1, "21");
  auto ok = create(sample("v3-bad-21-fields.json"));
  ASSERT_TRUE(ok) << ok.error().message << " " << ok.error().details_json;
  checked = (*ok)["validation"]["consumers"]["versions"];
  ASSERT_EQ(checked.size(), 1u) << (*ok)["validation"].dump();
  EXPECT_EQ(checked[0]["version"], "21");
  EXPECT_EQ(checked[0]["hosts"], 4);
}

TEST_F(ConsumerVersions, AVersionBelowTheThresholdIsNotCheckedAndListedVersionsAlwaysAre) {
  ASSERT_TRUE(make_channel({{"name", "sensor"}, {"min_hosts", 2}}));
  runs(0, "20");  // one host: under the threshold of 2
  runs(1, "21");
  runs(2, "21");
  auto rel = create(sample("v3-bad-21-fields.json"));
  ASSERT_TRUE(rel) << rel.error().message;
  EXPECT_EQ((*rel)["validation"]["consumers"]["versions"].size(), 1u);
  // A version the channel lists is checked whatever the field holds.
  auto upd = service_->put_channel(
      admin_, "det",
      {{"validator", validator()},
       {"consumer", {{"name", "sensor"}, {"min_hosts", 2}, {"versions", {"20"}}}}},
      false);
  ASSERT_TRUE(upd) << upd.error().message;
  auto refused = create(sample("v3-bad-21-fields.json") + " ");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("20"), std::string::npos) << refused.error().message;
}

// Consumer versions are what hosts say: like their crash evidence, they count only from hosts
// with a track record, or one fresh enrollee reporting a made-up version would get every release
// of the channel refused (the validator does not know that version).
TEST_F(ConsumerVersions, FreshEnrolleesDoNotDecideWhichVersionsAreChecked) {
  evidence_min_age_s_ = 600;
  open();
  ASSERT_TRUE(make_channel({{"name", "sensor"}, {"min_hosts", 1}}));
  for (int t = 0; t < 660; t += 60) {
    for (int h = 0; h < 4; ++h) runs(h, "21");
    advance_s(60);
  }
  add_host(4, "rest");
  runs(4, "0-made-up");
  auto rel = create(sample("v1-good.json"));
  ASSERT_TRUE(rel) << rel.error().message << " " << rel.error().details_json;
  auto checked = (*rel)["validation"]["consumers"]["versions"];
  ASSERT_EQ(checked.size(), 1u) << checked.dump();
  EXPECT_EQ(checked[0]["version"], "21");
  EXPECT_EQ(checked[0]["hosts"], 4);
}

TEST_F(ConsumerVersions, NoVersionToCheckAgainstIsARefusalNotAPass) {
  ASSERT_TRUE(make_channel({{"name", "sensor"}}));
  auto rel = create(sample("v1-good.json"));
  ASSERT_FALSE(rel);
  EXPECT_EQ(rel.error().code, "validation_failed");
  EXPECT_NE(rel.error().message.find("no version of consumer 'sensor'"), std::string::npos);
}

TEST_F(ConsumerVersions, HalfConfiguredChannelsAndHostileVersionsAreRefused) {
  // A consumer without a per-version command, and a per-version command without a consumer.
  auto no_token = service_->put_channel(admin_, "det",
                                        {{"validator", {{"argv", {sensor_, "--check", "{file}"}}}},
                                         {"consumer", {{"name", "sensor"}}}},
                                        true);
  ASSERT_FALSE(no_token);
  EXPECT_EQ(no_token.error().errc, Errc::InvalidArgument);
  auto no_consumer = service_->put_channel(admin_, "det", {{"validator", validator()}}, true);
  ASSERT_FALSE(no_consumer);
  EXPECT_EQ(no_consumer.error().errc, Errc::InvalidArgument);
  for (json bad : {json{{"name", "Bad Name"}}, json{{"name", "s"}, {"min_hosts", 0}},
                   json{{"name", "s"}, {"versions", {"1 2"}}}, json{{"name", "s"}, {"x", 1}},
                   json("sensor")}) {
    auto r = make_channel(bad);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().errc, Errc::InvalidArgument) << bad.dump();
  }
  // The token is not a program.
  auto prog =
      service_->put_channel(admin_, "det",
                            {{"validator", {{"argv", {"/bin/{consumer_version}", "{file}"}}}},
                             {"consumer", {{"name", "sensor"}}}},
                            true);
  ASSERT_FALSE(prog);
  // What the agent cannot send, the decoder refuses before it reaches a command line.
  EXPECT_FALSE(proto::decode_heartbeat(
      R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"20; rm -rf /"}})"));
  EXPECT_FALSE(
      proto::decode_heartbeat(R"({"boot_id":"b","uptime_s":1,"consumers":{"sensor":"--x"}})"));
}

}  // namespace
}  // namespace ringfence::server::core
