// The CLI's only Beast translation unit. Every exchange runs on its own io_context, driven to
// completion here, so the rest of the CLI sees a plain synchronous API. Deadlines come from
// beast::tcp_stream's expiry (connect, write, read) and from run_for (resolve, stream polls).
#include "cli/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <limits>

namespace ringfence::cli {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::uint64_t kBodyLimit = 256ull << 20;
constexpr const char* kUserAgent = "ringfence-cli/0.1";

std::string where(const ServerUrl& u) { return u.host + ":" + u.port; }

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

// One connection on its own io_context.
struct Connection {
  asio::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;

  // Resolves and connects, then writes the request. Returns the step that failed, if any.
  Status open_and_send(const ServerUrl& url, const HttpRequest& r,
                       std::chrono::milliseconds timeout) {
    auto verb = verb_of(r.method);
    if (!verb) return tl::unexpected(verb.error());
    // Resolve (tcp_stream's expiry does not cover the resolver: bound it with run_for).
    tcp::resolver resolver(io);
    tcp::resolver::results_type endpoints;
    beast::error_code ec;
    bool resolved = false;
    resolver.async_resolve(url.host, url.port,
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

    stream.expires_after(timeout);
    stream.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    io.restart();
    io.run();
    if (ec) return unreachable(url, "connect", ec);

    http::request<http::string_body> req{*verb, url.prefix + r.target, 11};
    req.set(http::field::host, where(url));
    req.set(http::field::user_agent, kUserAgent);
    for (const auto& [k, v] : r.headers) req.set(k, v);
    if (!r.content_type.empty()) req.set(http::field::content_type, r.content_type);
    req.body() = r.body;
    req.keep_alive(false);
    req.prepare_payload();
    stream.expires_after(timeout);
    http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
    io.restart();
    io.run();
    if (ec) return unreachable(url, "send", ec);
    return {};
  }

  beast::error_code read_rest(std::chrono::milliseconds timeout) {
    beast::error_code ec;
    stream.expires_after(timeout);
    http::async_read(stream, buffer, parser, [&](beast::error_code e, std::size_t) { ec = e; });
    io.restart();
    io.run();
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

Expected<ServerUrl> parse_server_url(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind("https://", 0) == 0) {
    return fail(Errc::InvalidArgument, "https:// is not supported by this CLI yet: " + url);
  }
  if (url.rfind(kScheme, 0) != 0) {
    return fail(Errc::InvalidArgument,
                "the server URL must look like http://host:port, not '" + url + "'");
  }
  std::string rest = url.substr(kScheme.size());
  ServerUrl out;
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) {
    out.prefix = rest.substr(slash);
    while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  }
  std::string port = "80";
  if (!authority.empty() && authority.front() == '[') {  // [v6]:port
    auto close = authority.find(']');
    if (close == std::string::npos)
      return fail(Errc::InvalidArgument, "bad IPv6 address in " + url);
    out.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return fail(Errc::InvalidArgument, "bad server URL " + url);
      port = authority.substr(close + 2);
    }
  } else {
    auto colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  bool digits = !port.empty() && port.size() <= 5 &&
                port.find_first_not_of("0123456789") == std::string::npos;
  if (out.host.empty() || !digits || std::stoul(port) == 0 || std::stoul(port) > 65535) {
    return fail(Errc::InvalidArgument, "the server URL has no valid host:port: " + url);
  }
  out.port = port;
  return out;
}

HttpClient::HttpClient(ServerUrl url, std::chrono::milliseconds timeout)
    : url_(std::move(url)), timeout_(timeout) {}
HttpClient::~HttpClient() = default;

Expected<HttpResponse> HttpClient::send(const HttpRequest& req) {
  Connection c;
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
    http::async_read_some(c.stream, c.buffer, c.parser, [&s](beast::error_code e, std::size_t) {
      s.pending = false;
      s.completed = true;
      s.ec = e;
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
  auto c = std::make_unique<Connection>();
  c->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (auto s = c->open_and_send(url_, req, timeout_); !s) return tl::unexpected(s.error());
  beast::error_code ec;
  c->stream.expires_after(timeout_);
  http::async_read_header(c->stream, c->buffer, c->parser,
                          [&](beast::error_code e, std::size_t) { ec = e; });
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
  c->stream.expires_never();
  auto impl = std::make_unique<EventStream::Impl>();
  impl->conn = std::move(c);
  impl->url = url_;
  out.stream = std::make_unique<EventStream>(std::move(impl));
  return out;
}

}  // namespace ringfence::cli
