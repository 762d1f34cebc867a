#include "proto/url.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

namespace ringfence::proto {
namespace {

tl::unexpected<Error> bad(std::string_view text, const std::string& why) {
  return fail(Errc::InvalidArgument,
              "invalid server URL '" + std::string(text.substr(0, 200)) + "': " + why);
}

bool is_path_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~' || c == '/';
}

bool is_dns_name(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  for (char c : h) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return h.front() != '.' && h.front() != '-';
}

}  // namespace

std::string ServerUrl::authority() const {
  std::string h = ipv6 ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

std::string ServerUrl::to_string() const {
  return std::string(tls ? "https://" : "http://") + authority() + prefix;
}

bool ServerUrl::is_loopback() const {
  if (ipv6) return host == "::1" || host == "0:0:0:0:0:0:0:1";
  if (host == "localhost" || host == "localhost.") return true;
  auto v4 = boost::urls::parse_ipv4_address(host);
  return v4 && v4->is_loopback();
}

bool ServerUrl::host_is_ip() const {
  return ipv6 || boost::urls::parse_ipv4_address(host).has_value();
}

Expected<ServerUrl> parse_server_url(std::string_view text) {
  if (text.empty()) return bad(text, "it is empty");
  auto r = boost::urls::parse_absolute_uri(text);
  if (!r) {
    // Catch the common slip with its own message.
    if (text.find("://") == std::string_view::npos) {
      return bad(text, "it must start with http:// or https://");
    }
    return bad(text, "not a valid URL (" + r.error().message() + ")");
  }
  const boost::urls::url_view& u = *r;
  ServerUrl out;
  std::string scheme(u.scheme());
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme == "https") {
    out.tls = true;
  } else if (scheme != "http") {
    return bad(text, "the scheme must be http or https, not " + scheme);
  }
  if (!u.has_authority()) return bad(text, "it has no host");
  if (u.has_userinfo()) {
    return bad(text, "user:password@ is not accepted (pass credentials with their own flags)");
  }
  if (u.has_query()) return bad(text, "a query (?...) is not accepted");
  if (u.has_fragment()) return bad(text, "a fragment (#...) is not accepted");

  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
      out.host = u.host_ipv4_address().to_string();
      break;
    case boost::urls::host_type::ipv6:
      out.host = u.host_ipv6_address().to_string();
      out.ipv6 = true;
      break;
    case boost::urls::host_type::name: {
      std::string_view enc = u.encoded_host();
      if (!is_dns_name(enc)) return bad(text, "the host is not a valid DNS name");
      out.host = std::string(enc);
      for (auto& c : out.host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      break;
    }
    case boost::urls::host_type::ipvfuture:
      return bad(text, "IPvFuture addresses are not supported");
    case boost::urls::host_type::none:
    default:
      return bad(text, "it has no host");
  }

  if (u.has_port()) {
    // Read the digits ourselves: Boost.URL's port_number() wraps values above 65535.
    std::string_view p = u.port();
    unsigned long n = 0;
    for (char c : p) n = n * 10 + static_cast<unsigned long>(c - '0');
    if (p.empty() || p.size() > 5 || n == 0 || n > 65535) {
      return bad(text, "the port must be 1..65535");
    }
    out.port = static_cast<std::uint16_t>(n);
  } else {
    out.port = out.tls ? 443 : 80;
  }

  std::string_view path = u.encoded_path();
  for (char c : path) {
    if (!is_path_char(c)) return bad(text, "the path may hold only letters, digits and -._~/");
  }
  std::string prefix(path);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  // "." and ".." segments would make the prefix mean something other than it says.
  for (std::size_t i = 0; i < prefix.size();) {
    std::size_t j = prefix.find('/', i + 1);
    std::string_view seg = std::string_view(prefix).substr(
        i + 1, j == std::string::npos ? std::string::npos : j - i - 1);
    if (seg == "." || seg == ".." || seg.empty()) {
      return bad(text, "the path may not hold empty, '.' or '..' segments");
    }
    if (j == std::string::npos) break;
    i = j;
  }
  out.prefix = std::move(prefix);
  return out;
}

}  // namespace ringfence::proto
