// The agent's real effects without ringfence-server: the Beast client against a scripted
// loopback HTTP server (port 0), and the consumer runner with real child processes.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "agent/net/beast_client.hpp"
#include "agent/runtime/consumer.hpp"
#include "proto/signing.hpp"
#include "proto/url.hpp"
#include "tests/support/process.hpp"

namespace ringfence::agent::testing {
namespace {
using ringfence::testing::TempDir;

// Serves one canned response per connection, chosen by `respond(request_text)`.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<std::string(const std::string&)> respond)
      : respond_(std::move(respond)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 16);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  void loop() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        auto n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
      auto cl = req.find("Content-Length: ");
      if (cl == std::string::npos) cl = req.find("content-length: ");
      if (cl != std::string::npos) {
        std::size_t want = std::stoul(req.substr(cl + 16));
        while (req.size() - (req.find("\r\n\r\n") + 4) < want) {
          auto n = ::recv(c, buf, sizeof buf, 0);
          if (n <= 0) break;
          req.append(buf, static_cast<std::size_t>(n));
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(req);
      }
      std::string resp = respond_(req);
      ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  std::function<std::string(const std::string&)> respond_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> requests_;
};

std::string response(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n" +
         extra + "\r\n" + body;
}

net::ServerUrl url_of(int port) {
  return *proto::parse_server_url("http://127.0.0.1:" + std::to_string(port));
}
net::ServerUrl url_of(const ScriptedServer& s) { return url_of(s.port()); }

template <typename T>
net::Result<T> call(
    std::function<void(boost::asio::io_context&, net::BeastClient&, net::Callback<T>)> start,
    const net::ServerUrl& url) {
  boost::asio::io_context io;
  net::BeastClient client(io, url);
  std::optional<net::Result<T>> out;
  start(io, client, [&](net::Result<T> r) { out = std::move(r); });
  io.run_for(std::chrono::seconds(20));
  if (!out)
    return tl::unexpected(net::Failure{Error{Errc::Internal, "no callback", "", {}}, -1, 0});
  return std::move(*out);
}

TEST(BeastClient, ParsesServerUrlsWithTheSharedParser) {
  // The agent once took "http://[::1]:9" for host "[::1]:9", port 80.
  auto u = proto::parse_server_url("http://[::1]:9");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 9);
  EXPECT_EQ(u->authority(), "[::1]:9");
  auto b = proto::parse_server_url("http://example.org:8080/base/");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host, "example.org");
  EXPECT_EQ(b->port_text(), "8080");
  EXPECT_EQ(b->prefix, "/base");
  EXPECT_TRUE(proto::parse_server_url("https://h:1")->tls);
  EXPECT_FALSE(proto::parse_server_url("ftp://h"));
  EXPECT_FALSE(proto::parse_server_url("http://h:99999"));
}

TEST(BeastClient, SpeaksToAnIpv6LiteralWithABracketedHostHeader) {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    GTEST_SKIP() << "no IPv6 loopback on this machine";
  }
  ::listen(fd, 4);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin6_port);
  std::string seen;
  std::thread server([&] {
    int c = ::accept(fd, nullptr, nullptr);
    char buf[4096];
    while (seen.find("\r\n\r\n") == std::string::npos) {
      auto n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      seen.append(buf, static_cast<std::size_t>(n));
    }
    std::string resp = response(204, "");
    ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
    ::close(c);
  });
  auto url = proto::parse_server_url("http://[::1]:" + std::to_string(port));
  ASSERT_TRUE(url);
  auto r = call<bool>(
      [](auto&, auto& c, auto cb) {
        c.heartbeat("cred", proto::Heartbeat{"b", 1, {}}, std::move(cb));
      },
      *url);
  server.join();
  ::close(fd);
  EXPECT_TRUE(r) << r.error().error.message;
  EXPECT_NE(seen.find("Host: [::1]:" + std::to_string(port) + "\r\n"), std::string::npos) << seen;
}

TEST(BeastClient, NeverSendsAHeaderValueWithControlCharacters) {
  ScriptedServer s([](const std::string&) { return response(204, ""); });
  auto r = call<bool>(
      [](auto&, auto& c, auto cb) {
        c.heartbeat("cred\r\nX-Injected: 1", proto::Heartbeat{"b", 1, {}}, std::move(cb));
      },
      url_of(s));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().error.code, "header");
  auto d = call<net::DownloadDone>(
      [](auto&, auto& c, auto cb) {
        c.download("cred", "/v1/blobs/x\r\nX-Injected: 1", "/dev/null", "", 10, {}, std::move(cb));
      },
      url_of(s));
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().error.code, "header");
  EXPECT_TRUE(s.requests().empty()) << "nothing reached the server";
}

TEST(BeastClient, LongPollSendsTheQuotedEtagAndMaps304) {
  ScriptedServer s([](const std::string&) { return response(304, ""); });
  auto r = call<net::DesiredAnswer>(
      [](auto&, auto& c, auto cb) { c.desired("cred", "abc", 7, std::move(cb)); }, url_of(s));
  ASSERT_TRUE(r) << r.error().error.message;
  EXPECT_TRUE(r->not_modified);
  auto req = s.requests().at(0);
  EXPECT_NE(req.find("GET /v1/agent/desired?wait=7 HTTP/1.1"), std::string::npos) << req;
  EXPECT_NE(req.find("If-None-Match: \"abc\""), std::string::npos) << req;
  EXPECT_NE(req.find("Authorization: Bearer cred"), std::string::npos) << req;
}

TEST(BeastClient, DecodesDesiredStateStrictly) {
  ScriptedServer s([](const std::string&) {
    return response(
        200,
        R"({"etag":"e9","channels":[],"known_bad":[{"channel":"c","version":2}],"heartbeat_s":7,"poll_s":30})");
  });
  auto r = call<net::DesiredAnswer>(
      [](auto&, auto& c, auto cb) { c.desired("cred", "", 1, std::move(cb)); }, url_of(s));
  ASSERT_TRUE(r) << r.error().error.message;
  EXPECT_EQ(r->state.etag, "e9");
  EXPECT_EQ(r->state.heartbeat_s, 7);
  ASSERT_EQ(r->state.known_bad.size(), 1u);
  EXPECT_EQ(s.requests().at(0).find("If-None-Match"), std::string::npos);

  ScriptedServer bad([](const std::string&) { return response(200, R"({"etag":5})"); });
  auto rb = call<net::DesiredAnswer>(
      [](auto&, auto& c, auto cb) { c.desired("cred", "", 1, std::move(cb)); }, url_of(bad));
  ASSERT_FALSE(rb);
  EXPECT_EQ(rb.error().error.errc, Errc::InvalidArgument);
}

TEST(BeastClient, MapsErrorsAndRetryAfter) {
  ScriptedServer s([](const std::string& req) {
    if (req.find("heartbeat") != std::string::npos) {
      return response(429, R"({"error":{"code":"slow_down","message":"too many"}})",
                      "Retry-After: 7\r\n");
    }
    return response(401, R"({"error":{"code":"unauthenticated","message":"who are you"}})");
  });
  auto hb = call<bool>(
      [](auto&, auto& c, auto cb) {
        c.heartbeat("cred", proto::Heartbeat{"b", 1, {}}, std::move(cb));
      },
      url_of(s));
  ASSERT_FALSE(hb);
  EXPECT_EQ(hb.error().http_status, 429);
  EXPECT_EQ(hb.error().retry_after_ms, 7000);
  EXPECT_TRUE(hb.error().transient());
  EXPECT_EQ(hb.error().error.code, "slow_down");
  auto rep =
      call<bool>([](auto&, auto& c, auto cb) { c.reports("cred", {}, std::move(cb)); }, url_of(s));
  ASSERT_FALSE(rep);
  EXPECT_EQ(rep.error().http_status, 401);
  EXPECT_FALSE(rep.error().transient());
  EXPECT_NE(rep.error().error.message.find("who are you"), std::string::npos);
}

TEST(BeastClient, ConnectionRefusedIsATransientNetworkFailure) {
  int port = 0;
  {
    ScriptedServer s([](const std::string&) { return response(204, ""); });
    port = s.port();
  }
  auto r = call<bool>(
      [](auto&, auto& c, auto cb) {
        c.heartbeat("cred", proto::Heartbeat{"b", 1, {}}, std::move(cb));
      },
      url_of(port));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status, 0);
  EXPECT_TRUE(r.error().transient());
}

TEST(BeastClient, DownloadResumesWithRangeAndRestartsOn200) {
  std::string blob(100'000, 'q');
  for (std::size_t i = 0; i < blob.size(); i += 97) blob[i] = static_cast<char>('a' + i % 26);
  TempDir dir;
  std::string path = dir.path() + "/part";
  {
    std::ofstream out(path, std::ios::binary);
    out << blob.substr(0, 30'000);
  }
  ScriptedServer s([&](const std::string& req) {
    auto r = req.find("Range: bytes=");
    if (r == std::string::npos) return response(200, blob);
    std::size_t from = std::stoul(req.substr(r + 13));
    return response(206, blob.substr(from),
                    "Content-Range: bytes " + std::to_string(from) + "-" +
                        std::to_string(blob.size() - 1) + "/" + std::to_string(blob.size()) +
                        "\r\n");
  });
  std::int64_t last_progress = 0;
  auto r = call<net::DownloadDone>(
      [&](auto&, auto& c, auto cb) {
        c.download(
            "cred", "/v1/blobs/x", path, "x", 1 << 20, [&](std::int64_t n) { last_progress = n; },
            std::move(cb));
      },
      url_of(s));
  ASSERT_TRUE(r) << r.error().error.message;
  EXPECT_EQ(r->size, 100'000);
  EXPECT_EQ(last_progress, 100'000);
  auto req = s.requests().at(0);
  EXPECT_NE(req.find("Range: bytes=30000-"), std::string::npos) << req;
  EXPECT_NE(req.find("If-Range: \"x\""), std::string::npos) << req;
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), blob);

  // A server that ignores Range: the file starts over rather than being corrupted.
  ScriptedServer full([&](const std::string&) { return response(200, blob); });
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "garbage";
  }
  auto r2 = call<net::DownloadDone>(
      [&](auto&, auto& c, auto cb) {
        c.download("cred", "/v1/blobs/x", path, "x", 1 << 20, nullptr, std::move(cb));
      },
      url_of(full));
  ASSERT_TRUE(r2) << r2.error().error.message;
  std::ifstream in2(path, std::ios::binary);
  std::stringstream ss2;
  ss2 << in2.rdbuf();
  EXPECT_EQ(ss2.str(), blob);
}

TEST(BeastClient, DownloadLargerThanTheManifestIsRefused) {
  std::string blob(50'000, 'z');
  TempDir dir;
  ScriptedServer s([&](const std::string&) { return response(200, blob); });
  auto r = call<net::DownloadDone>(
      [&](auto&, auto& c, auto cb) {
        c.download("cred", "/v1/blobs/x", dir.path() + "/f", "x", 1000, nullptr, std::move(cb));
      },
      url_of(s));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status, 413);
}

// ---- consumer processes ----

std::string script(const TempDir& dir, const std::string& body) {
  std::string path = dir.path() + "/consumer.sh";
  std::ofstream out(path);
  out << "#!/bin/sh\n" << body;
  out.close();
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(ConsumerRunner, SplitsCommandsWithoutAShell) {
  EXPECT_EQ(split_command("/bin/x  --flag  a"),
            (std::vector<std::string>{"/bin/x", "--flag", "a"}));
  EXPECT_TRUE(split_command("   ").empty());
}

TEST(ConsumerRunner, CheckPassesFailsAndTimesOut) {
  TempDir dir;
  auto sh = script(dir,
                   "[ \"$1\" = --check ] || exit 9\n"
                   "case \"$2\" in *good) exit 0;; *slow) exec sleep 100;; *) exit 3;; esac\n");
  boost::asio::io_context io;
  ProcessConsumerRunner runner(io, {sh});
  std::vector<Status> results(3);
  int done = 0;
  runner.check(dir.path() + "/good", 5000, [&](Status st) {
    results[0] = st;
    ++done;
  });
  runner.check(dir.path() + "/bad", 5000, [&](Status st) {
    results[1] = st;
    ++done;
  });
  runner.check(dir.path() + "/slow", 300, [&](Status st) {
    results[2] = st;
    ++done;
  });
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (done < 3 && std::chrono::steady_clock::now() < end)
    io.run_one_for(std::chrono::milliseconds(100));
  ASSERT_EQ(done, 3);
  EXPECT_TRUE(results[0]);
  ASSERT_FALSE(results[1]);
  EXPECT_NE(results[1].error().message.find("status 3"), std::string::npos);
  ASSERT_FALSE(results[2]);
  EXPECT_NE(results[2].error().message.find("timed out"), std::string::npos);
}

TEST(ConsumerRunner, RunReportsASignalAndStopIsNotACrash) {
  TempDir dir;
  auto sh = script(dir,
                   "case \"$2\" in *crash) kill -SEGV $$;; esac\n"
                   "exec sleep 100\n");
  boost::asio::io_context io;
  ProcessConsumerRunner runner(io, {sh});
  std::optional<ConsumerExit> crashed, stopped;
  ASSERT_TRUE(runner.run("a", dir.path() + "/crash", [&](ConsumerExit e) { crashed = e; }));
  ASSERT_TRUE(runner.run("b", dir.path() + "/fine", [&](ConsumerExit e) { stopped = e; }));
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!crashed && std::chrono::steady_clock::now() < end)
    io.run_one_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(crashed);
  EXPECT_TRUE(crashed->signaled);
  EXPECT_EQ(crashed->code, SIGSEGV);
  EXPECT_FALSE(runner.running("a"));
  EXPECT_TRUE(runner.running("b"));
  runner.stop("b");
  EXPECT_FALSE(runner.running("b"));
  io.run_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(stopped) << "a requested stop is not reported as an exit";
}

}  // namespace
}  // namespace ringfence::agent::testing
