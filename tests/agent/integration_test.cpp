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

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "proto/keyset.hpp"
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
  bool start(int port = 0, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {ringfence::testing::built_program("server/ringfence-server"),
                                     "--data-dir",
                                     data_dir_,
                                     "--listen",
                                     "127.0.0.1:" + std::to_string(port),
                                     "--heartbeat-s",
                                     "2",
                                     "--exposed-heartbeat-s",
                                     "1",
                                     "--poll-s",
                                     "5",
                                     "--healthy-after-s",
                                     "1",
                                     "--no-access-log",
                                     "--evidence-min-age-s",
                                     "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc_ = Process::start(argv, {{"RINGFENCE_ADMIN_TOKEN", kAdminToken}},
                           data_dir_ + "/../server.log");
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

// A man in the middle between agents and the server (plain HTTP on loopback): each request is
// forwarded on a fresh upstream connection (Connection: close) and the answer passed back; the
// 200 answers of GET /v1/agent/desired are recorded per host. With `forge` set, it answers
// GET /v1/agent/desired itself whenever forge returns a body.
class Mitm {
 public:
  using Forge = std::function<std::optional<std::string>(const std::string& host_id)>;
  explicit Mitm(int upstream) : upstream_(upstream) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 64);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~Mitm() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    acceptor_.join();
    std::vector<std::thread> workers;
    {
      std::lock_guard lock(mu_);
      for (int c : clients_) ::shutdown(c, SHUT_RDWR);
      workers = std::move(workers_);
    }
    for (auto& w : workers) w.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void forge(Forge f) {
    std::lock_guard lock(mu_);
    forge_ = std::move(f);
  }
  std::vector<json> bodies(const std::string& host) {
    std::lock_guard lock(mu_);
    std::vector<json> out;
    for (const auto& b : bodies_[host]) out.push_back(json::parse(b, nullptr, false));
    return out;
  }
  std::vector<std::string> raw(const std::string& host) {
    std::lock_guard lock(mu_);
    return bodies_[host];
  }

 private:
  static bool read_message(int fd, std::string& head, std::string& body, bool until_eof) {
    std::string buf;
    char tmp[16384];
    std::size_t end = std::string::npos;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      auto n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(n));
    }
    head = buf.substr(0, end + 4);
    body = buf.substr(end + 4);
    std::string lower;
    for (char c : head) lower.push_back(static_cast<char>(std::tolower(c)));
    std::size_t want = 0;
    if (auto cl = lower.find("content-length:"); cl != std::string::npos) {
      want = std::stoul(head.substr(cl + 15));
    } else if (until_eof) {
      want = SIZE_MAX;
    }
    while (body.size() < want) {
      auto n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return want == SIZE_MAX;
      body.append(tmp, static_cast<std::size_t>(n));
    }
    return true;
  }
  static void send_all(int fd, const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
      auto n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<std::size_t>(n);
    }
  }
  void accept_loop() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::lock_guard lock(mu_);
      clients_.push_back(c);
      workers_.emplace_back([this, c] { serve(c); });
    }
  }
  void serve(int c) {
    std::string head, body;
    if (read_message(c, head, body, false)) {
      std::string host;
      if (auto a = head.find("Bearer "); a != std::string::npos) {
        host = head.substr(a + 7, head.find('.', a) - a - 7);
      }
      bool desired = head.rfind("GET /v1/agent/desired", 0) == 0;
      std::optional<std::string> forged;
      {
        std::lock_guard lock(mu_);
        if (desired && forge_) forged = forge_(host);
      }
      if (forged) {
        send_all(c,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"forged\"\r\n"
                 "Content-Length: " +
                     std::to_string(forged->size()) + "\r\nConnection: close\r\n\r\n" + *forged);
      } else {
        // Upstream, one request per connection.
        std::string req;
        std::istringstream lines(head);
        std::string line;
        while (std::getline(lines, line)) {
          if (line == "\r" || line.empty()) continue;
          std::string lower;
          for (char ch : line) lower.push_back(static_cast<char>(std::tolower(ch)));
          if (lower.rfind("connection:", 0) == 0) continue;
          req += line + "\n";
        }
        req += "Connection: close\r\n\r\n" + body;
        int u = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(upstream_));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(u, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
          send_all(u, req);
          std::string rhead, rbody;
          if (read_message(u, rhead, rbody, true)) {
            if (desired && rhead.rfind("HTTP/1.1 200", 0) == 0) {
              std::lock_guard lock(mu_);
              bodies_[host].push_back(rbody);
            }
            send_all(c, rhead + rbody);
          }
        }
        ::close(u);
      }
    }
    std::lock_guard lock(mu_);
    std::erase(clients_, c);
    ::close(c);
  }

  int upstream_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  Forge forge_;                                             // guarded by mu_
  std::vector<int> clients_;                                // guarded by mu_
  std::vector<std::thread> workers_;                        // guarded by mu_
  std::map<std::string, std::vector<std::string>> bodies_;  // guarded by mu_
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
        agent_server_url_.empty() ? server_->url() : agent_server_url_,
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
  std::string public_key_file_;   // empty: the server's signing.pub
  std::string agent_server_url_;  // empty: the server's own URL (else a man in the middle)
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

// Issue 14: an agent killed (SIGKILL: the OOM killer, an administrator, an agent upgrade) right
// after applying a release, on the same boot, used to report `crash` (`unclean_shutdown`); with
// one host the absolute floor halted the rollout and quarantined a healthy release fleet-wide.
// The restart is reported as its own kind, kept as evidence, and not counted by the gate.
TEST_F(AgentIntegration, SigkillRightAfterApplyIsAnAgentRestartNotACrash) {
  auto agent = start_agent();
  ASSERT_TRUE(
      eventually([&] { return agent_log().find("enrolled as host") != std::string::npos; }, 20s))
      << agent_log();
  // Default gate (the floor is on: one failure of one host is 100 %); the bake outlasts the kill.
  auto v1 = create_release("rules v1, healthy\n").first;
  ASSERT_GT(v1, 0);
  start_rollout(v1, /*bake_s=*/8);
  ASSERT_TRUE(eventually([&] { return content() == "rules v1, healthy\n"; }, 60s)) << agent_log();
  agent.signal(SIGKILL);  // well under a second after the flip
  auto st = agent.wait(10s);
  ASSERT_TRUE(st && WIFSIGNALED(*st)) << agent_log();
  ASSERT_TRUE(exists(dir_.path() + "/state/agent.running")) << "the kill left its marker";
  auto again = start_agent();
  ASSERT_TRUE(eventually(
      [&] {
        auto s = http(port(), "GET", "/v1/rollouts/" + rollout_id_).j().value("state", "");
        return s == "completed" || s == "halted" || s == "rolled_back" || s == "aborted";
      },
      90s))
      << http(port(), "GET", "/v1/rollouts/" + rollout_id_).body << agent_log();
  auto ro = http(port(), "GET", "/v1/rollouts/" + rollout_id_).j();
  EXPECT_EQ(ro.value("state", ""), "completed") << ro.dump();
  auto rel = http(port(), "GET", "/v1/channels/rules/releases/" + std::to_string(v1)).j();
  EXPECT_EQ(rel.value("state", ""), "stable") << rel.dump();
  EXPECT_EQ(content(), "rules v1, healthy\n");
  // The restart is evidence the server kept (stored, and an event on the rollout's timeline),
  // never a crash.
  json rep;
  ASSERT_TRUE(eventually(
      [&] {
        rep = server_report("agent_restart", v1);
        return !rep.is_null();
      },
      30s))
      << server_reports().dump() << agent_log();
  EXPECT_EQ(rep["detail"].value("boot_id_changed", true), false) << rep.dump();
  for (const auto& r : server_reports()) EXPECT_NE(r["kind"], "crash") << r.dump();
  auto events = http(port(), "GET", "/v1/events?rollout=" + rollout_id_ + "&limit=500").body;
  EXPECT_NE(events.find("agent_restarted"), std::string::npos) << events;
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
  // The kill (same boot) is reported as an agent restart once the agent is back.
  EXPECT_TRUE(
      eventually([&] { return agent_log().find("agent_restart") != std::string::npos; }, 5s));
}

class SwapKill : public AgentIntegration, public ::testing::WithParamInterface<const char*> {};

TEST_P(SwapKill, LeavesOldOrNewContentNeverTorn) {
  auto first = start_agent();
  release("old content\n");
  ASSERT_TRUE(eventually([&] { return content() == "old content\n"; }, 60s)) << agent_log();
  first.signal(SIGTERM);
  ASSERT_TRUE(first.wait(10s));
  auto dying = start_agent({}, {{"RINGFENCE_AGENT_FAULT", GetParam()}});
  // The content on disk is what this test is about, not the gate: the rollout's gate tolerates
  // whatever the restarted agent reports.
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

TEST_F(AgentIntegration, AnswersSignedByAnotherKeyAreNeverActedOn) {
  // The agent trusts a key that is not the server's: every desired state the server signs is
  // forged as far as this agent is concerned, so no part of it is acted on.
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
  ASSERT_TRUE(eventually(
      [&] {
        return agent_log().find("refusing desired state") != std::string::npos &&
               agent_log().find("[unknown_key]") != std::string::npos;
      },
      30s))
      << agent_log();
  // Nothing was activated, and nothing was even downloaded.
  EXPECT_FALSE(exists(dir_.path() + "/content/rules/current"));
  EXPECT_FALSE(exists(dir_.path() + "/content/rules/versions/v" + std::to_string(v)));
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() + "/state/staging"));
  EXPECT_EQ(agent_log().find("activated rules"), std::string::npos) << agent_log();
  EXPECT_EQ(agent_log().find("new desired content"), std::string::npos) << agent_log();
  ASSERT_TRUE(agent.running()) << agent_log();
}

// --------------------------------------------------------------- a man in the middle

// The host's recorded answers (genuine, signed by the server) and helpers to pick from them.
json offering(const std::vector<json>& bodies, std::int64_t version, bool without_known_bad) {
  for (const auto& b : bodies) {
    if (!b.is_object() || b["channels"].empty()) continue;
    if (b["channels"][0]["version"] == version && (!without_known_bad || b["known_bad"].empty()))
      return b;
  }
  return nullptr;
}

TEST_F(AgentIntegration, AManInTheMiddleCannotReplayStripOrRedirectAnswers) {
  Mitm mitm(port());
  agent_server_url_ = mitm.url();
  auto agent = start_agent();
  auto v1 = release("v1, good\n");
  ASSERT_TRUE(eventually([&] { return content() == "v1, good\n"; }, 60s)) << agent_log();
  auto v2 = release("v2, quarantined soon\n", 3600);
  ASSERT_TRUE(eventually([&] { return content() == "v2, quarantined soon\n"; }, 60s))
      << agent_log();
  auto abort = http(port(), "POST", "/v1/rollouts/" + rollout_id_ + "/abort", "{}");
  ASSERT_TRUE(abort.status == 200 || abort.status == 202) << abort.body;
  ASSERT_TRUE(eventually([&] { return content() == "v1, good\n"; }, 30s)) << agent_log();
  auto host = host_id();
  // 1. Replay: the genuine answer that offered v2 (signed, not expired; no known-bad entry).
  auto old_answer = offering(mitm.bodies(host), v2, true);
  ASSERT_FALSE(old_answer.is_null()) << "no recorded answer offered v2";
  auto replay = old_answer.dump();
  mitm.forge([replay](const std::string&) { return std::optional<std::string>(replay); });
  ASSERT_TRUE(eventually(
      [&] { return agent_log().find("[replayed_generation]") != std::string::npos; }, 30s))
      << agent_log();
  // 2. Strip the known-bad list from the newest genuine answer (which names v2): the signature
  //    no longer verifies.
  auto latest = mitm.bodies(host).back();
  ASSERT_FALSE(latest["known_bad"].empty()) << latest.dump();
  latest["known_bad"] = json::array();
  latest["channels"] = old_answer["channels"];
  auto stripped = latest.dump();
  mitm.forge([stripped](const std::string&) { return std::optional<std::string>(stripped); });
  ASSERT_TRUE(
      eventually([&] { return agent_log().find("[desired_signature]") != std::string::npos; }, 30s))
      << agent_log();
  // 3. Another host's genuine answer (a second host enrolled by hand, its answer fetched).
  auto enroll = http(port(), "POST", "/v1/agent/enroll",
                     json{{"enrollment_token", enroll_token_},
                          {"host_id", "00000000-0000-4000-8000-000000000001"},
                          {"labels", json::object()},
                          {"agent_version", "test"}}
                         .dump(),
                     "application/json", "");
  ASSERT_TRUE(enroll.status == 200 || enroll.status == 201) << enroll.status << " " << enroll.body;
  auto theirs = http(port(), "GET", "/v1/agent/desired", "", "application/json",
                     enroll.j()["credential"].get<std::string>());
  ASSERT_EQ(theirs.status, 200) << theirs.body;
  auto redirected = theirs.body;
  mitm.forge([redirected](const std::string&) { return std::optional<std::string>(redirected); });
  ASSERT_TRUE(
      eventually([&] { return agent_log().find("[wrong_host]") != std::string::npos; }, 30s))
      << agent_log();
  // None of it was acted on: v2 was never fetched or activated again; the host runs v1.
  EXPECT_EQ(content(), "v1, good\n");
  EXPECT_EQ(count_of(agent_log(), "activated rules v" + std::to_string(v2)), 1u) << agent_log();
  // The path clears: the agent goes on with the server's genuine answers.
  mitm.forge(nullptr);
  release("v3 after the attack\n");
  ASSERT_TRUE(eventually([&] { return content() == "v3 after the attack\n"; }, 60s)) << agent_log();
  (void)v1;
  ASSERT_TRUE(agent.running());
}

TEST_F(AgentIntegration, AnExpiredAnswerFreezesTheAgentWhichReportsIt) {
  // A server whose answers live one minute.
  server_->kill();
  ASSERT_TRUE(server_->start(port(), {"--desired-ttl-s", "60", "--max-long-poll-s", "5"}))
      << slurp(dir_.path() + "/server.log");
  Mitm mitm(port());
  agent_server_url_ = mitm.url();
  auto agent = start_agent();
  release("v1 before the freeze\n");
  ASSERT_TRUE(eventually([&] { return content() == "v1 before the freeze\n"; }, 60s))
      << agent_log();
  auto host = host_id();
  auto held = mitm.raw(host).back();
  // From now on the path serves only that answer, which expires within the minute.
  mitm.forge([held](const std::string&) { return std::optional<std::string>(held); });
  ASSERT_TRUE(eventually(
      [&] {
        return agent_log().find("[stale_desired_state]") != std::string::npos ||
               agent_log().find("desired state is stale") != std::string::npos;
      },
      100s))
      << agent_log();
  json rep;
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& r : server_reports()) {
          if (r["host_id"] == host && r["kind"] == "stale_desired_state") rep = r;
        }
        return !rep.is_null();
      },
      30s))
      << server_reports().dump() << "\n"
      << agent_log();
  EXPECT_EQ(content(), "v1 before the freeze\n") << "frozen, not emptied";
  mitm.forge(nullptr);
  release("v2 after the freeze\n");
  ASSERT_TRUE(eventually([&] { return content() == "v2 after the freeze\n"; }, 60s)) << agent_log();
  ASSERT_TRUE(agent.running());
}

// --------------------------------------------------------------- keys

// `ringfence-server keys ARGS...` on the server's data dir; true when it exits 0.
bool keys_cli(const std::string& log, std::vector<std::string> args) {
  std::vector<std::string> argv = {ringfence::testing::built_program("server/ringfence-server"),
                                   "keys"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = Process::start(argv, {}, log);
  auto st = p.wait(30s);
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
}

std::string key_id_of_file(const std::string& path) {
  auto text = slurp(path);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  auto pk = ringfence::proto::parse_public_key(text);
  return pk ? ringfence::proto::key_id(*pk) : "";
}

TEST_F(AgentIntegration, KeyRotationMidRolloutKeepsEveryAgentWorking) {
  auto data = server_->data_dir();
  auto cli_log = dir_.path() + "/keys.log";
  auto root = dir_.path() + "/offline/root.key";
  ::mkdir((dir_.path() + "/offline").c_str(), 0700);
  ASSERT_TRUE(keys_cli(cli_log, {"init", "--data-dir", data, "--root-key", root}))
      << slurp(cli_log);
  ASSERT_TRUE(exists(root + ".pub"));
  auto reload = http(port(), "POST", "/v1/keys/reload", "{}");
  ASSERT_EQ(reload.status, 200) << reload.body;
  EXPECT_EQ(reload.j()["version"], 1);
  // Two agents: one upgraded from --public-key (now with the root too), one with the root only.
  auto a1 = start_agent({"--root-key", root + ".pub"});
  auto start_second = [&] {
    std::vector<std::string> argv = {agent_bin_,
                                     "--server",
                                     server_->url(),
                                     "--enroll-token",
                                     enroll_token_,
                                     "--state-dir",
                                     dir_.path() + "/state2",
                                     "--content-dir",
                                     dir_.path() + "/content2",
                                     "--root-key",
                                     root + ".pub",
                                     "--poll-wait-s",
                                     "5",
                                     "--backoff-cap-ms",
                                     "4000",
                                     "--log-level",
                                     "debug"};
    return Process::start(argv, {}, dir_.path() + "/agent2.log");
  };
  auto a2 = start_second();
  auto log2 = [&] { return slurp(dir_.path() + "/agent2.log"); };
  auto content2 = [&] { return slurp(dir_.path() + "/content2/rules/current"); };
  release("v1 before the rotation\n");
  ASSERT_TRUE(eventually([&] { return content() == "v1 before the rotation\n"; }, 60s))
      << agent_log();
  ASSERT_TRUE(eventually([&] { return content2() == "v1 before the rotation\n"; }, 60s)) << log2();
  // v2 starts a long bake; the key is rotated while it rolls.
  release("v2 rolling during the rotation\n", 3600);
  ASSERT_TRUE(eventually([&] { return content() == "v2 rolling during the rotation\n"; }, 60s))
      << agent_log();
  auto old_id = key_id_of_file(server_->public_key_file());
  ASSERT_TRUE(keys_cli(cli_log, {"rotate", "--data-dir", data, "--root-key", root}))
      << slurp(cli_log);
  // The server picks keyset.json up by itself (no reload call) and signs with the new key.
  std::string new_id;
  ASSERT_TRUE(eventually(
      [&] {
        auto k = http(port(), "GET", "/v1/keys").j();
        if (!k.is_object() || k.value("version", 0) != 2) return false;
        new_id = k.value("desired_key_id", "");
        return true;
      },
      20s));
  ASSERT_NE(new_id, old_id);
  ASSERT_TRUE(
      eventually([&] { return agent_log().find("accepted key set v2") != std::string::npos; }, 30s))
      << agent_log();
  ASSERT_TRUE(
      eventually([&] { return log2().find("accepted key set v2") != std::string::npos; }, 30s))
      << log2();
  // The rollout goes on (v2 is abandoned for v3 by an abort + new release signed by the new key).
  auto abort = http(port(), "POST", "/v1/rollouts/" + rollout_id_ + "/abort", "{}");
  ASSERT_TRUE(abort.status == 200 || abort.status == 202) << abort.body;
  ASSERT_TRUE(keys_cli(cli_log, {"revoke", "--data-dir", data, "--root-key", root, "--id", old_id}))
      << slurp(cli_log);
  ASSERT_TRUE(eventually(
      [&] { return http(port(), "GET", "/v1/keys").j().value("version", 0) == 3; }, 20s));
  release("v3 signed by the new key\n");
  ASSERT_TRUE(eventually([&] { return content() == "v3 signed by the new key\n"; }, 60s))
      << agent_log();
  ASSERT_TRUE(eventually([&] { return content2() == "v3 signed by the new key\n"; }, 60s))
      << log2();
  for (const auto& state : {dir_.path() + "/state", dir_.path() + "/state2"}) {
    auto trust = json::parse(slurp(state + "/trust.json"), nullptr, false);
    ASSERT_TRUE(trust.is_object()) << state;
    EXPECT_EQ(trust["key_set"]["signed"]["version"], 3) << trust.dump();
    EXPECT_EQ(trust["key_set"]["signed"]["revoked"][0], old_id);
  }
  EXPECT_EQ(agent_log().find("refusing desired state"), std::string::npos) << agent_log();
  EXPECT_EQ(log2().find("refusing desired state"), std::string::npos) << log2();
  ASSERT_TRUE(a1.running() && a2.running());
}

TEST_F(AgentIntegration, AKeySetFromAnotherRootIsRefusedAndItsKeysNeverTrusted) {
  auto data = server_->data_dir();
  auto cli_log = dir_.path() + "/keys.log";
  ::mkdir((dir_.path() + "/offline").c_str(), 0700);
  // The agent pins one root; the server's key set is made with another.
  ASSERT_TRUE(keys_cli(cli_log, {"init", "--data-dir", dir_.path() + "/pinned", "--root-key",
                                 dir_.path() + "/offline/pinned.key"}))
      << slurp(cli_log);
  ASSERT_TRUE(keys_cli(
      cli_log, {"init", "--data-dir", data, "--root-key", dir_.path() + "/offline/rogue.key"}))
      << slurp(cli_log);
  ASSERT_EQ(http(port(), "POST", "/v1/keys/reload", "{}").status, 200);
  auto agent = start_agent({"--root-key", dir_.path() + "/offline/pinned.key.pub"});
  release("v1 signed by the first key\n");
  ASSERT_TRUE(eventually([&] { return content() == "v1 signed by the first key\n"; }, 60s))
      << agent_log();
  EXPECT_NE(agent_log().find("refusing key set v1"), std::string::npos) << agent_log();
  // The rogue set's new key signs from now on: this agent refuses every answer and freezes.
  ASSERT_TRUE(keys_cli(
      cli_log, {"rotate", "--data-dir", data, "--root-key", dir_.path() + "/offline/rogue.key"}))
      << slurp(cli_log);
  ASSERT_EQ(http(port(), "POST", "/v1/keys/reload", "{}").status, 200);
  release("v2 signed by a key the agent never trusted\n");
  ASSERT_TRUE(
      eventually([&] { return agent_log().find("[unknown_key]") != std::string::npos; }, 30s))
      << agent_log();
  EXPECT_EQ(content(), "v1 signed by the first key\n");
  auto trust = json::parse(slurp(dir_.path() + "/state/trust.json"), nullptr, false);
  EXPECT_FALSE(trust.is_object() && trust["key_set"].is_object()) << trust.dump();
  ASSERT_TRUE(agent.running());
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
  // every unclean start on a new boot inside the window counts against the content last
  // activated. Each start below is a new boot of the host (a boot id file of its own).
  std::string boot_file = dir_.path() + "/boot_id";
  auto new_boot = [&](int n) {
    std::ofstream(boot_file) << "0000000" << n << "-2222-4333-8444-555555555555\n";
  };
  new_boot(0);
  std::vector<std::string> flags = {
      "--crash-loop-k",    "2",    "--crash-loop-window-s", "600",
      "--healthy-after-s", "3600", "--boot-id-file",        boot_file};
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
    new_boot(kill);
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
  new_boot(3);
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
