#pragma once
// Request accounting for /metrics: request counts by route and status, latency histograms by
// route. Owned by the App, fed by the transport wrapper, read by the /metrics handler.
//
// Threading: every method takes the one mutex; record() and write_prometheus() may be called from
// any thread.

#include <array>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "server/http/server.hpp"

namespace ringfence::server::api {

class RequestMetrics {
 public:
  RequestMetrics() = default;
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  // Counts one answered request. Every distinct `route` becomes a label kept for the life of the
  // process, so pass a route pattern ("/v1/hosts/{id}") or http::Router::kUnmatched, never a raw
  // path.
  void record(std::string_view route, int status, double seconds);
  // Appends the ringfence_http_* families in Prometheus text exposition format, and the
  // transport's counters when a source for them is set.
  void write_prometheus(std::ostream& out) const;
  // Where the transport's counters come from (the App sets it once the HttpServer exists).
  void set_transport_stats(std::function<http::HttpStats()> source);

 private:
  static constexpr std::size_t kBucketCount = 10;
  struct RouteStats {
    std::map<int, std::uint64_t> by_status;
    std::array<std::uint64_t, kBucketCount> buckets{};
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::string, RouteStats, std::less<>> routes_;  // guarded by mu_
  std::function<http::HttpStats()> transport_;             // guarded by mu_
};

}  // namespace ringfence::server::api
