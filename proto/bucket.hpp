#pragma once
// The bucket of a host: a stable keyed hash of its host_id into [0, kBuckets).
//
// Definition (server side only; agents and tools cannot compute it, by design):
//   bucket = (first 8 bytes, big-endian, of HMAC-SHA256(key, utf8 bytes of the lower-case
//             host_id))  mod 10000
// where key is the installation's 32-byte bucket secret (generated once, kept in the store's
// settings as "bucket_key", never served). Why keyed: with a public hash an enrollee chooses its
// own id and therefore its own ring (about 100 tries give one in a 1 % canary); with a secret key
// it cannot predict where an id lands. The bucket depends on nothing but the key and the bytes of
// the id: not on the process, the platform, or the standard library.
//
// fnv1a64 stays as a fast non-cryptographic hash for values no enrollee can exploit (etags, boot
// ids); it must never again decide where a host lands.

#include <array>
#include <cstdint>
#include <string_view>

namespace ringfence::proto {

inline constexpr std::uint32_t kBuckets = 10000;

using BucketKey = std::array<std::uint8_t, 32>;

constexpr std::uint64_t fnv1a64(std::string_view bytes) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : bytes) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// The keyed bucket above. ASCII upper-case letters in host_id are folded to lower case first (ids
// are canonical lower-case UUIDs; the fold makes the definition independent of that). Thread-safe.
std::uint32_t bucket_of(const BucketKey& key, std::string_view host_id) noexcept;

// A fresh random key (libsodium's CSPRNG).
BucketKey random_bucket_key();

}  // namespace ringfence::proto
