#pragma once
// A tiny blocking HTTP/1.1 client over a raw TCP socket, for poking the transport byte by byte.
// Deliberately not Beast: the tests must not share the parser they are testing. Every read has a
// socket receive timeout so a broken server fails a test instead of hanging it.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace ringfence::testing {

struct RawResponse {
  int status = 0;
  std::string status_line;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  bool has(const std::string& lower_name) const { return headers.count(lower_name) != 0; }
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class RawClient {
 public:
  // Connects to host:port ("127.0.0.1" or "::1"); fails the test (ADD_FAILURE) when it cannot.
  explicit RawClient(std::uint16_t port, const std::string& host = "127.0.0.1",
                     std::chrono::milliseconds recv_timeout = std::chrono::seconds(10),
                     bool must_connect = true);
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  // Writes all of data; false if the peer is gone.
  bool send(const std::string& data);
  // Reads one response. For HEAD requests pass head=true (no body is read). A response without
  // Content-Length is read until the peer closes. nullopt on timeout/close before a full response.
  std::optional<RawResponse> read_response(bool head = false);
  // Reads until `needle` has been received (in whatever follows the last response); returns
  // everything read so far, or nullopt on timeout/close.
  std::optional<std::string> read_until(const std::string& needle);
  // True when the server closed the connection (recv returns 0 or reset) before the timeout;
  // any bytes still pending are discarded.
  bool wait_closed();
  void close();
  void shutdown_write();

 private:
  // Reads more bytes into buf_; false on close, error or timeout.
  bool fill();
  int fd_ = -1;
  std::string buf_;
};

// One request, one response, on a fresh connection.
std::optional<RawResponse> request_once(std::uint16_t port, const std::string& raw,
                                        bool head = false);

}  // namespace ringfence::testing
