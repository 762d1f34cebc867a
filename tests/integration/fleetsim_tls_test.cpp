// fleetsim over real TLS: haproxy (certificates made with `openssl` in the test) requiring a
// client certificate in front of a real plain ringfence-server; the simulated hosts enroll
// through it, and a server certificate from an unknown CA is refused with the reason.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/process.hpp"
#include "tests/support/tls.hpp"

namespace ringfence::testing {
namespace {
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kAdminToken = "fleetsim-tls-admin-token-0123456789";

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json api(int port, const std::string& method, const std::string& target,
         const std::string& body = "") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return nullptr;
  }
  std::string req =
      method + " " + target +
      " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + kAdminToken +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string resp;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) resp.append(buf, n);
  ::close(fd);
  auto end = resp.find("\r\n\r\n");
  return end == std::string::npos ? json(nullptr)
                                  : json::parse(resp.substr(end + 4), nullptr, false);
}

TEST(FleetsimTls, HostsEnrollOverMutualTlsAndAnUnknownCaIsRefused) {
  TempDir dir;
  Pki ca(dir.path(), "main"), other(dir.path(), "other");
  ASSERT_TRUE(ca.ok() && other.ok()) << ca.error() << other.error();
  auto good = ca.issue("server", {"DNS:localhost", "IP:127.0.0.1"});
  auto stranger = other.issue("server", {"DNS:localhost", "IP:127.0.0.1"});
  auto client = ca.issue("fleet", {}, true);
  ASSERT_TRUE(good && stranger && client) << ca.error() << other.error();

  ::mkdir((dir.path() + "/data").c_str(), 0700);
  auto server =
      Process::start({built_program("server/ringfence-server"), "--data-dir", dir.path() + "/data",
                      "--listen", "127.0.0.1:0", "--no-access-log"},
                     {{"RINGFENCE_ADMIN_TOKEN", kAdminToken}}, dir.path() + "/server.log");
  auto line = server.wait_for_line("listening on 127.0.0.1:", 20s);
  ASSERT_TRUE(line) << slurp(dir.path() + "/server.log");
  int port = std::stoi(line->substr(line->rfind(':') + 1));
  auto token = api(port, "POST", "/v1/enrollment-tokens", R"({"name":"sim"})").value("token", "");
  ASSERT_FALSE(token.empty());

  Haproxy tls(dir.path(), {good->combined, port, ca.ca_file(), false});
  ASSERT_TRUE(tls.ok()) << tls.error();
  auto fleet =
      Process::start({built_program("fleetsim/fleetsim"), "--server", tls.https_url("localhost"),
                      "--enroll-token", token, "--hosts", "3", "--status-every", "0", "--ca-file",
                      ca.ca_file(), "--client-cert", client->cert, "--client-key", client->key},
                     {}, dir.path() + "/fleetsim.log");
  EXPECT_TRUE(eventually(
      [&] {
        auto hosts = api(port, "GET", "/v1/hosts");
        return hosts.is_object() && hosts["hosts"].size() == 3;
      },
      30s))
      << slurp(dir.path() + "/fleetsim.log");
  fleet.signal(SIGTERM);
  fleet.wait(10s);

  Haproxy unknown(dir.path(), {stranger->combined, port, "", false});
  ASSERT_TRUE(unknown.ok()) << unknown.error();
  auto refused = Process::start(
      {built_program("fleetsim/fleetsim"), "--server", unknown.https_url(), "--enroll-token", token,
       "--hosts", "1", "--status-every", "0", "--ca-file", ca.ca_file()},
      {}, dir.path() + "/refused.log");
  EXPECT_TRUE(eventually(
      [&] {
        return slurp(dir.path() + "/refused.log")
                   .find(
                       "TLS: certificate verify failed: unable to get local issuer "
                       "certificate") != std::string::npos;
      },
      30s))
      << slurp(dir.path() + "/refused.log");
  refused.signal(SIGTERM);
  refused.wait(10s);
  server.signal(SIGTERM);
  server.wait(10s);
}

}  // namespace
}  // namespace ringfence::testing
