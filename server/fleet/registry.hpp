#pragma once
// The in-memory fleet: hosts, rings and ring membership. Hot state, loaded from the store at
// start; the caller (the server core) persists changes (dirty hosts are flushed in batches).
//
// Threading: not thread-safe; the server core serialises access under its state mutex.

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proto/bucket.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"
#include "server/fleet/selector.hpp"

namespace ringfence::server::fleet {

using HostIndex = std::uint32_t;
inline constexpr HostIndex kNoHost = 0xffffffffu;

// A host id, a canonical lower-case UUID (proto::is_uuid), held as its 16 bytes. The text form
// is rebuilt on demand; it orders and compares like the text.
class HostId {
 public:
  HostId() = default;
  // Aborts unless s is a canonical lower-case UUID: every path into the registry validated it.
  HostId(std::string_view s);  // NOLINT(google-explicit-constructor): ids read as their text
  HostId& operator=(std::string_view s) { return *this = HostId(s); }
  std::string str() const;
  // The 36 characters of the text form, without allocating.
  std::array<char, 36> text() const noexcept;
  const std::array<std::uint8_t, 16>& bytes() const noexcept { return b_; }
  friend bool operator==(const HostId&, const HostId&) = default;
  friend auto operator<=>(const HostId&, const HostId&) = default;

 private:
  std::array<std::uint8_t, 16> b_{};
};

// A SHA-256 digest held as 32 bytes (the store keeps the hex form).
struct Digest32 {
  std::array<std::uint8_t, 32> bytes{};
  // Aborts unless hex is 64 hex digits (digests come from proto::sha256_hex or the store).
  static Digest32 from_hex(std::string_view hex);
  static Digest32 sha256_of(std::string_view bytes) { return {proto::sha256_bytes(bytes)}; }
  std::string hex() const;
  // Constant time: every byte is compared.
  bool equals(const Digest32& o) const noexcept;
};

struct ChannelRun {
  std::string channel;
  std::int64_t version = 0;
  std::string state;  // as the agent reported it
};

// One enrolled host: ~200 bytes plus its reported channels (bench/RESULTS.md, memory per host).
// Short strings (tenant, agent_version) stay inside the std::string (no allocation up to 15
// characters).
struct Host {
  HostId id;
  Digest32 credential_hash;                     // sha256 of the secret part of the credential
  std::shared_ptr<const proto::Labels> labels;  // interned: identical label sets are shared
  // Consumer name -> version, as last reported (interned like labels; null = none reported).
  // Host-chosen strings: shown per host and counted for validation, never /metrics labels.
  std::shared_ptr<const proto::Labels> consumers;
  std::string tenant;
  std::string agent_version;
  std::uint32_t bucket = 0;
  int ring = -1;  // index into rings(), -1 when no ring matches (no rings defined)
  bool pinned = false;
  bool deleted = false;
  bool dirty = false;         // changed since the last flush: set through Registry::mark_dirty
  bool seen_queued = false;   // last_seen awaits its write: set through Registry::mark_seen
  std::int64_t enrolled = 0;  // unix s
  std::int64_t last_seen_ms = 0;
  // The last reported boot id, as proto::fnv1a64 of its text (only compared for "rebooted");
  // 0 = none reported yet.
  std::uint64_t boot_id_hash = 0;
  std::int64_t uptime_s = 0;
  // The first agent request after (re-)enrollment or an operator's reset, unix ms; 0 = none yet.
  // A host's evidence counts for a rollout only when this is old enough (its track record).
  std::int64_t trust_since_ms = 0;
  // Reports accepted in the current minute (the per-host report limit).
  std::int32_t report_minute = 0;
  std::int32_t reports_in_minute = 0;
  std::vector<ChannelRun> channels;  // last reported
};

struct Ring {
  std::string name;
  std::int64_t rank = 0;
  Selector selector;
  std::string description;
  std::size_t size = 0;  // members, kept current by recompute_membership()
};

class Registry {
 public:
  // The installation's bucket key (proto/bucket.hpp); all-zero until set. Recomputes every
  // host's bucket and ring. The server sets it once, before loading any host.
  void set_bucket_key(const proto::BucketKey& key);
  // Adds or replaces a host by id; returns its index. Computes bucket (keyed) and ring.
  HostIndex upsert(Host h);
  void remove(HostIndex i);
  std::optional<HostIndex> find(std::string_view host_id) const;  // nullopt also for non-UUIDs
  std::optional<HostIndex> find(const HostId& id) const;
  void reserve(std::size_t hosts);  // before loading a fleet of known size
  Host& at(HostIndex i) { return hosts_[i]; }
  const Host& at(HostIndex i) const { return hosts_[i]; }
  std::size_t slots() const noexcept { return hosts_.size(); }  // including deleted slots
  std::size_t live() const noexcept { return live_; }

  // Interns a label set (tenant is also a label: "tenant"). Sets no host holds any more are
  // forgotten (swept whenever the table has doubled since the last sweep).
  std::shared_ptr<const proto::Labels> intern(proto::Labels labels);
  std::size_t interned_count() const noexcept { return interned_.size(); }

  // Rings sorted by rank (then name). The last ring catches every host no other ring matches.
  const std::vector<Ring>& rings() const noexcept { return rings_; }
  void set_rings(std::vector<Ring> rings);  // sorts and recomputes membership
  int ring_index(std::string_view name) const;
  // Recomputes every host's ring (after ring or label changes). O(hosts × rings).
  void recompute_membership();
  // The ring a host belongs to under the current rings.
  int ring_for(const Host& h) const;
  // Changes whenever an existing host may have changed ring or left (rings or labels changed, a
  // host replaced or removed); adding a new host does not change it.
  std::uint64_t membership_version() const noexcept { return membership_version_; }

  // Marks a host changed since the last flush (O(1); the flush does not scan the fleet).
  void mark_dirty(HostIndex i);
  // Up to max of the hosts marked dirty, oldest marks first, in index order; clears their flags.
  std::vector<HostIndex> dirty_hosts(std::size_t max = SIZE_MAX);
  std::size_t dirty_pending() const noexcept { return dirty_.size(); }
  // Marks a host whose only change is last_seen (a heartbeat that reported nothing new). These
  // are written at a bounded rate (seen_hosts), so a fleet heartbeating fast costs the store at
  // most that rate: each host is queued once however often it heartbeats meanwhile.
  void mark_seen(HostIndex i);
  // Up to max hosts from the front of the seen queue (oldest first), flags cleared; hosts that are
  // also dirty are skipped (their full row carries last_seen).
  std::vector<HostIndex> seen_hosts(std::size_t max);
  std::size_t seen_pending() const noexcept { return seen_.size(); }

 private:
  // index_: open addressing (linear probing, backward-shift deletion) over HostIndex values,
  // keyed by hosts_[i].id; a power-of-two size at most half full. 4-8 bytes per host instead of a
  // node per host.
  static constexpr HostIndex kEmptySlot = kNoHost;
  std::size_t slot_of(const HostId& id) const noexcept;
  void index_insert(HostIndex i);
  void index_erase(const HostId& id);
  void index_grow(std::size_t want);

  std::vector<Host> hosts_;
  std::vector<HostIndex> index_;
  std::size_t live_ = 0;
  std::vector<HostIndex> free_;
  proto::BucketKey bucket_key_{};
  std::uint64_t membership_version_ = 0;
  std::deque<HostIndex> dirty_;  // FIFO of mark_dirty(); may hold stale entries
  std::deque<HostIndex> seen_;   // FIFO of mark_seen(); may hold stale entries
  std::vector<Ring> rings_;
  std::map<proto::Labels, std::weak_ptr<const proto::Labels>> interned_;
  std::size_t interned_after_sweep_ = 0;
};

}  // namespace ringfence::server::fleet
