#pragma once
// The one parser of server URLs for every client (agent, CLI, fleetsim), built on Boost.URL so
// that IPv6 literals, ports and paths follow RFC 3986 instead of hand-written splitting.
//
// Accepted: http://HOST[:PORT][/PREFIX] and https://HOST[:PORT][/PREFIX] where HOST is a DNS
// name, a dotted IPv4 address or a bracketed IPv6 literal ("[::1]"). Refused (InvalidArgument,
// with a message that names the problem): any other scheme, userinfo ("user:pw@" would put a
// secret on the command line and in logs), a query or fragment, an empty host, an IPvFuture
// or zone-id literal, percent-escapes or whitespace in the host, a port that is not 1..65535,
// and a path with "." / ".." segments or characters outside the URL's unreserved set.
// Thread-safe (pure functions).

#include <cstdint>
#include <string>
#include <string_view>

#include "proto/error.hpp"

namespace ringfence::proto {

struct ServerUrl {
  bool tls = false;        // https
  std::string host;        // without brackets: "example.org", "10.0.0.1", "::1"
  bool ipv6 = false;       // host is an IPv6 literal
  std::uint16_t port = 0;  // explicit or the scheme's default (80 / 443)
  std::string prefix;      // path prefix without a trailing '/', usually empty ("/rf")

  // The port as text, for resolvers.
  std::string port_text() const { return std::to_string(port); }
  // Host header / log form: "example.org:8080", "[::1]:9".
  std::string authority() const;
  // The URL back as text, normalised ("https://[::1]:8443/rf").
  std::string to_string() const;
  // True for "localhost", 127.0.0.0/8 and ::1: names that never leave the machine.
  bool is_loopback() const;
  // True when host is an IPv4 or IPv6 literal (no SNI is sent for those).
  bool host_is_ip() const;
};

// Parses a server URL as described above. InvalidArgument otherwise.
Expected<ServerUrl> parse_server_url(std::string_view text);

}  // namespace ringfence::proto
