// proto::parse_server_url: the one URL parser of the agent, the CLI and fleetsim.
#include "proto/url.hpp"

#include <gtest/gtest.h>

namespace ringfence::proto {
namespace {

TEST(ServerUrl, HostPortAndPrefix) {
  auto u = parse_server_url("http://example.org:8080/base/");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "example.org");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->port_text(), "8080");
  EXPECT_EQ(u->prefix, "/base");
  EXPECT_EQ(u->authority(), "example.org:8080");
  EXPECT_EQ(u->to_string(), "http://example.org:8080/base");
}

TEST(ServerUrl, DefaultPortsFollowTheScheme) {
  EXPECT_EQ(parse_server_url("http://h")->port, 80);
  EXPECT_EQ(parse_server_url("https://h")->port, 443);
  EXPECT_TRUE(parse_server_url("https://h")->tls);
  EXPECT_TRUE(parse_server_url("HTTPS://H.example")->tls);
  EXPECT_EQ(parse_server_url("HTTPS://H.example")->host, "h.example");
}

TEST(ServerUrl, Ipv6Literals) {
  auto u = parse_server_url("http://[::1]:9");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->host, "::1");
  EXPECT_TRUE(u->ipv6);
  EXPECT_EQ(u->port, 9);
  EXPECT_EQ(u->authority(), "[::1]:9");
  EXPECT_TRUE(u->is_loopback());
  EXPECT_TRUE(u->host_is_ip());

  auto v = parse_server_url("https://[2001:db8::1]/rf");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->host, "2001:db8::1");
  EXPECT_EQ(v->port, 443);
  EXPECT_EQ(v->prefix, "/rf");
  EXPECT_FALSE(v->is_loopback());

  EXPECT_FALSE(parse_server_url("http://[::1"));
  EXPECT_FALSE(parse_server_url("http://::1:9"));
  EXPECT_FALSE(parse_server_url("http://[fe80::1%25eth0]:9"));  // zone ids
  EXPECT_FALSE(parse_server_url("http://[v1.x]:9"));            // IPvFuture
}

TEST(ServerUrl, Ports) {
  EXPECT_EQ(parse_server_url("http://h:1")->port, 1);
  EXPECT_EQ(parse_server_url("http://h:65535")->port, 65535);
  EXPECT_FALSE(parse_server_url("http://h:0"));
  EXPECT_FALSE(parse_server_url("http://h:65536"));
  EXPECT_FALSE(parse_server_url("http://h:99999"));
  EXPECT_FALSE(parse_server_url("http://h:"));
  EXPECT_FALSE(parse_server_url("http://h:8x"));
  EXPECT_FALSE(parse_server_url("http://h:-1"));
}

TEST(ServerUrl, BadSchemesAreRefused) {
  EXPECT_FALSE(parse_server_url("ftp://h"));
  EXPECT_FALSE(parse_server_url("file:///etc/passwd"));
  EXPECT_FALSE(parse_server_url("h:8080"));
  EXPECT_FALSE(parse_server_url("127.0.0.1:8080"));
  EXPECT_FALSE(parse_server_url(""));
  auto e = parse_server_url("localhost");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("http://"), std::string::npos) << e.error().message;
}

TEST(ServerUrl, UserinfoIsRefused) {
  auto e = parse_server_url("http://user:secret@h:80");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("user:password@"), std::string::npos);
  EXPECT_FALSE(parse_server_url("http://@h"));
}

TEST(ServerUrl, HostsAreChecked) {
  EXPECT_FALSE(parse_server_url("http://"));
  EXPECT_FALSE(parse_server_url("http://:80"));
  EXPECT_FALSE(parse_server_url("http://h%0d%0aX:80"));
  EXPECT_FALSE(parse_server_url("http://a b:80"));
  EXPECT_FALSE(parse_server_url("http://h\r\nX-Injected: 1"));
  auto v4 = parse_server_url("http://127.0.0.2:5");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->is_loopback());
  EXPECT_TRUE(v4->host_is_ip());
  EXPECT_TRUE(parse_server_url("http://localhost:5")->is_loopback());
  EXPECT_FALSE(parse_server_url("http://localhost:5")->host_is_ip());
  EXPECT_FALSE(parse_server_url("http://10.1.2.3:5")->is_loopback());
  EXPECT_FALSE(parse_server_url("http://example.org")->is_loopback());
}

TEST(ServerUrl, Paths) {
  EXPECT_EQ(parse_server_url("http://h/")->prefix, "");
  EXPECT_EQ(parse_server_url("http://h")->prefix, "");
  EXPECT_EQ(parse_server_url("http://h/a/b-c_d.e~f//")->prefix, "/a/b-c_d.e~f");
  EXPECT_FALSE(parse_server_url("http://h/a/../b"));
  EXPECT_FALSE(parse_server_url("http://h/./b"));
  EXPECT_FALSE(parse_server_url("http://h/a//b"));
  EXPECT_FALSE(parse_server_url("http://h/a%20b"));
  EXPECT_FALSE(parse_server_url("http://h/a?x=1"));
  EXPECT_FALSE(parse_server_url("http://h/a#frag"));
}

}  // namespace
}  // namespace ringfence::proto
