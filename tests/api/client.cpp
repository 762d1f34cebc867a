#include "tests/api/client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <regex>

namespace ringfence::apitest {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Splits the header block; returns the offset of the body or npos when incomplete.
std::size_t header_end(const std::string& raw) {
  auto e = raw.find("\r\n\r\n");
  return e == std::string::npos ? e : e + 4;
}

struct Head {
  int status = 0;
  std::map<std::string, std::string> headers;
};

Head parse_head(const std::string& raw, std::size_t end) {
  Head h;
  std::size_t line_end = raw.find("\r\n");
  std::string status_line = raw.substr(0, line_end);
  static const std::regex kStatus(R"(^HTTP/1\.[01] (\d{3}))");
  std::smatch m;
  if (std::regex_search(status_line, m, kStatus)) h.status = std::stoi(m[1]);
  std::size_t pos = line_end + 2;
  while (pos < end - 2) {
    auto nl = raw.find("\r\n", pos);
    if (nl == std::string::npos || nl > end) break;
    auto line = raw.substr(pos, nl - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      auto v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      h.headers[lower(line.substr(0, colon))] = v;
    }
    pos = nl + 2;
  }
  return h;
}

// Decodes a chunked body; nullopt when incomplete.
std::optional<std::string> dechunk(const std::string& s) {
  std::string out;
  std::size_t pos = 0;
  while (true) {
    auto nl = s.find("\r\n", pos);
    if (nl == std::string::npos) return std::nullopt;
    auto n = std::strtoull(s.substr(pos, nl - pos).c_str(), nullptr, 16);
    pos = nl + 2;
    if (n == 0) return out;
    if (s.size() < pos + n + 2) return std::nullopt;
    out += s.substr(pos, n);
    pos += n + 2;
  }
}

bool no_body_status(int status) { return status == 204 || status == 304 || (status >= 100 && status < 200); }

}  // namespace

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

nlohmann::json HttpResponse::json() const { return nlohmann::json::parse(body, nullptr, false); }

bool HttpResponse::is_error_shape() const {
  auto j = json();
  if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) return false;
  const auto& e = j["error"];
  if (!e.contains("code") || !e["code"].is_string() || !e.contains("message") ||
      !e["message"].is_string() || e["message"].get<std::string>().empty()) {
    return false;
  }
  static const std::regex kSnake("^[a-z][a-z0-9_]*$");
  return std::regex_match(e["code"].get<std::string>(), kSnake);
}

std::string HttpResponse::error_code() const {
  auto j = json();
  return is_error_shape() ? j["error"]["code"].get<std::string>() : std::string();
}

std::string HttpResponse::error_message() const {
  auto j = json();
  return is_error_shape() ? j["error"]["message"].get<std::string>() : std::string();
}

bool response_complete(const std::string& raw, bool head_request) {
  auto end = header_end(raw);
  if (end == std::string::npos) return false;
  auto h = parse_head(raw, end);
  if (head_request || no_body_status(h.status)) return true;
  auto body = raw.substr(end);
  if (lower(h.headers["transfer-encoding"]).find("chunked") != std::string::npos) {
    return dechunk(body).has_value();
  }
  auto cl = h.headers.find("content-length");
  if (cl != h.headers.end()) return body.size() >= std::strtoull(cl->second.c_str(), nullptr, 10);
  return false;  // delimited by EOF
}

HttpResponse parse_response(const std::string& raw) {
  HttpResponse r;
  r.raw = raw;
  auto end = header_end(raw);
  if (end == std::string::npos) {
    // A status line alone still tells the status (e.g. a reply cut short by a close).
    auto h = parse_head(raw + "\r\n\r\n", raw.size() + 4);
    r.status = h.status;
    return r;
  }
  auto h = parse_head(raw, end);
  r.status = h.status;
  r.headers = std::move(h.headers);
  auto body = raw.substr(end);
  if (lower(r.header("transfer-encoding")).find("chunked") != std::string::npos) {
    r.body = dechunk(body).value_or(body);
  } else if (auto cl = r.headers.find("content-length"); cl != r.headers.end()) {
    r.body = body.substr(0, std::strtoull(cl->second.c_str(), nullptr, 10));
  } else {
    r.body = body;
  }
  return r;
}

Connection::Connection(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

Connection::~Connection() {
  if (fd_ >= 0) ::close(fd_);
}

bool Connection::send(const std::string& bytes) {
  if (fd_ < 0) return false;
  std::size_t off = 0;
  while (off < bytes.size()) {
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, 10'000) <= 0) return false;
    auto n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return false;
    }
    off += static_cast<std::size_t>(n);
  }
  return true;
}

bool Connection::read_some(std::chrono::milliseconds timeout) {
  if (fd_ < 0 || eof_) return false;
  pollfd p{fd_, POLLIN, 0};
  int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (rc <= 0) return false;
  char buf[65536];
  auto n = ::recv(fd_, buf, sizeof buf, 0);
  if (n <= 0) {
    if (n < 0 && errno == EINTR) return false;
    eof_ = true;  // EOF or a reset: either way nothing more comes
    return false;
  }
  in_.append(buf, static_cast<std::size_t>(n));
  return true;
}

HttpResponse Connection::read_response(std::chrono::milliseconds deadline) {
  read_until([](const std::string& s) { return response_complete(s); }, deadline);
  return parse_response(in_);
}

HttpResponse Client::request(const std::string& method, const std::string& target,
                             const std::string& token, const std::optional<std::string>& body,
                             const std::string& content_type,
                             const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  if (body) {
    if (!content_type.empty()) req += "Content-Type: " + content_type + "\r\n";
    req += "Content-Length: " + std::to_string(body->size()) + "\r\n";
  } else if (method == "POST" || method == "PUT" || method == "PATCH") {
    req += "Content-Length: 0\r\n";
  }
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  if (body) req += *body;
  Connection c(port_);
  (void)c.send(req);  // a refusal may come before the server has read everything
  bool head = method == "HEAD";
  c.read_until([head](const std::string& s) { return response_complete(s, head); },
               std::chrono::seconds(10));
  return parse_response(c.received());
}

HttpResponse Client::raw(const std::string& bytes, std::chrono::milliseconds deadline) {
  Connection c(port_);
  (void)c.send(bytes);  // the server may answer and close before taking everything
  return c.read_response(deadline);
}

}  // namespace ringfence::apitest
