#include "proto/bucket.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <random>
#include <string>

namespace ringfence::proto {
namespace {

// fnv1a64 stays for etags and boot ids (never for buckets).
static_assert(fnv1a64("") == 0xcbf29ce484222325ULL);
static_assert(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);

BucketKey counting_key() {
  BucketKey k;
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(i);
  return k;
}

// Expected values computed independently (Python):
//   d = hmac.new(key, host_id.encode(), hashlib.sha256).digest()
//   int.from_bytes(d[:8], 'big') % 10000
TEST(Bucket, KnownVectorsOfTheKeyedHash) {
  BucketKey zero{};
  EXPECT_EQ(bucket_of(zero, "00000000-0000-0000-0000-000000000000"), 2167u);
  EXPECT_EQ(bucket_of(zero, "123e4567-e89b-12d3-a456-426614174000"), 7491u);
  EXPECT_EQ(bucket_of(zero, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 5695u);
  auto k = counting_key();
  EXPECT_EQ(bucket_of(k, "00000000-0000-0000-0000-000000000000"), 5722u);
  EXPECT_EQ(bucket_of(k, "123e4567-e89b-12d3-a456-426614174000"), 7840u);
  EXPECT_EQ(bucket_of(k, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 2963u);
}

TEST(Bucket, TheKeyDecidesTheBucketAndCaseDoesNot) {
  std::string id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
  auto k = counting_key();
  EXPECT_EQ(bucket_of(k, id), bucket_of(k, "6BA7B810-9DAD-11D1-80B4-00C04FD430C8"));
  EXPECT_LT(bucket_of(k, "\xff\xfe\x80"), kBuckets);
  std::string longer(300, 'a');  // longer than one internal chunk
  EXPECT_LT(bucket_of(k, longer), kBuckets);
  // Without the key the bucket is not the public FNV one, and two keys disagree on most ids.
  int same = 0;
  auto k2 = random_bucket_key();
  for (int i = 0; i < 1000; ++i) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
    same += bucket_of(k, buf) == bucket_of(k2, buf);
  }
  EXPECT_LT(same, 10);  // ~1000/10000 expected by chance
  EXPECT_NE(random_bucket_key(), random_bucket_key());
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
  auto key = counting_key();
  constexpr int kHosts = 100'000;
  std::array<int, 100> per_percent{};
  for (int i = 0; i < kHosts; ++i) {
    auto b = bucket_of(key, random_uuid(rng));
    ASSERT_LT(b, kBuckets);
    ++per_percent[b / 100];
  }
  // Expected 1000 per range [k*100, (k+1)*100); binomial sd ~31.5, so +-20% is > 6 sd.
  for (int k = 0; k < 100; ++k) {
    EXPECT_GT(per_percent[k], 800) << "buckets [" << k * 100 << "," << (k + 1) * 100 << ")";
    EXPECT_LT(per_percent[k], 1200) << "buckets [" << k * 100 << "," << (k + 1) * 100 << ")";
  }
  int canary = per_percent[0];
  int ten = 0;
  for (int k = 0; k < 10; ++k) ten += per_percent[k];
  EXPECT_NEAR(canary / double(kHosts), 0.01, 0.002);
  EXPECT_NEAR(ten / double(kHosts), 0.10, 0.005);
}

}  // namespace
}  // namespace ringfence::proto
