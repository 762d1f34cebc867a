#pragma once
// The operator API as the CLI sees it: JSON in, JSON out, with the bearer token attached and
// every failure turned into a CliError that carries the process exit code.

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <tl/expected.hpp>

#include "cli/http_client.hpp"

namespace ringfence::cli {

// The documented exit codes (see cli/README.md and `ringfence --help`).
enum class Exit : int {
  Ok = 0,
  Usage = 1,         // bad flags or arguments, unreadable input files
  Refused = 2,       // the server answered 4xx: its message is printed on one line
  Unreachable = 3,   // no connection, no answer in time, or a 5xx
  RolloutFailed = 4  // `rollouts watch`: the rollout ended halted, rolled_back or aborted
};

struct CliError {
  Exit exit = Exit::Usage;
  std::string message;  // one line
  std::string details;  // optional further lines (validation findings)
};

template <typename T>
using Result = tl::expected<T, CliError>;

inline tl::unexpected<CliError> usage_error(std::string message) {
  return tl::unexpected(CliError{Exit::Usage, std::move(message), {}});
}

// Percent-encodes a query or path component.
std::string url_encode(std::string_view s);

class Api {
 public:
  // http must outlive the Api.
  Api(HttpClient& http, std::string token);

  Result<nlohmann::json> get(const std::string& target);
  Result<nlohmann::json> post(const std::string& target, const nlohmann::json& body);
  Result<nlohmann::json> put(const std::string& target, const nlohmann::json& body);
  Result<nlohmann::json> patch(const std::string& target, const nlohmann::json& body);
  // Returns null for a 204 answer, else the body.
  Result<nlohmann::json> del(const std::string& target, const nlohmann::json* body = nullptr);
  // POSTs raw bytes (application/octet-stream).
  Result<nlohmann::json> upload(const std::string& target, std::string bytes);

  // Opens GET /v1/events/stream resuming after event `after` (-1: only new events).
  Result<std::unique_ptr<EventStream>> event_stream(std::int64_t after);

 private:
  Result<nlohmann::json> call(HttpRequest req);
  HttpClient& http_;
  std::string token_;
};

// Maps a non-2xx answer to a CliError with the server's message (exit 2 for 4xx, 3 for 5xx).
CliError refusal(const HttpResponse& r);

}  // namespace ringfence::cli
