#include "tests/http/http_client.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringfence::testing {

RawClient::RawClient(std::uint16_t port, const std::string& host,
                     std::chrono::milliseconds recv_timeout, bool must_connect) {
  bool v6 = host.find(':') != std::string::npos;
  fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    ADD_FAILURE() << "socket: " << std::strerror(errno);
    return;
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(recv_timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((recv_timeout.count() % 1000) * 1000);
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int rc;
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    ::inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
    rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0) {
    if (must_connect)
      ADD_FAILURE() << "connect to " << host << ":" << port << ": " << std::strerror(errno);
    close();
  }
}

RawClient::~RawClient() { close(); }

void RawClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void RawClient::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

bool RawClient::send(const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    auto n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

bool RawClient::fill() {
  if (fd_ < 0) return false;
  char tmp[16384];
  while (true) {
    auto n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }
}

std::optional<RawResponse> RawClient::read_response(bool head) {
  std::size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return std::nullopt;
  }
  RawResponse r;
  std::string head_text = buf_.substr(0, end);
  buf_.erase(0, end + 4);
  auto line_end = head_text.find("\r\n");
  r.status_line = head_text.substr(0, line_end);
  if (r.status_line.size() < 12 || r.status_line.compare(0, 5, "HTTP/") != 0) return std::nullopt;
  r.status = std::atoi(r.status_line.c_str() + 9);
  std::size_t pos = line_end == std::string::npos ? head_text.size() : line_end + 2;
  while (pos < head_text.size()) {
    auto e = head_text.find("\r\n", pos);
    if (e == std::string::npos) e = head_text.size();
    std::string line = head_text.substr(pos, e - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (r.headers.count(name))
        r.headers[name] += ", " + value;
      else
        r.headers[name] = value;
    }
    pos = e + 2;
  }
  if (head || r.status == 204 || r.status == 304 || r.status < 200) return r;
  if (r.has("content-length")) {
    auto len = static_cast<std::size_t>(std::stoull(r.header("content-length")));
    while (buf_.size() < len) {
      if (!fill()) return std::nullopt;
    }
    r.body = buf_.substr(0, len);
    buf_.erase(0, len);
    return r;
  }
  while (fill()) {
  }
  r.body = std::move(buf_);
  buf_.clear();
  return r;
}

std::optional<std::string> RawClient::read_until(const std::string& needle) {
  while (buf_.find(needle) == std::string::npos) {
    if (!fill()) return std::nullopt;
  }
  return buf_;
}

bool RawClient::wait_closed() {
  if (fd_ < 0) return true;
  char tmp[4096];
  while (true) {
    auto n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n > 0) continue;
    if (n == 0) return true;
    if (errno == EINTR) continue;
    return errno == ECONNRESET;  // EAGAIN: the receive timeout passed with the connection open
  }
}

std::optional<RawResponse> request_once(std::uint16_t port, const std::string& raw, bool head) {
  RawClient c(port);
  if (!c.connected() || !c.send(raw)) return std::nullopt;
  return c.read_response(head);
}

}  // namespace ringfence::testing
