// The agent's one Beast translation unit.
#include "agent/net/beast_client.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "agent/agent.hpp"
#include "proto/ids.hpp"

namespace ringfence::agent::net {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using std::chrono::seconds;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

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

bool header_safe(std::string_view s) noexcept {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u >= 0x7f) return false;
  }
  return true;
}

// One HTTP exchange on a fresh connection: resolve, connect, (TLS handshake,) write, read.
// Lives by shared_from_this until its completion handler has run (or it was cancelled).
struct Exchange : std::enable_shared_from_this<Exchange> {
  using Done = std::function<void(beast::error_code, Exchange&)>;

  // The live set is shared: handlers still queued in the io_context at shutdown may destroy an
  // Exchange after the client itself is gone. tls_ctx == nullptr: plain HTTP.
  Exchange(asio::io_context& io, std::shared_ptr<std::set<Exchange*>> live_set,
           ssl::context* tls_ctx)
      : resolver(io), live(std::move(live_set)) {
    if (tls_ctx) {
      tls.emplace(io, *tls_ctx);
    } else {
      plain.emplace(io);
    }
    live->insert(this);
  }
  ~Exchange() { live->erase(this); }

  beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  // Runs f on whichever stream this exchange speaks (each handler is instantiated twice).
  template <class F>
  void with_stream(F&& f) {
    if (tls) {
      f(*tls);
    } else {
      f(*plain);
    }
  }

  void cancel() {
    cancelled = true;
    beast::error_code ec;
    resolver.cancel();
    tcp().socket().close(ec);
  }

  void start(const ServerUrl& url_, std::chrono::steady_clock::duration timeout_, Done done_) {
    url = url_;
    timeout = timeout_;
    done = std::move(done_);
    req.set(http::field::host, url.authority());
    req.set(http::field::user_agent, "ringfence-agent/" + std::string(kAgentVersion));
    req.keep_alive(false);
    req.prepare_payload();
    for (const auto& f : req) {
      if (!header_safe(f.value())) {
        failure_code = "header";
        return post_fail(http::error::bad_value);
      }
    }
    if (!header_safe(req.target()) || req.target().find(' ') != std::string_view::npos) {
      failure_code = "header";
      return post_fail(http::error::bad_target);
    }
    resolver.async_resolve(
        url.host, url.port_text(),
        [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type results) {
          if (self->cancelled) return;
          if (ec) return self->finish(ec);
          self->tcp().expires_after(kRequestTimeout);
          self->tcp().async_connect(results, [self](beast::error_code ec2, const tcp::endpoint&) {
            if (self->cancelled) return;
            if (ec2) return self->finish(ec2);
            if (self->tls) return self->handshake();
            self->write();
          });
        });
  }

  void post_fail(beast::error_code ec) {
    asio::post(resolver.get_executor(), [self = shared_from_this(), ec] {
      if (!self->cancelled) self->finish(ec);
    });
  }

  void handshake() {
    if (auto st = proto::prepare_client_connection(tls->native_handle(), url); !st) {
      failure_code = "tls";
      tls_message = st.error().message;
      return finish(asio::error::invalid_argument);
    }
    tcp().expires_after(kRequestTimeout);
    tls->async_handshake(
        ssl::stream_base::client, [self = shared_from_this()](beast::error_code ec) {
          if (self->cancelled) return;
          if (ec) {
            self->failure_code = "tls";
            self->tls_message = proto::describe_handshake_failure(
                self->tls->native_handle(),
                ec == beast::error::timeout ? "TLS handshake timed out" : ec.message());
            return self->finish(ec);
          }
          self->write();
        });
  }

  void write() {
    tcp().expires_after(kRequestTimeout);
    with_stream([this](auto& s) {
      http::async_write(s, req, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (self->cancelled) return;
        if (ec) return self->finish(ec);
        if (self->on_written) return self->on_written();
        self->tcp().expires_after(self->timeout);
        self->with_stream([&self](auto& s2) {
          http::async_read(s2, self->buffer, self->parser,
                           [self](beast::error_code ec2, std::size_t) {
                             if (self->cancelled) return;
                             self->finish(ec2);
                           });
        });
      });
    });
  }

  void finish(beast::error_code ec) {
    if (finished) return;
    finished = true;
    beast::error_code ignore;
    // No TLS close_notify: the request said Connection: close and the body is complete (or the
    // exchange failed); waiting for the peer's notify would only add a round trip.
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignore);
    auto d = std::move(done);
    if (d) d(ec, *this);
  }

  // The failure of this exchange as the agent logs it: the TLS reason when the handshake was
  // refused, else `what: <transport error>`.
  Failure failure(const std::string& what, const beast::error_code& ec) const {
    if (failure_code == "tls") {
      return Failure{Error{Errc::Unavailable,
                           "TLS with " + url.authority() + " failed: " + tls_message,
                           "tls",
                           {}},
                     0, 0};
    }
    if (failure_code == "header") {
      return Failure{Error{Errc::InvalidArgument,
                           "refusing to send a header or path with control characters",
                           "header",
                           {}},
                     0, 0};
    }
    return network_failure(what, ec);
  }

  tcp::resolver resolver;
  std::optional<beast::tcp_stream> plain;
  std::optional<TlsStream> tls;
  ServerUrl url;
  beast::flat_buffer buffer;
  http::request<http::string_body> req;
  http::response_parser<http::string_body> parser;
  std::chrono::steady_clock::duration timeout = kRequestTimeout;
  Done done;
  std::function<void()> on_written;  // downloads take over after the request is written
  std::shared_ptr<std::set<Exchange*>> live;
  std::string failure_code;  // "tls" | "header" when the exchange failed before HTTP
  std::string tls_message;
  bool cancelled = false;
  bool finished = false;
};

struct BeastClient::Impl {
  Impl(asio::io_context& io_, ServerUrl url_) : io(io_), url(std::move(url_)) {}

  std::shared_ptr<Exchange> make(http::verb verb, std::string_view path,
                                 const std::string& credential) {
    auto ex = std::make_shared<Exchange>(io, live, tls_ctx ? &*tls_ctx : nullptr);
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
                if (ec) return cb(tl::unexpected(e.failure("request failed", ec)));
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
  std::optional<ssl::context> tls_ctx;  // set for https:// URLs
  std::shared_ptr<std::set<Exchange*>> live = std::make_shared<std::set<Exchange*>>();
};

Expected<std::unique_ptr<BeastClient>> BeastClient::create(asio::io_context& io, ServerUrl url,
                                                           const proto::TlsClientFiles& tls) {
  auto client = std::unique_ptr<BeastClient>(new BeastClient(io, url));
  if (url.tls) {
    auto& ctx = client->impl_->tls_ctx;
    ctx.emplace(ssl::context::tls_client);
    if (auto st = proto::configure_client_context(ctx->native_handle(), tls); !st) {
      return tl::unexpected(st.error());
    }
  }
  return client;
}

BeastClient::BeastClient(asio::io_context& io, ServerUrl url)
    : impl_(std::make_unique<Impl>(io, std::move(url))) {
  if (impl_->url.tls) {
    impl_->tls_ctx.emplace(ssl::context::tls_client);
    (void)proto::configure_client_context(impl_->tls_ctx->native_handle(), {});
  }
}
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
    ex->tcp().expires_after(kRequestTimeout);
    ex->with_stream([this](auto& s) {
      http::async_read_header(
          s, ex->buffer, parser, [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (self->ex->cancelled) return;
            if (ec) {
              return self->complete(tl::unexpected(network_failure("download failed", ec)));
            }
            self->on_header();
          });
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
    ex->tcp().expires_after(kChunkTimeout);
    ex->with_stream([this](auto& s) {
      http::async_read(
          s, ex->buffer, parser, [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (self->ex->cancelled) return;
            if (ec == http::error::need_buffer) ec = {};
            if (ec) {
              return self->complete(tl::unexpected(network_failure("download interrupted", ec)));
            }
            self->on_chunk();
          });
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
  dl->ex->start(impl_->url, kRequestTimeout, [dl](beast::error_code ec, Exchange& e) {
    if (ec) dl->complete(tl::unexpected(e.failure("download failed", ec)));
  });
}

}  // namespace ringfence::agent::net
