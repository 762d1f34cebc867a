#pragma once
// The in-memory fleet: hosts, rings and ring membership. Hot state, loaded from the store at
// start; the caller (the server core) persists changes (dirty hosts are flushed in batches).
//
// Threading: not thread-safe; the server core serialises access under its state mutex.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proto/messages.hpp"
#include "server/fleet/selector.hpp"

namespace ringfence::server::fleet {

using HostIndex = std::uint32_t;
inline constexpr HostIndex kNoHost = 0xffffffffu;

struct ChannelRun {
  std::string channel;
  std::int64_t version = 0;
  std::string state;  // as the agent reported it
};

struct Host {
  std::string id;
  std::string credential_hash;  // sha256 hex of the secret part of the credential
  std::shared_ptr<const proto::Labels> labels;  // interned: identical label sets are shared
  std::string tenant;
  std::string agent_version;
  std::uint32_t bucket = 0;
  int ring = -1;  // index into rings(), -1 when no ring matches (no rings defined)
  bool pinned = false;
  bool deleted = false;
  bool dirty = false;  // changed since the last flush
  std::int64_t enrolled = 0;    // unix s
  std::int64_t last_seen_ms = 0;
  std::string boot_id;
  std::int64_t uptime_s = 0;
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
  // Adds or replaces a host by id; returns its index. Computes bucket and ring.
  HostIndex upsert(Host h);
  void remove(HostIndex i);
  std::optional<HostIndex> find(std::string_view host_id) const;
  Host& at(HostIndex i) { return hosts_[i]; }
  const Host& at(HostIndex i) const { return hosts_[i]; }
  std::size_t slots() const noexcept { return hosts_.size(); }  // including deleted slots
  std::size_t live() const noexcept { return index_.size(); }

  // Interns a label set (tenant is also a label: "tenant").
  std::shared_ptr<const proto::Labels> intern(proto::Labels labels);

  // Rings sorted by rank (then name). The last ring catches every host no other ring matches.
  const std::vector<Ring>& rings() const noexcept { return rings_; }
  void set_rings(std::vector<Ring> rings);  // sorts and recomputes membership
  int ring_index(std::string_view name) const;
  // Recomputes every host's ring (after ring or label changes). O(hosts × rings).
  void recompute_membership();
  // The ring a host belongs to under the current rings.
  int ring_for(const Host& h) const;

  std::vector<HostIndex> dirty_hosts();  // and clears the flags

 private:
  std::vector<Host> hosts_;
  std::unordered_map<std::string, HostIndex> index_;
  std::vector<HostIndex> free_;
  std::vector<Ring> rings_;
  std::map<proto::Labels, std::weak_ptr<const proto::Labels>> interned_;
};

}  // namespace ringfence::server::fleet
