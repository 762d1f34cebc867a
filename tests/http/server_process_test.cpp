// The transport's limits as the real ringfence-server wires them (app.cpp): credentials checked
// on the head before any body is stored, the fd limit reached without spinning, the counters in
// /metrics.
#include "tests/http/server_process.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/http/http_client.hpp"

namespace ringfence::testing {
namespace {
using namespace std::chrono_literals;

std::string request(const std::string& method, const std::string& target,
                    const std::string& token = "", const std::string& body = "",
                    const std::string& extra = "") {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n";
  if (!token.empty()) r += "Authorization: Bearer " + token + "\r\n";
  if (!body.empty() || method == "POST" || method == "PUT") {
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return r + extra + "\r\n" + body;
}

std::size_t files_in(const std::string& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

std::string metrics_page(std::uint16_t port) {
  auto r = request_once(port, request("GET", "/metrics"));
  return r ? r->body : std::string();
}

// Observed: 8 parallel 200 MB unauthenticated uploads put 1.65 GB on disk.
TEST(ServerProcess, UnauthenticatedUploadsAreRefusedOnTheHeadAndNothingIsStored) {
  ServerProcess s;
  ASSERT_NE(s.port(), 0) << s.log();
  const std::string uploads = s.data_dir() + "/uploads";
  std::vector<std::thread> clients;
  std::atomic<int> refused{0};
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      RawClient c(s.port());
      c.send("POST /v1/blobs HTTP/1.1\r\nHost: t\r\nContent-Length: 200000000\r\n\r\n" +
             std::string(256 * 1024, 'u'));
      auto r = c.read_response();
      if (r && r->status == 401 && r->body.find("unauthenticated") != std::string::npos) ++refused;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(refused.load(), 8);
  EXPECT_EQ(files_in(uploads), 0u);
  // A viewer token is not enough to upload; a JSON route's body needs a token too.
  auto made = request_once(
      s.port(), request("POST", "/v1/tokens", kAdminToken, R"({"name":"look","role":"viewer"})"));
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(made->body, m, std::regex(R"re("token"\s*:\s*"([^"]+)")re")));
  std::string viewer = m[1];
  auto weak = request_once(s.port(), request("POST", "/v1/blobs", viewer, std::string(1000, 'v')));
  ASSERT_TRUE(weak);
  EXPECT_EQ(weak->status, 403) << weak->body;
  auto ring = request_once(s.port(), request("POST", "/v1/rings", "", R"({"name":"r"})"));
  ASSERT_TRUE(ring);
  EXPECT_EQ(ring->status, 401);
  auto agent = request_once(s.port(), request("POST", "/v1/agent/heartbeat", "bogus", "{}"));
  ASSERT_TRUE(agent);
  EXPECT_EQ(agent->status, 401);
  // The release role uploads as before.
  auto ok = request_once(s.port(), request("POST", "/v1/blobs", kAdminToken, "content"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 201) << ok->body;
  EXPECT_EQ(files_in(uploads), 0u);
  auto page = metrics_page(s.port());
  EXPECT_GE(metric(page, "ringfence_http_refused_before_body_total"), 11) << page;
}

// Observed: at the fd limit, accept() failed in a tight loop (100 % CPU, GBs of log lines) and
// /healthz timed out. The server now backs off, logs once per interval, and recovers.
//
// Under UBSan, its vptr check probes memory through pipe(2) on a type-cache miss; with no fd left
// the probe fails and a live object is reported as "invalid vptr" (reproduced with a ten-line
// program: any virtual class, fds exhausted). So this server, and only this one, runs with
// halt_on_error=0 and its reports in its log, and the test checks that every report there is
// that one (cmake/sanitizers.cmake builds vptr recoverable for this).
std::map<std::string, std::string> env_for_fd_exhaustion() {
  const char* ub = std::getenv("UBSAN_OPTIONS");
  if (!ub) return {};
  std::string opts =
      std::regex_replace(std::string(ub), std::regex("(^|:)(log_path|halt_on_error)=[^:]*"), "");
  return {{"UBSAN_OPTIONS", opts + ":halt_on_error=0:log_path=stderr"}};
}

TEST(ServerProcess, AtTheFdLimitAcceptBacksOffAndRecovers) {
  ServerProcess s({}, {"/usr/bin/prlimit", "--nofile=64:64", "--"}, env_for_fd_exhaustion());
  ASSERT_NE(s.port(), 0) << s.log();
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 120; ++i) {
    held.push_back(std::make_unique<RawClient>(s.port(), "127.0.0.1", 200ms));
  }
  ASSERT_TRUE(eventually([&] { return s.log().find("accept failed") != std::string::npos; }, 10s))
      << s.log();
  // A window to measure in (not a synchronisation): the old code logged thousands of lines and
  // burnt a core here.
  auto cpu = [&] {
    std::ifstream in("/proc/" + std::to_string(s.process().pid()) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close_paren = stat.rfind(')');
    std::istringstream f(stat.substr(close_paren + 2));
    std::string field;
    long ticks = 0;
    for (int i = 3; i <= 15 && f >> field; ++i) {
      if (i == 14 || i == 15) ticks += std::stol(field);  // utime + stime
    }
    return ticks;
  };
  auto t0 = cpu();
  std::this_thread::sleep_for(1500ms);
  auto used = static_cast<double>(cpu() - t0) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  EXPECT_LT(used, 0.5) << "CPU seconds in a 1.5 s window at the fd limit";
  std::string log = s.log();
  std::size_t lines = 0;
  for (auto p = log.find("accept failed"); p != std::string::npos;
       p = log.find("accept failed", p + 1)) {
    ++lines;
  }
  EXPECT_LE(lines, 2u) << log.substr(0, 2000);
  held.clear();
  std::optional<RawResponse> health;
  ASSERT_TRUE(eventually(
      [&] {
        health = request_once(s.port(), request("GET", "/healthz"));
        return health && health->status == 200;
      },
      15s));
  auto page = metrics_page(s.port());
  EXPECT_GT(metric(page, "ringfence_http_accept_errors_total"), 0) << page;
  EXPECT_GT(metric(page, "ringfence_http_connections_accepted_total"), 40) << page;
  // Sanitizer builds: the only reports allowed are the fd-starved vptr probes described above.
  log = s.log();
  std::size_t reports = 0, vptr_probes = 0;
  for (auto p = log.find("runtime error:"); p != std::string::npos;) {
    auto next = log.find("runtime error:", p + 1);
    ++reports;
    if (log.substr(p, next - p).find("object has invalid vptr") != std::string::npos) ++vptr_probes;
    p = next;
  }
  EXPECT_EQ(reports, vptr_probes) << log.substr(0, 4000);
  EXPECT_EQ(log.find("AddressSanitizer"), std::string::npos) << log.substr(0, 4000);
}

}  // namespace
}  // namespace ringfence::testing
