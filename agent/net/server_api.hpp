#pragma once
// The agent's view of the server (API.md, "Agent API"), asynchronous and transport-free, so the
// core logic runs against a fake in tests and against the Beast client (beast_client.hpp) in
// the product. Implementations call every callback exactly once, on the agent's loop thread,
// and never from inside the initiating call (always posted). Callbacks may start new calls.

#include <cstdint>
#include <functional>
#include <string>
#include <tl/expected.hpp>
#include <vector>

#include "proto/error.hpp"
#include "proto/messages.hpp"

namespace ringfence::agent::net {

// Why a call failed. error.errc: Unavailable for network errors, timeouts and 5xx;
// Unauthenticated for 401; TooManyRequests for 429; the mapped status otherwise.
struct Failure {
  Error error;
  int http_status = 0;              // 0 when no response was received
  std::int64_t retry_after_ms = 0;  // from Retry-After (seconds) on 429/503, else 0

  // True when trying again later can help (network, timeouts, 408/429/5xx).
  bool transient() const noexcept {
    return http_status == 0 || http_status == 408 || http_status == 429 || http_status >= 500;
  }
};

template <typename T>
using Result = tl::expected<T, Failure>;

struct DesiredAnswer {
  bool not_modified = false;  // 304: the etag we sent is current
  proto::DesiredState state;  // valid when !not_modified
};

struct DownloadDone {
  std::int64_t size = 0;  // bytes now in the file
};

template <typename T>
using Callback = std::function<void(Result<T>)>;

class ServerApi {
 public:
  virtual ~ServerApi() = default;

  // POST /v1/agent/enroll.
  virtual void enroll(const proto::EnrollRequest& req, Callback<proto::EnrollResponse> cb) = 0;
  // GET /v1/agent/desired?wait=wait_s with If-None-Match: "<etag>" (none if etag is empty).
  virtual void desired(const std::string& credential, const std::string& etag, int wait_s,
                       Callback<DesiredAnswer> cb) = 0;
  // POST /v1/agent/heartbeat -> 204.
  virtual void heartbeat(const std::string& credential, const proto::Heartbeat& hb,
                         Callback<bool> cb) = 0;
  // POST /v1/agent/reports -> 202.
  virtual void reports(const std::string& credential, const std::vector<proto::Report>& batch,
                       Callback<bool> cb) = 0;
  // GET url (a server path like /v1/blobs/<sha256>) into file `path`, resuming at the file's
  // current size with Range: bytes=N- (If-Range: the expected strong etag). A 200 instead of a
  // 206 restarts the file from zero. Never writes more than max_size bytes in total (refused as
  // PayloadTooLarge). on_progress, if set, is called with the file size after each chunk.
  virtual void download(const std::string& credential, const std::string& url,
                        const std::string& path, const std::string& sha256, std::int64_t max_size,
                        std::function<void(std::int64_t)> on_progress,
                        Callback<DownloadDone> cb) = 0;
  // Aborts every call in flight; their callbacks are not called. Used at shutdown.
  virtual void cancel_all() = 0;
};

}  // namespace ringfence::agent::net
