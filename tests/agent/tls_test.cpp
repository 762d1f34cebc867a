// The real agent over real TLS: certificates made with the `openssl` command in the test, haproxy
// terminating TLS (and, where asked, requiring a client certificate) in front of a real plain
// ringfence-server, all on free loopback ports. The agent enrolls and takes a release over
// https with mTLS; an expired, self-signed, wrong-host or unknown-CA certificate and a TLS 1.0
// endpoint are each refused with a clear log line while the agent keeps its content; plain
// http:// to another machine is refused at start.
#include "tests/support/tls.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/process.hpp"

namespace ringfence::agent::testing {
namespace {
using nlohmann::json;
using ringfence::testing::built_program;
using ringfence::testing::eventually;
using ringfence::testing::Haproxy;
using ringfence::testing::Pki;
using ringfence::testing::Process;
using ringfence::testing::TempDir;
using namespace std::chrono_literals;

constexpr const char* kAdminToken = "tls-test-admin-token-0123456789";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A minimal blocking HTTP/1.1 call to the plain server (operator setup only).
json api(int port, const std::string& method, const std::string& target, const std::string& body,
         const std::string& content_type = "application/json") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return nullptr;
  }
  std::string req = method + " " + target +
                    " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer " +
                    kAdminToken + "\r\nContent-Type: " + content_type +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string resp;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) resp.append(buf, n);
  ::close(fd);
  auto end = resp.find("\r\n\r\n");
  if (end == std::string::npos) return nullptr;
  return json::parse(resp.substr(end + 4), nullptr, false);
}

class AgentTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    auto& d = dir_->path();
    ca_ = new Pki(d, "main");
    other_ = new Pki(d, "other");
    ASSERT_TRUE(ca_->ok()) << ca_->error();
    ASSERT_TRUE(other_->ok()) << other_->error();
    const std::vector<std::string> sans = {"DNS:localhost", "IP:127.0.0.1"};
    auto must = [](std::optional<Pki::Leaf> l, const Pki& p) {
      EXPECT_TRUE(l) << p.error();
      return l.value_or(Pki::Leaf{});
    };
    good_ = must(ca_->issue("server", sans), *ca_);
    expired_ = must(ca_->issue("expired", sans, false, "20200101000000Z", "20200102000000Z"), *ca_);
    wrong_host_ = must(ca_->issue("wrong-host", {"DNS:wrong.example"}), *ca_);
    self_signed_ = must(ca_->self_signed("self-signed", sans), *ca_);
    other_ca_ = must(other_->issue("server", sans), *other_);
    client_ = must(ca_->issue("agent-client", {}, /*client=*/true), *ca_);

    ::mkdir((d + "/data").c_str(), 0700);
    server_ = new Process(
        Process::start({built_program("server/ringfence-server"), "--data-dir", d + "/data",
                        "--listen", "127.0.0.1:0", "--heartbeat-s", "2", "--exposed-heartbeat-s",
                        "1", "--poll-s", "5", "--healthy-after-s", "1", "--no-access-log",
                        "--evidence-min-age-s", "0"},
                       {{"RINGFENCE_ADMIN_TOKEN", kAdminToken}}, d + "/server.log"));
    auto line = server_->wait_for_line("listening on 127.0.0.1:", 20s);
    ASSERT_TRUE(line) << slurp(d + "/server.log");
    port_ = std::stoi(line->substr(line->rfind(':') + 1));
    ASSERT_TRUE(api(port_, "POST", "/v1/rings",
                    R"({"name":"all","rank":0,"selector":{"buckets":[0,10000]}})")
                    .is_object());
    enroll_token_ =
        api(port_, "POST", "/v1/enrollment-tokens", R"({"name":"fleet"})").value("token", "");
    ASSERT_FALSE(enroll_token_.empty());
  }
  static void TearDownTestSuite() {
    if (server_) {
      server_->signal(SIGTERM);
      server_->wait(10s);
    }
    delete server_;
    delete ca_;
    delete other_;
    delete dir_;
    server_ = nullptr;
    ca_ = other_ = nullptr;
    dir_ = nullptr;
  }

  // Releases `bytes` on this test's channel to every host (one stage, no bake).
  std::string release(const std::string& bytes) {
    auto blob = api(port_, "POST", "/v1/blobs", bytes, "application/octet-stream");
    auto rel = api(port_, "POST", "/v1/channels/" + channel_ + "/releases",
                   json{{"sha256", blob.value("sha256", "")}, {"notes", "tls"}}.dump());
    EXPECT_TRUE(rel.contains("version")) << rel.dump();
    json ro;
    EXPECT_TRUE(eventually(
        [&] {
          ro = api(port_, "POST", "/v1/rollouts",
                   json{{"channel", channel_},
                        {"version", rel["version"]},
                        {"stages", json::array({{{"ring", "all"},
                                                 {"percent", 100},
                                                 {"bake_s", 0},
                                                 {"min_hosts", 1},
                                                 {"approval", "auto"}}})}}
                       .dump());
          return ro.contains("id");
        },
        60s))
        << ro.dump();
    api(port_, "POST", "/v1/rollouts/" + ro["id"].dump() + "/start", "{}");
    return ro.contains("id") ? ro["id"].dump() : "";
  }

  // Starts an agent on this test's state and content dirs.
  Process agent(const std::string& url, std::vector<std::string> extra = {},
                std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv = {built_program("agent/ringfence-agent"),
                                     "--server",
                                     url,
                                     "--enroll-token",
                                     enroll_token_,
                                     "--state-dir",
                                     dir_->path() + "/" + name_ + "/state",
                                     "--content-dir",
                                     dir_->path() + "/" + name_ + "/content",
                                     "--public-key",
                                     dir_->path() + "/data/signing.pub",
                                     "--poll-wait-s",
                                     "5",
                                     "--backoff-cap-ms",
                                     "1000",
                                     "--log-level",
                                     "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Process::start(argv, env, log_path());
  }
  std::string log_path() const { return dir_->path() + "/" + name_ + "-agent.log"; }
  std::string log() const { return slurp(log_path()); }
  std::string content() const {
    return slurp(dir_->path() + "/" + name_ + "/content/" + channel_ + "/current");
  }
  static void stop(Process& p) {
    p.signal(SIGTERM);
    p.wait(10s);
  }

  // Each test its own channel: a rollout left running by one test must not block the next.
  void SetUp() override {
    name_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    static int n = 0;
    channel_ = "tls" + std::to_string(++n);
    ASSERT_TRUE(api(port_, "POST", "/v1/channels",
                    json{{"name", channel_}, {"schema", json::object()}}.dump())
                    .is_object());
  }

  Haproxy proxy(const Pki::Leaf& cert, bool require_client = false, bool tls10 = false) {
    return Haproxy(dir_->path(),
                   {cert.combined, port_, require_client ? ca_->ca_file() : "", tls10});
  }

  std::string name_, channel_;
  static inline TempDir* dir_ = nullptr;
  static inline Pki* ca_ = nullptr;
  static inline Pki* other_ = nullptr;
  static inline Pki::Leaf good_, expired_, wrong_host_, self_signed_, other_ca_, client_;
  static inline Process* server_ = nullptr;
  static inline int port_ = 0;
  static inline std::string enroll_token_;
};

TEST_F(AgentTls, EnrollsAndTakesAReleaseOverHttpsWithAClientCertificate) {
  Haproxy tls = proxy(good_, /*require_client=*/true);
  ASSERT_TRUE(tls.ok()) << tls.error();
  release("tls release one");

  // Without its certificate the endpoint refuses the agent.
  auto bare = agent(tls.https_url("localhost"), {"--ca-file", ca_->ca_file()});
  ASSERT_TRUE(eventually([&] { return log().find("enroll failed") != std::string::npos; }, 30s))
      << log();
  stop(bare);
  EXPECT_EQ(log().find("enrolled as host"), std::string::npos) << log();
  // TLS 1.3 reports a missing client certificate after the handshake, in the server's alert.
  EXPECT_NE(log().find("certificate required"), std::string::npos) << log();

  auto a = agent(tls.https_url("localhost"), {"--ca-file", ca_->ca_file(), "--client-cert",
                                              client_.cert, "--client-key", client_.key});
  EXPECT_TRUE(eventually([&] { return content() == "tls release one"; }, 60s)) << log();
  EXPECT_NE(log().find("enrolled as host"), std::string::npos) << log();
  stop(a);
}

TEST_F(AgentTls, RefusesBadCertificatesAndKeepsItsContent) {
  Haproxy good = proxy(good_);
  ASSERT_TRUE(good.ok()) << good.error();
  auto first = release("tls release kept");
  // Env vars work like the flags.
  auto a = agent(good.https_url(), {}, {{"RINGFENCE_CA_FILE", ca_->ca_file()}});
  ASSERT_TRUE(eventually([&] { return content() == "tls release kept"; }, 60s)) << log();
  // Healthy heartbeats over TLS complete the rollout, so the next release can start.
  ASSERT_TRUE(eventually(
      [&] {
        return api(port_, "GET", "/v1/rollouts/" + first, "").value("state", "") == "completed";
      },
      60s))
      << log();
  stop(a);
  release("tls release never");

  struct Case {
    const char* what;
    const Pki::Leaf* cert;
    const char* host;
    const char* reason;
  };
  const Case cases[] = {
      {"expired", &expired_, "127.0.0.1", "certificate has expired"},
      {"self-signed", &self_signed_, "127.0.0.1", "self-signed certificate"},
      {"wrong host", &wrong_host_, "localhost", "hostname mismatch"},
      {"wrong host (IP)", &wrong_host_, "127.0.0.1", "IP address mismatch"},
      {"unknown CA", &other_ca_, "127.0.0.1", "unable to get local issuer certificate"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    Haproxy bad = proxy(*c.cert);
    ASSERT_TRUE(bad.ok()) << bad.error();
    std::size_t before = log().size();
    auto p = agent(bad.https_url(c.host), {"--ca-file", ca_->ca_file()});
    std::string expect = "certificate verify failed: " + std::string(c.reason);
    EXPECT_TRUE(eventually([&] { return log().find(expect, before) != std::string::npos; }, 30s))
        << log().substr(before);
    EXPECT_NE(log().find("desired-state poll failed", before), std::string::npos);
    EXPECT_EQ(content(), "tls release kept");
    stop(p);
  }
}

TEST_F(AgentTls, RefusesATls10Endpoint) {
  Haproxy old = proxy(good_, false, /*tls10=*/true);
  ASSERT_TRUE(old.ok()) << old.error();
  // Control: the endpoint does speak TLS 1.0 to a client that allows it.
  std::string conf = dir_->path() + "/openssl-legacy.cnf";
  std::string out;
  ringfence::testing::run_command(
      {"/bin/sh", "-c",
       "echo | OPENSSL_CONF=" + conf +
           " openssl s_client -connect 127.0.0.1:" + std::to_string(old.port()) +
           " -tls1 -cipher DEFAULT@SECLEVEL=0 -CAfile " + ca_->ca_file() + " 2>&1"},
      &out);
  ASSERT_NE(out.find("TLSv1"), std::string::npos) << out;
  ASSERT_EQ(out.find("TLSv1.2"), std::string::npos) << out;

  // The agent refuses it even without the system-wide MinProtocol (its own floor is 1.2).
  auto a = agent(old.https_url(), {"--ca-file", ca_->ca_file()}, {{"OPENSSL_CONF", conf}});
  EXPECT_TRUE(eventually(
      [&] {
        auto l = log();
        return l.find("enroll failed") != std::string::npos &&
               l.find("TLS with 127.0.0.1:" + std::to_string(old.port()) + " failed") !=
                   std::string::npos;
      },
      30s))
      << log();
  EXPECT_EQ(log().find("enrolled as host"), std::string::npos) << log();
  EXPECT_NE(log().find("(the server offers no TLS 1.2 or newer)"), std::string::npos) << log();
  stop(a);
}

TEST_F(AgentTls, PlainHttpToAnotherMachineIsRefusedAtStart) {
  auto a = agent("http://192.0.2.10:8080");
  auto st = a.wait(10s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st));
  EXPECT_EQ(WEXITSTATUS(*st), 2);
  EXPECT_NE(log().find("refusing plain http:// to 192.0.2.10:8080"), std::string::npos) << log();

  auto half = agent("https://127.0.0.1:1", {"--client-cert", client_.cert});
  st = half.wait(10s);
  ASSERT_TRUE(st);
  EXPECT_EQ(WEXITSTATUS(*st), 2);
  EXPECT_NE(log().find("--client-cert and --client-key go together"), std::string::npos) << log();

  auto missing = agent("https://127.0.0.1:1", {"--ca-file", dir_->path() + "/nope.pem"});
  st = missing.wait(10s);
  ASSERT_TRUE(st);
  EXPECT_EQ(WEXITSTATUS(*st), 2);
  EXPECT_NE(log().find("--ca-file " + dir_->path() + "/nope.pem: cannot be read"),
            std::string::npos)
      << log();

  // With --allow-plaintext it starts (and keeps retrying an unreachable server).
  auto allowed = agent("http://192.0.2.10:8080", {"--allow-plaintext"});
  EXPECT_TRUE(eventually([&] { return log().find(" state unenrolled") != std::string::npos; }, 10s))
      << log();
  EXPECT_TRUE(allowed.running());
  stop(allowed);
}

}  // namespace
}  // namespace ringfence::agent::testing
