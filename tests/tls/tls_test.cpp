// TLS on ringfence-server, end to end: a real server process, certificates made by the `openssl`
// command in a temp dir (throwaway CAs, server and client certificates), a small OpenSSL client.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/http/http_client.hpp"
#include "tests/http/server_process.hpp"
#include "tests/tls/tls_client.hpp"

namespace ringfence::testing {
namespace {
using namespace std::chrono_literals;

bool sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Throwaway PKI: CA "a" (the server's and the agents'), CA "b" (a stranger's), two server
// certificates for localhost ("first", "second"), an agent certificate from each CA.
class Pki {
 public:
  Pki() {
    ok_ = ca("a") && ca("b") && leaf("a", "first", true) && leaf("a", "second", true) &&
          leaf("a", "agent-a", false) && leaf("b", "agent-b", false);
  }
  bool ok() const { return ok_; }
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }

 private:
  bool ca(const std::string& n) {
    return sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30"
        " -subj /CN=ca-" +
        n + " -keyout " + path(n + ".key") + " -out " + path(n + ".pem"));
  }
  // A leaf signed by CA `by`; servers get a chain file (leaf + CA) as --tls-cert wants.
  bool leaf(const std::string& by, const std::string& n, bool server) {
    std::ofstream(path(n + ".ext"))
        << (server ? "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                     "crlDistributionPoints=URI:http://localhost/crl.pem\n"
                     "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
                   : "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n");
    bool made = sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=" + n +
                   " -keyout " + path(n + ".key") + " -out " + path(n + ".csr")) &&
                sh("openssl x509 -req -days 30 -in " + path(n + ".csr") + " -CA " +
                   path(by + ".pem") + " -CAkey " + path(by + ".key") +
                   " -CAcreateserial -extfile " + path(n + ".ext") + " -out " + path(n + ".pem"));
    if (made && server) {
      std::ofstream(path(n + ".chain")) << slurp(path(n + ".pem")) << slurp(path(by + ".pem"));
    }
    return made;
  }
  TempDir dir_;
  bool ok_ = false;
};

std::string get(const std::string& target, const std::string& auth = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
         (auth.empty() ? "" : "Authorization: Bearer " + auth + "\r\n") + "\r\n";
}

std::string metrics(int port, const Pki& pki) {
  auto r = tls_exchange(port, {pki.path("a.pem")}, get("/metrics"));
  return r.response;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(pki_.ok()) << "the openssl command could not make certs"; }
  std::vector<std::string> tls_args(const std::string& cert = "first") {
    std::filesystem::copy_file(pki_.path(cert + ".chain"), pki_.path("live.chain"),
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(pki_.path(cert + ".key"), pki_.path("live.key"),
                               std::filesystem::copy_options::overwrite_existing);
    return {"--tls-cert", pki_.path("live.chain"), "--tls-key", pki_.path("live.key")};
  }
  Pki pki_;
};

TEST_F(TlsTest, ServesTls12And13WithAlpnAndRefusesOlderVersions) {
  ServerProcess s(tls_args());
  ASSERT_NE(s.port(), 0) << s.log();
  TlsClientOptions o{pki_.path("a.pem")};
  auto tls13 = tls_exchange(s.port(), o, get("/healthz"));
  ASSERT_TRUE(tls13.connected) << tls13.error;
  EXPECT_EQ(tls13.version, TLS1_3_VERSION);
  EXPECT_EQ(tls13.alpn, "http/1.1");
  EXPECT_EQ(status_of(tls13.response), 200) << tls13.response;
  EXPECT_NE(tls13.peer_subject.find("CN=first"), std::string::npos);
  o.max_version = TLS1_2_VERSION;
  auto tls12 = tls_exchange(s.port(), o, get("/healthz"));
  ASSERT_TRUE(tls12.connected) << tls12.error;
  EXPECT_EQ(tls12.version, TLS1_2_VERSION);
  EXPECT_EQ(status_of(tls12.response), 200);
  for (int v : {TLS1_VERSION, TLS1_1_VERSION}) {
    TlsClientOptions old{pki_.path("a.pem")};
    old.min_version = v;
    old.max_version = v;
    old.legacy = true;
    auto r = tls_exchange(s.port(), old, get("/healthz"));
    EXPECT_FALSE(r.connected) << "version " << std::hex << v;
  }
}

TEST_F(TlsTest, PlainHttpAndStalledHandshakesAreClosedAndCounted) {
  auto args = tls_args();
  args.insert(args.end(), {"--tls-handshake-timeout-s", "1"});
  ServerProcess s(args);
  ASSERT_NE(s.port(), 0) << s.log();
  {
    RawClient plain(s.port());
    ASSERT_TRUE(plain.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
    EXPECT_TRUE(plain.wait_closed());
  }
  {
    RawClient silent(s.port(), "127.0.0.1", 10s);
    EXPECT_TRUE(silent.wait_closed());  // the handshake deadline, not the 30 s read timeout
  }
  auto page = metrics(s.port(), pki_);
  EXPECT_EQ(metric(page, "ringfence_http_tls_handshake_failures_total{reason=\"plaintext\"}"), 1)
      << page;
  EXPECT_EQ(metric(page, "ringfence_http_tls_handshake_failures_total{reason=\"timeout\"}"), 1)
      << page;
}

TEST_F(TlsTest, AgentRoutesNeedAClientCertificateFromTheAgentCa) {
  auto args = tls_args();
  args.insert(args.end(), {"--agent-client-ca", pki_.path("a.pem")});
  ServerProcess s(args);
  ASSERT_NE(s.port(), 0) << s.log();
  TlsClientOptions none{pki_.path("a.pem")};
  TlsClientOptions good{pki_.path("a.pem"), pki_.path("agent-a.pem"), pki_.path("agent-a.key")};
  TlsClientOptions foreign{pki_.path("a.pem"), pki_.path("agent-b.pem"), pki_.path("agent-b.key")};
  auto desired = get("/v1/agent/desired", "not-a-credential");
  for (const auto& [name, o] : {std::pair{"none", none}, std::pair{"foreign", foreign}}) {
    auto r = tls_exchange(s.port(), o, desired);
    ASSERT_TRUE(r.connected) << name << ": " << r.error;
    EXPECT_EQ(status_of(r.response), 403) << name << ": " << r.response;
    EXPECT_NE(r.response.find("client_certificate_required"), std::string::npos) << name;
    // a body is refused on its head the same way
    auto post = tls_exchange(s.port(), o,
                             "POST /v1/agent/enroll HTTP/1.1\r\nHost: localhost\r\n"
                             "Content-Length: 100000\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(status_of(post.response), 403) << name << ": " << post.response;
  }
  // The right certificate passes the transport; the host credential is still required.
  auto r = tls_exchange(s.port(), good, desired);
  ASSERT_TRUE(r.connected) << r.error;
  EXPECT_EQ(status_of(r.response), 401) << r.response;
  // Operator routes need no client certificate.
  auto h = tls_exchange(s.port(), none, get("/v1/rings", kAdminToken));
  EXPECT_EQ(status_of(h.response), 200) << h.response;
}

TEST_F(TlsTest, SighupReloadsTheCertificateAndABadOneKeepsTheOld) {
  ServerProcess s(tls_args("first"));
  ASSERT_NE(s.port(), 0) << s.log();
  TlsClientOptions o{pki_.path("a.pem")};
  EXPECT_NE(tls_exchange(s.port(), o, "").peer_subject.find("CN=first"), std::string::npos);
  tls_args("second");
  s.process().signal(SIGHUP);
  ASSERT_TRUE(eventually([&] {
    return tls_exchange(s.port(), o, "").peer_subject.find("CN=second") != std::string::npos;
  })) << s.log();
  // A broken pair is refused with one line; the server keeps serving the second certificate.
  std::ofstream(pki_.path("live.chain")) << "not a certificate\n";
  s.process().signal(SIGHUP);
  ASSERT_TRUE(eventually([&] {
    return s.log().find("keeping the current TLS certificate") != std::string::npos;
  })) << s.log();
  auto after = tls_exchange(s.port(), o, get("/healthz"));
  ASSERT_TRUE(after.connected) << after.error;
  EXPECT_NE(after.peer_subject.find("CN=second"), std::string::npos);
  EXPECT_EQ(status_of(after.response), 200);
  EXPECT_TRUE(s.process().running());
  auto page = metrics(s.port(), pki_);
  EXPECT_EQ(metric(page, "ringfence_http_tls_reloads_total"), 1) << page;
  EXPECT_EQ(metric(page, "ringfence_http_tls_reload_failures_total"), 1) << page;
}

// A certificate rotation must not drop the connections that are open: a keep-alive connection
// made before the SIGHUP carries on (and keeps the certificate it was made with) while new ones
// get the new certificate. It ends, when asked to, with a close_notify: a client can tell the
// server's close from a truncation by someone on the path.
TEST_F(TlsTest, AReloadKeepsOpenConnectionsAndTheyEndWithACloseNotify) {
  ServerProcess s(tls_args("first"));
  ASSERT_NE(s.port(), 0) << s.log();
  TlsClientOptions o{pki_.path("a.pem")};
  const std::string keep = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
  auto r = tls_session(s.port(), o, {keep, keep, get("/healthz")}, [&](std::size_t i) {
    if (i != 1) return;
    tls_args("second");
    s.process().signal(SIGHUP);
    ASSERT_TRUE(eventually([&] {
      return tls_exchange(s.port(), o, "").peer_subject.find("CN=second") != std::string::npos;
    })) << s.log();
  });
  ASSERT_TRUE(r.connected) << r.error;
  ASSERT_EQ(r.responses.size(), 3u) << r.error;
  for (const auto& resp : r.responses) EXPECT_EQ(status_of(resp), 200) << resp;
  EXPECT_NE(r.peer_subject.find("CN=first"), std::string::npos) << r.peer_subject;
  EXPECT_TRUE(r.clean_close) << "the server closed without a close_notify";
}

TEST(TlsDefaults, PlainHttpOnANonLoopbackAddressNeedsAllowPlaintext) {
  TempDir dir;
  auto refused = Process::start({built_program("server/ringfence-server"), "--data-dir",
                                 dir.path() + "/d", "--listen", "0.0.0.0:0", "--no-web"},
                                {{"RINGFENCE_ADMIN_TOKEN", kAdminToken}}, dir.path() + "/err");
  auto st = refused.wait(10s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 1);
  EXPECT_NE(slurp(dir.path() + "/err").find("refusing plain HTTP on 0.0.0.0:0"), std::string::npos)
      << slurp(dir.path() + "/err");
  ServerProcess allowed({"--listen", "0.0.0.0:0", "--allow-plaintext"});
  EXPECT_NE(allowed.port(), 0) << allowed.log();
  ServerProcess loopback;  // tests and the demo: plain HTTP on loopback as before
  EXPECT_NE(loopback.port(), 0) << loopback.log();
}

}  // namespace
}  // namespace ringfence::testing
