#pragma once
// Key roles (DESIGN.md "Wave 2 design notes", TUF-like and small): an offline Ed25519 *root* key
// signs a *key set* naming the online keys and what each may sign (content manifests or desired
// states); agents pin the root and take a new key set only when it is newer, root-signed and not
// expired. The signed desired state (the whole answer of GET /v1/agent/desired) is checked here
// too, so the agent and fleetsim apply one rule. All functions are pure and thread-safe.
//
// Wire form of a signed key set:
//   {"signed":{"version":2,"expires":1767225600,"root":"<base64 root public key>",
//              "keys":[{"id":"<16 hex>","public":"<base64>","role":"content","not_after":N}],
//              "revoked":["<16 hex>"]},
//    "signatures":[{"key_id":"<16 hex of the root>","signature":"<base64>"}]}
// The signatures cover canonical_bytes(signed). A key may be listed twice (once per role).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/error.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"

namespace ringfence::proto {

enum class KeyRole { Content, Desired };
std::string_view to_string(KeyRole r) noexcept;

struct KeyEntry {
  std::string id;  // key_id(public_key)
  PublicKey public_key{};
  KeyRole role = KeyRole::Content;
  std::int64_t not_after = 0;  // unix seconds: signatures by this key are not trusted after it
};

struct KeySet {
  std::int64_t version = 0;  // 0 = the implicit set made from --public-key (never on the wire)
  std::int64_t expires = 0;  // unix seconds; 0 = never (only the implicit set)
  PublicKey root{};          // the root key that governs this set (a new one = root rotation)
  std::vector<KeyEntry> keys;
  std::vector<std::string> revoked;
};

struct KeySignature {
  std::string key_id;
  std::string signature;  // base64 Ed25519 over canonical_bytes(set)
};

struct SignedKeySet {
  KeySet set;
  std::vector<KeySignature> signatures;
};

inline constexpr std::size_t kMaxKeys = 32;
inline constexpr std::size_t kMaxRevoked = 256;

// The id of a key: the first 16 lower-case hex digits of SHA-256 over its 32 raw bytes.
std::string key_id(const PublicKey& pk);
std::string encode_public_key(const PublicKey& pk);  // base64

// Canonical JSON of the signed part: keys sorted, no white space (keys listed in the set's order,
// revoked ids in theirs).
std::string canonical_bytes(const KeySet& s);
// Signs `set` with each secret key (a root rotation passes the old and the new root).
SignedKeySet sign_key_set(KeySet set, const std::vector<SecretKey>& signers);
std::string encode(const SignedKeySet& s);
// Strict decoder (types, sizes, ids matching their public keys, unique (id, role) pairs).
Expected<SignedKeySet> decode_key_set(std::string_view text);

// The implicit key set of an agent configured with --public-key only: that key for both roles,
// version 0, no expiry.
KeySet implicit_key_set(const PublicKey& pk);

// What an agent trusts: its pinned root (if any) and its current key set.
struct Trust {
  std::optional<PublicKey> root;
  KeySet keys;
};

// Accepts `candidate` as the new key set of `current`, or refuses it (Unprocessable) with code:
//   key_set_no_root    the agent pins no root (--public-key only): it cannot take key sets
//   key_set_replayed   version not above the current one
//   key_set_signature  no valid signature by the pinned root (or, on a root rotation, by the
//                      new root as well)
//   key_set_expired    expires at or before now_s
// On success the result names the new root when the set rotated it.
Expected<Trust> accept_key_set(const Trust& current, const SignedKeySet& candidate,
                               std::int64_t now_s);

// The public key `id` may sign `role` with at now_s, or an Unprocessable error with code
// unknown_key, revoked_key, key_role (listed, not for this role) or key_expired (past not_after,
// or the whole set expired).
Expected<PublicKey> trusted_key(const KeySet& keys, std::string_view id, KeyRole role,
                                std::int64_t now_s);

// Verifies a desired state before any part of it is acted on. Refusals (Unprocessable), by code:
//   unknown_key, revoked_key, key_role, key_expired   (trusted_key's codes) its key_id names no
//                         key trusted for desired states now
//   desired_signature     the signature does not verify
//   wrong_host            names another host
//   replayed_generation   generation below min_generation (what the agent already acted on)
//   stale_desired_state   expired (expires <= now_s)
// Checked in that order, so an unsigned answer is never reported as anything but unsigned.
Status verify_desired_state(const DesiredState& ds, const KeySet& keys, std::string_view host_id,
                            std::int64_t min_generation, std::int64_t now_s);

}  // namespace ringfence::proto
