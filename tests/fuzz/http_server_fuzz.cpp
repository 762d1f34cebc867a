// The HTTP request path from raw bytes: the real HttpServer (server/http/beast_server.cpp) on
// 127.0.0.1:0 in this process, with the server's real router and every handler over a real
// Service and an in-memory SQLite store, wired as server/app.cpp wires them (authentication
// before the body, per-route request metrics, the periodic tick). Each input is written to a
// fresh connection as it is (pipelined requests, broken framing, anything), the write side is
// shut, and the answer is read until the server closes.
//
// A loopback socket per input rather than an in-memory stream: it drives the transport exactly as
// production does and does not depend on the session's internals (the TLS work templates the
// session on its stream type). Coverage counters are process-wide, so the server's I/O thread is
// instrumented like the fuzzer's own.
//
// Placeholders let seeds get past authentication: "@ADMIN@" becomes the admin token and "@HOST@"
// / "@CRED@" an enrolled host's id and credential (set up at start through the API itself).
//
// Time: a fake clock, advanced one second per input by a Service::tick() posted to the server's
// loop (as the App's 250 ms ticker does), so bakes expire, silences are noticed and gates are
// evaluated. A long poll the input parks is ended the way time would end it: when the connection
// has been idle for kIdleMs the clock jumps past the long-poll cap and the loop ticks (never a
// real wait of the cap).
//
// State accumulates across inputs (channels, rings, hosts, rollouts...), as in a real server,
// but a server lives for kInputsPerServer inputs only: then it is stopped, destroyed and a fresh
// one (new store, keys, enrolled host) takes its place. That bounds memory and the size of every
// list an input can make the server walk, and keeps a crash reproducible: it needs at most the
// inputs since the last restart (run them in order with -runs on the saved inputs; the crash
// artifact alone may not do). Properties: no crash or sanitizer finding; every answer the server
// sends starts with an HTTP/1.1 status line; each server still answers /healthz at the end of its
// life.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "proto/signing.hpp"
#include "server/api/routes.hpp"
#include "server/core/clock.hpp"
#include "server/core/service.hpp"
#include "server/http/router.hpp"
#include "server/http/server.hpp"
#include "server/store/store.hpp"
#include "tests/fuzz/fuzz.hpp"

using namespace ringfence;
using namespace ringfence::server;

namespace {
constexpr const char* kAdminToken = "rf_fuzz_admin_token_0123456789abcdef";
constexpr std::uint64_t kInputsPerServer = 4096;
constexpr int kIdleMs = 50;
constexpr std::int64_t kMaxLongPollS = 1;

// One exchange on a fresh connection: sends `bytes`, shuts the write side, reads to EOF (or
// until `deadline_ms` passes), calling `on_idle` whenever nothing arrived for kIdleMs. Closes
// with RST so a million connections leave no TIME_WAIT.
std::string send_and_read(std::uint16_t port, std::string_view bytes,
                          const std::function<void()>& on_idle = {}, int deadline_ms = 3000) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // A client-side shortage (no free local port or buffer) is retried for a while, on a new
  // socket each time; a refusal, or a shortage that lasts, stops the run with the reason (errno)
  // in the report.
  int fd = -1;
  for (int attempt = 0;; ++attempt) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fuzz::violated("socket() failed");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    int err = errno;
    ::close(fd);
    if ((err == EADDRNOTAVAIL || err == EAGAIN || err == ENOBUFS) && attempt < 200) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    std::fprintf(stderr, "fuzz: connect to 127.0.0.1:%u failed: %s\n", static_cast<unsigned>(port),
                 std::strerror(err));
    fuzz::violated("the server stopped accepting connections");
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (413, 400): that is an answer too
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string out;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  char buf[16384];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    until - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, kIdleMs)));
    if (ready < 0) break;
    if (ready == 0) {
      if (on_idle) on_idle();
      continue;
    }
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
  return out;
}

std::string body_of(const std::string& response) {
  auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : response.substr(at + 4);
}

std::string request(const std::string& method, const std::string& target, const std::string& auth,
                    const std::string& body) {
  return method + " " + target + " HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer " + auth +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

struct Server {
  std::filesystem::path dir;
  FakeClock clock;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<core::Service> service;
  api::RequestMetrics requests;
  http::Router router;
  boost::asio::io_context io;
  std::unique_ptr<http::HttpServer> http;
  std::thread thread;
  std::uint16_t port = 0;
  std::string host_id, credential;

  Server() {
    static std::uint64_t generation = 0;
    spdlog::set_level(spdlog::level::off);
    dir =
        std::filesystem::path(fuzz::scratch_dir()) /
        ("ringfence-fuzz-http-" + std::to_string(::getpid()) + "-" + std::to_string(generation++));
    std::filesystem::create_directories(dir / "uploads");
    std::filesystem::create_directories(dir / "blobs");
    auto st = store::open_sqlite(":memory:", store::embedded_migrations());
    if (!st) fuzz::violated("cannot open the in-memory store");
    store = std::move(*st);
    core::Options opts;
    opts.data_dir = dir.string();
    opts.max_long_poll_s = kMaxLongPollS;
    service = std::make_unique<core::Service>(*store, clock, proto::generate_keypair(), opts);
    if (!service->load() || !service->bootstrap_admin(std::string(kAdminToken)))
      fuzz::violated("cannot set up the service");
    api::register_routes(router, *service, requests, api::ApiOptions{"", [] { return false; }});
    http::ServerOptions so;
    so.upload_limit = 1 << 20;
    so.upload_dir = (dir / "uploads").string();
    so.is_upload = [](http::Method m, std::string_view path) {
      return m == http::Method::Post && path == "/v1/blobs";
    };
    so.before_body = [this](const http::Request& head) { return before_body(head); };
    so.access_log = false;
    so.read_timeout = std::chrono::seconds(2);
    so.write_timeout = std::chrono::seconds(2);
    so.io_threads = 1;
    auto* r = &router;
    auto* metrics = &requests;
    // As the App: the reply is made once the route is known, and records the request under the
    // route's pattern.
    http = std::make_unique<http::HttpServer>(
        io, so, [r, metrics](http::Request& req, http::Reply reply) {
          r->dispatch(req, [&reply, metrics](std::string_view route) -> http::Reply {
            return [reply = std::move(reply), metrics, route](http::Response resp) {
              metrics->record(route, resp.status, 0.001);
              reply(std::move(resp));
            };
          });
        });
    requests.set_transport_stats([h = http.get()] { return h->stats(); });
    auto bound = http->listen("127.0.0.1:0");
    if (!bound) fuzz::violated("cannot listen on 127.0.0.1:0");
    port = *bound;
    thread = std::thread([this] {
      auto guard = boost::asio::make_work_guard(io);
      io.run();
    });
    // One enrolled host, through the API as an agent would.
    auto tok = nlohmann::json::parse(
        body_of(send_and_read(
            port, request("POST", "/v1/enrollment-tokens", kAdminToken, R"({"name":"fuzz"})"))),
        nullptr, false);
    if (!tok.is_object() || !tok.contains("token"))
      fuzz::violated("cannot create an enrollment token");
    host_id = "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab";
    nlohmann::json enroll = {{"enrollment_token", tok["token"]},
                             {"host_id", host_id},
                             {"labels", {{"os", "linux"}}},
                             {"agent_version", "fuzz"}};
    auto en = nlohmann::json::parse(
        body_of(send_and_read(port, request("POST", "/v1/agent/enroll", "", enroll.dump()))),
        nullptr, false);
    if (!en.is_object() || !en.contains("credential")) fuzz::violated("cannot enroll a host");
    credential = en["credential"].get<std::string>();
  }

  // The App's check before any body is read (server/app.cpp: no client certificates here).
  std::optional<http::Response> before_body(const http::Request& head) const {
    return api::credential_before_body(router, *service, head);
  }

  // Time passes on the server's loop, as the App's ticker makes it pass.
  void tick(std::int64_t advance_ms) {
    boost::asio::post(io, [this, advance_ms] {
      clock.advance_ms(advance_ms);
      service->tick();
    });
  }

  // Stops serving, answers parked long polls, waits (at most 2 s) for the connections to close
  // and joins the loop's thread. The objects are destroyed by the destructor.
  void stop() {
    boost::asio::post(io, [this] {
      http->stop();
      service->release_long_polls();
    });
    for (int i = 0; i < 2000 && http->connections() > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    io.stop();
    if (thread.joinable()) thread.join();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  ~Server() {
    if (thread.joinable()) stop();
    http.reset();  // before the loop it runs on and the router its handler calls
  }
};

Server*& current() {
  static Server* s = nullptr;
  return s;
}

Server& instance() {
  if (!current()) {
    current() = new Server();
    // At exit the last server is stopped but not destroyed (other statics may be gone by then);
    // it stays reachable from current(), so the leak checker does not count it.
    static const bool at_exit = (std::atexit([] {
                                   if (current()) current()->stop();
                                 }),
                                 true);
    (void)at_exit;
  }
  return *current();
}

// A fresh server for the next inputs; the old one is stopped and destroyed.
void restart() {
  delete current();
  current() = nullptr;
  instance();
}

void replace_all(std::string& s, std::string_view from, const std::string& to) {
  for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& srv = instance();
  std::string in(reinterpret_cast<const char*>(data), size);
  replace_all(in, "@ADMIN@", kAdminToken);
  replace_all(in, "@HOST@", srv.host_id);
  replace_all(in, "@CRED@", srv.credential);
  std::string out = send_and_read(srv.port, in, [&srv] { srv.tick((kMaxLongPollS + 1) * 1000); });
  RF_FUZZ_CHECK(out.empty() || out.starts_with("HTTP/1.1 "));
  srv.tick(1000);
  static std::uint64_t runs = 0;
  if (++runs % kInputsPerServer == 0) {
    RF_FUZZ_CHECK(send_and_read(srv.port, "GET /healthz HTTP/1.1\r\nHost: f\r\n\r\n")
                      .starts_with("HTTP/1.1 200"));
    restart();
  }
  return 0;
}
