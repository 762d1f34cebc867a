#pragma once
// The bucket of a host: a stable hash of its host_id into [0, kBuckets).
//
// Definition (the same in server, agent, CLI and any third-party tool):
//   bucket = FNV-1a-64(utf8 bytes of the canonical lower-case host_id) mod 10000
// with offset basis 0xcbf29ce484222325 and prime 0x100000001b3. It depends on nothing but the
// bytes of the id: not on the process, the platform, or the standard library's std::hash.

#include <cstdint>
#include <string_view>

namespace ringfence::proto {

inline constexpr std::uint32_t kBuckets = 10000;

constexpr std::uint64_t fnv1a64(std::string_view bytes) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : bytes) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

constexpr std::uint32_t bucket_of(std::string_view host_id) noexcept {
  return static_cast<std::uint32_t>(fnv1a64(host_id) % kBuckets);
}

}  // namespace ringfence::proto
