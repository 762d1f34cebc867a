#include "server/http/message.hpp"

#include "proto/json_fields.hpp"

namespace ringfence::server::http {

std::string_view to_string(Method m) noexcept {
  switch (m) {
    case Method::Get:
      return "GET";
    case Method::Head:
      return "HEAD";
    case Method::Post:
      return "POST";
    case Method::Put:
      return "PUT";
    case Method::Patch:
      return "PATCH";
    case Method::Delete:
      return "DELETE";
    case Method::Options:
      return "OPTIONS";
    case Method::Other:
      return "OTHER";
  }
  return "OTHER";
}

std::string_view Request::header(std::string_view lower_name) const noexcept {
  for (const auto& [k, v] : headers) {
    if (k == lower_name) return v;
  }
  return {};
}

namespace {
int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}
}  // namespace

std::optional<std::string> Request::query_param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    auto eq = part.find('=');
    std::string_view key = part.substr(0, eq);
    if (key == name) {
      return eq == std::string_view::npos ? std::string() : percent_decode(part.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

Response Response::json(int status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

Response Response::no_content() {
  Response r;
  r.status = 204;
  r.content_type.clear();
  return r;
}

Response Response::error(const Error& e) {
  Response r = json(http_status(e.errc), proto::error_body(e));
  if (auto s = retry_after_s(e.errc)) r.headers.emplace_back("Retry-After", std::to_string(s));
  return r;
}

int retry_after_s(Errc e) noexcept {
  switch (e) {
    case Errc::TooManyRequests:
      return 1;  // a slot frees as soon as one client leaves
    case Errc::Unavailable:
      return 5;  // storage or a dependency has to come back first
    default:
      return 0;
  }
}

int http_status(Errc e) noexcept {
  switch (e) {
    case Errc::InvalidArgument:
      return 400;
    case Errc::Unauthenticated:
      return 401;
    case Errc::PermissionDenied:
      return 403;
    case Errc::NotFound:
      return 404;
    case Errc::MethodNotAllowed:
      return 405;
    case Errc::Conflict:
      return 409;
    case Errc::PayloadTooLarge:
      return 413;
    case Errc::UnsupportedMedia:
      return 415;
    case Errc::Unprocessable:
      return 422;
    case Errc::TooManyRequests:
      return 429;
    case Errc::Unavailable:
      return 503;
    case Errc::Internal:
      return 500;
  }
  return 500;
}

}  // namespace ringfence::server::http
