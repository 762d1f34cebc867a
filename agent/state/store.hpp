#pragma once
// What the agent keeps in its state dir, as plain structs with a JSON codec:
//   identity.json  host_id + credential (mode 0600)
//   state.json     the state machine's state, the job in progress, per-channel active and
//                  last-known-good versions, local quarantine, the crash-loop guards, the
//                  highest desired-state generation acted on (0600)
//   trust.json     the root pinned now and the last key set accepted (0600)
// Both are replaced atomically through the Fs seam. Thread-compatible.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/content/fs.hpp"
#include "agent/state/machine.hpp"
#include "proto/messages.hpp"

namespace ringfence::agent::state {

struct Identity {
  std::string host_id;     // lower-case UUID v4, chosen once
  std::string credential;  // empty until enrolled
};

struct ChannelRecord {
  std::int64_t active = 0;  // 0 = nothing active
  std::string active_sha;
  std::int64_t lkg = 0;  // last-known-good: the version active before `active`; 0 = none
  std::string lkg_sha;
};

struct Quarantined {
  std::string channel;
  std::int64_t version = 0;
  std::string reason;
  std::int64_t time_ms = 0;
};

// The crash-loop guard of one channel, armed just before new content is activated.
struct Guard {
  std::int64_t version = 0;
  std::int64_t activated_ms = 0;  // wall clock
  int failures = 0;               // agent/host restarts and consumer crashes since activation
  bool healthy = false;           // reached the healthy checkpoint: the guard is off
};

// A revert in progress (state Reverting).
struct RevertJob {
  std::string channel;
  std::int64_t version = 0;  // the version being dropped
  std::string reason;        // "crash_loop" | "known_bad"
  bool quarantine = false;   // add it to the local quarantine
  int failures = 0;
  std::int64_t time_ms = 0;  // when it was decided: the local_rollback report's time
};

struct AgentState {
  State machine = State::Unenrolled;
  std::optional<proto::DesiredChannel> job;  // Downloading / Verifying / Activating
  std::optional<RevertJob> revert;           // Reverting
  std::map<std::string, ChannelRecord> channels;
  std::vector<Quarantined> quarantine;
  std::vector<proto::KnownBad> known_bad;  // the server's list, last seen
  std::vector<std::string> refused;        // "channel|version|sha256" refused for good
  std::map<std::string, Guard> guards;
  // The highest desired-state generation this host acted on: a lower one is a replay.
  std::int64_t generation = 0;
};

// What the agent learned about keys (proto/keyset.hpp), kept across restarts.
struct TrustRecord {
  std::string configured_root;  // base64 of --root-key when this was written
  std::string root;             // base64 of the root pinned now (differs after a root rotation)
  std::string key_set;          // the last accepted signed key set (wire JSON); may be empty
};

// A host credential as the agent accepts it, from the server at enrollment and from
// identity.json: 1..256 characters of RFC 6750's b64token set [A-Za-z0-9-._~+/] with trailing
// '='. Anything else (CR/LF above all) would go raw into every request's Authorization header.
bool is_valid_credential(std::string_view s) noexcept;

std::string encode(const Identity& id);
// InvalidArgument when the text is not JSON, the host_id is not a UUID or the credential is
// neither empty (not enrolled yet) nor is_valid_credential.
Expected<Identity> decode_identity(std::string_view text);
std::string encode(const AgentState& s);
Expected<AgentState> decode_state(std::string_view text);

// Loads a document; a missing file is nullopt; a corrupt one is an InvalidArgument error.
Expected<std::optional<Identity>> load_identity(Fs& fs, const std::string& path);
Expected<std::optional<AgentState>> load_state(Fs& fs, const std::string& path);
std::string encode(const TrustRecord& t);
Expected<TrustRecord> decode_trust(std::string_view text);
Expected<std::optional<TrustRecord>> load_trust(Fs& fs, const std::string& path);

}  // namespace ringfence::agent::state
