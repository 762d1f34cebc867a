#pragma once
// A small keep-alive HTTP/1.1 client for one server, for many simulated hosts at once.
//
// Requests go either to the shared pool (a fixed number of connections taking jobs from one
// queue in order: heartbeats, reports, one-shot polls, downloads) or to a lane (one dedicated
// connection with its own queue: a host's long poll). A connection that the server closed while
// idle is reopened and the request retried once. Beast lives only in http_client.cpp.
//
// The queue has no limit of its own, but a request's timeout runs from submit: one that waited
// so long that less than a quarter of its timeout is left is answered "timed out in the queue"
// without being sent. So a queue that grows faster than the pool drains it stays bounded (by
// the submit rate times the timeout) and shows up as errors (pool_stats().expired), instead of
// every request in it arriving later and later.
//
// Threading: everything runs on the io_context given at construction, which must be run by
// exactly one thread; every member function must be called from that thread, and callbacks are
// invoked on it (never inline from submit()).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "proto/tls_client.hpp"
#include "proto/url.hpp"

namespace boost::asio {
class io_context;
}

namespace ringfence::fleetsim {

enum class Method { Get, Post };

struct HttpRequest {
  Method method = Method::Get;
  std::string target;         // origin-form: "/v1/agent/desired?wait=30"
  std::string authorization;  // the whole header value ("Bearer ..."); empty = none
  std::string if_none_match;  // the whole header value (quoted); empty = none
  std::string body;           // sent as application/json when non-empty
  // The whole exchange, counted from submit: time spent queued behind other requests counts (see
  // the queue above).
  std::chrono::milliseconds timeout{std::chrono::seconds(20)};
};

struct HttpResponse {
  int status = 0;  // 0: a transport error (see error)
  std::string body;
  std::string etag;   // the ETag header, as sent
  std::string error;  // transport error text when status == 0
};

using HttpCallback = std::function<void(HttpResponse)>;

// How long pool requests waited in the queue before they were sent.
struct PoolStats {
  std::uint64_t started = 0;     // requests taken from the queue and sent
  std::uint64_t expired = 0;     // waited past 3/4 of their timeout: not sent
  std::int64_t wait_ms_sum = 0;  // queue waits of the started ones, summed
  std::int64_t wait_ms_max = 0;  // the longest of them
};

class HttpClient {
 public:
  using LaneId = std::uint32_t;

  // Resolves url's host:port once (blocking) and, for https://, loads `tls` (proto/tls_client.hpp
  // policy; every connection verifies the server's certificate and host name). A failure is
  // returned as nullptr + a one-line message in `error`. Request targets get url.prefix.
  static std::unique_ptr<HttpClient> create(boost::asio::io_context& io,
                                            const proto::ServerUrl& url,
                                            const proto::TlsClientFiles& tls, std::size_t pool_size,
                                            std::string& error);
  virtual ~HttpClient() = default;

  // Queues a request on the shared pool; cb is always called exactly once.
  virtual void submit(HttpRequest req, HttpCallback cb) = 0;
  // A dedicated connection (opened on first use). Requests on a lane run one at a time in order.
  virtual LaneId open_lane() = 0;
  virtual void submit_on(LaneId lane, HttpRequest req, HttpCallback cb) = 0;
  // Closes the lane's connection at once; its pending callbacks are dropped (never called).
  virtual void close_lane(LaneId lane) = 0;

  // Requests queued on the pool and not yet sent.
  virtual std::size_t pool_backlog() const = 0;
  virtual PoolStats pool_stats() const = 0;
  // Open TCP connections (pool and lanes).
  virtual std::size_t open_connections() const = 0;
  // Closes everything; pending callbacks are dropped.
  virtual void shutdown() = 0;
};

}  // namespace ringfence::fleetsim
