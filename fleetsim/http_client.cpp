// The one Beast translation unit of fleetsim: pooled keep-alive connections and long-poll lanes,
// plain or TLS (a fresh ssl_stream per TCP connection; the handshake is part of connecting).
#include "fleetsim/http_client.hpp"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

namespace ringfence::fleetsim {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr std::size_t kBodyLimit = 64u << 20;

using Clock = std::chrono::steady_clock;

struct Job {
  HttpRequest req;
  HttpCallback cb;
  Clock::time_point submitted{};
  Clock::time_point deadline{};  // submitted + req.timeout: the whole exchange, queue included
  // Not started later than this (a quarter of the timeout before the deadline): an exchange
  // started with almost no time left would time out on the wire, and every timeout costs a
  // connection (the server may be mid-answer), which slows the pool further.
  Clock::time_point start_by{};
};

Job make_job(HttpRequest req, HttpCallback cb) {
  auto now = Clock::now();
  auto deadline = now + req.timeout;
  auto start_by = deadline - req.timeout / 4;
  return Job{std::move(req), std::move(cb), now, deadline, start_by};
}

struct Queue {
  std::deque<Job> jobs;
};

struct Shared {
  tcp::resolver::results_type endpoints;
  proto::ServerUrl url;
  std::optional<ssl::context> tls;  // set for https:// servers
  std::string host_header;
  std::size_t open = 0;
  PoolStats pool;
};

// One connection working through one queue, one exchange at a time.
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(asio::io_context& io, Shared& shared, std::shared_ptr<Queue> queue, bool pooled)
      : io_(io), shared_(shared), queue_(std::move(queue)), pooled_(pooled) {}

  bool busy() const noexcept { return busy_; }

  // Starts work when idle and the queue has some.
  void kick() {
    if (!busy_ && !closed_) next();
  }

  void close() {
    closed_ = true;
    reset_socket();
  }

 private:
  void next() {
    expire_queued();
    if (closed_ || queue_->jobs.empty()) {
      busy_ = false;
      return;
    }
    busy_ = true;
    job_ = std::move(queue_->jobs.front());
    queue_->jobs.pop_front();
    if (pooled_) {
      auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - job_.submitted)
              .count();
      ++shared_.pool.started;
      shared_.pool.wait_ms_sum += waited;
      shared_.pool.wait_ms_max = std::max(shared_.pool.wait_ms_max, waited);
    }
    retried_ = false;
    build();
    if (connected_) {
      write();
    } else {
      connect();
    }
  }

  // Requests at the head of the queue that waited past their start_by are answered as timed out
  // without being sent: a heartbeat that waited that long would reach the server too late to
  // mean anything, and the caller must learn that it fell behind. Their callbacks run from the
  // io_context (never inline), and not at all once this is closed.
  void expire_queued() {
    auto now = Clock::now();
    auto& jobs = queue_->jobs;
    while (!closed_ && !jobs.empty() && jobs.front().start_by <= now) {
      auto cb = std::move(jobs.front().cb);
      jobs.pop_front();
      if (pooled_) ++shared_.pool.expired;
      asio::post(io_, [self = shared_from_this(), cb = std::move(cb)]() {
        if (self->closed_ || !cb) return;
        HttpResponse out;
        out.error = "timed out in the queue";
        cb(std::move(out));
      });
    }
  }

  void build() {
    const auto& r = job_.req;
    req_ = {};
    req_.version(11);
    req_.method(r.method == Method::Get ? http::verb::get : http::verb::post);
    req_.target(shared_.url.prefix + r.target);
    req_.set(http::field::host, shared_.host_header);
    req_.set(http::field::user_agent, "fleetsim");
    if (!r.authorization.empty()) req_.set(http::field::authorization, r.authorization);
    if (!r.if_none_match.empty()) req_.set(http::field::if_none_match, r.if_none_match);
    if (!r.body.empty()) req_.set(http::field::content_type, "application/json");
    req_.body() = r.body;
    req_.keep_alive(true);
    if (r.method == Method::Post || !r.body.empty()) req_.prepare_payload();
  }

  beast::tcp_stream& tcp() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }
  template <class F>
  void with_stream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(*plain_);
    }
  }

  void connect() {
    // A fresh stream per connection: an SSL session cannot be reused after its socket closed.
    tls_.reset();
    plain_.reset();
    if (shared_.tls) {
      tls_.emplace(io_, *shared_.tls);
    } else {
      plain_.emplace(io_);
    }
    tcp().expires_after(kConnectTimeout);
    tcp().async_connect(shared_.endpoints,
                        [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
                          self->on_connect(ec);
                        });
  }

  void on_connect(beast::error_code ec) {
    if (closed_) return;
    if (ec) return fail(ec);
    connected_ = true;
    ++shared_.open;
    if (!tls_) return write();
    if (auto st = proto::prepare_client_connection(tls_->native_handle(), shared_.url); !st) {
      tls_error_ = st.error().message;
      return fail(asio::error::invalid_argument);
    }
    tcp().expires_after(kConnectTimeout);
    tls_->async_handshake(
        ssl::stream_base::client, [self = shared_from_this()](beast::error_code ec2) {
          if (self->closed_) return;
          if (ec2) {
            self->tls_error_ =
                proto::describe_handshake_failure(self->tls_->native_handle(), ec2.message());
            return self->fail(ec2);
          }
          self->write();
        });
  }

  void write() {
    reused_ = exchanges_ > 0;
    tcp().expires_at(job_.deadline);
    with_stream([this](auto& s) {
      http::async_write(s, req_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        self->on_write(ec);
      });
    });
  }

  void on_write(beast::error_code ec) {
    if (closed_) return;
    if (ec) return fail(ec);
    parser_.emplace();
    parser_->body_limit(kBodyLimit);
    with_stream([this](auto& s) {
      http::async_read(
          s, buffer_, *parser_,
          [self = shared_from_this()](beast::error_code ec2, std::size_t) { self->on_read(ec2); });
    });
  }

  void on_read(beast::error_code ec) {
    if (closed_) return;
    if (ec) return fail(ec);
    auto& res = parser_->get();
    HttpResponse out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    if (auto it = res.find(http::field::etag); it != res.end()) out.etag = std::string(it->value());
    ++exchanges_;
    if (!parser_->keep_alive()) reset_socket();
    parser_.reset();
    deliver(std::move(out));
  }

  void fail(beast::error_code ec) {
    // A keep-alive connection the server closed while it sat idle: reopen and retry once.
    bool stale = reused_ && !retried_ &&
                 (ec == http::error::end_of_stream || ec == asio::error::eof ||
                  ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
                  ec == ssl::error::stream_truncated);
    std::string tls_error = std::move(tls_error_);
    tls_error_.clear();
    reset_socket();
    if (stale) {
      retried_ = true;
      reused_ = false;
      connect();
      return;
    }
    HttpResponse out;
    out.error = !tls_error.empty()            ? "TLS: " + tls_error
                : ec == beast::error::timeout ? std::string("timed out")
                                              : ec.message();
    deliver(std::move(out));
  }

  void reset_socket() {
    if (connected_ && shared_.open > 0) --shared_.open;
    connected_ = false;
    exchanges_ = 0;
    if (tls_ || plain_) {
      beast::error_code ignored;
      tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
      tcp().close();
    }
    buffer_.clear();
  }

  void deliver(HttpResponse out) {
    auto cb = std::move(job_.cb);
    job_ = {};
    if (cb) cb(std::move(out));  // may submit more work to this queue, or close this lane
    next();
  }

  asio::io_context& io_;
  std::optional<beast::tcp_stream> plain_;  // one of these two, made by connect()
  std::optional<TlsStream> tls_;
  std::string tls_error_;  // why the last handshake failed
  Shared& shared_;
  std::shared_ptr<Queue> queue_;
  bool pooled_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  std::optional<http::response_parser<http::string_body>> parser_;
  Job job_;
  bool busy_ = false;
  bool closed_ = false;
  bool connected_ = false;
  bool reused_ = false;
  bool retried_ = false;
  std::size_t exchanges_ = 0;
};

class ClientImpl final : public HttpClient {
 public:
  ClientImpl(asio::io_context& io, std::size_t pool_size) : io_(io) {
    pool_queue_ = std::make_shared<Queue>();
    for (std::size_t i = 0; i < pool_size; ++i) {
      pool_.push_back(std::make_shared<Conn>(io_, shared_, pool_queue_, true));
    }
  }
  ~ClientImpl() override { shutdown(); }

  Shared& shared() { return shared_; }

  void submit(HttpRequest req, HttpCallback cb) override {
    pool_queue_->jobs.push_back(make_job(std::move(req), std::move(cb)));
    // Hand it to an idle connection, if any; busy ones pick it up when they finish.
    for (auto& c : pool_) {
      if (!c->busy()) {
        c->kick();
        break;
      }
    }
  }

  LaneId open_lane() override {
    LaneId id = next_lane_++;
    Lane lane;
    lane.queue = std::make_shared<Queue>();
    lane.conn = std::make_shared<Conn>(io_, shared_, lane.queue, false);
    lanes_.emplace(id, std::move(lane));
    return id;
  }

  void submit_on(LaneId id, HttpRequest req, HttpCallback cb) override {
    auto it = lanes_.find(id);
    if (it == lanes_.end()) return;  // closed: dropped, as documented
    it->second.queue->jobs.push_back(make_job(std::move(req), std::move(cb)));
    it->second.conn->kick();
  }

  void close_lane(LaneId id) override {
    auto it = lanes_.find(id);
    if (it == lanes_.end()) return;
    it->second.conn->close();
    it->second.queue->jobs.clear();
    lanes_.erase(it);
  }

  std::size_t pool_backlog() const override { return pool_queue_->jobs.size(); }
  PoolStats pool_stats() const override { return shared_.pool; }
  std::size_t open_connections() const override { return shared_.open; }

  void shutdown() override {
    for (auto& c : pool_) c->close();
    pool_queue_->jobs.clear();
    for (auto& [id, lane] : lanes_) {
      lane.conn->close();
      lane.queue->jobs.clear();
    }
    lanes_.clear();
  }

 private:
  struct Lane {
    std::shared_ptr<Queue> queue;
    std::shared_ptr<Conn> conn;
  };
  asio::io_context& io_;
  Shared shared_;
  std::shared_ptr<Queue> pool_queue_;
  std::vector<std::shared_ptr<Conn>> pool_;
  std::unordered_map<LaneId, Lane> lanes_;
  LaneId next_lane_ = 1;
};
}  // namespace

std::unique_ptr<HttpClient> HttpClient::create(asio::io_context& io, const proto::ServerUrl& url,
                                               const proto::TlsClientFiles& tls,
                                               std::size_t pool_size, std::string& error) {
  tcp::resolver resolver(io);
  beast::error_code ec;
  auto results = resolver.resolve(url.host, url.port_text(), ec);
  if (ec || results.empty()) {
    error = "cannot resolve " + url.authority() + ": " + ec.message();
    return nullptr;
  }
  auto client = std::make_unique<ClientImpl>(io, pool_size);
  auto& shared = client->shared();
  shared.endpoints = results;
  shared.url = url;
  shared.host_header = url.authority();
  if (url.tls) {
    shared.tls.emplace(ssl::context::tls_client);
    if (auto st = proto::configure_client_context(shared.tls->native_handle(), tls); !st) {
      error = st.error().message;
      return nullptr;
    }
  }
  return client;
}

}  // namespace ringfence::fleetsim
