#pragma once
// The HTTP/1.1 transport: accepts connections, parses requests into our Request type, calls the
// Handler, and writes our Response. All Beast code lives in beast_server.cpp.
//
// Threading: the server runs on the io_context it is given; with more than one thread running
// that io_context, each session is serialised on its own strand, and the Handler may be called
// concurrently from different sessions. Reply objects must be invoked on the io_context.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proto/error.hpp"
#include "server/http/message.hpp"

namespace boost::asio {
class io_context;
}

namespace ringfence::server::http {

// TLS for the listener: PEM files re-read by HttpServer::reload_tls().
struct TlsOptions {
  std::string cert_file;       // the certificate chain, server certificate first
  std::string key_file;        // its private key
  std::string client_ca_file;  // when set, client certificates are requested and checked
  std::chrono::seconds handshake_timeout{10};
};

struct ServerOptions {
  std::size_t header_limit = 8 * 1024;        // 431/400 above it
  std::size_t body_limit = 1024 * 1024;       // JSON bodies; 413 above it
  std::uint64_t upload_limit = 256ull << 20;  // streamed uploads; 413 above it
  std::string upload_dir;                     // where streamed uploads are written
  // True for requests whose body is streamed to a file in upload_dir (e.g. POST /v1/blobs).
  std::function<bool(Method, std::string_view path)> is_upload;
  // Called once a request's head is parsed and it announces a body (Content-Length > 0 or
  // chunked), before any byte of the body is read or stored: authentication belongs here, so a
  // stranger cannot fill the disk or hold memory. Returning a Response answers the request with
  // it and closes the connection without reading the body; nullopt lets the body be read. Runs
  // on the session's I/O thread (several at once with several io threads); must not block.
  std::function<std::optional<Response>(const Request& head)> before_body;
  // Uploads (is_upload): a whole-upload deadline (the connection is closed when it passes) and a
  // minimum average rate after a grace period (408 upload_too_slow); 0 turns the rate check off.
  std::chrono::seconds upload_timeout{600};
  std::uint64_t upload_min_rate = 16 * 1024;  // bytes/s
  std::chrono::seconds upload_rate_grace{10};
  // Bytes that all uploads in progress (and their files awaiting the handler) may hold in
  // upload_dir together: an announced length is reserved at the head, a chunked upload as it
  // arrives; an upload that does not fit is 503 upload_space_full with Retry-After.
  std::uint64_t upload_space = 1ull << 30;
  std::chrono::seconds read_timeout{30};  // idle keep-alive / slow header or body
  std::chrono::seconds write_timeout{30};
  std::size_t max_pipelined = 16;  // queued responses per connection
  // Open connections in total and per peer address. Every agent holds one long poll, so the total
  // is sized for a fleet per server (raise the process's fd limit to match); the per-address cap
  // stops one client from taking them all, while leaving room for a NAT or a proxy in front. A
  // connection over either cap is answered 503 (plain HTTP) or closed (TLS) at once, and counted.
  std::size_t max_connections = 20000;
  // TLS 1.2+ (1.3 preferred by clients that have it), Mozilla "intermediate" ciphers, session
  // tickets, ALPN http/1.1. Unset: plain HTTP.
  std::optional<TlsOptions> tls;
  std::size_t max_connections_per_ip = 256;
  // Loopback peers are not held to the per-address cap: they are this machine (a local
  // TLS-terminating proxy, fleetsim, benchmarks), for which one address is every client.
  bool per_ip_cap_on_loopback = false;
  bool access_log = true;                   // one spdlog line per request
  std::string server_header = "ringfence";  // empty: no Server header
  bool date_header = true;                  // a Date header, formatted once per second
  // How many threads run the io_context. 1 lets sessions skip their strand (cheaper); 0 means
  // unknown and is treated as "several".
  unsigned io_threads = 0;
};

// What the transport refused or cut, for /metrics. Counters only grow; gauges say "now".
struct HttpStats {
  std::uint64_t connections_open = 0;  // gauge
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_rejected_limit = 0;   // over max_connections
  std::uint64_t connections_rejected_per_ip = 0;  // over max_connections_per_ip
  std::uint64_t accept_errors = 0;                // accept() failed (EMFILE, ENFILE, ...)
  std::uint64_t bad_requests = 0;                 // heads answered 400/431 by the transport
  std::uint64_t timeouts = 0;                     // connections closed by a read/write deadline
  std::uint64_t refused_before_body = 0;          // answered by before_body
  std::uint64_t uploads_space_full = 0;
  std::uint64_t uploads_too_slow = 0;
  std::uint64_t uploads_timed_out = 0;
  std::uint64_t uploads_disk_full = 0;        // ENOSPC/EDQUOT while writing: 507
  std::uint64_t upload_space_used_bytes = 0;  // gauge
  std::uint64_t tls_handshakes = 0;           // completed
  std::uint64_t tls_handshake_failures = 0;   // bad or plain-HTTP clients, wrong versions
  std::uint64_t tls_handshake_timeouts = 0;
  std::uint64_t tls_plaintext = 0;  // plain HTTP sent to the TLS port
  std::uint64_t tls_reloads = 0;
  std::uint64_t tls_reload_failures = 0;
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, ServerOptions options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens ("127.0.0.1:8080", "[::1]:0", "0.0.0.0:0"); returns the bound port, or
  // InvalidArgument for a malformed address and Unavailable when the bind fails. Call once.
  Expected<std::uint16_t> listen(std::string_view host_port);
  // Re-reads the TLS certificate chain and key (and client CA); on success new connections use
  // them while open ones keep theirs. On failure (InvalidArgument naming the file and OpenSSL's
  // reason) the previous ones stay in use. Any thread.
  Status reload_tls();
  // Stops accepting; idle connections and event streams close now, connections with requests in
  // flight (including deferred replies) answer them and then close. Once every connection is gone
  // the server holds no more work on the io_context, so run() can return. Idempotent; any thread.
  void stop();
  // Number of open connections (for /metrics).
  std::size_t connections() const noexcept;
  // A snapshot of the counters (relaxed atomics: each figure is exact, the set is not one
  // instant). Any thread.
  HttpStats stats() const noexcept;

  struct Impl;  // defined in beast_server.cpp

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ringfence::server::http
