// The HTTP/1.1 transport: the server's ONE Beast translation unit. Everything else sees only
// server/http/message.hpp (our Request/Response) and server.hpp.
//
// Shape: one Session per connection, kept alive by the operations it has in flight
// (shared_from_this) and by pending Replies. With several io threads each session runs on its own
// strand. Beast parses requests (a fresh parser per message); responses are formatted here into one
// header string plus the body and written with a gather write, file regions with sendfile(2).
//
// Pipelining: a session keeps reading while replies are pending, up to max_pipelined queued
// requests, and writes the replies in request order (a queue of slots, the front one is written
// once its reply arrived).
//
// Timeouts: no per-read timer. Each session publishes two coarse deadlines (atomics, ms on the
// steady clock): the read deadline, armed when the connection waits for a request while no reply
// is pending (idle keep-alive, slow header, slow body), and the write deadline, armed while a write
// is in flight. One server-wide sweeper timer checks all sessions a few times per timeout period
// and closes the late ones. Arming is a clock read and an atomic store instead of a timer
// re-arm/cancel per read. While a reply is pending the read deadline is lifted (a long poll may
// take a minute); it is re-armed when the last pending reply has been written.
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/file.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/file_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "server/http/server.hpp"
#include "server/logging.hpp"

namespace ringfence::server::http {
namespace {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

constexpr std::size_t kSseQueueLimit = 1 << 20;       // per event-stream client
constexpr auto kSsePing = std::chrono::seconds(15);   // comment line keeping proxies awake
constexpr std::size_t kFileChunk = 256 * 1024;        // bytes per sendfile call
constexpr int kFileChunksPerTurn = 8;                 // then yield to other sessions
constexpr std::uint64_t kUploadProgress = 64 * 1024;  // bytes that buy an upload more time
constexpr std::size_t kUploadReadSize = 64 * 1024;    // read buffer while streaming an upload
constexpr std::size_t kHeadReadSize = 16 * 1024;      // bytes asked for per read of a head
constexpr std::int64_t kNever = INT64_MAX;
constexpr std::int64_t kLingerMs = 2000;          // draining after an error before close
constexpr std::int64_t kAcceptLogEvery = 10'000;  // ms between accept-error lines
constexpr std::int64_t kAcceptBackoffMin = 10, kAcceptBackoffMax = 1000;  // ms

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t ms(std::chrono::seconds s) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(s).count();
}

Method to_method(bhttp::verb v) {
  switch (v) {
    case bhttp::verb::get:
      return Method::Get;
    case bhttp::verb::head:
      return Method::Head;
    case bhttp::verb::post:
      return Method::Post;
    case bhttp::verb::put:
      return Method::Put;
    case bhttp::verb::patch:
      return Method::Patch;
    case bhttp::verb::delete_:
      return Method::Delete;
    case bhttp::verb::options:
      return Method::Options;
    default:
      return Method::Other;
  }
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (std::tolower(x) != std::tolower(y)) return false;
  }
  return true;
}

// Header names and values from handlers must not smuggle a line break into the response.
bool clean_header(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (char c : name) {
    if (c == '\r' || c == '\n' || c == ':' || c == ' ') return false;
  }
  for (char c : value) {
    if (c == '\r' || c == '\n') return false;
  }
  return true;
}

// The framing headers belong to the transport.
bool transport_header(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") ||
         iequals(name, "connection");
}

// "Date: ...\r\n", formatted at most once per second per thread.
std::string_view date_line() {
  thread_local std::time_t cached = -1;
  thread_local char line[64];
  thread_local std::size_t len = 0;
  std::time_t t = std::time(nullptr);
  if (t != cached) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    len = std::strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    cached = t;
  }
  return {line, len};
}

void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  char* p = buf + sizeof buf;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  out.append(p, static_cast<std::size_t>(buf + sizeof buf - p));
}

// Trims optional whitespace (SP / HTAB) from both ends.
std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Every check of a request head beyond what Beast's parser does, in one place (the fuzz target
// feeds raw bytes through the session and reaches it). `raw` is the head exactly as received
// (request line through the empty line); `h` is the parser's reading of it. Returns the 400 to
// answer, or nullopt when the head may be acted on.
//  - obs-fold (a field line starting with SP/HTAB): Beast unfolds it silently, and a proxy in
//    front may not, so the two would disagree on the headers (RFC 9112 5.2 allows a 400).
//  - Transfer-Encoding: only one final "chunked" coding is framed by us; any other coding, a
//    coding list, TE with Content-Length or TE on HTTP/1.0 would leave the body's length
//    ambiguous (request smuggling, RFC 9112 6.1-6.3).
//  - Host: exactly one on HTTP/1.1, at most one on 1.0 (RFC 9112 3.2).
std::optional<Error> check_request_head(std::string_view raw, const bhttp::request_header<>& h) {
  auto bad = [](std::string msg) {
    return Error{Errc::InvalidArgument, "malformed HTTP request: " + std::move(msg), "bad_request"};
  };
  for (auto pos = raw.find('\n'); pos != std::string_view::npos && pos + 1 < raw.size();
       pos = raw.find('\n', pos + 1)) {
    if (raw[pos + 1] == ' ' || raw[pos + 1] == '\t') {
      return bad("obsolete line folding in a header");
    }
  }
  std::size_t hosts = 0, codings = 0, te_fields = 0;
  bool content_length = false, chunked_only = true;
  for (const auto& f : h) {
    switch (f.name()) {
      case bhttp::field::host:
        ++hosts;
        break;
      case bhttp::field::content_length:
        content_length = true;
        break;
      case bhttp::field::transfer_encoding: {
        ++te_fields;
        std::string_view v = f.value();
        while (true) {
          auto comma = v.find(',');
          auto coding = trim_ows(v.substr(0, comma));
          ++codings;
          if (!iequals(coding, "chunked")) chunked_only = false;
          if (comma == std::string_view::npos) break;
          v.remove_prefix(comma + 1);
        }
        break;
      }
      default:
        break;
    }
  }
  if (te_fields > 0) {
    if (h.version() < 11) return bad("Transfer-Encoding on HTTP/1.0");
    if (content_length) return bad("both Transfer-Encoding and Content-Length");
    if (codings != 1 || !chunked_only) {
      return bad("Transfer-Encoding other than a single \"chunked\" is not supported");
    }
  }
  if (hosts > 1) return bad("more than one Host header");
  if (hosts == 0 && h.version() >= 11) return bad("HTTP/1.1 request without a Host header");
  return std::nullopt;
}

bool bodiless_status(int status) { return status < 200 || status == 204 || status == 304; }

constexpr char kBase62[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

// A client's X-Request-Id is kept when it is short and plain (it is echoed in a header and a JSON
// string unescaped); anything else gets an id of ours.
bool usable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '-') {
      return false;
    }
  }
  return true;
}

// What the server-wide parts (sweeper, stop(), the session set) need of a session, whatever its
// stream type.
class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  // stop(): from any thread.
  virtual void shutdown_async() = 0;
  // The sweeper saw a deadline pass; re-checked on the session's strand.
  virtual void timeout_async() = 0;
  bool late(std::int64_t now) const {
    return read_deadline_.load(std::memory_order_relaxed) <= now ||
           write_deadline_.load(std::memory_order_relaxed) <= now;
  }

 protected:
  // Read by the sweeper from any thread.
  std::atomic<std::int64_t> read_deadline_{kNever};
  std::atomic<std::int64_t> write_deadline_{kNever};
};

using TlsStream = beast::ssl_stream<tcp::socket>;

// HttpStats as relaxed atomics, bumped from every session.
struct AtomicStats {
  using C = std::atomic<std::uint64_t>;
  C connections_accepted{0}, connections_rejected_limit{0}, connections_rejected_per_ip{0},
      accept_errors{0}, bad_requests{0}, timeouts{0}, refused_before_body{0}, uploads_space_full{0},
      uploads_too_slow{0}, uploads_timed_out{0}, uploads_disk_full{0}, tls_handshakes{0},
      tls_handshake_failures{0}, tls_handshake_timeouts{0}, tls_plaintext{0}, tls_reloads{0},
      tls_reload_failures{0};
};
}  // namespace

struct HttpServer::Impl {
  net::io_context& io;
  ServerOptions opt;
  Handler handler;
  net::any_io_executor control;  // serialises the acceptor, the sweeper and stop()
  std::unique_ptr<tcp::acceptor> acceptor;
  std::optional<net::steady_timer> sweeper;
  std::int64_t sweep_every_ms = 1000;
  std::atomic<std::size_t> open{0};
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> upload_seq{0};
  std::atomic<std::uint64_t> upload_space_used{0};
  AtomicStats stats;
  std::uint64_t upload_salt = 0;
  // Request ids: 4 random base-62 characters per process, a dot, then a counter in base 62
  // ("k3Zq.1a"): distinct across replicas in practice, and at most 15 characters until the
  // 62^10-th request, so the std::string holding one never allocates (short-string buffer).
  std::string request_id_prefix;
  std::atomic<std::uint64_t> request_seq{0};
  std::string make_request_id() {
    auto n = request_seq.fetch_add(1, std::memory_order_relaxed) + 1;
    char digits[12];
    int len = 0;
    do {
      digits[len++] = kBase62[n % 62];
      n /= 62;
    } while (n);
    std::string id = request_id_prefix;
    while (len) id += digits[--len];
    return id;
  }
  std::string upload_dir;
  std::mutex mu;
  std::unordered_set<SessionBase*>
      sessions;  // guarded by mu; a Session removes itself when destroyed
  std::unordered_map<net::ip::address, std::size_t> per_ip;  // guarded by mu; open per peer
  // Accept errors (out of fds, ...) back off on this timer instead of spinning; one log line per
  // kAcceptLogEvery says how many there were. Control executor only.
  std::optional<net::steady_timer> accept_timer;
  std::int64_t accept_backoff_ms = 0;
  std::int64_t accept_logged_at = INT64_MIN / 2;
  std::uint64_t accept_errors_unlogged = 0;
  std::weak_ptr<Impl> self;
  std::mutex tls_mu;
  std::shared_ptr<net::ssl::context> tls;  // guarded by tls_mu; swapped by reload_tls()
  std::shared_ptr<net::ssl::context> tls_context() {
    if (!opt.tls) return nullptr;
    std::lock_guard lock(tls_mu);
    return tls;
  }

  Impl(net::io_context& i, ServerOptions o, Handler h)
      : io(i),
        opt(std::move(o)),
        handler(std::move(h)),
        control(opt.io_threads == 1 ? net::any_io_executor(io.get_executor())
                                    : net::any_io_executor(net::make_strand(io))) {
    std::random_device rd;
    upload_salt = (std::uint64_t{rd()} << 32) ^ rd();
    for (int k = 0; k < 4; ++k) request_id_prefix += kBase62[rd() % 62];
    request_id_prefix += '.';
    upload_dir =
        opt.upload_dir.empty() ? std::filesystem::temp_directory_path().string() : opt.upload_dir;
    auto shortest = std::min(opt.read_timeout, opt.write_timeout);
    sweep_every_ms = std::clamp<std::int64_t>(ms(shortest) / 4, 50, 1000);
  }
  void accept();
  void on_accept_error(const error_code& ec);
  void admit(tcp::socket socket, const std::shared_ptr<Impl>& me);
  void sweep();
  void schedule_sweep();
};

namespace {

// One connection, plain (Stream = tcp::socket) or TLS (TlsStream): one code path, the TLS
// differences behind `if constexpr (kTls)`.
template <class Stream>
class Session final : public SessionBase {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  // The caller (Impl::admit) has counted the connection in open and per_ip.
  Session(tcp::socket socket, std::shared_ptr<HttpServer::Impl> srv,
          net::ip::address peer) requires(!kTls)
      : stream_(std::move(socket)), srv_(std::move(srv)), peer_(std::move(peer)) {
    buffer_.max_size(read_buffer_size());
  }
  // The context is held for the session's life: a reload swaps in a new one for new sessions.
  Session(tcp::socket socket, std::shared_ptr<HttpServer::Impl> srv, net::ip::address peer,
          std::shared_ptr<net::ssl::context> ctx) requires(kTls)
      : ctx_(std::move(ctx)),
        stream_(std::move(socket), *ctx_),
        srv_(std::move(srv)),
        peer_(std::move(peer)) {
    buffer_.max_size(read_buffer_size());
  }

  ~Session() {
    {
      std::lock_guard lock(srv_->mu);
      srv_->sessions.erase(this);
      auto it = srv_->per_ip.find(peer_);
      if (it != srv_->per_ip.end() && --it->second == 0) srv_->per_ip.erase(it);
    }
    --srv_->open;
    drop_upload();
    for (auto& s : queue_) {
      remove_file(s.upload_path);
      release_upload_space(s.upload_reserved);
    }
  }

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Called once, right after construction, before any other thread can see the session.
  void start() {
    error_code ec;
    remote_ = peer_.to_string();
    lowest().set_option(tcp::no_delay(true), ec);
    lowest().native_non_blocking(true, ec);
    {
      std::lock_guard lock(srv_->mu);
      srv_->sessions.insert(this);
    }
    net::dispatch(stream_.get_executor(), [self = self_ptr()] {
      if (self->srv_->stopping) return self->begin_shutdown();
      if constexpr (kTls) {
        self->handshake();
      } else {
        self->read_next();
      }
    });
  }

  void shutdown_async() override {
    net::post(stream_.get_executor(), [self = self_ptr()] { self->begin_shutdown(); });
  }

  void timeout_async() override {
    net::post(stream_.get_executor(), [self = self_ptr()] {
      auto now = now_ms();
      if (self->read_deadline_.load(std::memory_order_relaxed) > now &&
          self->write_deadline_.load(std::memory_order_relaxed) > now) {
        return;
      }
      spdlog::debug("{}: connection timed out", self->remote_);
      if (self->tls_closing_) {
        // A client that did not answer our close_notify: the end we chose, not a timeout.
      } else if (kTls && !self->handshake_done_) {
        self->srv_->stats.tls_handshake_timeouts.fetch_add(1, std::memory_order_relaxed);
      } else {
        self->srv_->stats.timeouts.fetch_add(1, std::memory_order_relaxed);
      }
      self->close();
    });
  }

 private:
  // One request's place in the reply order.
  struct Slot {
    std::uint64_t id = 0;
    bool ready = false;
    bool head = false;
    bool keep_alive = true;
    bool linger = false;  // an error reply: drain what the client still sends before closing
    unsigned version = 11;
    Response resp;
    std::string upload_path;            // removed after the reply unless the handler adopted it
    std::uint64_t upload_reserved = 0;  // upload space held until upload_path is gone
    Method method = Method::Get;
    std::string request_id;
    std::string log_path;
    std::chrono::steady_clock::time_point started{};
  };

  // Shared by all copies of one Reply: exactly once, and a no-op after the connection closed.
  struct Pending {
    std::shared_ptr<Session> session;
    std::uint64_t id;
    std::atomic<bool> done{false};
  };

  const ServerOptions& opt() const { return srv_->opt; }
  std::shared_ptr<Session> self_ptr() {
    return std::static_pointer_cast<Session>(shared_from_this());
  }
  tcp::socket& lowest() { return beast::get_lowest_layer(stream_); }

  // ---------------------------------------------------------------- TLS
  // The handshake runs under the read deadline set to the handshake timeout; a client that
  // never finishes it (or speaks plain HTTP to this port) is closed and counted.
  void handshake() {
    read_deadline_.store(
        now_ms() + ms(opt().tls ? opt().tls->handshake_timeout : std::chrono::seconds(10)),
        std::memory_order_relaxed);
    stream_.async_handshake(net::ssl::stream_base::server,
                            [self = self_ptr()](error_code ec) { self->on_handshake(ec); });
  }

  void on_handshake(error_code ec) {
    if constexpr (kTls) {
      read_deadline_.store(kNever, std::memory_order_relaxed);
      if (closed_) return;
      if (ec) {
        bool plain = ec.category() == net::error::get_ssl_category() &&
                     ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_HTTP_REQUEST;
        (plain ? srv_->stats.tls_plaintext : srv_->stats.tls_handshake_failures)
            .fetch_add(1, std::memory_order_relaxed);
        spdlog::debug("{}: TLS handshake failed: {}", remote_, ec.message());
        return close();
      }
      handshake_done_ = true;
      srv_->stats.tls_handshakes.fetch_add(1, std::memory_order_relaxed);
      SSL* ssl = stream_.native_handle();
      if (X509* cert = SSL_get1_peer_certificate(ssl)) {
        client_verified_ = SSL_get_verify_result(ssl) == X509_V_OK;
        X509_free(cert);
      }
      read_next();
    }
  }

  // The read buffer holds one header at most (the parser limits it), so this also caps the bytes
  // each read asks for; uploads read in bigger pieces.
  std::size_t read_buffer_size() const {
    return std::max<std::size_t>(opt().header_limit + 8192, 16384);
  }

  void arm_read() {
    auto d = queue_.empty() ? now_ms() + ms(opt().read_timeout) : kNever;
    if (upload_parser_) d = std::min(d, upload_deadline_);  // progress never buys past it
    read_deadline_.store(d, std::memory_order_relaxed);
  }
  void arm_write() {
    write_deadline_.store(now_ms() + ms(opt().write_timeout), std::memory_order_relaxed);
  }

  // ---------------------------------------------------------------- reading
  void read_next() {
    if (closed_ || reading_ || no_more_reads_ || queue_.size() >= opt().max_pipelined) return;
    reading_ = true;
    parser_.emplace();
    parser_->header_limit(
        static_cast<std::uint32_t>(std::min<std::size_t>(opt().header_limit, UINT32_MAX)));
    // Admit up to the larger limit here; on_header applies the one for this route.
    parser_->body_limit(std::max<std::uint64_t>(opt().body_limit, opt().upload_limit));
    arm_read();
    parse_head();
  }

  // The head is parsed from our own buffer (not async_read_header) so that the raw bytes are
  // still there to be checked (check_request_head) before the parser's view is trusted.
  void parse_head() {
    if (buffer_.size() > 0) {
      error_code ec;
      auto used = parser_->put(buffer_.data(), ec);
      if (ec != bhttp::error::need_more) {
        if (ec) return on_read_error(ec);
        std::string_view raw(static_cast<const char*>(buffer_.data().data()), used);
        auto bad = check_request_head(raw, parser_->get());
        buffer_.consume(used);
        if (bad) return read_failed(*bad);
        return on_header();
      }
    }
    if (buffer_.size() >= buffer_.max_size()) return on_read_error(bhttp::error::buffer_overflow);
    auto room = std::min<std::size_t>(buffer_.max_size() - buffer_.size(), kHeadReadSize);
    stream_.async_read_some(buffer_.prepare(room),
                            [self = self_ptr()](error_code ec, std::size_t n) {
                              self->buffer_.commit(n);
                              if (ec == net::error::eof) {
                                ec = self->buffer_.size() == 0 ? bhttp::error::end_of_stream
                                                               : bhttp::error::partial_message;
                              }
                              if (ec) return self->on_read_error(ec);
                              if (self->streaming_ || self->closed_) return self->abandon_read();
                              self->parse_head();
                            });
  }

  void on_header() {
    if (streaming_ || closed_) return abandon_read();
    auto& h = parser_->get();
    if (opt().access_log) started_ = std::chrono::steady_clock::now();
    head_req_ = Request{};
    fill(head_req_, h);
    auto method = head_req_.method;
    const std::string& path = head_req_.path;
    if (!parser_->is_done() && opt().before_body) {
      // Authentication and the like, before a byte of the body is read or stored.
      auto refusal = opt().before_body(head_req_);
      if (refusal) {
        srv_->stats.refused_before_body.fetch_add(1, std::memory_order_relaxed);
        return read_refused(std::move(*refusal));
      }
    }
    bool upload = opt().is_upload && opt().is_upload(method, path);
    std::uint64_t limit = upload ? opt().upload_limit : opt().body_limit;
    auto len = parser_->content_length();
    if (len && *len > limit) {
      return read_failed(Error{Errc::PayloadTooLarge,
                               "request body is larger than " + std::to_string(limit) + " bytes"});
    }
    if (upload && !parser_->is_done()) {
      upload_announced_ = len.has_value();
      if (!reserve_upload(len.value_or(0))) return upload_space_full();
    }
    bool expect_continue = iequals(h[bhttp::field::expect], "100-continue");
    if (upload) {
      upload_path_ = fmt::format("{}/.upload-{}-{:x}-{}", srv_->upload_dir, ::getpid(),
                                 srv_->upload_salt, ++srv_->upload_seq);
      upload_parser_.emplace(std::move(*parser_));
      parser_.reset();
      upload_parser_->body_limit(limit);
      error_code fec;
      upload_parser_->get().body().open(upload_path_.c_str(), beast::file_mode::write_new, fec);
      if (fec) {
        spdlog::error("cannot create upload file {}: {}", upload_path_, fec.message());
        if (disk_full(fec)) return read_failed(insufficient_storage(), 507);
        return read_failed(Error{Errc::Unavailable, "cannot store the upload"});
      }
      upload_credit_ = 0;
      upload_bytes_ = 0;
      upload_started_ = now_ms();
      upload_deadline_ = upload_started_ + ms(opt().upload_timeout);
      buffer_.max_size(std::max<std::size_t>(read_buffer_size(), kUploadReadSize));
    } else {
      parser_->body_limit(limit);
    }
    bool done = upload ? upload_parser_->is_done() : parser_->is_done();
    if (done) return on_message();
    // 100 Continue only when it cannot interleave with replies still owed to earlier requests.
    if (expect_continue && queue_.empty() && !writing_) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      writing_ = true;
      arm_write();
      net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                       [self = self_ptr()](error_code wec, std::size_t) {
                         self->writing_ = false;
                         self->write_deadline_.store(kNever, std::memory_order_relaxed);
                         if (wec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    if (closed_) return;
    if (upload_parser_) return read_upload();
    bhttp::async_read(stream_, buffer_, *parser_, [self = self_ptr()](error_code ec, std::size_t) {
      if (ec) return self->on_read_error(ec);
      self->on_message();
    });
  }

  // Uploads are read piecewise so that a client still sending at a reasonable rate keeps its
  // connection: each kUploadProgress bytes push the read deadline out by another read_timeout.
  void read_upload() {
    bhttp::async_read_some(
        stream_, buffer_, *upload_parser_,
        [self = self_ptr()](error_code ec, std::size_t n) { self->on_upload_some(ec, n); });
  }

  void on_upload_some(error_code ec, std::size_t n) {
    if (ec) {
      end_upload_buffer();
      if (disk_full(ec)) {
        spdlog::error("upload to {} failed: {}", upload_path_, ec.message());
        srv_->stats.uploads_disk_full.fetch_add(1, std::memory_order_relaxed);
        return read_failed(insufficient_storage(), 507);
      }
      return on_read_error(ec);
    }
    upload_bytes_ += n;
    if (!upload_announced_ && upload_bytes_ > upload_reserved_ &&
        !reserve_upload(upload_bytes_ - upload_reserved_)) {
      end_upload_buffer();
      return upload_space_full();
    }
    auto now = now_ms();
    auto elapsed = now - upload_started_;
    if (now >= upload_deadline_) {
      end_upload_buffer();
      srv_->stats.uploads_timed_out.fetch_add(1, std::memory_order_relaxed);
      return read_failed(Error{Errc::InvalidArgument,
                               "the upload took longer than " +
                                   std::to_string(opt().upload_timeout.count()) + " s",
                               "upload_timeout"},
                         408);
    }
    if (opt().upload_min_rate > 0 && elapsed >= ms(opt().upload_rate_grace) &&
        upload_bytes_ * 1000 < opt().upload_min_rate * static_cast<std::uint64_t>(elapsed)) {
      end_upload_buffer();
      srv_->stats.uploads_too_slow.fetch_add(1, std::memory_order_relaxed);
      return read_failed(
          Error{Errc::InvalidArgument,
                "the upload is slower than " + std::to_string(opt().upload_min_rate) + " bytes/s",
                "upload_too_slow"},
          408);
    }
    upload_credit_ += n;
    if (upload_credit_ >= kUploadProgress) {
      upload_credit_ = 0;
      arm_read();
    }
    if (!upload_parser_->is_done()) return read_upload();
    on_message();
  }

  void end_upload_buffer() {
    buffer_.max_size(std::max(read_buffer_size(), buffer_.size()));
    buffer_.shrink_to_fit();
  }

  void on_read_error(error_code ec) {
    reading_ = false;
    drop_upload();
    parser_.reset();
    if (closed_) return;
    if (streaming_) return close();
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted ||
        ec == net::error::bad_descriptor || ec == bhttp::error::partial_message) {
      // The client is gone or half-closed: answer what is queued, then close.
      no_more_reads_ = true;
      read_deadline_.store(kNever, std::memory_order_relaxed);
      if (queue_.empty() && !writing_) close();
      return;
    }
    if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
      return read_failed(
          Error{Errc::InvalidArgument,
                "request headers are larger than " + std::to_string(opt().header_limit) + " bytes",
                "headers_too_large"},
          431);
    }
    if (ec == bhttp::error::body_limit) {
      return read_failed(Error{Errc::PayloadTooLarge, "request body is too large"});
    }
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {
      return read_failed(
          Error{Errc::InvalidArgument, "malformed HTTP request: " + ec.message(), "bad_request"});
    }
    spdlog::debug("{}: read error: {}", remote_, ec.message());
    no_more_reads_ = true;
    if (queue_.empty() && !writing_) close();
  }

  // The request cannot be read: queue an error reply in order, then stop reading and close.
  void read_failed(const Error& e, int status = 0) {
    if (e.errc == Errc::InvalidArgument && status != 408) {
      srv_->stats.bad_requests.fetch_add(1, std::memory_order_relaxed);
    }
    auto resp = Response::error(e);
    if (status) resp.status = status;
    read_refused(std::move(resp));
  }

  void read_refused(Response resp) {
    reading_ = false;
    no_more_reads_ = true;
    parser_.reset();
    drop_upload();
    read_deadline_.store(kNever, std::memory_order_relaxed);
    Slot s;
    s.id = next_id_++;
    s.keep_alive = false;
    s.linger = true;
    s.resp = std::move(resp);
    s.ready = true;
    s.log_path = "-";
    s.method = Method::Other;
    // Refused at its head (before_body): that request's id; refused unread: a new one.
    s.request_id = head_req_.request_id.empty() ? srv_->make_request_id() : head_req_.request_id;
    s.started = started_;
    queue_.push_back(std::move(s));
    if (!writing_) write_front();
  }

  // The upload being read is abandoned: its file removed, its space given back.
  void drop_upload() {
    upload_parser_.reset();  // closes the file before it is removed
    remove_file(upload_path_);
    upload_path_.clear();
    release_upload_space(upload_reserved_);
  }

  // Takes n bytes of the server-wide upload space for the upload being read; false when they do
  // not fit (nothing taken then).
  bool reserve_upload(std::uint64_t n) {
    auto& used = srv_->upload_space_used;
    auto cur = used.load(std::memory_order_relaxed);
    do {
      if (cur + n > opt().upload_space || cur + n < cur) return false;
    } while (!used.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    upload_reserved_ += n;
    return true;
  }

  void release_upload_space(std::uint64_t& reserved) {
    if (reserved) srv_->upload_space_used.fetch_sub(reserved, std::memory_order_relaxed);
    reserved = 0;
  }

  void upload_space_full() {
    srv_->stats.uploads_space_full.fetch_add(1, std::memory_order_relaxed);
    read_failed(Error{Errc::Unavailable, "too many uploads in progress; try again later",
                      "upload_space_full"});
  }

  static bool disk_full(const error_code& ec) {
    return ec.category() == boost::system::system_category() &&
           (ec.value() == ENOSPC || ec.value() == EDQUOT);
  }

  static Error insufficient_storage() {
    return Error{Errc::Unavailable, "the server has no room to store the upload",
                 "insufficient_storage"};
  }

  // A read that completes after the connection turned into an event stream (or closed).
  void abandon_read() {
    reading_ = false;
    parser_.reset();
    drop_upload();
    if (streaming_ && !closed_) discard_reads();
  }

  void on_message() {
    if (streaming_ || closed_) return abandon_read();
    reading_ = false;
    read_deadline_.store(kNever, std::memory_order_relaxed);
    Request req = std::move(head_req_);
    Slot slot;
    if (upload_parser_) {
      end_upload_buffer();
      auto& m = upload_parser_->get();
      m.body().close();
      slot.keep_alive = m.keep_alive();
      slot.version = m.version();
      req.body_file = upload_path_;
      slot.upload_path = std::move(upload_path_);
      upload_path_.clear();
      slot.upload_reserved = upload_reserved_;
      upload_reserved_ = 0;
      upload_parser_.reset();
    } else {
      auto m = parser_->release();
      slot.keep_alive = m.keep_alive();
      slot.version = m.version();
      req.body = std::move(m.body());
      parser_.reset();
    }
    if (!slot.keep_alive || srv_->stopping) {
      slot.keep_alive = false;
      no_more_reads_ = true;
    }
    slot.id = next_id_++;
    slot.head = req.method == Method::Head;
    slot.method = req.method;
    slot.request_id = req.request_id;
    if (opt().access_log) {
      slot.log_path = req.path.substr(0, 200);
      slot.started = started_;
    }
    queue_.push_back(std::move(slot));

    auto pending = std::make_shared<Pending>();
    pending->session = self_ptr();
    pending->id = queue_.back().id;
    Reply reply = [pending](Response resp) {
      if (pending->done.exchange(true)) {
        spdlog::warn("a handler replied twice to one request; the second reply is ignored");
        return;
      }
      auto& s = pending->session;
      net::dispatch(s->stream_.get_executor(),
                    [s, id = pending->id, resp = std::move(resp)]() mutable {
                      s->complete(id, std::move(resp));
                    });
    };
    try {
      srv_->handler(req, std::move(reply));
    } catch (const std::exception& ex) {
      spdlog::error("handler for {} {} threw: {}", to_string(req.method), req.path, ex.what());
      if (!pending->done.exchange(true)) {
        complete(pending->id, Response::error(Error{Errc::Internal, "internal error"}));
      }
    }
    read_next();  // read ahead while the reply is pending
  }

  template <class Message>
  void fill(Request& req, const Message& m) {
    req.method = to_method(m.method());
    req.target = std::string(m.target());
    auto q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    req.remote = remote_;
    req.client_cert_verified = client_verified_;
    for (const auto& f : m) {
      auto name = f.name_string();
      std::string lower(name.size(), '\0');
      for (std::size_t i = 0; i < name.size(); ++i) {
        lower[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(name[i])));
      }
      req.headers.emplace_back(std::move(lower), std::string(f.value()));
    }
    auto given = req.header("x-request-id");
    req.request_id = usable_request_id(given) ? std::string(given) : srv_->make_request_id();
  }

  // ---------------------------------------------------------------- writing
  void complete(std::uint64_t id, Response resp) {
    if (closed_ || queue_.empty() || id < queue_.front().id) return;
    auto& slot = queue_[static_cast<std::size_t>(id - queue_.front().id)];
    slot.resp = std::move(resp);
    slot.ready = true;
    if (!writing_) write_front();
  }

  // Status line and headers, without the final empty line.
  void format_head(const Slot& s, std::uint64_t content_length, bool framed) {
    const Response& r = s.resp;
    std::string& h = head_;
    h.clear();
    int status = r.status >= 100 && r.status <= 999 ? r.status : 500;
    h += "HTTP/1.1 ";
    append_number(h, static_cast<std::uint64_t>(status));
    h += ' ';
    auto reason = bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)));
    if (reason != "<unknown-status>") h += reason;
    h += "\r\n";
    if (!opt().server_header.empty()) {
      h += "Server: ";
      h += opt().server_header;
      h += "\r\n";
    }
    if (opt().date_header) h += date_line();
    h += "X-Request-Id: ";
    h += s.request_id;
    h += "\r\n";
    if (!r.content_type.empty()) {
      h += "Content-Type: ";
      h += r.content_type;
      h += "\r\n";
    }
    for (const auto& [k, v] : r.headers) {
      if (transport_header(k)) continue;
      if (!clean_header(k, v)) {
        spdlog::warn("dropped a malformed response header '{}'", k);
        continue;
      }
      h += k;
      h += ": ";
      h += v;
      h += "\r\n";
    }
    if (framed && !bodiless_status(status)) {
      h += "Content-Length: ";
      append_number(h, content_length);
      h += "\r\n";
    }
    if (!s.keep_alive && s.version >= 11) {
      h += "Connection: close\r\n";
    } else if (s.keep_alive && s.version < 11) {
      h += "Connection: keep-alive\r\n";
    }
  }

  void write_front() {
    if (closed_ || writing_ || streaming_ || queue_.empty() || !queue_.front().ready) return;
    Slot& s = queue_.front();
    if (closing_) s.keep_alive = false;
    bytes_ = 0;
    if (s.resp.stream) return start_stream(s);
    if (s.resp.file && !s.head) return send_file(s);
    add_request_id_to_error(s);
    std::uint64_t length = s.resp.file ? s.resp.file->length : s.resp.body.size();
    format_head(s, length, true);
    head_ += "\r\n";
    body_ = s.head || bodiless_status(s.resp.status) ? std::string() : std::move(s.resp.body);
    bytes_ = body_.size();
    writing_ = true;
    arm_write();
    std::array<net::const_buffer, 2> bufs{net::buffer(head_), net::buffer(body_)};
    net::async_write(stream_, bufs,
                     [self = self_ptr()](error_code ec, std::size_t) { self->after_write(ec); });
  }

  void after_write(error_code ec) {
    writing_ = false;
    write_deadline_.store(kNever, std::memory_order_relaxed);
    if (queue_.empty()) return close();
    Slot& s = queue_.front();
    log_access(s);
    bool keep_alive = s.keep_alive, linger = s.linger;
    remove_file(s.upload_path);  // still there: the handler did not adopt it
    release_upload_space(s.upload_reserved);
    queue_.pop_front();
    body_ = std::string();
    if (head_.capacity() > 4096) std::string().swap(head_);
    if (ec || closed_) return close();
    if (!keep_alive) return linger ? linger_close() : finish();
    if (closing_ && queue_.empty()) return finish();
    if (reading_) {
      if (queue_.empty()) arm_read();  // the client owes us the next request again
    } else {
      read_next();  // there is room in the queue again
    }
    if (no_more_reads_ && queue_.empty() && !reading_) return close();
    write_front();  // the next reply, if it is ready
  }

  // An error body in API.md's shape, {"error":{...}}, gets "request_id" inside "error", so that
  // a client can quote it (the transport sees every error, whoever made it: Response::error()
  // has no request).
  static void add_request_id_to_error(Slot& s) {
    std::string& b = s.resp.body;
    static constexpr std::string_view kHead = "{\"error\":{";
    if (s.resp.status < 400 || s.resp.content_type != "application/json" || b.size() < 12 ||
        b.compare(0, kHead.size(), kHead) != 0 || b.compare(b.size() - 2, 2, "}}") != 0 ||
        b.find("\"request_id\"") != std::string::npos) {
      return;
    }
    std::string add = ",\"request_id\":\"" + s.request_id + "\"";
    if (b.size() == kHead.size() + 2) add.erase(0, 1);  // {"error":{}}
    b.insert(b.size() - 2, add);
  }

  void log_access(const Slot& s) {
    if (!opt().access_log) return;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - s.started)
                  .count();
    std::string message(to_string(s.method));
    message += ' ';
    message += s.log_path;
    message += ' ';
    message += std::to_string(s.resp.status);
    logging::Fields()
        .add("request_id", s.request_id)
        .add("method", to_string(s.method))
        .add("path", s.log_path)
        .add("status", s.resp.status)
        .add("bytes", static_cast<std::int64_t>(bytes_))
        .add("duration_us", static_cast<std::int64_t>(us))
        .add("remote", remote_)
        .log(spdlog::level::info, message);
  }

  // ---------------------------------------------------------------- file regions
  struct FileSend {
    int fd = -1;
    std::uint64_t offset = 0, remaining = 0;
    std::unique_ptr<char[]> chunk;  // TLS only
    ~FileSend() {
      if (fd >= 0) ::close(fd);
    }
  };

  void send_file(Slot& s) {
    auto fs = std::make_shared<FileSend>();
    const FileBody& f = *s.resp.file;
    fs->fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fs->fd < 0 || ::fstat(fs->fd, &st) != 0) {
      spdlog::warn("cannot open {} for a response: {}", f.path, std::strerror(errno));
      s.resp = Response::error(Error{Errc::NotFound, "file not found"});
      return write_front();
    }
    if (f.offset > static_cast<std::uint64_t>(st.st_size) ||
        f.length > static_cast<std::uint64_t>(st.st_size) - f.offset) {
      spdlog::error("file region {}+{} is outside {} ({} bytes)", f.offset, f.length, f.path,
                    st.st_size);
      s.resp = Response::error(Error{Errc::Internal, "file region out of range"});
      return write_front();
    }
    fs->offset = f.offset;
    fs->remaining = f.length;
    bytes_ = f.length;
    format_head(s, f.length, true);
    head_ += "\r\n";
    writing_ = true;
    arm_write();
    net::async_write(stream_, net::buffer(head_),
                     [self = self_ptr(), fs](error_code ec, std::size_t) {
                       if (ec) return self->after_write(ec);
                       self->file_step(fs);
                     });
  }

  void file_step(const std::shared_ptr<FileSend>& fs) {
    if (closed_) return after_write(net::error::operation_aborted);
    if constexpr (kTls) {
      return tls_file_step(fs);
    }
    for (int turn = 0; fs->remaining > 0; ++turn) {
      if (turn == kFileChunksPerTurn) {  // let other connections run, then continue
        net::post(stream_.get_executor(), [self = self_ptr(), fs] { self->file_step(fs); });
        return;
      }
      auto off = static_cast<off_t>(fs->offset);
      auto want = static_cast<std::size_t>(std::min<std::uint64_t>(fs->remaining, kFileChunk));
      ssize_t n = ::sendfile(lowest().native_handle(), fs->fd, &off, want);
      if (n > 0) {
        fs->offset += static_cast<std::uint64_t>(n);
        fs->remaining -= static_cast<std::uint64_t>(n);
        arm_write();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        lowest().async_wait(tcp::socket::wait_write, [self = self_ptr(), fs](error_code ec) {
          if (ec) return self->after_write(ec);
          self->file_step(fs);
        });
        return;
      }
      // The file shrank under us, or the socket failed: the body cannot be completed.
      spdlog::warn("{}: file response cut short: {}", remote_,
                   n == 0 ? "file shrank" : std::strerror(errno));
      return after_write(net::error::broken_pipe);
    }
    after_write({});
  }

  // No sendfile through TLS: the region goes through the stream a chunk at a time.
  void tls_file_step(const std::shared_ptr<FileSend>& fs) {
    if (fs->remaining == 0) return after_write({});
    if (!fs->chunk) fs->chunk = std::make_unique<char[]>(kFileChunk);
    auto want = static_cast<std::size_t>(std::min<std::uint64_t>(fs->remaining, kFileChunk));
    ssize_t n;
    do {
      n = ::pread(fs->fd, fs->chunk.get(), want, static_cast<off_t>(fs->offset));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      spdlog::warn("{}: file response cut short: {}", remote_,
                   n == 0 ? "file shrank" : std::strerror(errno));
      return after_write(net::error::broken_pipe);
    }
    fs->offset += static_cast<std::uint64_t>(n);
    fs->remaining -= static_cast<std::uint64_t>(n);
    arm_write();
    net::async_write(stream_, net::buffer(fs->chunk.get(), static_cast<std::size_t>(n)),
                     [self = self_ptr(), fs](error_code ec, std::size_t) {
                       if (ec) return self->after_write(ec);
                       self->file_step(fs);
                     });
  }

  // ---------------------------------------------------------------- server-sent events
  void start_stream(Slot& s) {
    streaming_ = true;
    no_more_reads_ = true;
    s.keep_alive = false;  // the stream is delimited by closing the connection
    bool has_cache_control = false;
    for (const auto& [k, v] : s.resp.headers) has_cache_control |= iequals(k, "cache-control");
    if (s.resp.content_type.empty()) s.resp.content_type = "text/event-stream";
    format_head(s, 0, false);
    if (!has_cache_control) head_ += "Cache-Control: no-cache\r\n";
    head_ += "\r\n";
    writing_ = true;
    arm_write();
    auto body = s.resp.stream;
    bool head_only = s.head;
    net::async_write(stream_, net::buffer(head_),
                     [self = self_ptr(), body, head_only](error_code ec, std::size_t) {
                       self->writing_ = false;
                       self->write_deadline_.store(kNever, std::memory_order_relaxed);
                       if (ec || self->closed_) return self->close();
                       self->log_access(self->queue_.front());
                       if (head_only || self->closing_) return self->close();
                       self->attach_stream(body);
                     });
  }

  void attach_stream(const std::shared_ptr<StreamBody>& body) {
    std::weak_ptr<Session> weak = self_ptr();
    auto alive = alive_;
    StreamBody::Writer writer = [weak, alive](std::string chunk) {
      if (!alive->load()) return false;
      auto s = weak.lock();
      if (!s) return false;
      if (s->sse_queued_.fetch_add(chunk.size()) + chunk.size() > kSseQueueLimit) {
        // A reader this far behind is dropped, never buffered without bound.
        alive->store(false);
        net::post(s->stream_.get_executor(), [s] { s->close(); });
        return false;
      }
      net::post(s->stream_.get_executor(),
                [s, chunk = std::move(chunk)]() mutable { s->queue_chunk(std::move(chunk)); });
      return true;
    };
    if (body && body->attach) body->attach(std::move(writer));
    ping_.emplace(stream_.get_executor());
    schedule_ping();
    if (!reading_) discard_reads();  // notice the client leaving (a read completes with EOF)
  }

  void schedule_ping() {
    ping_->expires_after(kSsePing);
    ping_->async_wait([self = self_ptr()](error_code ec) {
      if (ec || self->closed_) return;
      static const std::string kPing = ": keepalive\n\n";
      if (self->out_.empty()) {
        self->sse_queued_ += kPing.size();
        self->queue_chunk(kPing);
      }
      self->schedule_ping();
    });
  }

  void queue_chunk(std::string chunk) {
    if (closed_) return;
    out_.push_back(std::move(chunk));
    if (!writing_) write_chunks();
  }

  // Writes everything queued so far in one gather write.
  void write_chunks() {
    if (out_.empty() || closed_) return;
    writing_ = true;
    sending_.clear();
    std::swap(sending_, out_);
    bufs_.clear();
    std::size_t total = 0;
    for (const auto& c : sending_) {
      bufs_.push_back(net::buffer(c));
      total += c.size();
    }
    arm_write();
    net::async_write(stream_, bufs_, [self = self_ptr(), total](error_code ec, std::size_t) {
      self->writing_ = false;
      self->write_deadline_.store(kNever, std::memory_order_relaxed);
      self->sse_queued_ -= total;
      self->sending_.clear();
      if (ec) return self->close();
      self->write_chunks();
    });
  }

  // ---------------------------------------------------------------- closing
  void discard_reads() {
    if (closed_) return;
    if (!sink_) sink_ = std::make_unique<char[]>(kSinkSize);
    stream_.async_read_some(net::buffer(sink_.get(), kSinkSize),
                            [self = self_ptr()](error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->discard_reads();
                            });
  }

  // After an error reply the client may still be sending (a body we refused): closing with
  // unread data would reset the connection and could destroy the reply before it is read. So
  // send FIN, drain for a short while, then close.
  void linger_close() {
    if (closed_) return;
    if (reading_) return close();  // a parser read is outstanding: no draining
    error_code ec;
    lowest().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    read_deadline_.store(now_ms() + std::min<std::int64_t>(kLingerMs, ms(opt().read_timeout)),
                         std::memory_order_relaxed);
    if (!reading_) discard_reads();
  }

  // A clean end of a connection after its last reply: over TLS the peer is told with a
  // close_notify first (else it cannot tell our close from a truncation by someone on the path),
  // waiting at most kCloseNotifyMs for its own; plain connections just close.
  void finish() {
    if constexpr (kTls) {
      if (handshake_done_ && !closed_ && !reading_ && !writing_ && !tls_closing_) {
        tls_closing_ = true;
        read_deadline_.store(kNever, std::memory_order_relaxed);
        write_deadline_.store(now_ms() + kCloseNotifyMs, std::memory_order_relaxed);
        stream_.async_shutdown([self = self_ptr()](error_code) { self->close(); });
        return;
      }
    }
    close();
  }

  void begin_shutdown() {
    closing_ = true;
    no_more_reads_ = true;
    if (closed_) return;
    if (streaming_) return close();
    if (queue_.empty() && !writing_) finish();
    // Otherwise after_write closes once the queued replies are out.
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    alive_->store(false);
    read_deadline_.store(kNever, std::memory_order_relaxed);
    write_deadline_.store(kNever, std::memory_order_relaxed);
    if (ping_) ping_->cancel();
    error_code ec;
    lowest().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close(ec);
  }

  static void remove_file(const std::string& path) {
    if (path.empty()) return;
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }

  static constexpr std::size_t kSinkSize = 4096;

  std::shared_ptr<net::ssl::context> ctx_;  // TLS only; outlives stream_
  Stream stream_;
  beast::flat_buffer buffer_;
  std::shared_ptr<HttpServer::Impl> srv_;
  net::ip::address peer_;
  std::string remote_;

  // Reading (strand only).
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<bhttp::request_parser<bhttp::file_body>> upload_parser_;
  std::string upload_path_;  // the upload being read
  Request head_req_;         // the request whose body is being read (filled at its head)
  std::uint64_t upload_credit_ = 0;
  std::uint64_t upload_bytes_ = 0;     // body bytes of the upload read so far
  std::uint64_t upload_reserved_ = 0;  // its share of the server's upload space
  bool upload_announced_ = false;      // Content-Length known (reserved up front)
  std::int64_t upload_started_ = 0, upload_deadline_ = kNever;
  std::chrono::steady_clock::time_point started_{};
  bool reading_ = false;
  bool no_more_reads_ = false;  // Connection: close, an error, EOF, or stop()

  // Replies (strand only).
  std::deque<Slot> queue_;
  std::uint64_t next_id_ = 1;
  std::string head_, body_;
  std::uint64_t bytes_ = 0;
  bool writing_ = false;
  bool closing_ = false;  // stop(): finish what is queued, then close
  bool closed_ = false;

  // Event streams.
  bool streaming_ = false;
  std::deque<std::string> out_, sending_;
  std::vector<net::const_buffer> bufs_;
  std::atomic<std::size_t> sse_queued_{0};
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
  std::optional<net::steady_timer> ping_;
  std::unique_ptr<char[]> sink_;

  bool handshake_done_ = false;
  bool tls_closing_ = false;  // our close_notify is out (finish)
  static constexpr std::int64_t kCloseNotifyMs = 1000;
  bool client_verified_ = false;  // a client certificate that chains to the configured CA
};

}  // namespace

void HttpServer::Impl::accept() {
  auto me = self.lock();
  if (!me || !acceptor) return;
  auto on_accept = [this, me](error_code ec, tcp::socket socket) {
    if (stopping) return;
    if (ec == net::error::operation_aborted || ec == net::error::bad_descriptor) return;
    if (ec && ec != net::error::connection_aborted && ec != net::error::try_again &&
        ec != net::error::interrupted) {
      return on_accept_error(ec);
    }
    accept_backoff_ms = 0;
    if (!ec) admit(std::move(socket), me);
    accept();
  };
  if (opt.io_threads == 1) {
    acceptor->async_accept(io.get_executor(), std::move(on_accept));
  } else {
    acceptor->async_accept(net::make_strand(io), std::move(on_accept));
  }
}

// Out of file descriptors (EMFILE/ENFILE), memory or buffers: accepting again at once fails again
// at once (the pending connection stays queued), which would spin a core and flood the log. Wait,
// doubling up to a second, and log once per interval with the count.
void HttpServer::Impl::on_accept_error(const error_code& ec) {
  stats.accept_errors.fetch_add(1, std::memory_order_relaxed);
  ++accept_errors_unlogged;
  auto now = now_ms();
  if (now - accept_logged_at >= kAcceptLogEvery) {
    spdlog::warn("accept failed {} time(s) in the last {} s: {}; backing off",
                 accept_errors_unlogged, kAcceptLogEvery / 1000, ec.message());
    accept_logged_at = now;
    accept_errors_unlogged = 0;
  }
  accept_backoff_ms =
      std::clamp<std::int64_t>(accept_backoff_ms * 2, kAcceptBackoffMin, kAcceptBackoffMax);
  if (!accept_timer) accept_timer.emplace(control);
  accept_timer->expires_after(std::chrono::milliseconds(accept_backoff_ms));
  accept_timer->async_wait([me = self.lock()](error_code tec) {
    if (!me || tec || me->stopping) return;
    me->accept();
  });
}

void HttpServer::Impl::admit(tcp::socket socket, const std::shared_ptr<Impl>& me) {
  error_code ec;
  auto peer = socket.remote_endpoint(ec).address();
  if (ec) return;  // already gone
  bool over_total = open.load(std::memory_order_relaxed) >= opt.max_connections;
  bool over_peer = false;
  if (!over_total) {
    std::lock_guard lock(mu);
    auto& n = per_ip[peer];
    over_peer =
        n >= opt.max_connections_per_ip && (opt.per_ip_cap_on_loopback || !peer.is_loopback());
    if (!over_peer) ++n;
  }
  if (over_total || over_peer) {
    (over_total ? stats.connections_rejected_limit : stats.connections_rejected_per_ip)
        .fetch_add(1, std::memory_order_relaxed);
    // Best effort, never blocking: the client learns why instead of seeing a bare close.
    static constexpr std::string_view kBusy =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Retry-After: 5\r\nConnection: close\r\nContent-Length: 79\r\n\r\n"
        "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections\"}}";
    if (!opt.tls) {
      (void)!::send(socket.native_handle(), kBusy.data(), kBusy.size(),
                    MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    socket.shutdown(tcp::socket::shutdown_both, ec);
    socket.close(ec);
    return;
  }
  ++open;
  stats.connections_accepted.fetch_add(1, std::memory_order_relaxed);
  if (auto ctx = tls_context()) {
    std::make_shared<Session<TlsStream>>(std::move(socket), me, std::move(peer), std::move(ctx))
        ->start();
  } else {
    std::make_shared<Session<tcp::socket>>(std::move(socket), me, std::move(peer))->start();
  }
}

void HttpServer::Impl::schedule_sweep() {
  // While stopping, look often: the sweeper is what notices that the last session is gone.
  sweeper->expires_after(std::chrono::milliseconds(stopping ? 20 : sweep_every_ms));
  sweeper->async_wait([me = self.lock()](error_code ec) {
    if (!me || (ec && !me->stopping)) return;
    me->sweep();
  });
}

void HttpServer::Impl::sweep() {
  auto now = now_ms();
  std::vector<std::shared_ptr<SessionBase>> late;
  bool none_left;
  {
    std::lock_guard lock(mu);
    for (SessionBase* s : sessions) {
      if (!s->late(now)) continue;
      if (auto sp = s->weak_from_this().lock()) late.push_back(std::move(sp));
    }
    none_left = sessions.empty();
  }
  for (auto& s : late) s->timeout_async();
  if (stopping && none_left) return;  // nothing left to watch: let io_context::run() return
  schedule_sweep();
}

namespace {
// Mozilla's "intermediate" configuration (v5.7): TLS 1.2 and 1.3, AEAD suites with forward
// secrecy only (DHE left out: no DH parameters to manage), the client's order among them.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256:P-384";

std::string openssl_error(std::string_view what, const std::string& file) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return std::string(what) + " " + file + ": " + buf;
}

// ALPN: http/1.1 when the client offers it; otherwise no ALPN (never a protocol we do not speak).
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* sel = nullptr;
  if (SSL_select_next_proto(&sel, outlen, kHttp11, sizeof kHttp11, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

// A client certificate is asked for and checked against the CA, but a missing or foreign one
// does not fail the handshake: only /v1/agent/* needs it, and the request layer decides
// (Request::client_cert_verified).
int accept_any_client_cert(int, X509_STORE_CTX*) { return 1; }

Expected<std::shared_ptr<net::ssl::context>> make_tls_context(const TlsOptions& t) {
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
  SSL_CTX* c = ctx->native_handle();
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_SINGLE_ECDH_USE);
  if (SSL_CTX_set_cipher_list(c, kTls12Ciphers) != 1 ||
      SSL_CTX_set_ciphersuites(c, kTls13Suites) != 1 || SSL_CTX_set1_groups_list(c, kGroups) != 1) {
    return fail(Errc::Internal, openssl_error("cannot set the TLS ciphers", ""));
  }
  if (SSL_CTX_use_certificate_chain_file(c, t.cert_file.c_str()) != 1) {
    return fail(Errc::InvalidArgument, openssl_error("cannot load TLS certificate", t.cert_file));
  }
  if (SSL_CTX_use_PrivateKey_file(c, t.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail(Errc::InvalidArgument, openssl_error("cannot load TLS key", t.key_file));
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    return fail(Errc::InvalidArgument,
                openssl_error("TLS key does not match the certificate in", t.cert_file));
  }
  // Session resumption (tickets and the cache) needs an id context once client certificates
  // are requested.
  static constexpr unsigned char kSid[] = "ringfence";
  SSL_CTX_set_session_id_context(c, kSid, sizeof kSid - 1);
  SSL_CTX_set_alpn_select_cb(c, select_alpn, nullptr);
  if (!t.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(c, t.client_ca_file.c_str(), nullptr) != 1) {
      return fail(Errc::InvalidArgument, openssl_error("cannot load client CA", t.client_ca_file));
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(t.client_ca_file.c_str());
    if (!names) {
      return fail(Errc::InvalidArgument, openssl_error("no CA names in", t.client_ca_file));
    }
    SSL_CTX_set_client_CA_list(c, names);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, accept_any_client_cert);
  }
  return ctx;
}
}  // namespace

HttpServer::HttpServer(net::io_context& io, ServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>(io, std::move(options), std::move(handler))) {
  impl_->self = impl_;
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::reload_tls() {
  if (!impl_->opt.tls) return fail(Errc::InvalidArgument, "TLS is not configured");
  auto ctx = make_tls_context(*impl_->opt.tls);
  if (!ctx) {
    impl_->stats.tls_reload_failures.fetch_add(1, std::memory_order_relaxed);
    return tl::unexpected(ctx.error());
  }
  bool first;
  {
    std::lock_guard lock(impl_->tls_mu);
    first = impl_->tls == nullptr;
    impl_->tls = std::move(*ctx);
  }
  if (!first) impl_->stats.tls_reloads.fetch_add(1, std::memory_order_relaxed);
  return {};
}

Expected<std::uint16_t> HttpServer::listen(std::string_view host_port) {
  if (impl_->opt.tls && !impl_->tls_context()) {
    if (auto st = reload_tls(); !st) return tl::unexpected(st.error());
  }
  auto colon = host_port.rfind(':');
  if (colon == std::string_view::npos) {
    return fail(Errc::InvalidArgument, "listen address must be host:port");
  }
  std::string host(host_port.substr(0, colon));
  std::string port_s(host_port.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (port_s.empty() || port_s.size() > 5 ||
      port_s.find_first_not_of("0123456789") != std::string::npos || std::stoul(port_s) > 65535) {
    return fail(Errc::InvalidArgument, "listen port must be 0..65535");
  }
  auto port = static_cast<std::uint16_t>(std::stoul(port_s));
  error_code ec;
  auto addr = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) return fail(Errc::InvalidArgument, "listen address '" + host + "' is not an IP address");
  tcp::endpoint ep(addr, port);
  // The acceptor's completions run on its own strand, which stop() posts to as well.
  auto acc = std::make_unique<tcp::acceptor>(impl_->control);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(Errc::Unavailable,
                "cannot listen on " + std::string(host_port) + ": " + ec.message());
  }
  auto bound = acc->local_endpoint(ec).port();
  impl_->acceptor = std::move(acc);
  impl_->accept();
  if (!impl_->sweeper) {
    impl_->sweeper.emplace(impl_->control);
    impl_->schedule_sweep();
  }
  return bound;
}

void HttpServer::stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  auto impl = impl_;
  net::post(impl->control, [impl] {
    error_code ec;
    if (impl->acceptor) impl->acceptor->close(ec);
    if (impl->accept_timer) impl->accept_timer->cancel();
    if (impl->sweeper) impl->sweeper->cancel();  // re-runs it at the stopping pace
  });
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard lock(impl->mu);
    for (SessionBase* s : impl->sessions) {
      if (auto sp = s->weak_from_this().lock()) live.push_back(std::move(sp));
    }
  }
  for (auto& s : live) s->shutdown_async();
}

std::size_t HttpServer::connections() const noexcept { return impl_ ? impl_->open.load() : 0; }

HttpStats HttpServer::stats() const noexcept {
  HttpStats out;
  if (!impl_) return out;
  const auto& a = impl_->stats;
  auto get = [](const std::atomic<std::uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  out.connections_open = impl_->open.load(std::memory_order_relaxed);
  out.connections_accepted = get(a.connections_accepted);
  out.connections_rejected_limit = get(a.connections_rejected_limit);
  out.connections_rejected_per_ip = get(a.connections_rejected_per_ip);
  out.accept_errors = get(a.accept_errors);
  out.bad_requests = get(a.bad_requests);
  out.timeouts = get(a.timeouts);
  out.refused_before_body = get(a.refused_before_body);
  out.uploads_space_full = get(a.uploads_space_full);
  out.uploads_too_slow = get(a.uploads_too_slow);
  out.uploads_timed_out = get(a.uploads_timed_out);
  out.uploads_disk_full = get(a.uploads_disk_full);
  out.upload_space_used_bytes = impl_->upload_space_used.load(std::memory_order_relaxed);
  out.tls_handshakes = get(a.tls_handshakes);
  out.tls_handshake_failures = get(a.tls_handshake_failures);
  out.tls_handshake_timeouts = get(a.tls_handshake_timeouts);
  out.tls_plaintext = get(a.tls_plaintext);
  out.tls_reloads = get(a.tls_reloads);
  out.tls_reload_failures = get(a.tls_reload_failures);
  return out;
}

}  // namespace ringfence::server::http
