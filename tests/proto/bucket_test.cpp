#include "proto/bucket.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <random>
#include <string>

namespace ringfence::proto {
namespace {

// Expected values computed independently (Python):
//   h = 0xcbf29ce484222325
//   for b in s.encode(): h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
//   h % 10000
static_assert(fnv1a64("") == 0xcbf29ce484222325ULL);
static_assert(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
static_assert(bucket_of("a") == 1996);  // computable at compile time

TEST(Bucket, KnownVectors) {
  EXPECT_EQ(fnv1a64("00000000-0000-0000-0000-000000000000"), 0x7c384c6218f299f1ULL);
  EXPECT_EQ(fnv1a64("123e4567-e89b-12d3-a456-426614174000"), 0x8da4bf2f8d2be9bfULL);
  EXPECT_EQ(bucket_of(""), 6037u);
  EXPECT_EQ(bucket_of("00000000-0000-0000-0000-000000000000"), 9089u);
  EXPECT_EQ(bucket_of("123e4567-e89b-12d3-a456-426614174000"), 31u);
  EXPECT_EQ(bucket_of("ffffffff-ffff-ffff-ffff-ffffffffffff"), 5265u);
  EXPECT_EQ(bucket_of("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 6864u);
}

TEST(Bucket, DependsOnlyOnTheBytes) {
  std::string id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
  EXPECT_EQ(bucket_of(id), bucket_of(std::string_view(id.data(), id.size())));
  EXPECT_NE(fnv1a64("6BA7B810-9DAD-11D1-80B4-00C04FD430C8"), fnv1a64(id));  // case matters
  EXPECT_LT(bucket_of("\xff\xfe\x80"), kBuckets);  // high bytes are unsigned, not sign-extended
}

std::string random_uuid(std::mt19937_64& rng) {
  std::uniform_int_distribution<unsigned> hex(0, 15);
  std::string s;
  for (int i = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      s += '-';
    } else {
      s += "0123456789abcdef"[hex(rng)];
    }
  }
  return s;
}

TEST(Bucket, EveryPercentGetsAboutOnePercent) {
  std::mt19937_64 rng(20240719);  // fixed seed: the test is deterministic
  constexpr int kHosts = 100'000;
  std::array<int, 100> per_percent{};
  for (int i = 0; i < kHosts; ++i) {
    auto b = bucket_of(random_uuid(rng));
    ASSERT_LT(b, kBuckets);
    ++per_percent[b / 100];
  }
  // Expected 1000 per range [k*100, (k+1)*100); binomial sd ~31.5, so +-20% is > 6 sd.
  for (int k = 0; k < 100; ++k) {
    EXPECT_GT(per_percent[k], 800) << "buckets [" << k * 100 << "," << (k + 1) * 100 << ")";
    EXPECT_LT(per_percent[k], 1200) << "buckets [" << k * 100 << "," << (k + 1) * 100 << ")";
  }
  // The canary range of a typical plan: [0,100) is 1%, [0,1000) is 10%.
  int canary = per_percent[0];
  int ten = 0;
  for (int k = 0; k < 10; ++k) ten += per_percent[k];
  EXPECT_NEAR(canary / double(kHosts), 0.01, 0.002);
  EXPECT_NEAR(ten / double(kHosts), 0.10, 0.005);
}

}  // namespace
}  // namespace ringfence::proto
