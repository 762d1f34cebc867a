// The real `ringfence` binary against a real ringfence-server process: a release engineer's
// session from an empty server to a running rollout, the documented exit codes, and `watch`
// following the live event stream until the rollout ends.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "tests/support/process.hpp"

namespace ringfence::testing {
namespace {
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kAdminToken = "cli-test-admin-token-0123456789";

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A port nothing listens on: bound, read back, closed.
int unused_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    server_ = new Process(Process::start(
        {built_program("server/ringfence-server"), "--data-dir", dir_->path() + "/data", "--listen",
         "127.0.0.1:0", "--no-access-log", "--healthy-after-s", "1", "--evidence-min-age-s", "0"},
        {{"RINGFENCE_ADMIN_TOKEN", kAdminToken}}, dir_->path() + "/server.log"));
    auto line = server_->wait_for_line("listening on", 30s);
    ASSERT_TRUE(line) << "server did not start: " << slurp(dir_->path() + "/server.log");
    url_ = "http://" + line->substr(line->find("listening on ") + 13);
    while (!url_.empty() && (url_.back() == '\r' || url_.back() == ' ')) url_.pop_back();
  }
  static void TearDownTestSuite() {
    if (server_) {
      server_->signal(SIGTERM);
      server_->wait(10s);
    }
    delete server_;
    delete dir_;
    server_ = nullptr;
    dir_ = nullptr;
  }

  // Runs `ringfence --server URL --token T args...` to completion.
  static CliRun cli(std::vector<std::string> args, const std::string& token = kAdminToken,
                    const std::string& server = {}) {
    static int n = 0;
    std::string err_path = dir_->path() + "/cli-" + std::to_string(++n) + ".err";
    std::vector<std::string> argv = {built_program("cli/ringfence"), "--server",
                                     server.empty() ? url_ : server, "--token", token};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Process::start(argv, {{"NO_COLOR", "1"}}, err_path);
    CliRun r;
    auto st = p.wait(60s);
    p.drain();
    server_->drain();
    r.exit_code = st && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
    r.out = p.output();
    r.err = slurp(err_path);
    return r;
  }

  static json cli_json(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    auto r = cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  // A channel with one validated release, and a rollout of it created from a policy.
  static std::int64_t seed_rollout(const std::string& channel) {
    EXPECT_EQ(cli({"channels", "create", channel}).exit_code, 0);
    std::string file = dir_->path() + "/" + channel + ".json";
    std::ofstream(file) << R"({"rules":[{"id":1,"pattern":"x"}]})";
    auto rel = cli_json({"releases", "upload", channel, file, "--notes", "first rules"});
    EXPECT_EQ(rel["version"], 1);
    EXPECT_EQ(rel["state"], "validated");
    auto ro = cli_json(
        {"rollouts", "create", "--channel", channel, "--version", "1", "--policy", "two-step"});
    EXPECT_EQ(ro["state"], "pending");
    return ro["id"].get<std::int64_t>();
  }

  static inline TempDir* dir_ = nullptr;
  static inline Process* server_ = nullptr;
  static inline std::string url_;
};

TEST_F(CliTest, ReleaseEngineerSessionFromRingsToARunningRollout) {
  auto r = cli(
      {"rings", "create", "canary", "--rank", "0", "--buckets", "0:100", "--description", "1%"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("created ring canary"), std::string::npos);
  ASSERT_EQ(cli({"rings", "create", "everyone", "--rank", "1", "--buckets", "0:10000"}).exit_code,
            0);

  auto rings = cli({"rings", "list"});
  ASSERT_EQ(rings.exit_code, 0);
  EXPECT_TRUE(
      std::regex_search(rings.out, std::regex(R"(canary\s+0\s+buckets \[0,100\)\s+0\s+1%)")))
      << rings.out;

  r = cli({"policies", "create", "two-step", "--stage", "canary:100:60:1", "--stage",
           "everyone:100:60:1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("created policy two-step"), std::string::npos);

  auto id = seed_rollout("detections");
  r = cli({"rollouts", "start", std::to_string(id)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("running (baking), stage 0 of 2"), std::string::npos) << r.out;

  auto list = cli_json({"rollouts", "list"});
  ASSERT_TRUE(list["rollouts"].is_array());
  ASSERT_EQ(list["rollouts"].size(), 1u);
  EXPECT_EQ(list["rollouts"][0]["id"], id);
  EXPECT_EQ(list["rollouts"][0]["state"], "running");
  EXPECT_EQ(list["rollouts"][0]["stages"][0]["ring"], "canary");

  auto show = cli({"rollouts", "show", std::to_string(id)});
  ASSERT_EQ(show.exit_code, 0);
  EXPECT_TRUE(std::regex_search(
      show.out, std::regex(R"(0\s+canary\s+100%\s+baking\s+0\s+0\s+0\s+0\s+0\s+waiting)")))
      << show.out;

  auto events = cli_json({"events", "list", "--rollout", std::to_string(id)});
  std::vector<std::string> kinds;
  for (const auto& e : events["events"]) kinds.push_back(e["kind"]);
  // The canary ring has no host: the stage cannot progress, and says so.
  EXPECT_EQ(kinds,
            (std::vector<std::string>{"rollout_created", "rollout_start", "stage_blocked"}));
  EXPECT_NE(show.out.find("blocked (no_live_hosts): no live host in ring 'canary'"),
            std::string::npos)
      << show.out;

  auto rels = cli({"releases", "list", "detections"});
  EXPECT_NE(rels.out.find("rolling"), std::string::npos) << rels.out;
}

TEST_F(CliTest, RefusalsExitTwoWithTheServersMessage) {
  ASSERT_EQ(cli({"rings", "create", "dup", "--rank", "5", "--hosts",
                 "0b5b2f4e-1111-4222-8333-444455556666"})
                .exit_code,
            0);
  auto r = cli({"rings", "create", "dup", "--rank", "5", "--labels", "os=linux"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "ringfence: ring 'dup' exists (HTTP 409, exists)\n");

  r = cli({"rollouts", "pause", "424242"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "ringfence: no rollout 424242 (HTTP 404, not_found)\n");

  r = cli({"rings", "list"}, "not-a-token");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("HTTP 401"), std::string::npos) << r.err;
}

TEST_F(CliTest, UsageErrorsExitOneWithoutAskingTheServer) {
  EXPECT_EQ(cli({"rings", "create", "nope"}).exit_code, 1);             // no --rank, no selector
  EXPECT_EQ(cli({"rollouts"}).exit_code, 1);                            // a verb is required
  EXPECT_EQ(cli({"rollouts", "skip", "1", "--to", "2"}).exit_code, 1);  // --reason required
  EXPECT_EQ(cli({"rings", "list"}, kAdminToken, "ftp://nowhere").exit_code, 1);
  auto r = cli({"releases", "upload", "detections", "/nonexistent/file"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot read /nonexistent/file"), std::string::npos);
}

TEST_F(CliTest, UnreachableServerExitsThree) {
  auto r = cli({"rings", "list"}, kAdminToken, "http://127.0.0.1:" + std::to_string(unused_port()));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("cannot reach the server"), std::string::npos) << r.err;
}

TEST_F(CliTest, WatchFollowsTheStreamAndExitsFourWhenAborted) {
  // Needs the two-step policy and rings from the session test; create them when run alone.
  cli({"rings", "create", "canary", "--rank", "0", "--buckets", "0:100"});
  cli({"rings", "create", "everyone", "--rank", "1", "--buckets", "0:10000"});
  cli({"policies", "create", "two-step", "--stage", "canary:100:60:1", "--stage",
       "everyone:100:60:1"});
  auto id = seed_rollout("sensor-config");
  ASSERT_EQ(cli({"rollouts", "start", std::to_string(id)}).exit_code, 0);

  std::string err_path = dir_->path() + "/watch.err";
  auto watch =
      Process::start({built_program("cli/ringfence"), "--server", url_, "--token", kAdminToken,
                      "rollouts", "watch", std::to_string(id), "--interval", "0.2"},
                     {}, err_path);
  // Not a TTY: plain lines. The history is printed first, then live progress.
  ASSERT_TRUE(watch.wait_for_line("rollout_start", 20s)) << watch.output() << slurp(err_path);
  ASSERT_TRUE(watch.wait_for_line("stage 1 everyone", 20s)) << watch.output();

  auto r = cli({"rollouts", "abort", std::to_string(id), "--reason", "bad rules"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("aborted"), std::string::npos) << r.out;

  auto st = watch.wait(20s);
  ASSERT_TRUE(st) << "watch did not exit: " << watch.output();
  watch.drain();
  EXPECT_TRUE(WIFEXITED(*st));
  EXPECT_EQ(WEXITSTATUS(*st), 4) << watch.output() << slurp(err_path);
  const auto& out = watch.output();
  EXPECT_NE(out.find("rollout_abort by admin [rollout " + std::to_string(id) + "]"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("rollout " + std::to_string(id) + " ended aborted: bad rules"),
            std::string::npos)
      << out;

  // Watching a rollout that already ended answers at once with the same status.
  r = cli({"rollouts", "watch", std::to_string(id)});
  EXPECT_EQ(r.exit_code, 4);
  auto events = cli_json({"events", "list", "--rollout", std::to_string(id)});
  EXPECT_EQ(events["events"].back()["kind"], "release_quarantined");
}

}  // namespace
}  // namespace ringfence::testing
