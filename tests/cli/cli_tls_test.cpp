// The real `ringfence` CLI over real TLS: haproxy (certificates made with `openssl` in the test)
// terminating TLS, with a required client certificate, in front of a real plain ringfence-server.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "tests/support/process.hpp"
#include "tests/support/tls.hpp"

namespace ringfence::testing {
namespace {
using namespace std::chrono_literals;

constexpr const char* kAdminToken = "cli-tls-admin-token-0123456789";

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

class CliTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    auto& d = dir_->path();
    ca_ = new Pki(d, "main");
    ASSERT_TRUE(ca_->ok()) << ca_->error();
    auto good = ca_->issue("server", {"DNS:localhost", "IP:127.0.0.1"});
    auto expired = ca_->issue("expired", {"DNS:localhost", "IP:127.0.0.1"}, false,
                              "20200101000000Z", "20200102000000Z");
    auto client = ca_->issue("operator", {}, true);
    ASSERT_TRUE(good && expired && client) << ca_->error();
    client_ = *client;
    ::mkdir((d + "/data").c_str(), 0700);
    server_ =
        new Process(Process::start({built_program("server/ringfence-server"), "--data-dir",
                                    d + "/data", "--listen", "127.0.0.1:0", "--no-access-log"},
                                   {{"RINGFENCE_ADMIN_TOKEN", kAdminToken}}, d + "/server.log"));
    auto line = server_->wait_for_line("listening on 127.0.0.1:", 20s);
    ASSERT_TRUE(line) << slurp(d + "/server.log");
    int port = std::stoi(line->substr(line->rfind(':') + 1));
    tls_ = new Haproxy(d, {good->combined, port, ca_->ca_file(), false});
    ASSERT_TRUE(tls_->ok()) << tls_->error();
    expired_ = new Haproxy(d, {expired->combined, port, "", false});
    ASSERT_TRUE(expired_->ok()) << expired_->error();
  }
  static void TearDownTestSuite() {
    delete tls_;
    delete expired_;
    if (server_) {
      server_->signal(SIGTERM);
      server_->wait(10s);
    }
    delete server_;
    delete ca_;
    delete dir_;
    tls_ = expired_ = nullptr;
    server_ = nullptr;
    ca_ = nullptr;
    dir_ = nullptr;
  }

  static CliResult cli(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    static int n = 0;
    std::string err_path = dir_->path() + "/cli-tls-" + std::to_string(++n) + ".err";
    std::vector<std::string> argv = {built_program("cli/ringfence"), "--token", kAdminToken};
    argv.insert(argv.end(), args.begin(), args.end());
    env["NO_COLOR"] = "1";
    auto p = Process::start(argv, env, err_path);
    CliResult r;
    auto st = p.wait(60s);
    p.drain();
    r.exit_code = st && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
    r.out = p.output();
    r.err = slurp(err_path);
    return r;
  }
  std::vector<std::string> mtls() const {
    return {"--ca-file",  ca_->ca_file(), "--client-cert",
            client_.cert, "--client-key", client_.key};
  }

  static inline TempDir* dir_ = nullptr;
  static inline Pki* ca_ = nullptr;
  static inline Pki::Leaf client_;
  static inline Process* server_ = nullptr;
  static inline Haproxy* tls_ = nullptr;
  static inline Haproxy* expired_ = nullptr;
};

TEST_F(CliTls, SpeaksHttpsWithAClientCertificate) {
  auto args = mtls();
  args.insert(args.begin(), {"--server", tls_->https_url("localhost")});
  args.insert(args.end(), {"rings", "create", "all", "--rank", "0", "--buckets", "0:10000"});
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("created ring all"), std::string::npos) << r.out;

  // The same through the environment, by IP.
  r = cli({"rings", "list"}, {{"RINGFENCE_SERVER", tls_->https_url("127.0.0.1")},
                              {"RINGFENCE_CA_FILE", ca_->ca_file()},
                              {"RINGFENCE_CLIENT_CERT", client_.cert},
                              {"RINGFENCE_CLIENT_KEY", client_.key}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("all"), std::string::npos) << r.out;
}

TEST_F(CliTls, RefusesWhatItCannotVerify) {
  // The system store does not know the test CA.
  auto r = cli({"--server", tls_->https_url(), "rings", "list"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("certificate verify failed: unable to get local issuer certificate"),
            std::string::npos)
      << r.err;

  r = cli({"--server", expired_->https_url(), "--ca-file", ca_->ca_file(), "rings", "list"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("certificate verify failed: certificate has expired"), std::string::npos)
      << r.err;

  // No client certificate: the endpoint ends the connection.
  r = cli({"--server", tls_->https_url(), "--ca-file", ca_->ca_file(), "rings", "list"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
}

TEST_F(CliTls, RefusesPlainHttpToAnotherMachineAndBadFlags) {
  auto r = cli({"--server", "http://192.0.2.10:8080", "rings", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("refusing plain http:// to 192.0.2.10:8080"), std::string::npos) << r.err;

  r = cli({"--server", "https://127.0.0.1:1", "--client-cert", client_.cert, "rings", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--client-cert and --client-key go together"), std::string::npos) << r.err;

  r = cli({"--server", "http://user:pw@127.0.0.1:1", "rings", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("user:password@ is not accepted"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace ringfence::testing
