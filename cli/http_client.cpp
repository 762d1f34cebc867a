// The CLI's only Beast translation unit. Every exchange runs on its own io_context, driven to
// completion here, so the rest of the CLI sees a plain synchronous API. Deadlines come from
// beast::tcp_stream's expiry (connect, handshake, write, read) and from run_for (resolve,
// stream polls).
#include "cli/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <limits>
#include <optional>

namespace ringfence::cli {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

struct HttpClient::Tls {
  ssl::context ctx{ssl::context::tls_client};
};

namespace {

constexpr std::uint64_t kBodyLimit = 256ull << 20;
constexpr const char* kUserAgent = "ringfence-cli/0.1";

std::string where(const ServerUrl& u) { return u.authority(); }

tl::unexpected<Error> unreachable(const ServerUrl& u, std::string_view step, beast::error_code ec) {
  std::string why = ec == beast::error::timeout ? "timed out" : ec.message();
  return fail(Errc::Unavailable, "cannot reach the server at " + where(u) + " (" +
                                     std::string(step) + ": " + why + ")");
}

Expected<http::verb> verb_of(const std::string& m) {
  auto v = http::string_to_verb(m);
  if (v == http::verb::unknown) return fail(Errc::InvalidArgument, "unknown HTTP method " + m);
  return v;
}

// One connection on its own io_context, plain or TLS.
struct Connection {
  explicit Connection(ssl::context* tls_ctx) {
    if (tls_ctx) {
      tls.emplace(io, *tls_ctx);
    } else {
      plain.emplace(io);
    }
  }

  asio::io_context io;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;

  beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  template <class F>
  void with_stream(F&& f) {
    if (tls) {
      f(*tls);
    } else {
      f(*plain);
    }
  }

  // Resolves and connects (and shakes hands), then writes the request. Returns the step that
  // failed, if any.
  Status open_and_send(const ServerUrl& url, const HttpRequest& r,
                       std::chrono::milliseconds timeout) {
    auto verb = verb_of(r.method);
    if (!verb) return tl::unexpected(verb.error());
    // Resolve (tcp_stream's expiry does not cover the resolver: bound it with run_for).
    tcp::resolver resolver(io);
    tcp::resolver::results_type endpoints;
    beast::error_code ec;
    bool resolved = false;
    resolver.async_resolve(url.host, url.port_text(),
                           [&](beast::error_code e, tcp::resolver::results_type res) {
                             resolved = true;
                             ec = e;
                             endpoints = std::move(res);
                           });
    io.restart();
    io.run_for(timeout);
    if (!resolved) {
      resolver.cancel();
      io.restart();
      io.run();
      return unreachable(url, "resolve", beast::error::timeout);
    }
    if (ec) return unreachable(url, "resolve", ec);

    tcp().expires_after(timeout);
    tcp().async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    io.restart();
    io.run();
    if (ec) return unreachable(url, "connect", ec);

    if (tls) {
      if (auto st = proto::prepare_client_connection(tls->native_handle(), url); !st) return st;
      tcp().expires_after(timeout);
      tls->async_handshake(ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
      io.restart();
      io.run();
      if (ec) {
        return fail(Errc::Unavailable,
                    "TLS with " + where(url) + " failed: " +
                        proto::describe_handshake_failure(
                            tls->native_handle(),
                            ec == beast::error::timeout ? "timed out" : ec.message()));
      }
    }

    http::request<http::string_body> req{*verb, url.prefix + r.target, 11};
    req.set(http::field::host, where(url));
    req.set(http::field::user_agent, kUserAgent);
    for (const auto& [k, v] : r.headers) req.set(k, v);
    if (!r.content_type.empty()) req.set(http::field::content_type, r.content_type);
    req.body() = r.body;
    req.keep_alive(false);
    req.prepare_payload();
    tcp().expires_after(timeout);
    with_stream([&](auto& s) {
      http::async_write(s, req, [&](beast::error_code e, std::size_t) { ec = e; });
    });
    io.restart();
    io.run();
    if (ec) return unreachable(url, "send", ec);
    return {};
  }

  beast::error_code read_rest(std::chrono::milliseconds timeout) {
    beast::error_code ec;
    tcp().expires_after(timeout);
    with_stream([&](auto& s) {
      http::async_read(s, buffer, parser, [&](beast::error_code e, std::size_t) { ec = e; });
    });
    io.restart();
    io.run();
    // A server that closes without TLS close_notify after a complete response is no failure.
    if (ec == ssl::error::stream_truncated && parser.is_done()) ec = {};
    return ec;
  }

  HttpResponse response() {
    auto& m = parser.get();
    HttpResponse out;
    out.status = static_cast<int>(m.result_int());
    out.content_type = std::string(m[http::field::content_type]);
    out.body = std::move(m.body());
    return out;
  }
};

}  // namespace

Expected<std::unique_ptr<HttpClient>> HttpClient::create(ServerUrl url,
                                                         std::chrono::milliseconds timeout,
                                                         const proto::TlsClientFiles& tls) {
  auto c = std::make_unique<HttpClient>(std::move(url), timeout);
  if (c->url_.tls) {
    if (auto st = proto::configure_client_context(c->tls_->ctx.native_handle(), tls); !st) {
      return tl::unexpected(st.error());
    }
  }
  return c;
}

HttpClient::HttpClient(ServerUrl url, std::chrono::milliseconds timeout)
    : url_(std::move(url)), timeout_(timeout) {
  if (url_.tls) {
    tls_ = std::make_unique<Tls>();
    (void)proto::configure_client_context(tls_->ctx.native_handle(), {});
  }
}
HttpClient::~HttpClient() = default;

Expected<HttpResponse> HttpClient::send(const HttpRequest& req) {
  Connection c(tls_ ? &tls_->ctx : nullptr);
  c.parser.body_limit(kBodyLimit);
  if (auto s = c.open_and_send(url_, req, timeout_); !s) return tl::unexpected(s.error());
  if (auto ec = c.read_rest(timeout_)) return unreachable(url_, "read", ec);
  return c.response();
}

// ---------------------------------------------------------------- event streams

struct EventStream::Impl {
  std::unique_ptr<Connection> conn;
  ServerUrl url;
  bool pending = false;    // an async_read_some is outstanding
  bool completed = false;  // ... and has completed since the last read()
  bool closed = false;
  beast::error_code ec;
};

EventStream::EventStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EventStream::~EventStream() = default;

Expected<std::string> EventStream::read(std::chrono::milliseconds wait) {
  auto& s = *impl_;
  auto& c = *s.conn;
  if (s.closed || c.parser.is_done()) {
    s.closed = true;
    return fail(Errc::Unavailable, "the event stream from " + where(s.url) + " closed");
  }
  if (!s.pending) {
    s.pending = true;
    c.with_stream([&](auto& stream) {
      http::async_read_some(stream, c.buffer, c.parser, [&s](beast::error_code e, std::size_t) {
        s.pending = false;
        s.completed = true;
        s.ec = e;
      });
    });
  }
  c.io.restart();
  c.io.run_for(wait);
  std::string out = std::move(c.parser.get().body());
  c.parser.get().body().clear();
  if (s.completed) {
    s.completed = false;
    if (s.ec) s.closed = true;
  }
  if (s.closed && out.empty()) {
    return unreachable(s.url, "event stream",
                       s.ec ? s.ec : beast::error_code(http::error::end_of_stream));
  }
  return out;
}

Expected<StreamOpen> HttpClient::open_stream(const HttpRequest& req) {
  auto c = std::make_unique<Connection>(tls_ ? &tls_->ctx : nullptr);
  c->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (auto s = c->open_and_send(url_, req, timeout_); !s) return tl::unexpected(s.error());
  beast::error_code ec;
  c->tcp().expires_after(timeout_);
  c->with_stream([&](auto& s) {
    http::async_read_header(s, c->buffer, c->parser,
                            [&](beast::error_code e, std::size_t) { ec = e; });
  });
  c->io.restart();
  c->io.run();
  if (ec) return unreachable(url_, "read", ec);
  StreamOpen out;
  out.response.status = static_cast<int>(c->parser.get().result_int());
  if (out.response.status != 200) {
    c->parser.body_limit(kBodyLimit);
    if (auto e = c->read_rest(timeout_)) return unreachable(url_, "read", e);
    out.response = c->response();
    return out;
  }
  c->tcp().expires_never();
  auto impl = std::make_unique<EventStream::Impl>();
  impl->conn = std::move(c);
  impl->url = url_;
  out.stream = std::make_unique<EventStream>(std::move(impl));
  return out;
}

}  // namespace ringfence::cli
