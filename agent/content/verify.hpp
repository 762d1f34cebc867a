#pragma once
// The agent's checks before it loads anything, as pure functions. Each refusal is an
// Unprocessable error whose message is the reason sent in the apply_failed report, and whose
// code names the check (signature, revoked_key, unknown_key, key_role, key_expired, expired,
// known_bad, quarantined, downgrade, manifest, sha256, size, too_large). Thread-safe.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "proto/error.hpp"
#include "proto/keyset.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"

namespace ringfence::agent::content {

// (channel, version) pairs refused for good: the server's known-bad list or local quarantine.
using VersionSet = std::set<std::pair<std::string, std::int64_t>>;

struct VerifyContext {
  const proto::KeySet* keys = nullptr;         // the agent's trusted keys (null = trusts none)
  std::int64_t now_s = 0;                      // wall clock, unix seconds
  const VersionSet* known_bad = nullptr;       // from the server (may be null)
  const VersionSet* quarantined = nullptr;     // this host's own crash-loop verdicts (may be null)
  std::optional<std::int64_t> active_version;  // what runs now on this channel
  std::int64_t max_size = 0;                   // 0 = no limit
};

// Checks a desired channel entry before download: manifest fields equal the entry's, the
// Ed25519 signature over proto::canonical_bytes(manifest) verifies with the content key the
// entry names (trusted now: listed for content, not revoked, not past not_after; an entry that
// names no key may be signed by any trusted content key),
// the manifest has not expired, the version is neither known-bad nor quarantined, it is not a
// downgrade unless the entry is a server-signed rollback target, and the size is within limit.
Status verify_entry(const proto::DesiredChannel& entry, const VerifyContext& ctx);

// Checks a downloaded file against the manifest: exact size, then sha256 (streamed).
// Unavailable if the file cannot be read.
Status verify_blob(const std::string& path, const proto::Manifest& manifest);

// Streaming sha256 and size of a file; Unavailable on I/O errors.
Expected<std::pair<std::string, std::int64_t>> hash_file(const std::string& path);

}  // namespace ringfence::agent::content
