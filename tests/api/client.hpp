#pragma once
// A tiny blocking HTTP/1.1 client over a plain TCP socket, for the API tests: one connection per
// request (Connection: close), raw bytes when a test needs to send something no well-behaved
// client would, and a streaming connection for long polls and server-sent events.
// Not thread-safe; every call has a deadline, nothing blocks forever.

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ringfence::apitest {

struct HttpResponse {
  int status = 0;                              // 0 when nothing parseable came back
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string raw;

  std::string header(const std::string& lower_name) const;
  // The body as JSON; a discarded value when it is not JSON.
  nlohmann::json json() const;
  // True when the body is API.md's error shape with a snake_case code and a message.
  bool is_error_shape() const;
  std::string error_code() const;
  std::string error_message() const;
};

// Parses a complete response (status line, headers, body by Content-Length / chunked / to EOF).
HttpResponse parse_response(const std::string& raw);

class Connection {
 public:
  explicit Connection(int port);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  bool connected() const noexcept { return fd_ >= 0; }
  // Sends everything it can; false when the peer closed or reset (ignored by hostile tests).
  bool send(const std::string& bytes);
  // Reads until `pred(received so far)` holds, EOF, or the deadline; returns what was received.
  template <typename Pred>
  const std::string& read_until(Pred pred, std::chrono::milliseconds deadline);
  // Reads until a whole response is in (or EOF / deadline) and parses it.
  HttpResponse read_response(std::chrono::milliseconds deadline = std::chrono::seconds(10));
  const std::string& received() const noexcept { return in_; }
  // One read with a timeout; false on EOF, error or timeout.
  bool read_some(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
  std::string in_;
  bool eof_ = false;
};

template <typename Pred>
const std::string& Connection::read_until(Pred pred, std::chrono::milliseconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (!pred(in_) && !eof_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    if (!read_some(left) && !eof_) continue;
  }
  return in_;
}

// True when `raw` holds a complete response (headers plus the body they announce).
bool response_complete(const std::string& raw, bool head_request = false);

class Client {
 public:
  explicit Client(int port) : port_(port) {}
  int port() const noexcept { return port_; }

  // A request with Connection: close. token empty = no Authorization header. A body given as
  // JSON is sent with Content-Type: application/json unless content_type says otherwise.
  HttpResponse request(const std::string& method, const std::string& target, const std::string& token,
                       const std::optional<std::string>& body = std::nullopt,
                       const std::string& content_type = "application/json",
                       const std::vector<std::pair<std::string, std::string>>& headers = {});
  HttpResponse get(const std::string& target, const std::string& token,
                   const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    return request("GET", target, token, std::nullopt, "", headers);
  }
  HttpResponse post(const std::string& target, const std::string& token, const nlohmann::json& body) {
    return request("POST", target, token, body.dump());
  }
  HttpResponse put(const std::string& target, const std::string& token, const nlohmann::json& body) {
    return request("PUT", target, token, body.dump());
  }
  HttpResponse patch(const std::string& target, const std::string& token, const nlohmann::json& body) {
    return request("PATCH", target, token, body.dump());
  }
  HttpResponse del(const std::string& target, const std::string& token) {
    return request("DELETE", target, token);
  }
  // Sends raw bytes on a fresh connection and parses whatever comes back.
  HttpResponse raw(const std::string& bytes, std::chrono::milliseconds deadline = std::chrono::seconds(10));

 private:
  int port_;
};

}  // namespace ringfence::apitest
