#pragma once
// The CLI's small synchronous HTTP/1.1 client. Beast lives only in http_client.cpp; this header
// exposes plain values. One connection per request (an operator's CLI makes a handful of calls);
// every step (resolve, connect, write, read) has a deadline. http:// only.
//
// Threading: an HttpClient and every EventStream it opens are used from one thread.

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "proto/error.hpp"

namespace ringfence::cli {

struct ServerUrl {
  std::string host;
  std::string port;
  std::string prefix;  // path prefix without a trailing '/', usually empty
};
// Parses http://host[:port][/prefix] (port defaults to 80). InvalidArgument otherwise.
Expected<ServerUrl> parse_server_url(const std::string& url);

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
  ServerUrl url_;
  std::chrono::milliseconds timeout_;
};

}  // namespace ringfence::cli
