// The HTTP request path from raw bytes: the real HttpServer (server/http/beast_server.cpp) on
// 127.0.0.1:0 in this process, with the server's real router and every handler over a real
// Service and an in-memory SQLite store, wired as server/app.cpp wires them. Each input is
// written to a fresh connection as it is (pipelined requests, broken framing, anything), the
// write side is shut, and the answer is read until the server closes.
//
// A loopback socket per input rather than an in-memory stream: it drives the transport exactly as
// production does and does not depend on the session's internals (the TLS work templates the
// session on its stream type). Coverage counters are process-wide, so the server's I/O thread is
// instrumented like the fuzzer's own.
//
// Placeholders let seeds get past authentication: "@ADMIN@" becomes the admin token and "@HOST@"
// / "@CRED@" an enrolled host's id and credential (set up once at start through the API itself).
// State accumulates across inputs (channels, rings, hosts...), as it does in a real server; a
// crash found that way is reproduced by replaying the inputs that led to it (-runs on the crash
// artifact alone may not). Properties: no crash or sanitizer finding; every answer the server
// sends starts with an HTTP/1.1 status line; the server still answers /healthz (checked every
// 4096 inputs).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
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

// One exchange on a fresh connection: sends `bytes`, shuts the write side, reads to EOF (or
// until `deadline_ms` passes). Closes with RST so a million connections leave no TIME_WAIT.
std::string send_and_read(std::uint16_t port, std::string_view bytes, int deadline_ms = 3000) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fuzz::violated("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    fuzz::violated("the server stopped accepting connections");
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
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
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
    spdlog::set_level(spdlog::level::off);
    const char* tmp = std::getenv("TMPDIR");
    dir = std::filesystem::path(tmp && *tmp ? tmp : "/tmp") /
          ("ringfence-fuzz-http-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir / "uploads");
    std::filesystem::create_directories(dir / "blobs");
    auto st = store::open_sqlite(":memory:", store::embedded_migrations());
    if (!st) fuzz::violated("cannot open the in-memory store");
    store = std::move(*st);
    core::Options opts;
    opts.data_dir = dir.string();
    opts.max_long_poll_s = 1;  // a long poll the fuzzer finds must not stall it
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
    so.access_log = false;
    so.read_timeout = std::chrono::seconds(2);
    so.write_timeout = std::chrono::seconds(2);
    so.io_threads = 1;
    auto* r = &router;
    http = std::make_unique<http::HttpServer>(
        io, so, [r](http::Request& req, http::Reply reply) { r->dispatch(req, std::move(reply)); });
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
    std::atexit([] { Server::instance().stop(); });
  }

  // Stops the server and its thread at exit; the objects themselves are left to the OS (they
  // stay reachable from instance(), so the leak checker does not count them).
  void stop() {
    io.stop();
    if (thread.joinable()) thread.join();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  static Server& instance() {
    static Server* s = new Server();
    return *s;
  }
};

void replace_all(std::string& s, std::string_view from, const std::string& to) {
  for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& srv = Server::instance();
  std::string in(reinterpret_cast<const char*>(data), size);
  replace_all(in, "@ADMIN@", kAdminToken);
  replace_all(in, "@HOST@", srv.host_id);
  replace_all(in, "@CRED@", srv.credential);
  std::string out = send_and_read(srv.port, in);
  RF_FUZZ_CHECK(out.empty() || out.starts_with("HTTP/1.1 "));
  srv.clock.advance_ms(1000);
  static std::uint64_t runs = 0;
  if (++runs % 4096 == 0) {
    RF_FUZZ_CHECK(send_and_read(srv.port, "GET /healthz HTTP/1.1\r\nHost: f\r\n\r\n")
                      .starts_with("HTTP/1.1 200"));
  }
  return 0;
}
