// Every read command's table output against a server with a real simulated fleet: a real
// ringfence-server and a real fleetsim whose hosts enroll, take a release and report, so the
// tables meet the shapes a live fleet produces (hosts that run content, stages with counts,
// events with data). Each command must exit 0 with its table, never end on an exception.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "tests/support/process.hpp"

namespace ringfence::testing {
namespace {
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kAdminToken = "cli-fleet-admin-token-0123456789";

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CliResult {
  int exit_code = -1;
  bool signalled = false;
  std::string out, err;
};

class CliFleetTest : public ::testing::Test {
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

    ASSERT_EQ(cli({"rings", "create", "all", "--rank", "0", "--buckets", "0:10000", "--description",
                   "every host"})
                  .exit_code,
              0);
    ASSERT_EQ(cli({"policies", "create", "at-once", "--stage", "all:100:1:1"}).exit_code, 0);
    ASSERT_EQ(cli({"channels", "create", "detections"}).exit_code, 0);
    std::string file = dir_->path() + "/rules.json";
    std::ofstream(file) << R"({"rules":[{"id":1,"pattern":"x"}]})";
    ASSERT_EQ(cli({"releases", "upload", "detections", file, "--notes", "first"}).exit_code, 0);
    auto tok = cli({"enrollment-tokens", "create", "fleet", "--label", "site=fra1"});
    ASSERT_EQ(tok.exit_code, 0) << tok.err;
    std::string token = tok.out.substr(0, tok.out.find('\n'));

    fleet_ = new Process(Process::start(
        {built_program("fleetsim/fleetsim"), "--server", url_, "--enroll-token", token, "--hosts",
         "6", "--status-every", "0", "--heartbeat-scale", "0.05", "--seed", "7"},
        {}, dir_->path() + "/fleetsim.log"));
    ASSERT_TRUE(eventually(
        [] {
          auto r = cli({"--json", "hosts", "list"});
          auto j = json::parse(r.out, nullptr, false);
          return r.exit_code == 0 && j.is_object() && j["hosts"].size() == 6;
        },
        30s))
        << slurp(dir_->path() + "/fleetsim.log");

    auto ro = cli({"--json", "rollouts", "create", "--channel", "detections", "--version", "1",
                   "--policy", "at-once"});
    ASSERT_EQ(ro.exit_code, 0) << ro.err;
    rollout_ = std::to_string(json::parse(ro.out)["id"].get<long long>());
    ASSERT_EQ(cli({"rollouts", "start", rollout_}).exit_code, 0);
    // The hosts run content: every one reports detections v1 applied.
    ASSERT_TRUE(eventually(
        [] {
          auto r = cli({"--json", "hosts", "list"});
          auto j = json::parse(r.out, nullptr, false);
          if (r.exit_code != 0 || !j.is_object()) return false;
          int on = 0;
          for (const auto& h : j["hosts"]) {
            if (h.contains("channels") && h["channels"].contains("detections")) ++on;
          }
          return on == 6;
        },
        60s))
        << slurp(dir_->path() + "/fleetsim.log");
  }

  static void TearDownTestSuite() {
    for (auto* p : {fleet_, server_}) {
      if (!p) continue;
      p->signal(SIGTERM);
      p->wait(10s);
    }
    delete fleet_;
    delete server_;
    delete dir_;
    fleet_ = server_ = nullptr;
    dir_ = nullptr;
  }

  static CliResult cli(std::vector<std::string> args) {
    static int n = 0;
    std::string err_path = dir_->path() + "/cli-" + std::to_string(++n) + ".err";
    std::vector<std::string> argv = {built_program("cli/ringfence"), "--server", url_, "--token",
                                     kAdminToken};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Process::start(argv, {{"NO_COLOR", "1"}}, err_path);
    CliResult r;
    auto st = p.wait(60s);
    p.drain();
    if (server_) server_->drain();
    if (fleet_) fleet_->drain();
    r.signalled = st && WIFSIGNALED(*st);
    r.exit_code = st && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
    r.out = p.output();
    r.err = slurp(err_path);
    return r;
  }

  // Runs a table command: exit 0, no signal, no exception text, and the output matches.
  static void expect_table(std::vector<std::string> args, const std::string& pattern) {
    std::string what;
    for (const auto& a : args) what += a + " ";
    auto r = cli(args);
    EXPECT_FALSE(r.signalled) << what << "died on a signal: " << r.err;
    EXPECT_EQ(r.exit_code, 0) << what << r.err;
    EXPECT_EQ(r.err.find("terminate"), std::string::npos) << what << r.err;
    EXPECT_TRUE(std::regex_search(r.out, std::regex(pattern))) << what << "\n" << r.out;
  }

  static std::string first_host() {
    auto j = json::parse(cli({"--json", "hosts", "list"}).out);
    return j["hosts"][0]["host_id"].get<std::string>();
  }

  static inline TempDir* dir_ = nullptr;
  static inline Process* server_ = nullptr;
  static inline Process* fleet_ = nullptr;
  static inline std::string url_;
  static inline std::string rollout_;
};

TEST_F(CliFleetTest, HostsListShowsTheContentEachHostRuns) {
  expect_table({"hosts", "list"}, R"(HOST\s+RING\s+BUCKET)");
  expect_table({"hosts", "list"}, R"([0-9a-f-]{36}\s+all\s+\d+\s+.*detections@1\(\w+\))");
  expect_table({"hosts", "list", "--channel", "detections"}, R"(detections@1)");
  expect_table({"hosts", "show", first_host()}, R"(host_id:\s+[0-9a-f-]{36})");
}

TEST_F(CliFleetTest, RingTables) {
  expect_table({"rings", "list"}, R"(all\s+0\s+buckets \[0,10000\)\s+6\s+every host)");
  expect_table({"rings", "show", "all"}, R"(name:\s+all)");
  expect_table({"rings", "hosts", "all"}, R"([0-9a-f-]{36}\s+all\s+\d+.*detections@1)");
}

TEST_F(CliFleetTest, ContentTables) {
  expect_table({"channels", "list"}, R"(detections)");
  expect_table({"channels", "show", "detections"}, R"(name:\s+detections)");
  expect_table({"releases", "list", "detections"}, R"(1\s+.*first)");
  expect_table({"releases", "show", "detections", "1"}, R"(sha256:\s+[0-9a-f]{64})");
  expect_table({"policies", "list"}, R"(at-once)");
  expect_table({"policies", "show", "at-once"}, R"(all\s+100)");
}

TEST_F(CliFleetTest, RolloutAndEventTables) {
  expect_table({"rollouts", "list"}, rollout_ + R"(\s+detections\s+1\s+)");
  expect_table({"rollouts", "show", rollout_}, R"(0\s+all\s+100%)");
  expect_table({"rollouts", "preview", "--channel", "detections", "--policy", "at-once"},
               R"(0\s+all\s+100%\s+6\b)");
  expect_table({"events", "list", "--rollout", rollout_}, R"(rollout_start)");
  expect_table({"events", "list"}, R"(rollout_created)");
}

TEST_F(CliFleetTest, PreviewShowsStrataCoverage) {
  auto plan = dir_->path() + "/strata-plan.json";
  std::ofstream(plan) << R"([{"ring":"all","percent":10,"strata":{"keys":["os"],)"
                      << R"("min_hosts_per_stratum":2,"min_stratum_size":2}}])";
  expect_table(
      {"rollouts", "preview", "--channel", "detections", "--stages-file", plan},
      R"(stage 0 strata: [1-9]\d* of [1-9]\d* strata qualify\n  os=\S+: \d+ live, [12] picked)");
}

TEST_F(CliFleetTest, AdminTables) {
  expect_table({"tokens", "list"}, R"(NAME)");
  expect_table({"emergency-stop", "status"}, R"(.)");
}

}  // namespace
}  // namespace ringfence::testing
