#pragma once
// Our own HTTP value types. Handlers see only these; Beast stays inside
// server/http/beast_server.cpp.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proto/error.hpp"

namespace ringfence::server::http {

enum class Method { Get, Head, Post, Put, Patch, Delete, Options, Other };
std::string_view to_string(Method m) noexcept;

struct Request {
  Method method = Method::Get;
  std::string target;  // as received: path + "?" + query
  std::string path;    // percent-decoding is NOT applied; routes match raw segments
  std::string query;   // raw, without "?"
  // Header names lower-cased. Small vector: requests carry few headers.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;       // in-memory body (JSON routes), at most the JSON body limit
  std::string body_file;  // set instead of body for streamed uploads: a temp file to adopt or drop
  std::string remote;     // peer address, for logs
  // The client's X-Request-Id when it is 1..64 characters of [A-Za-z0-9._:-], else one the
  // transport made (unique in this process). Echoed as X-Request-Id and in error bodies.
  std::string request_id;
  // TLS: the client presented a certificate that chains to TlsOptions::client_ca_file.
  bool client_cert_verified = false;
  std::vector<std::string> params;  // path parameters, filled by the router in pattern order

  // First header with that (lower-case) name, or empty.
  std::string_view header(std::string_view lower_name) const noexcept;
  // A query parameter, percent-decoded; nullopt when absent.
  std::optional<std::string> query_param(std::string_view name) const;
};

// A region of a file sent as the body (blob downloads, Range requests).
struct FileBody {
  std::string path;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

// A server-sent-events stream: the transport calls `attach` once the response headers are sent,
// handing it a `write` function that queues a chunk (returns false when the client is gone or
// its queue is over the limit, after which the stream should drop the writer).
struct StreamBody {
  using Writer = std::function<bool(std::string chunk)>;
  std::function<void(Writer)> attach;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::optional<FileBody> file;        // when set, body is ignored
  std::shared_ptr<StreamBody> stream;  // when set, an SSE stream (chunked, never ends by itself)

  static Response json(int status, std::string body);
  static Response no_content();
  // API.md's error shape with the status mapped from e.errc (one mapping: http_status()), and a
  // Retry-After header when retry_after_s() has one for it (429, 503).
  static Response error(const Error& e);
};

// The one mapping from Errc to an HTTP status.
int http_status(Errc e) noexcept;
// Seconds a client should wait before retrying after an error of that kind (Retry-After), or 0
// when retrying sooner is fine or pointless. Error carries no hint of its own, so these are the
// same for every 429 and every 503.
int retry_after_s(Errc e) noexcept;

// Completes a request; may be called later (long polls) but exactly once, on the I/O thread.
using Reply = std::function<void(Response)>;
using Handler = std::function<void(Request&, Reply)>;

}  // namespace ringfence::server::http
