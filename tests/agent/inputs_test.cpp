// What the agent stores and sends is validated: the credential the server hands out at
// enrollment and the one identity.json holds (a CR/LF in it would inject headers into every
// later request).
#include <gtest/gtest.h>

#include "agent/state/store.hpp"
#include "tests/agent/fakes.hpp"

namespace ringfence::agent::testing {
namespace {
using state::State;

TEST(Credential, CharsetAndLength) {
  EXPECT_TRUE(state::is_valid_credential("cred-1"));
  EXPECT_TRUE(state::is_valid_credential(
      "0f8fad5b-d9cb-469f-a165-70867728950e.8d3a9b0c4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c"
      "7d8e9f0a1b2c"));
  EXPECT_TRUE(state::is_valid_credential("abc+/_~.-AZ09=="));
  EXPECT_TRUE(state::is_valid_credential(std::string(256, 'a')));
  EXPECT_FALSE(state::is_valid_credential(""));
  EXPECT_FALSE(state::is_valid_credential(std::string(257, 'a')));
  EXPECT_FALSE(state::is_valid_credential("cred\r\nX-Injected: 1"));
  EXPECT_FALSE(state::is_valid_credential("cred\n"));
  EXPECT_FALSE(state::is_valid_credential("cred 1"));
  EXPECT_FALSE(state::is_valid_credential("cred\t1"));
  EXPECT_FALSE(state::is_valid_credential(std::string("cr\0ed", 5)));
  EXPECT_FALSE(state::is_valid_credential("cr=ed"));
  EXPECT_FALSE(state::is_valid_credential("==="));
  EXPECT_FALSE(state::is_valid_credential("caf\xc3\xa9"));
}

TEST(Credential, AnIdentityFileWithAnInjectingCredentialIsRefused) {
  auto bad = state::decode_identity(
      R"({"host_id":"0f8fad5b-d9cb-469f-a165-70867728950e","credential":"c\r\nX-Injected: 1"})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("credential"), std::string::npos) << bad.error().message;
  auto good = state::decode_identity(
      R"({"host_id":"0f8fad5b-d9cb-469f-a165-70867728950e","credential":""})");
  EXPECT_TRUE(good) << "not enrolled yet";
}

TEST(Credential, AnAgentWhoseIdentityFileWasTamperedWithDoesNotStart) {
  Harness h;
  RealFs fs;
  ASSERT_TRUE(fs.make_dirs(h.cfg.state_dir, 0700));
  ASSERT_TRUE(fs.write_atomic(
      h.cfg.state_dir + "/identity.json",
      R"({"host_id":"0f8fad5b-d9cb-469f-a165-70867728950e","credential":"c\r\nX-Injected: 1"})",
      0600));
  Agent agent(h.cfg, Deps{h.clock, h.fs, h.api, nullptr, h.sys, [] { return 0.5; }, {}});
  auto st = agent.start();
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("credential"), std::string::npos) << st.error().message;
  EXPECT_TRUE(h.api.desireds.empty());
  EXPECT_TRUE(h.api.enrolls.empty());
}

TEST(Credential, AMalformedCredentialFromEnrollmentIsNeitherStoredNorSent) {
  Harness h;
  h.boot();
  ASSERT_EQ(h.api.enrolls.size(), 1u);
  auto host = h.api.enrolls[0].req.host_id;
  auto cb = h.api.enrolls[0].cb;
  h.api.enrolls.clear();
  cb(proto::EnrollResponse{host, "cred\r\nX-Injected: 1", 60, 30});
  EXPECT_EQ(h.agent->machine_state(), State::Unenrolled);
  EXPECT_TRUE(h.agent->identity()->credential.empty());
  EXPECT_TRUE(h.api.desireds.empty()) << "nothing was sent with it";
  EXPECT_TRUE(h.api.beats.empty());
  RealFs fs;
  auto text = fs.read(h.cfg.state_dir + "/identity.json");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->find("X-Injected"), std::string::npos) << *text;
  // ... and it enrolls again after a backoff, accepting a well-formed answer.
  h.clock.advance(60'000);
  ASSERT_EQ(h.api.enrolls.size(), 1u);
  auto cb2 = h.api.enrolls[0].cb;
  h.api.enrolls.clear();
  cb2(proto::EnrollResponse{host, "cred-2", 60, 30});
  EXPECT_EQ(h.agent->identity()->credential, "cred-2");
  ASSERT_FALSE(h.api.desireds.empty());
  EXPECT_EQ(h.api.desireds[0].credential, "cred-2");
}

}  // namespace
}  // namespace ringfence::agent::testing
