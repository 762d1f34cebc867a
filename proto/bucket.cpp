#include "proto/bucket.hpp"

#include <sodium.h>

#include <cstdlib>

namespace ringfence::proto {

std::uint32_t bucket_of(const BucketKey& key, std::string_view host_id) noexcept {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  // Folded in small chunks: no allocation, any length.
  unsigned char chunk[64];
  std::size_t n = 0;
  for (char c : host_id) {
    chunk[n++] = static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (n == sizeof chunk) {
      crypto_auth_hmacsha256_update(&st, chunk, n);
      n = 0;
    }
  }
  if (n) crypto_auth_hmacsha256_update(&st, chunk, n);
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_final(&st, mac);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | mac[i];
  return static_cast<std::uint32_t>(v % kBuckets);
}

BucketKey random_bucket_key() {
  if (sodium_init() < 0) std::abort();
  BucketKey k;
  randombytes_buf(k.data(), k.size());
  return k;
}

}  // namespace ringfence::proto
