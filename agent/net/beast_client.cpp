// The agent's one Beast translation unit.
#include "agent/net/beast_client.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "agent/agent.hpp"
#include "proto/ids.hpp"

namespace ringfence::agent::net {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using std::chrono::seconds;

constexpr std::size_t kSmallBody = 64 * 1024;
constexpr std::size_t kDesiredBody = 4 * 1024 * 1024;
constexpr auto kRequestTimeout = seconds(15);
constexpr auto kChunkTimeout = seconds(30);

Errc errc_for(int status) {
  switch (status) {
    case 400:
      return Errc::InvalidArgument;
    case 401:
      return Errc::Unauthenticated;
    case 403:
      return Errc::PermissionDenied;
    case 404:
      return Errc::NotFound;
    case 405:
      return Errc::MethodNotAllowed;
    case 409:
      return Errc::Conflict;
    case 413:
      return Errc::PayloadTooLarge;
    case 415:
      return Errc::UnsupportedMedia;
    case 422:
      return Errc::Unprocessable;
    case 429:
      return Errc::TooManyRequests;
    default:
      return status >= 500 ? Errc::Unavailable : Errc::Internal;
  }
}

Failure network_failure(const std::string& what, const beast::error_code& ec) {
  return Failure{Error{Errc::Unavailable, what + ": " + ec.message(), "network", {}}, 0, 0};
}

template <class Fields>
std::int64_t retry_after_ms(const Fields& f) {
  auto it = f.find(http::field::retry_after);
  if (it == f.end()) return 0;
  std::uint64_t s = 0;
  if (!proto::parse_u64(std::string_view(it->value().data(), it->value().size()), s)) return 0;
  return static_cast<std::int64_t>(std::min<std::uint64_t>(s, 3600)) * 1000;
}

template <class Fields>
Failure http_failure(int status, const Fields& fields, std::string_view body) {
  std::string message = "HTTP " + std::to_string(status);
  std::string code;
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const auto& e = j["error"];
    if (e.contains("message") && e["message"].is_string()) {
      message += ": " + e["message"].get<std::string>().substr(0, 300);
    }
    if (e.contains("code") && e["code"].is_string())
      code = e["code"].get<std::string>().substr(0, 64);
  }
  return Failure{Error{errc_for(status), message, code, {}}, status, retry_after_ms(fields)};
}

}  // namespace

Expected<ServerUrl> parse_server_url(const std::string& url) {
  constexpr std::string_view kHttp = "http://";
  if (url.starts_with("https://")) {
    return fail(Errc::InvalidArgument, "https:// is not supported by this build; use http://");
  }
  if (!url.starts_with(kHttp))
    return fail(Errc::InvalidArgument, "server URL must start with http://");
  std::string rest = url.substr(kHttp.size());
  ServerUrl out;
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos) {
    out.prefix = rest.substr(slash);
    while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  }
  auto colon = hostport.rfind(':');
  if (colon != std::string::npos && hostport.find(']') == std::string::npos) {
    out.host = hostport.substr(0, colon);
    out.port = hostport.substr(colon + 1);
  } else {
    out.host = hostport;
    out.port = "80";
  }
  std::uint64_t port = 0;
  if (out.host.empty() || !proto::parse_u64(out.port, port) || port == 0 || port > 65535) {
    return fail(Errc::InvalidArgument, "server URL has no valid host:port: " + url);
  }
  return out;
}

// One HTTP exchange on a fresh connection: resolve, connect, write, read. Lives by
// shared_from_this until its completion handler has run (or it was cancelled).
struct Exchange : std::enable_shared_from_this<Exchange> {
  using Done = std::function<void(beast::error_code, Exchange&)>;

  // The live set is shared: handlers still queued in the io_context at shutdown may destroy an
  // Exchange after the client itself is gone.
  Exchange(asio::io_context& io, std::shared_ptr<std::set<Exchange*>> live_set)
      : resolver(io), stream(io), live(std::move(live_set)) {
    live->insert(this);
  }
  ~Exchange() { live->erase(this); }

  void cancel() {
    cancelled = true;
    beast::error_code ec;
    resolver.cancel();
    stream.socket().close(ec);
  }

  void start(const ServerUrl& url, std::chrono::steady_clock::duration timeout_, Done done_) {
    timeout = timeout_;
    done = std::move(done_);
    req.set(http::field::host, url.host + ":" + url.port);
    req.set(http::field::user_agent, "ringfence-agent/" + std::string(kAgentVersion));
    req.keep_alive(false);
    req.prepare_payload();
    resolver.async_resolve(
        url.host, url.port,
        [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type results) {
          if (self->cancelled) return;
          if (ec) return self->finish(ec);
          self->stream.expires_after(kRequestTimeout);
          self->stream.async_connect(results, [self](beast::error_code ec2, const tcp::endpoint&) {
            if (self->cancelled) return;
            if (ec2) return self->finish(ec2);
            self->write();
          });
        });
  }

  void write() {
    stream.expires_after(kRequestTimeout);
    http::async_write(stream, req, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (self->cancelled) return;
      if (ec) return self->finish(ec);
      if (self->on_written) return self->on_written();
      self->stream.expires_after(self->timeout);
      http::async_read(self->stream, self->buffer, self->parser,
                       [self](beast::error_code ec2, std::size_t) {
                         if (self->cancelled) return;
                         self->finish(ec2);
                       });
    });
  }

  void finish(beast::error_code ec) {
    if (finished) return;
    finished = true;
    beast::error_code ignore;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignore);
    auto d = std::move(done);
    if (d) d(ec, *this);
  }

  tcp::resolver resolver;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  http::request<http::string_body> req;
  http::response_parser<http::string_body> parser;
  std::chrono::steady_clock::duration timeout = kRequestTimeout;
  Done done;
  std::function<void()> on_written;  // downloads take over after the request is written
  std::shared_ptr<std::set<Exchange*>> live;
  bool cancelled = false;
  bool finished = false;
};

struct BeastClient::Impl {
  Impl(asio::io_context& io_, ServerUrl url_) : io(io_), url(std::move(url_)) {}

  std::shared_ptr<Exchange> make(http::verb verb, std::string_view path,
                                 const std::string& credential) {
    auto ex = std::make_shared<Exchange>(io, live);
    ex->req.method(verb);
    ex->req.version(11);
    ex->req.target(url.prefix + std::string(path));
    if (!credential.empty()) ex->req.set(http::field::authorization, "Bearer " + credential);
    return ex;
  }

  // Runs an exchange with a JSON body and hands the parsed outcome to on_ok / cb.
  template <typename T, typename OnOk>
  void json_call(std::shared_ptr<Exchange> ex, std::string body, std::size_t limit,
                 std::chrono::steady_clock::duration timeout, int ok_status, Callback<T> cb,
                 OnOk on_ok) {
    if (!body.empty()) {
      ex->req.set(http::field::content_type, "application/json");
      ex->req.body() = std::move(body);
    }
    ex->parser.body_limit(limit);
    ex->start(url, timeout,
              [cb = std::move(cb), on_ok, ok_status](beast::error_code ec, Exchange& e) {
                if (ec) return cb(tl::unexpected(network_failure("request failed", ec)));
                const auto& res = e.parser.get();
                int status = static_cast<int>(res.result_int());
                // Any 2xx is success (a 200 for a 204 does no harm); 304 only for the poll.
                bool ok = (status >= 200 && status < 300) || (status == 304 && ok_status == 200);
                if (!ok) return cb(tl::unexpected(http_failure(status, res, res.body())));
                cb(on_ok(status, res));
              });
  }

  asio::io_context& io;
  ServerUrl url;
  std::shared_ptr<std::set<Exchange*>> live = std::make_shared<std::set<Exchange*>>();
};

BeastClient::BeastClient(asio::io_context& io, ServerUrl url)
    : impl_(std::make_unique<Impl>(io, std::move(url))) {}
BeastClient::~BeastClient() { cancel_all(); }

void BeastClient::cancel_all() {
  auto live = *impl_->live;
  for (auto* ex : live) ex->cancel();
}

void BeastClient::enroll(const proto::EnrollRequest& req, Callback<proto::EnrollResponse> cb) {
  auto ex = impl_->make(http::verb::post, proto::kPathEnroll, "");
  impl_->json_call<proto::EnrollResponse>(
      ex, proto::encode(req), kSmallBody, kRequestTimeout, 200, std::move(cb),
      [](int, const auto& res) -> Result<proto::EnrollResponse> {
        auto r = proto::decode_enroll_response(res.body());
        if (!r) return tl::unexpected(Failure{r.error(), 200, 0});
        return *r;
      });
}

void BeastClient::desired(const std::string& credential, const std::string& etag, int wait_s,
                          Callback<DesiredAnswer> cb) {
  auto ex =
      impl_->make(http::verb::get,
                  std::string(proto::kPathDesired) + "?wait=" + std::to_string(wait_s), credential);
  if (!etag.empty()) ex->req.set(http::field::if_none_match, "\"" + etag + "\"");
  impl_->json_call<DesiredAnswer>(ex, "", kDesiredBody, seconds(wait_s) + kRequestTimeout, 200,
                                  std::move(cb),
                                  [](int status, const auto& res) -> Result<DesiredAnswer> {
                                    DesiredAnswer a;
                                    if (status == 304) {
                                      a.not_modified = true;
                                      return a;
                                    }
                                    auto ds = proto::decode_desired_state(res.body());
                                    if (!ds) return tl::unexpected(Failure{ds.error(), status, 0});
                                    a.state = std::move(*ds);
                                    return a;
                                  });
}

void BeastClient::heartbeat(const std::string& credential, const proto::Heartbeat& hb,
                            Callback<bool> cb) {
  auto ex = impl_->make(http::verb::post, proto::kPathHeartbeat, credential);
  impl_->json_call<bool>(ex, proto::encode(hb), kSmallBody, kRequestTimeout, 204, std::move(cb),
                         [](int, const auto&) -> Result<bool> { return true; });
}

void BeastClient::reports(const std::string& credential, const std::vector<proto::Report>& batch,
                          Callback<bool> cb) {
  auto ex = impl_->make(http::verb::post, proto::kPathReports, credential);
  impl_->json_call<bool>(ex, proto::encode(batch), kSmallBody, kRequestTimeout, 202, std::move(cb),
                         [](int, const auto&) -> Result<bool> { return true; });
}

namespace {

// Streams a blob into a file after the request has been written. Shares the Exchange's
// connection; lives until the callback has run.
struct Download : std::enable_shared_from_this<Download> {
  std::shared_ptr<Exchange> ex;
  http::response_parser<http::buffer_body> parser;
  int fd = -1;
  std::int64_t offset = 0;  // bytes in the file before this request
  std::int64_t total = 0;   // bytes in the file now
  std::int64_t max_size = 0;
  std::function<void(std::int64_t)> on_progress;
  Callback<DownloadDone> cb;
  char chunk[16384];
  bool done = false;

  ~Download() {
    if (fd >= 0) ::close(fd);
  }

  void complete(Result<DownloadDone> r) {
    if (done) return;
    done = true;
    if (fd >= 0) {
      if (r && ::fsync(fd) != 0) {
        r = tl::unexpected(
            Failure{Error{Errc::Unavailable, "fsync of the download failed", "io", {}}, 0, 0});
      }
      ::close(fd);
      fd = -1;
    }
    ex->finish({});
    cb(std::move(r));
  }

  void read_header() {
    parser.body_limit(boost::none);
    ex->stream.expires_after(kRequestTimeout);
    http::async_read_header(
        ex->stream, ex->buffer, parser,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          if (self->ex->cancelled) return;
          if (ec) {
            return self->complete(tl::unexpected(network_failure("download failed", ec)));
          }
          self->on_header();
        });
  }

  void on_header() {
    const auto& res = parser.get();
    int status = static_cast<int>(res.result_int());
    if (status == 200 && offset > 0) {
      // The server ignored the Range (or the blob changed): start the file over.
      if (::ftruncate(fd, 0) != 0) return io_fail();
      total = 0;
    } else if (status == 206) {
      auto cr = res[http::field::content_range];
      std::string expect = "bytes " + std::to_string(offset) + "-";
      if (std::string_view(cr.data(), cr.size()).substr(0, expect.size()) != expect) {
        if (::ftruncate(fd, 0) != 0) return io_fail();
        return complete(tl::unexpected(Failure{
            Error{Errc::Unavailable, "unexpected Content-Range; restarting", "range", {}}, 0, 0}));
      }
    } else if (status != 200) {
      return complete(tl::unexpected(http_failure(status, res, "")));
    }
    read_chunk();
  }

  void io_fail() {
    complete(tl::unexpected(Failure{
        Error{Errc::Unavailable, std::string("write failed: ") + std::strerror(errno), "io", {}}, 0,
        0}));
  }

  void read_chunk() {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    ex->stream.expires_after(kChunkTimeout);
    http::async_read(
        ex->stream, ex->buffer, parser,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          if (self->ex->cancelled) return;
          if (ec == http::error::need_buffer) ec = {};
          if (ec) {
            return self->complete(tl::unexpected(network_failure("download interrupted", ec)));
          }
          self->on_chunk();
        });
  }

  void on_chunk() {
    std::size_t n = sizeof chunk - parser.get().body().size;
    if (total + static_cast<std::int64_t>(n) > max_size) {
      return complete(tl::unexpected(Failure{
          Error{Errc::PayloadTooLarge, "blob is larger than its manifest says", "too_large", {}},
          413, 0}));
    }
    std::size_t written = 0;
    while (written < n) {
      ssize_t w = ::write(fd, chunk + written, n - written);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return io_fail();
      written += static_cast<std::size_t>(w);
    }
    total += static_cast<std::int64_t>(n);
    if (n > 0 && on_progress) on_progress(total);
    if (parser.is_done()) return complete(DownloadDone{total});
    read_chunk();
  }
};

}  // namespace

void BeastClient::download(const std::string& credential, const std::string& url,
                           const std::string& path, const std::string& sha256,
                           std::int64_t max_size, std::function<void(std::int64_t)> on_progress,
                           Callback<DownloadDone> cb) {
  auto dl = std::make_shared<Download>();
  dl->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (dl->fd < 0) {
    Failure f{
        Error{Errc::Unavailable, "cannot open " + path + ": " + std::strerror(errno), "io", {}}, 0,
        0};
    asio::post(impl_->io, [cb, f] { cb(tl::unexpected(f)); });
    return;
  }
  struct stat st {};
  ::fstat(dl->fd, &st);
  dl->offset = dl->total = static_cast<std::int64_t>(st.st_size);
  dl->max_size = max_size;
  dl->on_progress = std::move(on_progress);
  dl->cb = std::move(cb);
  dl->ex = impl_->make(http::verb::get, url, credential);
  if (dl->offset > 0) {
    dl->ex->req.set(http::field::range, "bytes=" + std::to_string(dl->offset) + "-");
    dl->ex->req.set(http::field::if_range, "\"" + sha256 + "\"");
  }
  dl->ex->on_written = [weak = std::weak_ptr<Download>(dl)] {
    if (auto d = weak.lock()) d->read_header();
  };
  // The exchange holds the download alive through its done handler until completion.
  dl->ex->start(impl_->url, kRequestTimeout, [dl](beast::error_code ec, Exchange&) {
    if (ec) dl->complete(tl::unexpected(network_failure("download failed", ec)));
  });
}

}  // namespace ringfence::agent::net
