// The HTTP transport against a real server on port 0 (io_context on a background thread), driven
// over raw TCP sockets by tests/http/http_client.hpp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "server/http/server.hpp"
#include "tests/http/http_client.hpp"
#include "tests/support/process.hpp"

namespace ringfence::server::http {
namespace {

namespace net = boost::asio;
using namespace std::chrono_literals;
using ringfence::testing::eventually;
using ringfence::testing::RawClient;
using ringfence::testing::RawResponse;
using ringfence::testing::request_once;
using ringfence::testing::TempDir;

std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: t\r\n" + extra + "\r\n";
}

std::string post(const std::string& target, const std::string& body,
                 const std::string& extra = "") {
  return "POST " + target +
         " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra +
         "\r\n" + body;
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
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

bool is_json_error(const RawResponse& r, const std::string& code = "") {
  return r.header("content-type") == "application/json" &&
         r.body.rfind("{\"error\":{\"code\":\"" + code, 0) == 0 &&
         r.body.find("\"message\":") != std::string::npos;
}

class HttpTest : public ::testing::Test {
 protected:
  // Options every test starts from: quiet, short enough timeouts that a bug cannot hang CTest.
  static ServerOptions base_options() {
    ServerOptions o;
    o.access_log = false;
    o.read_timeout = 10s;
    o.write_timeout = 10s;
    return o;
  }

  void start(ServerOptions opts = base_options(), int threads = 1) {
    server_ = std::make_unique<HttpServer>(io_, std::move(opts), [this](Request& req, Reply reply) {
      ++requests_;
      handler_(req, std::move(reply));
    });
    auto port = server_->listen("127.0.0.1:0");
    ASSERT_TRUE(port.has_value()) << port.error().message;
    ASSERT_NE(*port, 0);
    port_ = *port;
    thread_ = std::thread([this, threads] {
      std::vector<std::thread> more;
      for (int i = 1; i < threads; ++i) more.emplace_back([this] { io_.run(); });
      io_.run();
      for (auto& t : more) t.join();
      ran_out_ = true;
    });
  }

  // stop() and wait for io_context::run() to return by itself; false if it did not.
  bool stop_and_drain(std::chrono::milliseconds deadline = 10s) {
    if (!thread_.joinable()) return true;
    server_->stop();
    bool drained = eventually([&] { return ran_out_.load(); }, deadline);
    if (!drained) io_.stop();
    thread_.join();
    return drained;
  }

  void TearDown() override { stop_and_drain(); }

  // Runs fn on the io thread after a delay (handlers use it to reply later).
  void later(std::chrono::milliseconds delay, std::function<void()> fn) {
    auto t = std::make_shared<net::steady_timer>(io_, delay);
    t->async_wait([t, fn = std::move(fn)](boost::system::error_code) { fn(); });
  }

  // Runs fn on the io thread and waits for it.
  void on_io(std::function<void()> fn) {
    std::atomic<bool> done{false};
    net::post(io_, [&] {
      fn();
      done = true;
    });
    ASSERT_TRUE(eventually([&] { return done.load(); }));
  }

  net::io_context io_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::atomic<bool> ran_out_{false};
  std::atomic<int> requests_{0};
  std::uint16_t port_ = 0;
  Handler handler_ = [](Request& req, Reply reply) {
    reply(Response::json(
        200, "{\"path\":\"" + req.path + "\",\"body\":" + std::to_string(req.body.size()) + "}"));
  };
};

TEST_F(HttpTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  start();
  RawClient c(port_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send(get("/a/" + std::to_string(i) + "?x=1")));
    auto r = c.read_response();
    ASSERT_TRUE(r) << "request " << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(r->body, "{\"path\":\"/a/" + std::to_string(i) + "\",\"body\":0}");
    EXPECT_EQ(r->header("server"), "ringfence");
    EXPECT_EQ(r->header("content-type"), "application/json");
    EXPECT_EQ(r->header("content-length"), std::to_string(r->body.size()));
    EXPECT_TRUE(r->has("date"));
    EXPECT_FALSE(r->has("connection"));
  }
  EXPECT_EQ(server_->connections(), 1u);
}

TEST_F(HttpTest, SmallHeaderSetWhenServerAndDateAreOff) {
  auto o = base_options();
  o.server_header.clear();
  o.date_header = false;
  start(o);
  handler_ = [](Request&, Reply reply) { reply(Response::no_content()); };
  auto r = request_once(port_, get("/"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  // Only the request id every response carries.
  ASSERT_EQ(r->headers.size(), 1u) << r->headers.begin()->first;
  EXPECT_TRUE(r->has("x-request-id"));
}

TEST_F(HttpTest, RequestHeadersQueryAndBodyReachTheHandler) {
  Request seen;
  handler_ = [&](Request& req, Reply reply) {
    seen = req;
    reply(Response::json(201, "{}"));
  };
  start();
  auto r = request_once(port_, post("/v1/x?a=b%20c", "{\"k\":1}", "X-Thing: Yes\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(seen.method, Method::Post);
  EXPECT_EQ(seen.path, "/v1/x");
  EXPECT_EQ(seen.query, "a=b%20c");
  EXPECT_EQ(seen.query_param("a"), "b c");
  EXPECT_EQ(seen.header("x-thing"), "Yes");
  EXPECT_EQ(seen.body, "{\"k\":1}");
  EXPECT_EQ(seen.remote, "127.0.0.1");
}

TEST_F(HttpTest, PipelinedRepliesComeBackInRequestOrder) {
  handler_ = [this](Request& req, Reply reply) {
    std::string body = req.path;
    if (req.path == "/slow") {  // the first request is answered last
      later(200ms, [reply, body] { reply(Response::json(200, body)); });
    } else {
      reply(Response::json(200, body));
    }
  };
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/slow") + get("/b") + post("/c", "xyz") + get("/d")));
  for (const char* want : {"/slow", "/b", "/c", "/d"}) {
    auto r = c.read_response();
    ASSERT_TRUE(r) << want;
    EXPECT_EQ(r->body, want);
  }
  EXPECT_EQ(requests_.load(), 4);  // all four were read ahead while /slow was pending
}

TEST_F(HttpTest, PipelineIsCappedAtMaxPipelined) {
  auto o = base_options();
  o.max_pipelined = 2;
  std::vector<Reply> parked;
  handler_ = [&](Request&, Reply reply) { parked.push_back(std::move(reply)); };
  start(o);
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/1") + get("/2") + get("/3") + get("/4")));
  ASSERT_TRUE(eventually([&] { return requests_.load() == 2; }));
  // The third request is not read while two replies are owed.
  on_io([&] { EXPECT_EQ(parked.size(), 2u); });
  on_io([&] {
    for (auto& r : parked) r(Response::json(200, "{}"));
    parked.clear();
  });
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(c.read_response());
  ASSERT_TRUE(eventually([&] { return requests_.load() == 4; }));
  on_io([&] {
    for (auto& r : parked) r(Response::json(200, "{}"));
    parked.clear();
  });
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(c.read_response());
}

TEST_F(HttpTest, HeaderTooLargeIs431WithJsonErrorThenClose) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/", "X-Big: " + std::string(10 * 1024, 'x') + "\r\n")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(is_json_error(*r, "headers_too_large")) << r->body;
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(c.wait_closed());
  EXPECT_EQ(requests_.load(), 0);
}

TEST_F(HttpTest, BodyTooLargeIs413WithJsonError) {
  start();
  {  // announced by Content-Length: refused before the body is read
    RawClient c(port_);
    ASSERT_TRUE(c.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n" +
                       std::string(1000, 'a')));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(is_json_error(*r, "payload_too_large")) << r->body;
    EXPECT_TRUE(c.wait_closed());
  }
  {  // chunked: refused when the limit is crossed
    RawClient c(port_);
    std::string chunk(512 * 1024, 'b');
    std::string req = "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 3; ++i) req += "80000\r\n" + chunk + "\r\n";
    req += "0\r\n\r\n";
    c.send(req);  // the server may stop reading (and close) before all of it is sent
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(is_json_error(*r, "payload_too_large")) << r->body;
  }
  {  // exactly at the limit is fine
    auto r = request_once(port_, post("/x", std::string(1024 * 1024, 'c')));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "{\"path\":\"/x\",\"body\":1048576}");
  }
  EXPECT_EQ(requests_.load(), 1);
}

class UploadTest : public HttpTest {
 protected:
  void start_uploads(std::uint64_t limit,
                     const std::function<void(ServerOptions&)>& tweak = nullptr) {
    auto o = base_options();
    o.upload_dir = dir_.path() + "/uploads";
    std::filesystem::create_directories(o.upload_dir);
    o.upload_limit = limit;
    o.is_upload = [](Method m, std::string_view path) {
      return m == Method::Post && path == "/upload";
    };
    if (tweak) tweak(o);
    start(o);
  }
  TempDir dir_;
};

TEST_F(UploadTest, BodyIsStreamedToAFileTheHandlerSees) {
  std::string seen_file, seen_bytes, seen_body;
  handler_ = [&](Request& req, Reply reply) {
    seen_file = req.body_file;
    seen_bytes = slurp(req.body_file);
    seen_body = req.body;
    reply(Response::json(201, "{}"));
  };
  start_uploads(8 << 20);
  std::string data = pattern(3 * 1024 * 1024 + 17);  // above the 1 MiB JSON limit
  auto r = request_once(port_, post("/upload", data, "Content-Type: application/octet-stream\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(std::filesystem::path(seen_file).parent_path(), dir_.path() + "/uploads");
  EXPECT_TRUE(seen_body.empty());
  EXPECT_EQ(seen_bytes.size(), data.size());
  EXPECT_TRUE(seen_bytes == data);
  // Not adopted: the transport removed it after replying.
  EXPECT_TRUE(eventually([&] { return !std::filesystem::exists(seen_file); }));
}

TEST_F(UploadTest, AnAdoptedFileStaysAndChunkedUploadsWork) {
  std::string adopted = dir_.path() + "/adopted";
  handler_ = [&](Request& req, Reply reply) {
    std::filesystem::rename(req.body_file, adopted);
    reply(Response::json(201, "{}"));
  };
  start_uploads(1 << 20);
  std::string req =
      "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  auto r = request_once(port_, req);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(slurp(adopted), "hello world");
  EXPECT_EQ(files_in(dir_.path() + "/uploads"), 0u);
}

TEST_F(UploadTest, ExpectContinueIsAnsweredBeforeTheBodyIsSent) {
  std::string seen;
  handler_ = [&](Request& req, Reply reply) {
    seen = slurp(req.body_file);
    reply(Response::json(201, "{}"));
  };
  start_uploads(1 << 20);
  RawClient c(port_);
  ASSERT_TRUE(
      c.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
             "Expect: 100-continue\r\n\r\n"));
  auto interim = c.read_response();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(c.send("abcde"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(seen, "abcde");
}

TEST_F(UploadTest, OverTheUploadLimitIs413AndNoFileIsLeft) {
  start_uploads(64 * 1024);
  {  // announced
    auto r = request_once(port_, post("/upload", pattern(100 * 1024)));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(is_json_error(*r, "payload_too_large")) << r->body;
  }
  {  // chunked: found out while writing the file
    std::string req = "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 4; ++i) req += "8000\r\n" + std::string(0x8000, 'z') + "\r\n";
    req += "0\r\n\r\n";
    auto r = request_once(port_, req);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(is_json_error(*r, "payload_too_large")) << r->body;
  }
  EXPECT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 0; }));
  EXPECT_EQ(requests_.load(), 0);
}

TEST_F(UploadTest, AClientLeavingMidUploadLeavesNoFile) {
  start_uploads(1 << 20);
  {
    RawClient c(port_);
    ASSERT_TRUE(c.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" +
                       std::string(5000, 'q')));
    ASSERT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 1; }));
  }
  EXPECT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 0; }));
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
}

// The pre-body hook answers before a byte of the body is read or stored.
TEST_F(UploadTest, BeforeBodyRefusesWithoutReadingOrStoringTheBody) {
  std::atomic<int> hook_calls{0};
  std::string seen_auth;
  start_uploads(256 << 20, [&](ServerOptions& o) {
    o.before_body = [&](const Request& head) -> std::optional<Response> {
      ++hook_calls;
      seen_auth = std::string(head.header("authorization"));
      if (head.header("authorization") != "Bearer good") {
        return Response::error(Error{Errc::Unauthenticated, "no"});
      }
      return std::nullopt;
    };
  });
  {  // 200 MB announced; the client sends a first piece and then waits for the answer
    RawClient c(port_);
    ASSERT_TRUE(
        c.send("POST /upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer bad\r\n"
               "Content-Length: 200000000\r\n\r\n" +
               std::string(64 * 1024, 'x')));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_TRUE(is_json_error(*r, "unauthenticated")) << r->body;
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_EQ(files_in(dir_.path() + "/uploads"), 0u);
    EXPECT_TRUE(c.wait_closed());
  }
  {  // Expect: 100-continue gets the refusal instead of the 100
    RawClient c(port_);
    ASSERT_TRUE(
        c.send("POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
               "Content-Length: 5000\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
  }
  {  // a JSON route's body is refused the same way
    auto r = request_once(port_, post("/json", "{\"a\":1}"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
  }
  EXPECT_EQ(hook_calls.load(), 3);
  EXPECT_EQ(requests_.load(), 0);
  {  // allowed: the body is read and the handler runs; a body-less GET does not call the hook
    auto r = request_once(port_, post("/upload", "abc", "Authorization: Bearer good\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(seen_auth, "Bearer good");
    auto g = request_once(port_, get("/x"));
    ASSERT_TRUE(g);
    EXPECT_EQ(g->status, 200);
  }
  EXPECT_EQ(hook_calls.load(), 4);
  EXPECT_EQ(requests_.load(), 2);
  EXPECT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 0; }));
}

// A slow upload cannot keep its temp file forever: below the minimum rate it is answered 408;
// past the whole-upload deadline the connection is closed. Either way the file goes.
TEST_F(UploadTest, SlowUploadsAreCutAndTheirFilesRemoved) {
  start_uploads(64 << 20, [](ServerOptions& o) {
    o.upload_min_rate = 1 << 20;  // 1 MiB/s after the grace
    o.upload_rate_grace = 1s;
    o.upload_timeout = 60s;
  });
  {
    RawClient c(port_, "127.0.0.1", 50ms);
    ASSERT_TRUE(c.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 60000000\r\n\r\n"));
    std::optional<RawResponse> r;
    auto until = std::chrono::steady_clock::now() + 10s;
    while (!r && std::chrono::steady_clock::now() < until) {
      if (!c.send(std::string(16 * 1024, 's'))) break;
      r = c.read_response();
    }
    if (!r) r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 408);
    EXPECT_TRUE(is_json_error(*r, "upload_too_slow")) << r->body;
  }
  EXPECT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 0; }));
  stop_and_drain();
}

TEST_F(UploadTest, AWholeUploadDeadlineEndsEvenAProgressingUpload) {
  start_uploads(64 << 20, [](ServerOptions& o) {
    o.upload_min_rate = 0;
    o.upload_timeout = 1s;
  });
  RawClient c(port_, "127.0.0.1", 50ms);
  ASSERT_TRUE(c.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 60000000\r\n\r\n"));
  bool closed = false;
  auto until = std::chrono::steady_clock::now() + 10s;
  while (!closed && std::chrono::steady_clock::now() < until) {
    // keep sending well above any per-read idle timeout: only the whole-upload deadline ends it
    closed = !c.send(std::string(80 * 1024, 'p')) || c.read_response().has_value();
  }
  EXPECT_TRUE(closed);
  EXPECT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 0; }));
}

// Concurrent uploads share one space budget: one that does not fit is 503 with Retry-After.
TEST_F(UploadTest, UploadSpaceIsSharedAndAnUploadThatDoesNotFitIs503) {
  start_uploads(8 << 20, [](ServerOptions& o) { o.upload_space = 1 << 20; });
  RawClient a(port_);
  ASSERT_TRUE(a.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 800000\r\n\r\n" +
                     std::string(1000, 'a')));
  ASSERT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 1; }));
  {  // announced: refused at the head
    auto r = request_once(port_, post("/upload", std::string(400000, 'b')));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_TRUE(is_json_error(*r, "upload_space_full")) << r->body;
    EXPECT_FALSE(r->header("retry-after").empty());
  }
  {  // chunked: refused when its bytes would cross the budget
    std::string req = "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 8; ++i) req += "10000\r\n" + std::string(0x10000, 'c') + "\r\n";
    req += "0\r\n\r\n";
    auto r = request_once(port_, req);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_TRUE(is_json_error(*r, "upload_space_full")) << r->body;
  }
  ASSERT_TRUE(a.send(std::string(799000, 'a')));
  auto ra = a.read_response();
  ASSERT_TRUE(ra);
  EXPECT_EQ(ra->status, 200);
  // Space is given back once the first upload's file is gone.
  EXPECT_TRUE(eventually([&] { return files_in(dir_.path() + "/uploads") == 0; }));
  auto r = request_once(port_, post("/upload", std::string(400000, 'b')));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(requests_.load(), 2);
}

// A disk that fills during an upload gets the JSON answer 507, not a closed connection. The
// server runs in a child process whose upload dir is a 1 MiB tmpfs in its own mount namespace.
TEST(UploadDiskFull, EnospcIs507WithJsonAndNoFileIsLeft) {
  int ports[2];
  ASSERT_EQ(::pipe(ports), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ports[0]);
    std::uint16_t port = 0;
    auto report = [&](std::uint16_t p) {
      (void)!::write(ports[1], &p, sizeof p);
      ::close(ports[1]);
    };
    uid_t uid = ::getuid();
    gid_t gid = ::getgid();
    char dir[] = "/tmp/rf-enospc-XXXXXX";
    if (!::mkdtemp(dir) || ::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      report(0);
      ::_exit(2);
    }
    auto write_file = [](const char* path, const std::string& s) {
      int fd = ::open(path, O_WRONLY);
      bool ok = fd >= 0 && ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
      if (fd >= 0) ::close(fd);
      return ok;
    };
    write_file("/proc/self/setgroups", "deny");
    if (!write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
        !write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1") ||
        ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", dir, "tmpfs", 0, "size=1m") != 0) {
      report(0);
      ::_exit(2);
    }
    net::io_context io;
    ServerOptions o;
    o.access_log = false;
    o.upload_dir = dir;
    o.is_upload = [](Method, std::string_view path) { return path == "/upload"; };
    HttpServer s(io, o, [](Request& req, Reply reply) {
      reply(Response::json(200, "{\"file\":\"" + req.body_file + "\"}"));
    });
    auto p = s.listen("127.0.0.1:0");
    port = p ? *p : 0;
    report(port);
    if (!port) ::_exit(3);
    io.run_for(30s);
    ::umount(dir);
    ::rmdir(dir);
    ::_exit(0);
  }
  ::close(ports[1]);
  std::uint16_t port = 0;
  ASSERT_EQ(::read(ports[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  ::close(ports[0]);
  if (port == 0) {
    ::waitpid(pid, nullptr, 0);
    GTEST_SKIP() << "no user and mount namespaces here to make a full disk";
  }
  {
    RawClient c(port);
    ASSERT_TRUE(c.send(post("/upload", std::string(3 << 20, 'f'))));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 507);
    EXPECT_TRUE(is_json_error(*r, "insufficient_storage")) << r->body;
  }
  {  // the space came back: the partial file was removed
    auto r = request_once(port, post("/upload", std::string(512 << 10, 'g')));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

TEST_F(HttpTest, DeferredReplyFromATimer) {
  handler_ = [this](Request&, Reply reply) {
    later(150ms, [reply] { reply(Response::json(202, "{\"later\":true}")); });
  };
  start();
  auto t0 = std::chrono::steady_clock::now();
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/poll")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(r->body, "{\"later\":true}");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 140ms);
  // The connection is still usable afterwards.
  ASSERT_TRUE(c.send(get("/again")));
  ASSERT_TRUE(c.read_response());
}

TEST_F(HttpTest, ReplyAfterTheClientLeftIsANoOpAndRepliesCountOnce) {
  Reply parked;
  handler_ = [&](Request& req, Reply reply) {
    if (req.path == "/poll") return void(parked = std::move(reply));
    reply(Response::no_content());
  };
  start();
  {
    RawClient c(port_);
    ASSERT_TRUE(c.send(get("/poll")));
    ASSERT_TRUE(eventually([&] { return requests_.load() == 1; }));
  }
  // The session notices the close (its read-ahead fails) but the parked reply keeps it alive.
  on_io([&] {});
  on_io([&] {
    parked(Response::json(200, "{}"));
    parked(Response::json(500, "{}"));  // a second call is ignored
    parked = nullptr;
  });
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
  // The server still serves.
  auto r = request_once(port_, get("/x"));
  ASSERT_TRUE(r);
}

TEST_F(HttpTest, HandlerExceptionBecomes500) {
  handler_ = [](Request&, Reply) { throw std::runtime_error("boom"); };
  start();
  auto r = request_once(port_, get("/x"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_TRUE(is_json_error(*r, "internal")) << r->body;
}

class FileTest : public HttpTest {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/blob";
    data_ = pattern(2 * 1024 * 1024 + 333);
    std::ofstream(path_, std::ios::binary) << data_;
    handler_ = [this](Request&, Reply reply) {
      Response r;
      r.status = 206;
      r.content_type = "application/octet-stream";
      r.headers.emplace_back("Content-Range", "bytes 1000-1300999/" + std::to_string(data_.size()));
      r.headers.emplace_back("Content-Length", "12345");  // framing is the transport's: ignored
      r.file = FileBody{path_, 1000, 1300000};
      reply(std::move(r));
    };
  }
  TempDir dir_;
  std::string path_, data_;
};

TEST_F(FileTest, FileRegionIsSentWithItsLength) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/blob")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->header("content-length"), "1300000");
  EXPECT_EQ(r->header("content-range"), "bytes 1000-1300999/" + std::to_string(data_.size()));
  ASSERT_EQ(r->body.size(), 1300000u);
  EXPECT_TRUE(r->body == data_.substr(1000, 1300000));
  // Keep-alive continues after a file body.
  ASSERT_TRUE(c.send(get("/blob")));
  auto again = c.read_response();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->body.size(), 1300000u);
}

TEST_F(FileTest, HeadSendsHeadersOnlyWithTheRealLength) {
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send("HEAD /blob HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto r = c.read_response(/*head=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->header("content-length"), "1300000");
  // No body bytes followed: the next response parses cleanly.
  handler_ = [](Request&, Reply reply) { reply(Response::json(200, "{\"n\":2}")); };
  ASSERT_TRUE(c.send("HEAD /json HTTP/1.1\r\nHost: t\r\n\r\n" + get("/json")));
  auto h = c.read_response(true);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->header("content-length"), "7");
  auto g = c.read_response();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->body, "{\"n\":2}");
}

TEST_F(FileTest, MissingFileIs404) {
  start();
  handler_ = [](Request&, Reply reply) {
    Response r;
    r.file = FileBody{"/nonexistent/blob", 0, 10};
    reply(std::move(r));
  };
  auto r = request_once(port_, get("/blob"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(is_json_error(*r, "not_found"));
}

TEST_F(HttpTest, ServerSentEventsReachTheClientAndWritersNoticeTheClientLeaving) {
  StreamBody::Writer writer;
  handler_ = [&](Request&, Reply reply) {
    Response r;
    r.content_type = "text/event-stream";
    r.stream = std::make_shared<StreamBody>();
    r.stream->attach = [&](StreamBody::Writer w) {
      w("data: first\n\n");
      writer = std::move(w);
    };
    reply(std::move(r));
  };
  start();
  {
    RawClient c(port_);
    ASSERT_TRUE(c.send(get("/events")));
    auto head = c.read_until("data: first\n\n");
    ASSERT_TRUE(head);
    EXPECT_EQ(head->rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
    EXPECT_NE(head->find("Content-Type: text/event-stream\r\n"), std::string::npos);
    EXPECT_NE(head->find("Cache-Control: no-cache\r\n"), std::string::npos);
    EXPECT_EQ(head->find("Content-Length"), std::string::npos);
    bool ok = false;
    on_io([&] { ok = writer("data: second\n\n"); });
    EXPECT_TRUE(ok);
    ASSERT_TRUE(c.read_until("data: second\n\n"));
  }
  // Once the client is gone the writer says so.
  EXPECT_TRUE(eventually([&] {
    bool alive = true;
    on_io([&] { alive = writer("data: ping\n\n"); });
    return !alive;
  }));
  on_io([&] { writer = nullptr; });
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
}

TEST_F(HttpTest, ASlowEventReaderIsDroppedInsteadOfBuffered) {
  StreamBody::Writer writer;
  handler_ = [&](Request&, Reply reply) {
    Response r;
    r.content_type = "text/event-stream";
    r.stream = std::make_shared<StreamBody>();
    r.stream->attach = [&](StreamBody::Writer w) { writer = std::move(w); };
    reply(std::move(r));
  };
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/events")));
  ASSERT_TRUE(eventually([&] {
    bool attached = false;
    on_io([&] { attached = static_cast<bool>(writer); });
    return attached;
  }));
  // The client never reads: within a few MiB the writer refuses.
  bool refused = false;
  std::string chunk = "data: " + std::string(64 * 1024, 'x') + "\n\n";
  for (int i = 0; i < 400 && !refused; ++i) {
    on_io([&] { refused = !writer(chunk); });
  }
  EXPECT_TRUE(refused);
  on_io([&] { writer = nullptr; });
  c.close();
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
}

TEST_F(HttpTest, SilentAndSlowClientsAreDisconnectedAfterTheReadTimeout) {
  auto o = base_options();
  o.read_timeout = 1s;
  start(o);
  auto t0 = std::chrono::steady_clock::now();
  RawClient silent(port_);
  RawClient slow(port_);
  ASSERT_TRUE(slow.send("GET / HTTP/1.1\r\nHost: t\r\n"));  // never finishes its header
  RawClient idle(port_);                                    // one request, then an idle keep-alive
  ASSERT_TRUE(idle.send(get("/")));
  ASSERT_TRUE(idle.read_response());
  EXPECT_TRUE(silent.wait_closed());
  EXPECT_TRUE(slow.wait_closed());
  EXPECT_TRUE(idle.wait_closed());
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 5s);
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
}

TEST_F(HttpTest, APendingReplyIsNotCutByTheReadTimeout) {
  auto o = base_options();
  o.read_timeout = 1s;
  start(o);
  handler_ = [this](Request&, Reply reply) {
    later(1600ms, [reply] { reply(Response::json(200, "{}")); });
  };
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/long-poll")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpTest, AClientThatStopsReadingIsDisconnectedAfterTheWriteTimeout) {
  auto o = base_options();
  o.write_timeout = 1s;
  start(o);
  handler_ = [](Request&, Reply reply) { reply(Response::json(200, std::string(64 << 20, 'x'))); };
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/huge")));  // and never read the reply
  ASSERT_TRUE(eventually([&] { return requests_.load() == 1; }));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

TEST_F(HttpTest, SeveralIoThreadsServeConcurrentPipelinedClients) {
  handler_ = [this](Request& req, Reply reply) {
    std::string body = req.path;
    if (req.path.back() == '0') {  // every tenth reply from a timer, on whichever thread
      later(5ms, [reply, body] { reply(Response::json(200, body)); });
    } else {
      reply(Response::json(200, body));
    }
  };
  start(base_options(), 2);
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int k = 0; k < 4; ++k) {
    clients.emplace_back([&, k] {
      RawClient c(port_);
      for (int round = 0; round < 10; ++round) {
        std::string batch;
        for (int i = 0; i < 5; ++i)
          batch += get("/" + std::to_string(k) + "/" + std::to_string(round * 5 + i));
        if (!c.send(batch)) return;
        for (int i = 0; i < 5; ++i) {
          auto r = c.read_response();
          if (!r || r->body != "/" + std::to_string(k) + "/" + std::to_string(round * 5 + i))
            return;
          ++good;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good.load(), 200);
}

TEST_F(HttpTest, MalformedRequestsAre400AndClose) {
  start();
  for (std::string bad : {std::string("GARBAGE\r\n\r\n"), std::string("GET / HTTP/9.9\r\n\r\n"),
                          std::string("GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
                          std::string("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      "zz\r\nhello\r\n0\r\n\r\n"),
                          std::string("GET / HTTP/1.1\r\nBad Header\r\n\r\n")}) {
    RawClient c(port_);
    ASSERT_TRUE(c.send(bad));
    auto r = c.read_response();
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_TRUE(is_json_error(*r, "bad_request")) << r->body;
    EXPECT_TRUE(c.wait_closed()) << bad;
  }
  EXPECT_EQ(requests_.load(), 0);
  // An error after a good pipelined request is answered in order.
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/ok") + "NONSENSE\r\n\r\n"));
  auto ok = c.read_response();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  auto bad = c.read_response();
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

// Request smuggling: a body the server does not frame exactly as the client meant is never read
// as the next request. Only a single, final "chunked" coding is accepted; everything else is 400
// and the connection closes without reading further.
TEST_F(HttpTest, TransferEncodingOtherThanASingleChunkedIs400AndCloses) {
  std::vector<std::string> seen;
  std::mutex mu;
  handler_ = [&](Request& req, Reply reply) {
    {
      std::lock_guard lock(mu);
      seen.push_back(req.path);
    }
    reply(Response::json(200, "{}"));
  };
  start();
  const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
  for (std::string te :
       {"gzip", "identity", "chunked, identity", "gzip, chunked", "chunked, chunked",
        "chunked\r\nTransfer-Encoding: chunked", "compress", "chunked;x=1", "CHUNKED, gzip", ""}) {
    RawClient c(port_);
    ASSERT_TRUE(c.send("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + te + "\r\n\r\n" +
                       smuggled));
    auto r = c.read_response();
    ASSERT_TRUE(r) << te;
    EXPECT_EQ(r->status, 400) << te;
    EXPECT_TRUE(is_json_error(*r, "bad_request")) << te << ": " << r->body;
    EXPECT_EQ(r->header("connection"), "close") << te;
    EXPECT_TRUE(c.wait_closed()) << te;
  }
  // Transfer-Encoding together with Content-Length, and on HTTP/1.0 (which has no chunked coding).
  for (std::string head : {"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n",
                           "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                           "Content-Length: 5\r\n\r\n",
                           "POST /x HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"}) {
    RawClient c(port_);
    ASSERT_TRUE(c.send(head + "0\r\n\r\n" + smuggled));
    auto r = c.read_response();
    ASSERT_TRUE(r) << head;
    EXPECT_EQ(r->status, 400) << head;
    EXPECT_TRUE(c.wait_closed()) << head;
  }
  {
    std::lock_guard lock(mu);
    EXPECT_TRUE(seen.empty()) << seen.front();
  }
  // A single chunked coding (any case, with spaces) still works.
  RawClient c(port_);
  ASSERT_TRUE(
      c.send("POST /ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:  Chunked \r\n\r\n"
             "5\r\nhello\r\n0\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpTest, Http11WithoutExactlyOneHostIs400) {
  start();
  for (std::string bad : {std::string("GET / HTTP/1.1\r\n\r\n"),
                          std::string("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
                          std::string("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")}) {
    RawClient c(port_);
    ASSERT_TRUE(c.send(bad));
    auto r = c.read_response();
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_TRUE(is_json_error(*r, "bad_request")) << r->body;
    EXPECT_TRUE(c.wait_closed()) << bad;
  }
  EXPECT_EQ(requests_.load(), 0);
  // HTTP/1.0 needs no Host; an empty Host is allowed on 1.1 (RFC 9112 3.2).
  auto r10 = request_once(port_, "GET /old HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(r10);
  EXPECT_EQ(r10->status, 200);
  auto empty = request_once(port_, "GET /e HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->status, 200);
}

TEST_F(HttpTest, ObsoleteLineFoldingIs400) {
  start();
  for (std::string bad : {std::string("GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n"),
                          std::string("GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n"),
                          std::string("GET / HTTP/1.1\r\nHost: t\r\n Host: u\r\n\r\n"),
                          std::string("POST / HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 4\r\n\r\n"
                                      "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")}) {
    RawClient c(port_);
    ASSERT_TRUE(c.send(bad));
    auto r = c.read_response();
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_TRUE(is_json_error(*r, "bad_request")) << r->body;
    EXPECT_TRUE(c.wait_closed()) << bad;
  }
  EXPECT_EQ(requests_.load(), 0);
}

TEST_F(HttpTest, ConnectionCloseAndHttp10) {
  start();
  {
    RawClient c(port_);
    ASSERT_TRUE(c.send(get("/", "Connection: close\r\n")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(c.wait_closed());
  }
  {
    RawClient c(port_);
    ASSERT_TRUE(c.send("GET /old HTTP/1.0\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "{\"path\":\"/old\",\"body\":0}");
    EXPECT_TRUE(c.wait_closed());
  }
  {
    RawClient c(port_);
    ASSERT_TRUE(c.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("connection"), "keep-alive");
    ASSERT_TRUE(c.send("GET /b HTTP/1.0\r\n\r\n"));
    ASSERT_TRUE(c.read_response());
    EXPECT_TRUE(c.wait_closed());
  }
}

TEST_F(HttpTest, StopFinishesInFlightRequestsClosesIdleOnesAndLetsRunReturn) {
  Reply parked;
  handler_ = [&](Request& req, Reply reply) {
    if (req.path == "/poll") {
      parked = std::move(reply);
    } else {
      reply(Response::json(200, "{}"));
    }
  };
  start();
  RawClient idle(port_);
  ASSERT_TRUE(idle.send(get("/x")));
  ASSERT_TRUE(idle.read_response());
  RawClient busy(port_);
  ASSERT_TRUE(busy.send(get("/poll")));
  ASSERT_TRUE(eventually([&] { return requests_.load() == 2; }));
  server_->stop();
  EXPECT_TRUE(idle.wait_closed());
  // New connections are refused once the acceptor is closed.
  EXPECT_TRUE(eventually([&] {
    RawClient probe(port_, "127.0.0.1", 200ms, /*must_connect=*/false);
    return !probe.connected() || probe.wait_closed();
  }));
  on_io([&] {
    parked(Response::json(200, "{\"done\":true}"));
    parked = nullptr;
  });
  auto r = busy.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "{\"done\":true}");
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(busy.wait_closed());
  EXPECT_TRUE(stop_and_drain());
}

TEST_F(HttpTest, StopEndsEventStreams) {
  StreamBody::Writer writer;
  handler_ = [&](Request&, Reply reply) {
    Response r;
    r.content_type = "text/event-stream";
    r.stream = std::make_shared<StreamBody>();
    r.stream->attach = [&](StreamBody::Writer w) { writer = std::move(w); };
    reply(std::move(r));
  };
  start();
  RawClient c(port_);
  ASSERT_TRUE(c.send(get("/events")));
  ASSERT_TRUE(c.read_until("\r\n\r\n"));
  ASSERT_TRUE(eventually([&] {
    bool attached = false;
    on_io([&] { attached = static_cast<bool>(writer); });
    return attached;
  }));
  EXPECT_TRUE(stop_and_drain());
  EXPECT_TRUE(c.wait_closed());
  EXPECT_FALSE(writer("data: late\n\n"));
}

TEST_F(HttpTest, ConnectionsOverTheCapsAre503AndCounted) {
  auto o = base_options();
  o.max_connections = 100;
  o.max_connections_per_ip = 2;
  o.per_ip_cap_on_loopback = true;  // the test's clients are all on loopback
  start(o);
  RawClient a(port_), b(port_);
  ASSERT_TRUE(a.send(get("/a")));
  ASSERT_TRUE(a.read_response());
  ASSERT_TRUE(b.send(get("/b")));
  ASSERT_TRUE(b.read_response());
  {
    RawClient c(port_);
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_TRUE(is_json_error(*r, "too_many_connections")) << r->body;
    EXPECT_EQ(r->header("retry-after"), "5");
    EXPECT_TRUE(c.wait_closed());
  }
  EXPECT_EQ(server_->stats().connections_rejected_per_ip, 1u);
  EXPECT_EQ(server_->stats().connections_open, 2u);
  // The admitted ones still work; once one leaves there is room again.
  ASSERT_TRUE(a.send(get("/again")));
  ASSERT_TRUE(a.read_response());
  b.close();
  ASSERT_TRUE(eventually([&] { return server_->connections() == 1; }));
  auto r = request_once(port_, get("/c"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpTest, TheTotalConnectionCapHolds) {
  auto o = base_options();
  o.max_connections = 3;
  start(o);
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawClient>(port_));
    ASSERT_TRUE(held.back()->send(get("/h")));
    ASSERT_TRUE(held.back()->read_response());
  }
  RawClient extra(port_);
  auto r = extra.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(server_->stats().connections_rejected_limit, 1u);
  EXPECT_EQ(server_->stats().connections_accepted, 3u);
}

TEST(HttpMessage, RetryAfterIsSentOn429And503Only) {
  auto retry_after = [](Errc e) -> std::string {
    for (const auto& [k, v] : Response::error(Error{e, "x"}).headers) {
      if (k == "Retry-After") return v;
    }
    return "";
  };
  EXPECT_EQ(Response::error(Error{Errc::TooManyRequests, "x"}).status, 429);
  EXPECT_EQ(retry_after(Errc::TooManyRequests), "1");
  EXPECT_EQ(Response::error(Error{Errc::Unavailable, "x"}).status, 503);
  EXPECT_EQ(retry_after(Errc::Unavailable), "5");
  for (Errc e : {Errc::InvalidArgument, Errc::Unauthenticated, Errc::NotFound, Errc::Conflict,
                 Errc::PayloadTooLarge, Errc::Internal}) {
    EXPECT_EQ(retry_after(e), "") << http_status(e);
  }
}

TEST(HttpListen, AddressesAndErrors) {
  net::io_context io;
  HttpServer s(io, ServerOptions{}, [](Request&, Reply reply) { reply(Response::no_content()); });
  for (const char* bad :
       {"nonsense", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:x", "not-an-ip:80", "[::1]:"}) {
    auto r = s.listen(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().errc, Errc::InvalidArgument) << bad;
  }
  HttpServer v6(io, ServerOptions{}, [](Request&, Reply reply) { reply(Response::no_content()); });
  auto port = v6.listen("[::1]:0");
  if (!port && port.error().errc == Errc::Unavailable) GTEST_SKIP() << "no IPv6 loopback here";
  ASSERT_TRUE(port.has_value()) << port.error().message;
  std::thread t([&] { io.run(); });
  auto r = [&] {
    RawClient c(*port, "::1");
    c.send(get("/"));
    return c.read_response();
  }();
  v6.stop();
  s.stop();
  t.join();  // stop() lets run() return on its own
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
}

}  // namespace
}  // namespace ringfence::server::http
