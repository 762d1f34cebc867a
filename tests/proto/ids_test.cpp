#include "proto/ids.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ringfence::proto {
namespace {

TEST(Ids, Uuid) {
  EXPECT_TRUE(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
  EXPECT_TRUE(is_uuid("00000000-0000-0000-0000-000000000000"));
  EXPECT_FALSE(is_uuid("123E4567-E89B-12D3-A456-426614174000"));  // canonical is lower case
  EXPECT_FALSE(is_uuid("123e4567e89b12d3a456426614174000"));
  EXPECT_FALSE(is_uuid("{123e4567-e89b-12d3-a456-426614174000}"));
  EXPECT_FALSE(is_uuid("123e4567-e89b-12d3-a456-42661417400"));
  EXPECT_FALSE(is_uuid("123e4567-e89b-12d3-a456-4266141740000"));
  EXPECT_FALSE(is_uuid("123e4567-e89b-12d3a-456-426614174000"));
  EXPECT_FALSE(is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
  EXPECT_FALSE(is_uuid(std::string("123e4567-e89b-12d3-a456-42661417400\0", 36)));
  EXPECT_FALSE(is_uuid(""));
}

TEST(Ids, Name) {
  EXPECT_TRUE(is_name("detections"));
  EXPECT_TRUE(is_name("sensor-config.v2_x"));
  EXPECT_TRUE(is_name("0"));
  EXPECT_TRUE(is_name(std::string(63, 'a')));
  EXPECT_FALSE(is_name(std::string(64, 'a')));
  EXPECT_FALSE(is_name(""));
  EXPECT_FALSE(is_name("-lead"));
  EXPECT_FALSE(is_name(".hidden"));
  EXPECT_FALSE(is_name("a..b"));
  EXPECT_FALSE(is_name("Upper"));
  EXPECT_FALSE(is_name("a/b"));
  EXPECT_FALSE(is_name("a b"));
  EXPECT_FALSE(is_name("caf\xc3\xa9"));
}

TEST(Ids, Sha256Hex) {
  EXPECT_TRUE(is_sha256_hex(std::string(64, 'a')));
  EXPECT_TRUE(is_sha256_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'a')));
  EXPECT_FALSE(is_sha256_hex(std::string(65, 'a')));
  EXPECT_FALSE(is_sha256_hex(std::string(64, 'A')));
  EXPECT_FALSE(is_sha256_hex(std::string(64, 'g')));
  EXPECT_FALSE(is_sha256_hex("../" + std::string(61, 'a')));
}

TEST(Ids, Labels) {
  EXPECT_TRUE(is_label_key("os"));
  EXPECT_TRUE(is_label_key("os_version.major-1"));
  EXPECT_TRUE(is_label_key(std::string(32, 'k')));
  EXPECT_FALSE(is_label_key(std::string(33, 'k')));
  EXPECT_FALSE(is_label_key(""));
  EXPECT_FALSE(is_label_key("1os"));
  EXPECT_FALSE(is_label_key("_os"));
  EXPECT_FALSE(is_label_key("OS"));
  EXPECT_FALSE(is_label_key("o=s"));

  EXPECT_TRUE(is_label_value("windows"));
  EXPECT_TRUE(is_label_value("10.0.19045"));
  EXPECT_TRUE(is_label_value("Host-01.example.com"));
  EXPECT_TRUE(is_label_value(std::string(128, 'v')));
  EXPECT_FALSE(is_label_value(std::string(129, 'v')));
  EXPECT_FALSE(is_label_value(""));
  for (const char* bad :
       {"a,b", "a(b", "a)b", "a=b", "a!b", "a b", "a\tb", "caf\xc3\xa9", "\x7f"}) {
    EXPECT_FALSE(is_label_value(bad)) << bad;
  }
}

TEST(Ids, ParseU64) {
  std::uint64_t v = 7;
  EXPECT_TRUE(parse_u64("0", v));
  EXPECT_EQ(v, 0u);
  EXPECT_TRUE(parse_u64("123", v));
  EXPECT_EQ(v, 123u);
  EXPECT_TRUE(parse_u64("999999999999999999", v));  // 18 digits
  EXPECT_EQ(v, 999999999999999999ULL);
  v = 5;
  for (const char* bad :
       {"", "1000000000000000000", "-1", "+1", " 1", "1 ", "1.0", "0x10", "1e3"}) {
    EXPECT_FALSE(parse_u64(bad, v)) << bad;
    EXPECT_EQ(v, 5u) << "output untouched on failure: " << bad;
  }
}

}  // namespace
}  // namespace ringfence::proto
