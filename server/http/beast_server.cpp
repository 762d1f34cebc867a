// The HTTP/1.1 transport: the server's ONE Beast translation unit. Everything else sees only
// server/http/message.hpp (our Request/Response) and server.hpp.
//
// One session per connection, serialised on its own strand. Requests on a connection are handled
// one at a time, in order: pipelined requests wait in the read buffer (bounded by the header and
// body limits), so at most one reply per connection is ever pending. Each request gets one read
// deadline covering its header and body; the deadline is lifted while the handler works (a long
// poll may take a minute) and while a response is written under its own write deadline.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <mutex>
#include <set>
#include <spdlog/spdlog.h>

#include "proto/signing.hpp"
#include "server/http/server.hpp"

namespace ringfence::server::http {
namespace {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::size_t kSseQueueLimit = 1 << 20;
constexpr auto kSsePing = std::chrono::seconds(15);

Method to_method(bhttp::verb v) {
  switch (v) {
    case bhttp::verb::get: return Method::Get;
    case bhttp::verb::head: return Method::Head;
    case bhttp::verb::post: return Method::Post;
    case bhttp::verb::put: return Method::Put;
    case bhttp::verb::patch: return Method::Patch;
    case bhttp::verb::delete_: return Method::Delete;
    case bhttp::verb::options: return Method::Options;
    default: return Method::Other;
  }
}

std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

struct Shared;
class Session;
}  // namespace

struct HttpServer::Impl {
  net::io_context& io;
  ServerOptions opt;
  Handler handler;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::atomic<std::size_t> open{0};
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> upload_seq{0};
  std::mutex mu;
  std::set<std::weak_ptr<Session>, std::owner_less<std::weak_ptr<Session>>> sessions;
  std::weak_ptr<Impl> self;

  Impl(net::io_context& i, ServerOptions o, Handler h) : io(i), opt(std::move(o)), handler(std::move(h)) {}
  void accept();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<HttpServer::Impl> srv)
      : stream_(std::move(socket)), srv_(std::move(srv)) {
    ++srv_->open;
  }
  ~Session() {
    --srv_->open;
    drop_upload();
  }

  void start() {
    beast::error_code ec;
    remote_ = stream_.socket().remote_endpoint(ec).address().to_string();
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

  // Called by stop(): idle connections close now; a request in flight finishes first.
  void shutdown_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      self->closing_ = true;
      if (self->idle_) {
        beast::error_code ec;
        self->stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        self->stream_.socket().close(ec);
      }
    });
  }

 private:
  // ---------------------------------------------------------------- reading
  void read_header() {
    if (closing_) return close();
    idle_ = true;
    header_parser_.emplace();
    header_parser_->header_limit(static_cast<std::uint32_t>(srv_->opt.header_limit));
    // The header parser admits up to the upload limit; JSON routes re-check the smaller limit.
    header_parser_->body_limit(std::max<std::uint64_t>(srv_->opt.body_limit, srv_->opt.upload_limit));
    stream_.expires_after(srv_->opt.read_timeout);
    bhttp::async_read_header(stream_, buffer_, *header_parser_,
                             [self = shared_from_this()](beast::error_code ec, std::size_t) {
                               self->on_header(ec);
                             });
  }

  void on_header(beast::error_code ec) {
    idle_ = false;
    if (ec) return on_read_error(ec);
    started_ = std::chrono::steady_clock::now();
    const auto& h = header_parser_->get();
    auto target = h.target();
    auto q = target.find('?');
    std::string_view path = target.substr(0, q);
    auto method = to_method(h.method());
    bool upload = srv_->opt.is_upload && srv_->opt.is_upload(method, path);
    bool expect_continue = beast::iequals(h[bhttp::field::expect], "100-continue");
    if (upload) {
      auto n = ++srv_->upload_seq;
      upload_path_ = srv_->opt.upload_dir + "/upload-" + std::to_string(::getpid()) + "-" +
                     std::to_string(n) + "-" + proto::random_hex(4);
      file_parser_.emplace(std::move(*header_parser_));
      file_parser_->body_limit(srv_->opt.upload_limit);
      beast::error_code fec;
      file_parser_->get().body().open(upload_path_.c_str(), beast::file_mode::write, fec);
      if (fec) {
        spdlog::error("cannot open upload file: {}", fec.message());
        return fail_and_close(Error{Errc::Unavailable, "cannot store the upload"});
      }
    } else {
      auto len = header_parser_->content_length();
      if (len && *len > srv_->opt.body_limit) {
        header_parser_.reset();
        return fail_and_close(Error{Errc::PayloadTooLarge, "request body is larger than " +
                                                               std::to_string(srv_->opt.body_limit) +
                                                               " bytes"});
      }
      string_parser_.emplace(std::move(*header_parser_));
      string_parser_->body_limit(srv_->opt.body_limit);
    }
    header_parser_.reset();
    if (expect_continue) {
      auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_, 11);
      bhttp::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code wec, std::size_t) {
        if (wec) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    auto cb = [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); };
    if (file_parser_) {
      bhttp::async_read(stream_, buffer_, *file_parser_, std::move(cb));
    } else {
      bhttp::async_read(stream_, buffer_, *string_parser_, std::move(cb));
    }
  }

  void on_read_error(beast::error_code ec) {
    spdlog::debug("read error from {}: {}", remote_, ec.message());
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted ||
        ec == net::error::bad_descriptor) {
      return close();
    }
    if (ec == beast::error::timeout) return close();  // a slow or silent client
    if (ec == bhttp::error::header_limit) {
      Error e{Errc::InvalidArgument, "request headers are larger than " +
                                         std::to_string(srv_->opt.header_limit) + " bytes",
              "headers_too_large"};
      return fail_and_close(e, 431);
    }
    if (ec == bhttp::error::body_limit) {
      return fail_and_close(Error{Errc::PayloadTooLarge, "request body is too large"});
    }
    fail_and_close(Error{Errc::InvalidArgument, "malformed HTTP request: " + ec.message(), "bad_request"});
  }

  void on_body(beast::error_code ec) {
    if (ec) {
      drop_upload();
      file_parser_.reset();
      string_parser_.reset();
      return on_read_error(ec);
    }
    stream_.expires_never();  // the handler may take its time (long polls)
    Request req;
    bool keep_alive;
    unsigned version;
    if (file_parser_) {
      auto& m = file_parser_->get();
      m.body().close();
      fill(req, m);
      req.body_file = upload_path_;
      keep_alive = m.keep_alive();
      version = m.version();
      file_parser_.reset();
    } else {
      auto m = string_parser_->release();
      fill(req, m);
      req.body = std::move(m.body());
      keep_alive = m.keep_alive();
      version = m.version();
      string_parser_.reset();
    }
    keep_alive_ = keep_alive && !closing_;
    version_ = version;
    head_ = req.method == Method::Head;
    log_method_ = std::string(to_string(req.method));
    log_path_ = req.path.substr(0, 200);
    struct Once {
      std::atomic<bool> done{false};
    };
    auto once = std::make_shared<Once>();
    // The pending reply owns the session: a parked long poll keeps its connection until answered.
    auto exec = stream_.get_executor();
    Reply reply = [self = shared_from_this(), once, exec](Response resp) {
      if (once->done.exchange(true)) return;
      net::post(exec, [self, resp = std::move(resp)]() mutable { self->send(std::move(resp)); });
    };
    try {
      srv_->handler(req, std::move(reply));
    } catch (const std::exception& ex) {
      spdlog::error("handler threw: {}", ex.what());
      if (!once->done.exchange(true)) send(Response::error(Error{Errc::Internal, "internal error"}));
    }
  }

  template <class Message>
  void fill(Request& req, const Message& m) {
    req.method = to_method(m.method());
    req.target = std::string(m.target());
    auto q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    req.remote = remote_;
    req.headers.reserve(8);
    for (const auto& f : m) req.headers.emplace_back(lower(f.name_string()), std::string(f.value()));
  }

  // ---------------------------------------------------------------- writing
  template <class Body>
  void base_headers(bhttp::response<Body>& r, const Response& resp) {
    if (!srv_->opt.server_header.empty()) r.set(bhttp::field::server, srv_->opt.server_header);
    if (!resp.content_type.empty()) r.set(bhttp::field::content_type, resp.content_type);
    for (const auto& [k, v] : resp.headers) r.insert(k, v);
    r.keep_alive(keep_alive_);
  }

  void send(Response resp) {
    drop_upload();  // an upload the handler did not adopt is removed
    bytes_ = 0;
    status_ = resp.status;
    if (resp.stream) return start_stream(std::move(resp));
    if (resp.file && !head_) return send_file(std::move(resp));
    stream_.expires_after(srv_->opt.write_timeout);
    if (head_ || resp.status == 204 || resp.status == 304) {
      auto r = std::make_shared<bhttp::response<bhttp::empty_body>>(
          static_cast<bhttp::status>(resp.status), version_);
      base_headers(*r, resp);
      if (resp.status != 204 && resp.status != 304) {
        r->content_length(resp.file ? resp.file->length : resp.body.size());
      }
      bhttp::async_write(stream_, *r, [self = shared_from_this(), r](beast::error_code ec, std::size_t) {
        self->after_write(ec);
      });
      return;
    }
    auto r = std::make_shared<bhttp::response<bhttp::string_body>>(
        static_cast<bhttp::status>(resp.status), version_);
    base_headers(*r, resp);
    bytes_ = resp.body.size();
    r->body() = std::move(resp.body);
    r->prepare_payload();
    bhttp::async_write(stream_, *r, [self = shared_from_this(), r](beast::error_code ec, std::size_t) {
      self->after_write(ec);
    });
  }

  struct FileSend {
    bhttp::response<bhttp::buffer_body> res;
    std::optional<bhttp::response_serializer<bhttp::buffer_body>> sr;
    int fd = -1;
    std::uint64_t offset = 0, remaining = 0;
    std::vector<char> buf;
    ~FileSend() {
      if (fd >= 0) ::close(fd);
    }
  };

  void send_file(Response resp) {
    auto fs = std::make_shared<FileSend>();
    fs->fd = ::open(resp.file->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fs->fd < 0) {
      Response e = Response::error(Error{Errc::NotFound, "file not found"});
      return send(std::move(e));
    }
    fs->offset = resp.file->offset;
    fs->remaining = resp.file->length;
    fs->buf.resize(64 * 1024);
    fs->res = bhttp::response<bhttp::buffer_body>(static_cast<bhttp::status>(resp.status), version_);
    base_headers(fs->res, resp);
    fs->res.content_length(fs->remaining);
    fs->res.body().data = nullptr;
    fs->res.body().more = true;
    bytes_ = fs->remaining;
    fs->sr.emplace(fs->res);
    stream_.expires_after(srv_->opt.write_timeout);
    bhttp::async_write_header(stream_, *fs->sr, [self = shared_from_this(), fs](beast::error_code ec, std::size_t) {
      if (ec) return self->after_write(ec);
      self->file_chunk(fs);
    });
  }

  void file_chunk(std::shared_ptr<FileSend> fs) {
    if (fs->remaining == 0) {
      fs->res.body().data = nullptr;
      fs->res.body().size = 0;
      fs->res.body().more = false;
    } else {
      auto want = static_cast<std::size_t>(std::min<std::uint64_t>(fs->remaining, fs->buf.size()));
      auto n = ::pread(fs->fd, fs->buf.data(), want, static_cast<off_t>(fs->offset));
      if (n <= 0) return close();  // the file shrank under us: cut the connection
      fs->offset += static_cast<std::uint64_t>(n);
      fs->remaining -= static_cast<std::uint64_t>(n);
      fs->res.body().data = fs->buf.data();
      fs->res.body().size = static_cast<std::size_t>(n);
      fs->res.body().more = true;
    }
    stream_.expires_after(srv_->opt.write_timeout);
    bhttp::async_write(stream_, *fs->sr, [self = shared_from_this(), fs](beast::error_code ec, std::size_t) {
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) return self->after_write(ec);
      if (fs->sr->is_done()) return self->after_write(ec);
      self->file_chunk(fs);
    });
  }

  void after_write(beast::error_code ec) {
    log_access();
    if (ec || !keep_alive_ || closing_) return close();
    read_header();
  }

  void log_access() {
    if (!srv_->opt.access_log) return;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started_).count();
    spdlog::info("{} {} {} {} {} {}us", remote_, log_method_, log_path_, status_, bytes_, us);
  }

  // ---------------------------------------------------------------- server-sent events
  void start_stream(Response resp) {
    keep_alive_ = false;
    streaming_ = true;
    auto r = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::ok, version_);
    base_headers(*r, resp);
    r->keep_alive(false);
    auto sr = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*r);
    stream_.expires_after(srv_->opt.write_timeout);
    auto body = resp.stream;
    bhttp::async_write_header(stream_, *sr, [self = shared_from_this(), r, sr, body](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      self->log_access();
      std::weak_ptr<Session> weak = self;
      auto exec = self->stream_.get_executor();
      auto alive = self->stream_alive_;
      StreamBody::Writer writer = [weak, exec, alive](std::string chunk) {
        if (!alive->load()) return false;
        auto s = weak.lock();
        if (!s) return false;
        if (s->queued_.load() + chunk.size() > kSseQueueLimit) {
          alive->store(false);
          net::post(exec, [s] { s->close(); });  // a slow reader is dropped, never buffered forever
          return false;
        }
        s->queued_ += chunk.size();
        net::post(exec, [s, chunk = std::move(chunk)]() mutable { s->queue_chunk(std::move(chunk)); });
        return true;
      };
      if (body->attach) body->attach(writer);
      self->ping_timer_.emplace(self->stream_.get_executor());
      self->schedule_ping();
      // Notice the client going away: a read completes with EOF.
      self->stream_.expires_never();
      self->stream_.async_read_some(net::buffer(self->sink_, sizeof self->sink_),
                                    [self](beast::error_code rec, std::size_t) {
                                      if (rec) self->close();
                                    });
    });
  }

  void schedule_ping() {
    ping_timer_->expires_after(kSsePing);
    ping_timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || !self->stream_alive_->load()) return;
      self->queued_ += 13;
      self->queue_chunk(": keepalive\n\n");
      self->schedule_ping();
    });
  }

  void queue_chunk(std::string chunk) {
    if (!stream_alive_->load()) return;
    out_.push_back(std::move(chunk));
    if (!writing_) write_next();
  }

  void write_next() {
    if (out_.empty()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    auto chunk = std::make_shared<std::string>(std::move(out_.front()));
    out_.pop_front();
    net::async_write(stream_.socket(), net::buffer(*chunk), [self = shared_from_this(), chunk](beast::error_code ec, std::size_t) {
      self->queued_ -= chunk->size();
      if (ec) return self->close();
      self->write_next();
    });
  }

  // ---------------------------------------------------------------- closing
  void fail_and_close(const Error& e, int status = 0) {
    keep_alive_ = false;
    Response r = Response::error(e);
    if (status) r.status = status;
    if (version_ == 0) version_ = 11;
    send(std::move(r));
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    stream_alive_->store(false);
    if (ping_timer_) ping_timer_->cancel();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  void drop_upload() {
    if (upload_path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove(upload_path_, ec);
    upload_path_.clear();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_{16 * 1024};
  std::shared_ptr<HttpServer::Impl> srv_;
  std::optional<bhttp::request_parser<bhttp::empty_body>> header_parser_;
  std::optional<bhttp::request_parser<bhttp::string_body>> string_parser_;
  std::optional<bhttp::request_parser<bhttp::file_body>> file_parser_;
  std::string upload_path_, remote_, log_method_, log_path_;
  std::chrono::steady_clock::time_point started_{};
  unsigned version_ = 11;
  int status_ = 0;
  std::size_t bytes_ = 0;
  bool keep_alive_ = true, head_ = false, idle_ = false, closing_ = false, closed_ = false;
  bool streaming_ = false, writing_ = false;
  std::deque<std::string> out_;
  std::atomic<std::size_t> queued_{0};
  std::shared_ptr<std::atomic<bool>> stream_alive_ = std::make_shared<std::atomic<bool>>(true);
  std::optional<net::steady_timer> ping_timer_;
  char sink_[256];
};

}  // namespace

void HttpServer::Impl::accept() {
  auto me = self.lock();
  if (!me || !acceptor) return;
  acceptor->async_accept(net::make_strand(io), [this, me](beast::error_code ec, tcp::socket socket) {
    if (stopping) return;
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);
      auto s = std::make_shared<Session>(std::move(socket), me);
      {
        std::lock_guard lock(mu);
        for (auto it = sessions.begin(); it != sessions.end();) {
          it = it->expired() ? sessions.erase(it) : std::next(it);
        }
        sessions.insert(s);
      }
      s->start();
    } else if (ec == net::error::operation_aborted) {
      return;
    }
    accept();
  });
}

HttpServer::HttpServer(net::io_context& io, ServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>(io, std::move(options), std::move(handler))) {
  impl_->self = impl_;
}

HttpServer::~HttpServer() { stop(); }

Expected<std::uint16_t> HttpServer::listen(std::string_view host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string_view::npos) {
    return fail(Errc::InvalidArgument, "listen address must be host:port");
  }
  std::string host(host_port.substr(0, colon));
  std::string port_s(host_port.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(port_s, &used);
    if (used != port_s.size() || port > 65535) throw std::out_of_range("port");
  } catch (...) {
    return fail(Errc::InvalidArgument, "listen port must be 0..65535");
  }
  beast::error_code ec;
  auto addr = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) return fail(Errc::InvalidArgument, "listen address '" + host + "' is not an IP address");
  tcp::endpoint ep(addr, static_cast<std::uint16_t>(port));
  auto acc = std::make_unique<tcp::acceptor>(impl_->io);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail(Errc::Unavailable, "cannot listen on " + std::string(host_port) + ": " + ec.message());
  auto bound = acc->local_endpoint(ec).port();
  impl_->acceptor = std::move(acc);
  impl_->accept();
  return bound;
}

void HttpServer::stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  auto impl = impl_;
  net::post(impl->io, [impl] {
    beast::error_code ec;
    if (impl->acceptor) impl->acceptor->close(ec);
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(impl->mu);
    for (auto& w : impl->sessions) {
      if (auto s = w.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->shutdown_idle();
}

std::size_t HttpServer::connections() const noexcept { return impl_ ? impl_->open.load() : 0; }

}  // namespace ringfence::server::http
