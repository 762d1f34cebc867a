// The real ringfence-server and real ringfence-agent processes on loopback (port 0): enroll,
// long poll, download, verify, apply, heartbeat; kill -9 during a download and during a swap;
// a consumer crash loop reverted locally while the server is down; a server outage met with
// backoff rather than a request storm; forged or stale input refused (content signed by another
// key, a tampered blob store) and a restart loop with the server down reverted to
// last-known-good, reported once the server is back. No fixed sleeps: every wait is a condition
// with a deadline. Skipped (not failed) when the server binary has not been built.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "proto/signing.hpp"
#include "tests/support/process.hpp"

namespace ringfence::agent::testing {
namespace {
using nlohmann::json;
using ringfence::testing::eventually;
using ringfence::testing::Process;
using ringfence::testing::TempDir;
using namespace std::chrono_literals;

constexpr const char* kAdminToken = "integration-admin-token-0123456789";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
    ++n;
  return n;
}

struct HttpReply {
  int status = 0;
  std::string body;
  json j() const { return json::parse(body, nullptr, false); }
};

// A minimal blocking HTTP/1.1 client for the operator API (Connection: close).
HttpReply http(int port, const std::string& method, const std::string& target,
               const std::string& body = "", const std::string& content_type = "application/json",
               const std::string& token = kAdminToken) {
  HttpReply out;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return out;
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  if (!body.empty() || method == "POST") {
    req += "Content-Type: " + content_type + "\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n";
  }
  req += "\r\n" + body;
  std::size_t sent = 0;
  while (sent < req.size()) {
    auto n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string resp;
  char buf[8192];
  while (true) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (resp.size() < 12) return out;
  out.status = std::stoi(resp.substr(9, 3));
  auto hdr_end = resp.find("\r\n\r\n");
  if (hdr_end != std::string::npos) {
    std::string headers = resp.substr(0, hdr_end);
    out.body = resp.substr(hdr_end + 4);
    std::string lower;
    for (char c : headers) lower.push_back(static_cast<char>(std::tolower(c)));
    if (lower.find("transfer-encoding: chunked") != std::string::npos) {
      std::string decoded;
      std::size_t pos = 0;
      while (pos < out.body.size()) {
        auto eol = out.body.find("\r\n", pos);
        if (eol == std::string::npos) break;
        std::size_t len = std::stoul(out.body.substr(pos, eol - pos), nullptr, 16);
        if (len == 0) break;
        decoded += out.body.substr(eol + 2, len);
        pos = eol + 2 + len + 2;
      }
      out.body = decoded;
    }
  }
  return out;
}

class Server {
 public:
  explicit Server(std::string data_dir) : data_dir_(std::move(data_dir)) {}
  bool start(int port = 0) {
    proc_ =
        Process::start({ringfence::testing::built_program("server/ringfence-server"), "--data-dir",
                        data_dir_, "--listen", "127.0.0.1:" + std::to_string(port), "--heartbeat-s",
                        "2", "--exposed-heartbeat-s", "1", "--poll-s", "5", "--healthy-after-s",
                        "1", "--no-access-log", "--evidence-min-age-s", "0"},
                       {{"RINGFENCE_ADMIN_TOKEN", kAdminToken}}, data_dir_ + "/../server.log");
    auto line = proc_.wait_for_line("listening on 127.0.0.1:", 20s);
    if (!line) return false;
    port_ = std::stoi(line->substr(line->rfind(':') + 1));
    return port_ > 0;
  }
  void kill() {
    proc_.signal(SIGKILL);
    proc_.wait(10s);
  }
  // A clean stop (SIGTERM); true when the process exited within the deadline.
  bool stop() {
    proc_.signal(SIGTERM);
    return proc_.wait(20s).has_value();
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string public_key_file() const { return data_dir_ + "/signing.pub"; }
  std::string data_dir() const { return data_dir_; }

 private:
  std::string data_dir_;
  Process proc_;
  int port_ = 0;
};

class AgentIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    server_bin_ = ringfence::testing::built_program("server/ringfence-server");
    agent_bin_ = ringfence::testing::built_program("agent/ringfence-agent");
    ASSERT_EQ(::access(server_bin_.c_str(), X_OK), 0)
        << "ringfence-server is not built: " << server_bin_;
    ASSERT_EQ(::access(agent_bin_.c_str(), X_OK), 0) << agent_bin_;
    ::mkdir((dir_.path() + "/data").c_str(), 0700);
    server_ = std::make_unique<Server>(dir_.path() + "/data");
    ASSERT_TRUE(server_->start()) << slurp(dir_.path() + "/server.log");
    // Operator setup: one ring with every host, one channel, an enrollment token.
    auto ring = http(
        port(), "POST", "/v1/rings",
        R"({"name":"all","rank":0,"selector":{"buckets":[0,10000]},"description":"everyone"})");
    ASSERT_TRUE(ring.status == 200 || ring.status == 201) << ring.status << " " << ring.body;
    auto ch = http(port(), "POST", "/v1/channels", R"({"name":"rules","schema":{}})");
    ASSERT_TRUE(ch.status == 200 || ch.status == 201) << ch.status << " " << ch.body;
    auto tok = http(port(), "POST", "/v1/enrollment-tokens", R"({"name":"fleet"})");
    ASSERT_TRUE(tok.status == 200 || tok.status == 201) << tok.status << " " << tok.body;
    enroll_token_ = tok.j().value("token", "");
    ASSERT_FALSE(enroll_token_.empty());
  }

  int port() const { return server_->port(); }
  std::string content(const std::string& rel = "rules/current") const {
    return slurp(dir_.path() + "/content/" + rel);
  }
  std::string agent_log() const { return slurp(dir_.path() + "/agent.log"); }
  std::string spool() const { return slurp(dir_.path() + "/state/spool.json"); }

  // Uploads bytes, creates a release and rolls it out to everyone; returns the version.
  // A gate that one crashing host cannot fail: no absolute floor, a test that needs ~20 failures.
  static json gate(bool tolerant) {
    return tolerant ? json{{"max_failure_rate", 1.0}, {"alpha", 1e-9}} : json();
  }

  // Starts a one-stage rollout of `bytes` to every host. `tolerant` gives it a gate that never
  // halts (for tests whose own fault injection makes the host report a crash).
  std::int64_t release(const std::string& bytes, int bake_s = 0, bool tolerant = false) {
    auto version = create_release(bytes).first;
    start_rollout(version, bake_s, tolerant);
    return version;
  }

  // Uploads bytes and creates a release (no rollout yet); returns {version, sha256}.
  std::pair<std::int64_t, std::string> create_release(const std::string& bytes) {
    auto blob = http(port(), "POST", "/v1/blobs", bytes, "application/octet-stream");
    EXPECT_TRUE(blob.status == 200 || blob.status == 201) << blob.status << " " << blob.body;
    auto sha = blob.j().value("sha256", "");
    auto rel = http(port(), "POST", "/v1/channels/rules/releases",
                    json{{"sha256", sha}, {"notes", "integration"}}.dump());
    EXPECT_TRUE(rel.status == 200 || rel.status == 201) << rel.status << " " << rel.body;
    return {rel.j().value("version", std::int64_t{0}), sha};
  }

  // Creates and starts a one-stage rollout of `version` to every host; sets rollout_id_.
  void start_rollout(std::int64_t version, int bake_s = 0, bool tolerant = false) {
    // One active rollout per channel: wait for the previous one to finish (409 until then).
    HttpReply ro;
    eventually(
        [&] {
          ro = http(port(), "POST", "/v1/rollouts",
                    json{{"channel", "rules"},
                         {"version", version},
                         {"stages", json::array({{{"ring", "all"},
                                                  {"percent", 100},
                                                  {"bake_s", bake_s},
                                                  {"min_hosts", 1},
                                                  {"gate", gate(tolerant)},
                                                  {"approval", "auto"}}})}}
                        .dump());
          return ro.status != 409;
        },
        90s);
    EXPECT_TRUE(ro.status == 200 || ro.status == 201) << ro.status << " " << ro.body;
    rollout_id_ = ro.j().value("id", json()).dump();
    if (ro.j().contains("id") && ro.j()["id"].is_string())
      rollout_id_ = ro.j()["id"].get<std::string>();
    auto start = http(port(), "POST", "/v1/rollouts/" + rollout_id_ + "/start", "{}");
    EXPECT_TRUE(start.status == 200 || start.status == 202) << start.status << " " << start.body;
  }

  Process start_agent(std::vector<std::string> extra = {},
                      std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv = {
        agent_bin_,
        "--server",
        server_->url(),
        "--enroll-token",
        enroll_token_,
        "--state-dir",
        dir_.path() + "/state",
        "--content-dir",
        dir_.path() + "/content",
        "--public-key",
        public_key_file_.empty() ? server_->public_key_file() : public_key_file_,
        "--label",
        "os=linux",
        "--poll-wait-s",
        "5",
        "--backoff-cap-ms",
        "4000",
        "--log-level",
        "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Process::start(argv, env, dir_.path() + "/agent.log");
  }

  std::string host_id() const {
    return json::parse(slurp(dir_.path() + "/state/identity.json"), nullptr, false)
        .value("host_id", "");
  }

  // The stage counters of the current rollout as the server reports them.
  json rollout_stage0() const {
    auto r = http(port(), "GET", "/v1/rollouts/" + rollout_id_).j();
    if (!r.is_object() || !r.contains("stages") || !r["stages"].is_array() || r["stages"].empty())
      return json::object();
    return r["stages"][0];
  }

  // The agent reports the server has stored (its reports table, read-only): the server's own
  // record that a report arrived, which no API lists.
  json server_reports() const {
    json out = json::array();
    sqlite3* db = nullptr;
    std::string path = server_->data_dir() + "/ringfence.db";
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      return out;
    }
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db,
                           "SELECT host_id, kind, IFNULL(channel,''), IFNULL(version,0), detail "
                           "FROM reports ORDER BY time",
                           -1, &stmt, nullptr) == SQLITE_OK) {
      while (sqlite3_step(stmt) == SQLITE_ROW) {
        auto text = [&](int col) {
          auto p = sqlite3_column_text(stmt, col);
          return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
        };
        out.push_back({{"host_id", text(0)},
                       {"kind", text(1)},
                       {"channel", text(2)},
                       {"version", sqlite3_column_int64(stmt, 3)},
                       {"detail", json::parse(text(4), nullptr, false)}});
      }
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }

  // The first stored report of `kind` for (rules, version) from this host, or null.
  json server_report(const std::string& kind, std::int64_t version) const {
    auto hid = host_id();
    for (const auto& r : server_reports()) {
      if (r["host_id"] == hid && r["kind"] == kind && r["channel"] == "rules" &&
          r["version"] == version)
        return r;
    }
    return nullptr;
  }

  // Lines the agent logs once per start, after its unclean-shutdown marker is on disk.
  std::size_t starts_logged() const {
    return count_of(agent_log(), " host " + host_id() + " state ");
  }

  TempDir dir_;
  std::string server_bin_, agent_bin_, enroll_token_, rollout_id_;
  std::string public_key_file_;  // empty: the server's signing.pub
  std::unique_ptr<Server> server_;
};

TEST_F(AgentIntegration, EnrollsDownloadsVerifiesAppliesAndHeartbeats) {
  auto agent = start_agent();
  ASSERT_TRUE(eventually(
      [&] {
        return exists(dir_.path() + "/state/identity.json") &&
               agent_log().find("enrolled as host") != std::string::npos;
      },
      20s))
      << agent_log();
  auto v1 = release("detection rules, version one\n");
  ASSERT_GT(v1, 0);
  ASSERT_TRUE(eventually([&] { return content() == "detection rules, version one\n"; }, 60s))
      << agent_log();
  // The server learns the version from the heartbeat and the applied report.
  ASSERT_TRUE(eventually(
      [&] {
        auto h = http(port(), "GET", "/v1/hosts/" + host_id());
        auto j = h.j();
        return h.status == 200 && j.contains("channels") && j["channels"].contains("rules") &&
               j["channels"]["rules"].value("version", std::int64_t{0}) == v1;
      },
      60s))
      << http(port(), "GET", "/v1/hosts/" + host_id()).body;
  EXPECT_TRUE(eventually([&] { return spool().find("applied") == std::string::npos; }, 20s))
      << "applied report delivered: " << spool();
  // The credential is private.
  struct stat st {};
  ASSERT_EQ(::stat((dir_.path() + "/state/identity.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A clean stop removes the unclean-shutdown marker.
  agent.signal(SIGTERM);
  auto status = agent.wait(10s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_FALSE(exists(dir_.path() + "/state/agent.running"));
}

TEST_F(AgentIntegration, OperatorAbortSendsTheHostBackToTheLastGoodRelease) {
  auto agent = start_agent();
  release("v1, good\n");
  ASSERT_TRUE(eventually([&] { return content() == "v1, good\n"; }, 60s)) << agent_log();
  release("v2, about to be aborted\n", 3600);  // stays in its bake
  ASSERT_TRUE(eventually([&] { return content() == "v2, about to be aborted\n"; }, 60s))
      << agent_log();
  auto abort = http(port(), "POST", "/v1/rollouts/" + rollout_id_ + "/abort", "{}");
  ASSERT_TRUE(abort.status == 200 || abort.status == 202) << abort.status << " " << abort.body;
  // The server quarantines v2 and sends the host back (a signed rollback target, or v2 on the
  // known-bad list): either way the host runs v1 again, without a local quarantine.
  ASSERT_TRUE(eventually([&] { return content() == "v1, good\n"; }, 30s)) << agent_log();
  auto state = json::parse(slurp(dir_.path() + "/state/state.json"), nullptr, false);
  EXPECT_TRUE(state["quarantine"].empty()) << state.dump();
  EXPECT_TRUE(eventually([&] { return spool() == "[]"; }, 30s)) << spool();
}

TEST_F(AgentIntegration, KillDuringDownloadResumesWithRange) {
  std::string big(900'000, 'r');  // ~55 chunks of 16 KiB; under the server's 1 MiB body limit
  for (std::size_t i = 0; i < big.size(); i += 4096)
    big[i] = static_cast<char>('a' + (i / 4096) % 26);
  auto v = release(big);
  ASSERT_GT(v, 0);
  auto dying = start_agent({}, {{"RINGFENCE_AGENT_FAULT", "download_progress"}});
  auto status = dying.wait(90s);
  ASSERT_TRUE(status) << agent_log();
  ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << agent_log();
  EXPECT_FALSE(exists(dir_.path() + "/content/rules/current"));
  auto agent = start_agent();
  ASSERT_TRUE(eventually([&] { return content().size() == big.size(); }, 60s)) << agent_log();
  EXPECT_EQ(content(), big);
  EXPECT_NE(agent_log().find("resuming download of rules"), std::string::npos) << agent_log();
  // The kill is reported as a crash once the agent is back.
  EXPECT_TRUE(
      eventually([&] { return agent_log().find("unclean_shutdown") != std::string::npos; }, 5s));
}

class SwapKill : public AgentIntegration, public ::testing::WithParamInterface<const char*> {};

TEST_P(SwapKill, LeavesOldOrNewContentNeverTorn) {
  auto first = start_agent();
  release("old content\n");
  ASSERT_TRUE(eventually([&] { return content() == "old content\n"; }, 60s)) << agent_log();
  first.signal(SIGTERM);
  ASSERT_TRUE(first.wait(10s));
  auto dying = start_agent({}, {{"RINGFENCE_AGENT_FAULT", GetParam()}});
  // The restarted agent rightly reports the kill as a crash of the content it was activating; with
  // the default gate that one host is 100 % failures and halts the rollout, which is not what this
  // test is about (the content on disk is). So this rollout's gate tolerates it.
  release("new content, a little longer\n", 0, /*tolerant=*/true);
  auto status = dying.wait(90s);
  ASSERT_TRUE(status && WIFSIGNALED(*status)) << agent_log();
  auto seen = content();
  EXPECT_TRUE(seen == "old content\n" || seen == "new content, a little longer\n") << seen;
  auto agent = start_agent();
  ASSERT_TRUE(eventually([&] { return content() == "new content, a little longer\n"; }, 60s))
      << agent_log();
  EXPECT_EQ(content("rules/versions/v1"), "old content\n") << "last-known-good kept";
}

INSTANTIATE_TEST_SUITE_P(Agent, SwapKill,
                         ::testing::Values("swap_after_install", "swap_after_flip"));

TEST_F(AgentIntegration, ConsumerCrashLoopRevertsLocallyAndReportsWhenTheServerIsBack) {
  // A consumer that parses nothing but dies on content containing CRASH, a moment after start.
  std::string consumer = dir_.path() + "/consumer.sh";
  {
    std::ofstream out(consumer);
    out << "#!/bin/sh\n"
           "if [ \"$1\" = --check ]; then exit 0; fi\n"
           "if grep -q CRASH \"$2\"; then sleep 1; kill -SEGV $$; fi\n"
           "exec sleep 100000\n";
  }
  ::chmod(consumer.c_str(), 0755);
  auto agent = start_agent({"--consumer", consumer, "--crash-loop-k", "2", "--healthy-after-s", "2",
                            "--crash-loop-window-s", "600"});
  release("good rules\n");
  ASSERT_TRUE(eventually([&] { return content() == "good rules\n"; }, 60s)) << agent_log();
  ASSERT_TRUE(eventually(
      [&] { return agent_log().find("reached the healthy checkpoint") != std::string::npos; },
      20s));
  auto bad = release("CRASH me\n");
  ASSERT_TRUE(eventually([&] { return content() == "CRASH me\n"; }, 60s)) << agent_log();
  int old_port = port();
  server_->kill();  // the network is gone; the agent is on its own
  // The flip comes first, the local_rollback report is spooled right after it.
  ASSERT_TRUE(eventually(
      [&] {
        return content() == "good rules\n" && spool().find("local_rollback") != std::string::npos;
      },
      60s))
      << agent_log();
  auto state = json::parse(slurp(dir_.path() + "/state/state.json"), nullptr, false);
  ASSERT_TRUE(state.is_object());
  ASSERT_EQ(state["quarantine"].size(), 1u) << state.dump() << "\n" << agent_log();
  EXPECT_EQ(state["quarantine"][0]["version"], bad);
  EXPECT_NE(spool().find("local_rollback"), std::string::npos) << spool();
  EXPECT_GE(count_of(spool(), "consumer_signal"), 1u) << spool();
  // The server comes back (same data, same port): the reports are delivered and the spool
  // drains.
  ASSERT_TRUE(server_->start(old_port)) << slurp(dir_.path() + "/server.log");
  ASSERT_TRUE(eventually([&] { return spool().find("local_rollback") == std::string::npos; }, 60s))
      << spool() << agent_log();
  EXPECT_EQ(content(), "good rules\n");
}

TEST_F(AgentIntegration, ServerOutageIsMetWithBackoffNotAStorm) {
  auto agent = start_agent();
  release("steady\n");
  ASSERT_TRUE(eventually([&] { return content() == "steady\n"; }, 60s)) << agent_log();
  int old_port = port();
  std::size_t before = count_of(agent_log(), "poll failed");
  auto t0 = std::chrono::steady_clock::now();
  server_->kill();
  // Wait until the agent has failed a few times, then check the rate of attempts.
  ASSERT_TRUE(eventually([&] { return count_of(agent_log(), "poll failed") >= before + 4; }, 60s))
      << agent_log();
  ASSERT_TRUE(eventually([&] { return std::chrono::steady_clock::now() - t0 > 6s; }, 10s));
  auto elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto polls = count_of(agent_log(), "poll failed") - before;
  auto beats = count_of(agent_log(), "heartbeat failed");
  // Full jitter from 0.5 s doubling to a 4 s cap: on average well under 2 attempts a second
  // per loop; a storm would be hundreds.
  EXPECT_LE(static_cast<double>(polls), 2.0 * elapsed_s + 4) << polls << " polls in " << elapsed_s;
  EXPECT_LE(static_cast<double>(beats), 2.0 * elapsed_s + 4) << beats << " beats in " << elapsed_s;
  ASSERT_TRUE(server_->start(old_port)) << slurp(dir_.path() + "/server.log");
  // Recovery: a new release reaches the agent after the outage.
  release("after the outage\n");
  ASSERT_TRUE(eventually([&] { return content() == "after the outage\n"; }, 60s)) << agent_log();
}

// --------------------------------------------------------------- forged or stale input

TEST_F(AgentIntegration, ContentSignedByAnotherKeyIsNeverActivated) {
  // The agent trusts a key that is not the server's: every manifest the server signs is forged as
  // far as this agent is concerned.
  auto other = ringfence::proto::generate_keypair();
  public_key_file_ = dir_.path() + "/other.pub";
  {
    std::ofstream out(public_key_file_);
    out << ringfence::proto::base64_encode(std::string_view(
               reinterpret_cast<const char*>(other.public_key.data()), other.public_key.size()))
        << "\n";
  }
  ASSERT_NE(slurp(public_key_file_), slurp(server_->public_key_file()));
  auto agent = start_agent();
  ASSERT_TRUE(
      eventually([&] { return agent_log().find("enrolled as host") != std::string::npos; }, 20s))
      << agent_log();
  auto v = release("rules signed by the server, not by the key this agent trusts\n");
  ASSERT_GT(v, 0);
  // The refusal is reported to the server: the rollout counts the host as failed, and the
  // server stores the apply_failed report with the check that refused it.
  ASSERT_TRUE(eventually([&] { return rollout_stage0().value("failed", 0) >= 1; }, 60s))
      << rollout_stage0().dump() << "\n"
      << agent_log();
  json rep;
  ASSERT_TRUE(eventually(
      [&] {
        rep = server_report("apply_failed", v);
        return !rep.is_null();
      },
      30s))
      << server_reports().dump() << "\n"
      << agent_log();
  EXPECT_EQ(rep["detail"].value("check", ""), "signature") << rep.dump();
  EXPECT_NE(agent_log().find("refusing rules v" + std::to_string(v) +
                             ": manifest signature does not verify"),
            std::string::npos)
      << agent_log();
  EXPECT_TRUE(eventually([&] { return spool() == "[]"; }, 30s)) << spool();
  // Nothing was activated, and nothing was even downloaded (the signature is checked first).
  EXPECT_FALSE(exists(dir_.path() + "/content/rules/current"));
  EXPECT_FALSE(exists(dir_.path() + "/content/rules/versions/v" + std::to_string(v)));
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() + "/state/staging"));
  EXPECT_EQ(agent_log().find("activated rules"), std::string::npos) << agent_log();
  // The server never saw the host run it.
  auto h = http(port(), "GET", "/v1/hosts/" + host_id()).j();
  EXPECT_FALSE(h.contains("channels") && h["channels"].contains("rules") &&
               h["channels"]["rules"].value("version", std::int64_t{0}) == v)
      << h.dump();
  ASSERT_TRUE(agent.running()) << agent_log();
}

TEST_F(AgentIntegration, TamperedBlobStoreIsRefusedOnTheHash) {
  auto agent = start_agent();
  auto v1 = release("v1, the good rules\n");
  ASSERT_TRUE(eventually([&] { return content() == "v1, the good rules\n"; }, 60s)) << agent_log();
  // v2 is signed over its real bytes; then someone with write access to the blob store swaps the
  // file for different bytes of the same size, before any host has fetched it.
  const std::string real = "v2, the rules the server signed\n";
  const std::string forged = "v2, the rules an attacker wrote\n";
  ASSERT_EQ(real.size(), forged.size());
  auto [v2, sha] = create_release(real);
  ASSERT_GT(v2, v1);
  std::string blob = server_->data_dir() + "/blobs/" + sha.substr(0, 2) + "/" + sha;
  ASSERT_EQ(slurp(blob), real) << "blob layout: data/blobs/<2 hex>/<sha256>";
  ::chmod(blob.c_str(), 0644);  // stored read-only
  {
    std::ofstream out(blob, std::ios::binary | std::ios::trunc);
    out << forged;
  }
  ASSERT_EQ(slurp(blob), forged);
  start_rollout(v2);
  // The server serves the forged bytes under the signed manifest; the agent refuses them.
  json rep;
  ASSERT_TRUE(eventually(
      [&] {
        rep = server_report("apply_failed", v2);
        return !rep.is_null();
      },
      60s))
      << server_reports().dump() << "\n"
      << agent_log();
  EXPECT_EQ(rep["detail"].value("check", ""), "sha256") << rep.dump();
  EXPECT_NE(agent_log().find("refusing rules v" + std::to_string(v2) + ": sha256 mismatch"),
            std::string::npos)
      << agent_log();
  EXPECT_TRUE(eventually([&] { return rollout_stage0().value("failed", 0) >= 1; }, 30s))
      << rollout_stage0().dump();
  // v1 stays active; the forged bytes were never installed nor left in staging.
  EXPECT_EQ(content(), "v1, the good rules\n");
  EXPECT_FALSE(exists(dir_.path() + "/content/rules/versions/v" + std::to_string(v2)));
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() + "/state/staging"));
  EXPECT_EQ(agent_log().find("activated rules v" + std::to_string(v2)), std::string::npos)
      << agent_log();
  EXPECT_TRUE(eventually([&] { return spool() == "[]"; }, 30s)) << spool();
  ASSERT_TRUE(agent.running()) << agent_log();
}

TEST_F(AgentIntegration, RestartLoopWithoutNetworkRestoresLastKnownGoodAndReportsLater) {
  // No consumer: the guard is healthy only after --healthy-after-s, far beyond this test, so
  // every unclean start inside the window counts against the content last activated.
  std::vector<std::string> flags = {"--crash-loop-k",    "2",   "--crash-loop-window-s", "600",
                                    "--healthy-after-s", "3600"};
  auto agent = start_agent(flags);
  auto v1 = release("v1, last known good\n");
  ASSERT_TRUE(eventually([&] { return content() == "v1, last known good\n"; }, 60s)) << agent_log();
  auto v2 = release("v2, the host dies right after every start\n", 3600);  // stays baking
  ASSERT_TRUE(
      eventually([&] { return content() == "v2, the host dies right after every start\n"; }, 60s))
      << agent_log();
  ASSERT_TRUE(eventually([&] { return spool() == "[]"; }, 30s)) << "applied delivered: " << spool();
  auto hid = host_id();
  int old_port = port();
  ASSERT_TRUE(server_->stop()) << "server did not stop on SIGTERM";  // the network is gone
  agent.signal(SIGTERM);  // a clean stop does not count as a crash
  ASSERT_TRUE(agent.wait(10s)) << agent_log();
  ASSERT_FALSE(exists(dir_.path() + "/state/agent.running"));

  // K=2 starts, each killed shortly after it began (after its marker is on disk).
  for (int kill = 1; kill <= 2; ++kill) {
    auto before = starts_logged();
    auto dying = start_agent(flags);
    ASSERT_TRUE(eventually([&] { return starts_logged() > before; }, 20s)) << agent_log();
    ASSERT_TRUE(exists(dir_.path() + "/state/agent.running"));
    dying.signal(SIGKILL);
    auto st = dying.wait(10s);
    ASSERT_TRUE(st && WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL);
    // Not reverted yet: the first kill has not been counted (no start since), or one failure is.
    EXPECT_EQ(content(), "v2, the host dies right after every start\n") << "after kill " << kill;
    auto state = json::parse(slurp(dir_.path() + "/state/state.json"), nullptr, false);
    EXPECT_TRUE(state["quarantine"].empty()) << state.dump();
  }

  // The next start counts the second crash and restores v1 on its own, with no server.
  auto agent2 = start_agent(flags);
  ASSERT_TRUE(eventually(
      [&] {
        return content() == "v1, last known good\n" &&
               spool().find("local_rollback") != std::string::npos;
      },
      30s))
      << agent_log();
  auto state = json::parse(slurp(dir_.path() + "/state/state.json"), nullptr, false);
  ASSERT_TRUE(state.is_object());
  ASSERT_EQ(state["quarantine"].size(), 1u) << state.dump();
  EXPECT_EQ(state["quarantine"][0]["version"], v2);
  EXPECT_FALSE(exists(dir_.path() + "/content/rules/versions/v" + std::to_string(v2)));
  EXPECT_EQ(http(old_port, "GET", "/healthz", "", "application/json", "").status, 0)
      << "the server is still down";

  // The server comes back on the same data dir and port: the spooled report reaches it.
  ASSERT_TRUE(server_->start(old_port)) << slurp(dir_.path() + "/server.log");
  ASSERT_EQ(port(), old_port);
  ASSERT_TRUE(eventually([&] { return spool().find("local_rollback") == std::string::npos; }, 60s))
      << spool() << agent_log();
  json rep;
  ASSERT_TRUE(eventually(
      [&] {
        rep = server_report("local_rollback", v2);
        return !rep.is_null();
      },
      30s))
      << server_reports().dump();
  EXPECT_EQ(rep["host_id"], hid);
  EXPECT_EQ(rep["detail"].value("to", std::int64_t{0}), v1) << rep.dump();
  // The server hears from the host running v1, and the host keeps v1.
  EXPECT_TRUE(eventually(
      [&] {
        auto h = http(port(), "GET", "/v1/hosts/" + hid).j();
        return h.contains("channels") && h["channels"].contains("rules") &&
               h["channels"]["rules"].value("version", std::int64_t{0}) == v1;
      },
      30s))
      << http(port(), "GET", "/v1/hosts/" + hid).body;
  EXPECT_EQ(content(), "v1, last known good\n");
  ASSERT_TRUE(agent2.running()) << agent_log();
}

}  // namespace
}  // namespace ringfence::agent::testing
