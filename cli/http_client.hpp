#pragma once
// The CLI's small synchronous HTTP/1.1 client, plain or TLS. Beast (and Asio's SSL) live only in
// http_client.cpp; this header exposes plain values. One connection per request (an operator's
// CLI makes a handful of calls); every step (resolve, connect, TLS handshake, write, read) has a
// deadline. https:// follows proto/tls_client.hpp: TLS >= 1.2, the chain verified against
// --ca-file or the system store, the certificate must name the host, optional client certificate.
//
// Threading: an HttpClient and every EventStream it opens are used from one thread.

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "proto/error.hpp"
#include "proto/tls_client.hpp"
#include "proto/url.hpp"

namespace ringfence::cli {

using proto::parse_server_url;
using proto::ServerUrl;

struct HttpRequest {
  std::string method = "GET";  // GET, POST, PUT, PATCH, DELETE
  std::string target;          // path and query, e.g. "/v1/rings?limit=10"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string content_type;  // empty: no Content-Type header
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// An open text/event-stream response whose body is read piece by piece.
class EventStream {
 public:
  struct Impl;
  explicit EventStream(std::unique_ptr<Impl> impl);
  ~EventStream();
  EventStream(const EventStream&) = delete;
  EventStream& operator=(const EventStream&) = delete;

  // Waits up to `wait` for more of the body. Returns what arrived (empty when nothing did in
  // time); Unavailable when the connection closed or failed.
  Expected<std::string> read(std::chrono::milliseconds wait);

 private:
  std::unique_ptr<Impl> impl_;
};

// The answer to open_stream: either a live stream (status 200) or the complete error response.
struct StreamOpen {
  HttpResponse response;  // status and, for non-200, the whole body
  std::unique_ptr<EventStream> stream;
};

class HttpClient {
 public:
  // For https:// URLs, `tls` names the trust anchors and client certificate; create() checks
  // them once (InvalidArgument, one line naming the file) so no request fails on them later.
  static Expected<std::unique_ptr<HttpClient>> create(ServerUrl url,
                                                      std::chrono::milliseconds timeout,
                                                      const proto::TlsClientFiles& tls = {});
  HttpClient(ServerUrl url, std::chrono::milliseconds timeout);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request and reads the whole response (bodies up to 256 MiB). Any HTTP status is a
  // value; Unavailable means the server could not be reached or did not answer in time.
  Expected<HttpResponse> send(const HttpRequest& req);

  // Sends a request and reads only the response header; a 200 answer's body is then read from
  // the returned stream, without a deadline (the caller polls with EventStream::read).
  Expected<StreamOpen> open_stream(const HttpRequest& req);

  const ServerUrl& url() const noexcept { return url_; }

 private:
  struct Tls;
  ServerUrl url_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Tls> tls_;  // the SSL context, for https:// URLs
};

}  // namespace ringfence::cli
