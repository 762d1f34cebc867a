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
#include <string>
#include <string_view>

#include "proto/error.hpp"
#include "server/http/message.hpp"

namespace boost::asio {
class io_context;
}

namespace ringfence::server::http {

struct ServerOptions {
  std::size_t header_limit = 8 * 1024;            // 431/400 above it
  std::size_t body_limit = 1024 * 1024;           // JSON bodies; 413 above it
  std::uint64_t upload_limit = 256ull << 20;      // streamed uploads; 413 above it
  std::string upload_dir;                         // where streamed uploads are written
  // True for requests whose body is streamed to a file in upload_dir (e.g. POST /v1/blobs).
  std::function<bool(Method, std::string_view path)> is_upload;
  std::chrono::seconds read_timeout{30};          // idle keep-alive / slow header or body
  std::chrono::seconds write_timeout{30};
  std::size_t max_pipelined = 16;                 // queued responses per connection
  bool access_log = true;                         // one spdlog line per request
  std::string server_header = "ringfence";        // empty: no Server header
  bool date_header = true;                        // a Date header, formatted once per second
  // How many threads run the io_context. 1 lets sessions skip their strand (cheaper); 0 means
  // unknown and is treated as "several".
  unsigned io_threads = 0;
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
  // Stops accepting; idle connections and event streams close now, connections with requests in
  // flight (including deferred replies) answer them and then close. Once every connection is gone
  // the server holds no more work on the io_context, so run() can return. Idempotent; any thread.
  void stop();
  // Number of open connections (for /metrics).
  std::size_t connections() const noexcept;

  struct Impl;  // defined in beast_server.cpp

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ringfence::server::http
