#pragma once
// Content signing: Ed25519 (libsodium) over a release manifest's canonical bytes, and the
// base64 encoding used for keys and signatures on the wire. Thread-safe (sodium_init() is
// called once, lazily).

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proto/error.hpp"

namespace ringfence::proto {

struct Manifest {
  std::string channel;
  std::int64_t version = 0;
  std::string sha256;   // lower-case hex of the blob
  std::int64_t size = 0;
  std::int64_t created = 0;  // unix seconds
  std::int64_t expires = 0;  // unix seconds; an agent refuses the content after this
  // Present only on a *downgrade authorisation*: the server signs that a host running any version
  // v with version < v <= rollback_from may go down to `version` (after a quarantine, or for a
  // host pinned to N-1). It is the only way an agent accepts a lower version; a replayed one
  // cannot move a host that runs a version above rollback_from, and it expires like any manifest.
  std::optional<std::int64_t> rollback_from;
};

// The canonical JSON of a manifest: keys in lexicographic order, no white space, integers as
// integers. e.g. {"channel":"c","created":1,"expires":2,"sha256":"..","size":3,"version":4}
// ("rollback_from" sits between "expires" and "sha256" when set). The signature covers exactly
// these bytes.
std::string canonical_bytes(const Manifest& m);

using PublicKey = std::array<std::uint8_t, 32>;
using SecretKey = std::array<std::uint8_t, 64>;

struct KeyPair {
  PublicKey public_key{};
  SecretKey secret_key{};
};

KeyPair generate_keypair();

// Base64 (standard alphabet, padded). decode returns nullopt on any invalid input.
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

// Signs bytes; returns the base64 signature.
std::string sign(const SecretKey& sk, std::string_view bytes);
// True only when sig_b64 is a valid base64 Ed25519 signature of bytes under pk.
bool verify(const PublicKey& pk, std::string_view bytes, std::string_view sig_b64);

// Key files: the public key is stored as base64 text, the secret key as base64 text of the
// 64-byte libsodium secret key. Parse errors are InvalidArgument.
Expected<PublicKey> parse_public_key(std::string_view base64_text);
Expected<SecretKey> parse_secret_key(std::string_view base64_text);

// SHA-256 of bytes as lower-case hex (libsodium's crypto_hash_sha256).
std::string sha256_hex(std::string_view bytes);
// The same digest as 32 raw bytes (for comparisons on a hot path: no hex round trip).
std::array<std::uint8_t, 32> sha256_bytes(std::string_view bytes);

// Streaming SHA-256 for files and downloads.
class Sha256 {
 public:
  Sha256();
  void update(std::string_view bytes);
  std::string final_hex();

 private:
  alignas(64) unsigned char state_[128];  // crypto_hash_sha256_state (104 bytes) fits
};

// Random bytes as lower-case hex (2*n characters), from libsodium's CSPRNG.
std::string random_hex(std::size_t n);

// Constant-time equality of two strings of the same length (false if lengths differ).
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

}  // namespace ringfence::proto
