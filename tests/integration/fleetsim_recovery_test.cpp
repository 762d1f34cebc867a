// The simulated fleet recovers as a real one does (issue 14): a host that boot-loops silently on
// a lethal release is brought back by its agent's crash-loop guard (K short boots, then
// last-known-good, a local_rollback report), so after the halt a new good release finds live
// canary hosts and progresses. Real ringfence-server, real fleetsim, loopback, port 0.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tests/http/http_client.hpp"
#include "tests/support/process.hpp"

namespace ringfence::fleetsim {
namespace {
using nlohmann::json;
using testing::eventually;
using testing::Process;
using testing::TempDir;
using namespace std::chrono_literals;

constexpr const char* kAdmin = "fleetsim-recovery-admin-token-0123";

struct Reply {
  int status = 0;
  json body;
};

// One request to the operator API on a fresh connection (the suite's raw test client).
Reply call(int port, const std::string& method, const std::string& target,
           const std::string& body = "", const std::string& type = "application/json") {
  auto r = testing::request_once(
      static_cast<std::uint16_t>(port),
      method + " " + target +
          " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer " + kAdmin +
          "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\n\r\n" + body);
  if (!r) return {};
  return {r->status, json::parse(r->body, nullptr, false)};
}

class FleetsimRecovery : public ::testing::Test {
 protected:
  void SetUp() override {
    ::mkdir((dir_.path() + "/data").c_str(), 0700);
    server_ = Process::start(
        {testing::built_program("server/ringfence-server"), "--data-dir", dir_.path() + "/data",
         "--listen", "127.0.0.1:0", "--heartbeat-s", "2", "--exposed-heartbeat-s", "1", "--poll-s",
         "2", "--healthy-after-s", "1", "--no-access-log", "--evidence-min-age-s", "0"},
        {{"RINGFENCE_ADMIN_TOKEN", kAdmin}}, dir_.path() + "/server.log");
    auto line = server_.wait_for_line("listening on 127.0.0.1:", 20s);
    ASSERT_TRUE(line);
    port_ = std::stoi(line->substr(line->rfind(':') + 1));
    ASSERT_EQ(call(port_, "POST", "/v1/rings",
                   R"({"name":"all","rank":0,"selector":{"buckets":[0,10000]}})")
                      .status /
                  100,
              2);
    ASSERT_EQ(call(port_, "POST", "/v1/channels", R"({"name":"rules","schema":{}})").status / 100,
              2);
    auto tok = call(port_, "POST", "/v1/enrollment-tokens", R"({"name":"fleet"})");
    ASSERT_EQ(tok.status / 100, 2);
    token_ = tok.body.value("token", "");
  }

  std::int64_t release(const std::string& bytes) {
    auto blob = call(port_, "POST", "/v1/blobs", bytes, "application/octet-stream");
    auto rel = call(port_, "POST", "/v1/channels/rules/releases",
                    json{{"sha256", blob.body.value("sha256", "")}}.dump());
    EXPECT_EQ(rel.status / 100, 2) << rel.body.dump();
    return rel.body.value("version", std::int64_t{0});
  }

  // One stage, every host; returns the rollout id once started.
  std::string roll(std::int64_t version, int min_hosts, int bake_s) {
    auto ro = call(port_, "POST", "/v1/rollouts",
                   json{{"channel", "rules"},
                        {"version", version},
                        {"stages", json::array({{{"ring", "all"},
                                                 {"percent", 100},
                                                 {"bake_s", bake_s},
                                                 {"min_hosts", min_hosts},
                                                 {"approval", "auto"}}})}}
                       .dump());
    EXPECT_EQ(ro.status / 100, 2) << ro.body.dump();
    auto id = ro.body["id"].is_string() ? ro.body["id"].get<std::string>() : ro.body["id"].dump();
    EXPECT_EQ(call(port_, "POST", "/v1/rollouts/" + id + "/start", "{}").status / 100, 2);
    return id;
  }

  std::string state_of(const std::string& id) {
    return call(port_, "GET", "/v1/rollouts/" + id).body.value("state", "");
  }

  // Hosts the server last heard running `version` of rules.
  std::size_t on_version(std::int64_t version) {
    auto r = call(port_, "GET",
                  "/v1/hosts?channel=rules&version=" + std::to_string(version) + "&limit=1000");
    auto hosts = r.body.value("hosts", json::array());
    return hosts.is_array() ? hosts.size() : 0;
  }

  TempDir dir_;
  Process server_;
  int port_ = 0;
  std::string token_;
};

TEST_F(FleetsimRecovery, BootLoopingCanaryHostsComeBackAndANewGoodReleaseProgresses) {
  constexpr int kHosts = 6;
  auto v1 = release("rules v1, good\n");
  auto v2 = release("rules v2, boot-loops every host\n");
  auto v3 = release("rules v3, good again\n");
  ASSERT_EQ(v2, v1 + 1);
  auto fleet = Process::start(
      {testing::built_program("fleetsim/fleetsim"), "--server",
       "http://127.0.0.1:" + std::to_string(port_), "--enroll-token", token_, "--hosts",
       std::to_string(kHosts), "--model", "rules@" + std::to_string(v2) + "=silent:1",
       "--crash-loop-k", "2", "--boot-loop-s", "2", "--status-every", "0", "--seed", "7"},
      {}, dir_.path() + "/fleetsim.log");
  auto first = roll(v1, kHosts, 1);
  ASSERT_TRUE(eventually([&] { return state_of(first) == "completed"; }, 60s))
      << call(port_, "GET", "/v1/rollouts/" + first).body.dump();
  // The lethal release: every host that applies it goes silent; the gate halts it.
  auto lethal = roll(v2, kHosts, 30);
  ASSERT_TRUE(eventually(
      [&] {
        auto s = state_of(lethal);
        return s == "halted" || s == "rolled_back";
      },
      60s))
      << call(port_, "GET", "/v1/rollouts/" + lethal).body.dump();
  // Their guards bring them back on last-known-good (v1), and the server hears of it.
  ASSERT_TRUE(eventually([&] { return on_version(v1) == kHosts; }, 60s))
      << "hosts on v1: " << on_version(v1) << ", on v2: " << on_version(v2);
  // A new good release needs every host healthy: it passes only if they all came back.
  auto good = roll(v3, kHosts, 1);
  EXPECT_TRUE(eventually([&] { return state_of(good) == "completed"; }, 60s))
      << call(port_, "GET", "/v1/rollouts/" + good).body.dump();
  EXPECT_EQ(on_version(v3), static_cast<std::size_t>(kHosts));
  fleet.signal(SIGTERM);
  ASSERT_TRUE(fleet.wait(20s));
}

}  // namespace
}  // namespace ringfence::fleetsim
