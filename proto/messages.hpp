#pragma once
// The agent protocol (API.md, "Agent API") as plain structs with strict JSON codecs.
// decode_*() refuse wrong types, missing required fields and out-of-range values with an
// InvalidArgument error; encode_*() write the exact wire form. All functions are pure and
// thread-safe.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/error.hpp"
#include "proto/signing.hpp"

namespace ringfence::proto {

inline constexpr std::string_view kPathEnroll = "/v1/agent/enroll";
inline constexpr std::string_view kPathDesired = "/v1/agent/desired";
inline constexpr std::string_view kPathHeartbeat = "/v1/agent/heartbeat";
inline constexpr std::string_view kPathReports = "/v1/agent/reports";
inline constexpr std::string_view kPathBlobs = "/v1/blobs";
inline constexpr std::string_view kPathSigningKey = "/v1/signing-key";

inline constexpr std::size_t kMaxLabels = 32;
inline constexpr std::size_t kMaxChannels = 64;
inline constexpr std::size_t kMaxReportsPerBatch = 256;
inline constexpr std::size_t kMaxDetailBytes = 4096;
inline constexpr std::size_t kMaxKnownBad = 4096;
inline constexpr std::size_t kMaxKeySetBytes = 16 * 1024;
inline constexpr std::size_t kMaxConsumers = 8;  // consumer versions in one heartbeat
inline constexpr std::size_t kMaxConsumerVersionBytes = 64;

using Labels = std::map<std::string, std::string>;

struct EnrollRequest {
  std::string enrollment_token;
  std::string host_id;  // canonical lower-case UUID
  Labels labels;        // keys/values checked with is_label_key/is_label_value
  std::string agent_version;
};

struct EnrollResponse {
  std::string host_id;
  std::string credential;
  std::int64_t heartbeat_s = 0;
  std::int64_t poll_s = 0;
};

struct DesiredChannel {
  std::string channel;
  std::int64_t version = 0;
  std::string sha256;
  std::int64_t size = 0;
  std::string url;  // path on the server, e.g. /v1/blobs/<sha256>
  Manifest manifest;
  std::string signature;  // base64 Ed25519 over canonical_bytes(manifest)
  std::string key_id;     // the key (proto/keyset.hpp) that made `signature`; empty = unnamed
  // Set when the server sends this host *back* to this version (a rollback target, or N-1 for a
  // pinned host). A hint for logs and dashboards only: what lets an agent accept a lower version
  // is the signed manifest's rollback_from, never this unsigned flag.
  bool rollback = false;
};

struct KnownBad {
  std::string channel;
  std::int64_t version = 0;
};

// The whole answer of GET /v1/agent/desired. Everything but etag, key_id, signature and
// key_set is covered by `signature` (see canonical_bytes below); proto/keyset.hpp verifies it.
struct DesiredState {
  std::string etag;  // a transport hint for If-None-Match, not signed
  std::string host_id;
  std::int64_t generation = 0;  // per host, only ever grows (the agent refuses a lower one)
  std::int64_t issued = 0;      // unix seconds
  std::int64_t expires = 0;     // unix seconds; past it the agent freezes (stale_desired_state)
  std::vector<DesiredChannel> channels;
  std::vector<KnownBad> known_bad;
  std::int64_t heartbeat_s = 0;
  std::int64_t poll_s = 0;
  std::int64_t key_set_version = 0;  // the key set the server signed under
  std::string key_id;                // the desired-state key that made `signature`
  std::string signature;             // base64 Ed25519 over canonical_bytes(*this)
  // The server's current signed key set (proto/keyset.hpp wire form), raw JSON. Not covered by
  // `signature`: it carries its own root signatures. Absent on a server without a key set.
  std::optional<std::string> key_set;
};

// The signed fields of a desired state that differ per host.
struct DesiredHeader {
  std::string_view host_id;
  std::int64_t generation = 0, issued = 0, expires = 0;
  std::int64_t heartbeat_s = 0, poll_s = 0, key_set_version = 0;
};

// Canonical JSON (keys sorted, no white space) of the channel entries: each entry's wire fields
// (key_id only when set, rollback only when true) with the manifest in its canonical form.
std::string canonical_channels(const std::vector<DesiredChannel>& channels);
// Canonical JSON of the known-bad list: [{"channel":..,"version":..},...] in list order.
std::string canonical_known_bad(const std::vector<KnownBad>& known_bad);
// The bytes a desired state's signature covers:
//   {"channels":C,"expires":E,"generation":G,"heartbeat_s":H,"host_id":"..","issued":I,
//    "key_set_version":K,"known_bad":KB,"poll_s":P}
// from pre-rendered parts, so a server can sign per host around a shared body cheaply.
std::string canonical_desired_bytes(std::string_view channels_json, std::string_view known_bad_json,
                                    const DesiredHeader& h);
std::string canonical_bytes(const DesiredState& ds);

// Per-channel state an agent reports: "active" (running it), "staged", "failed", "rolled_back".
struct ChannelStatus {
  std::int64_t version = 0;
  std::string state;
};

struct Heartbeat {
  std::string boot_id;
  std::int64_t uptime_s = 0;
  std::map<std::string, ChannelStatus> channels;
  // The version of each content consumer on the host, by consumer name (is_name), e.g.
  // {"sensor": "7.11.18110"}: what the server validates new releases against. At most
  // kMaxConsumers; versions checked with is_consumer_version. Sent only when not empty.
  std::map<std::string, std::string> consumers;
};

// A consumer version: 1..64 characters of [A-Za-z0-9._+-], starting with a letter or digit.
bool is_consumer_version(std::string_view s) noexcept;

// StaleDesiredState: the agent's desired state expired (or only expired ones arrive); it froze on
// its current content. Evidence of nothing about a release: the gates ignore it.
// AgentRestart: the agent process died without a clean stop and came back on the same boot (same
// boot id: the OOM killer, an administrator's kill, an agent upgrade). Kept as evidence and shown
// on the rollout's timeline, never counted as a failure: the host and its content kept running.
enum class ReportKind {
  Applied,
  ApplyFailed,
  Crash,
  LocalRollback,
  StaleDesiredState,
  AgentRestart
};
std::string_view to_string(ReportKind k) noexcept;
std::optional<ReportKind> report_kind_from(std::string_view s) noexcept;

struct Report {
  ReportKind kind = ReportKind::Applied;
  std::int64_t time = 0;  // unix milliseconds, agent's clock
  std::optional<std::string> channel;
  std::optional<std::int64_t> version;
  std::string boot_id;
  std::string detail_json = "{}";  // a JSON object, at most kMaxDetailBytes when encoded
};

std::string encode(const EnrollRequest& m);
std::string encode(const EnrollResponse& m);
std::string encode(const DesiredState& m);
std::string encode(const Heartbeat& m);
std::string encode(const std::vector<Report>& m);

Expected<EnrollRequest> decode_enroll_request(std::string_view body);
Expected<EnrollResponse> decode_enroll_response(std::string_view body);
Expected<DesiredState> decode_desired_state(std::string_view body);
Expected<Heartbeat> decode_heartbeat(std::string_view body);
Expected<std::vector<Report>> decode_reports(std::string_view body);

}  // namespace ringfence::proto
