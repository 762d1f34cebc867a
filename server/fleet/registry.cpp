#include "server/fleet/registry.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "proto/bucket.hpp"
#include "proto/ids.hpp"
#include "proto/signing.hpp"

namespace ringfence::server::fleet {
namespace {

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr char kHex[] = "0123456789abcdef";

[[noreturn]] void invariant_failed(const char* what, std::string_view value) {
  std::fprintf(stderr, "ringfence: fleet registry: %s: '%.*s'\n", what,
               static_cast<int>(value.size()), value.data());
  std::abort();
}

}  // namespace

HostId::HostId(std::string_view s) {
  if (!proto::is_uuid(s)) invariant_failed("not a canonical host id", s);
  std::size_t k = 0;
  for (std::size_t i = 0; i < s.size(); i += 2) {
    if (s[i] == '-') ++i;
    b_[k++] = static_cast<std::uint8_t>(hex_value(s[i]) << 4 | hex_value(s[i + 1]));
  }
}

std::array<char, 36> HostId::text() const noexcept {
  std::array<char, 36> out{};
  std::size_t o = 0;
  for (std::size_t k = 0; k < 16; ++k) {
    if (k == 4 || k == 6 || k == 8 || k == 10) out[o++] = '-';
    out[o++] = kHex[b_[k] >> 4];
    out[o++] = kHex[b_[k] & 15];
  }
  return out;
}

std::string HostId::str() const {
  auto t = text();
  return std::string(t.data(), t.size());
}

Digest32 Digest32::from_hex(std::string_view hex) {
  Digest32 d;
  if (hex.size() != 64) invariant_failed("not a sha256 hex digest", hex);
  for (std::size_t k = 0; k < 32; ++k) {
    int hi = hex_value(hex[2 * k]), lo = hex_value(hex[2 * k + 1]);
    if (hi < 0 || lo < 0) invariant_failed("not a sha256 hex digest", hex);
    d.bytes[k] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return d;
}

std::string Digest32::hex() const {
  std::string out(64, '0');
  for (std::size_t k = 0; k < 32; ++k) {
    out[2 * k] = kHex[bytes[k] >> 4];
    out[2 * k + 1] = kHex[bytes[k] & 15];
  }
  return out;
}

bool Digest32::equals(const Digest32& o) const noexcept {
  auto view = [](const Digest32& d) {
    return std::string_view(reinterpret_cast<const char*>(d.bytes.data()), d.bytes.size());
  };
  return proto::constant_time_equal(view(*this), view(o));
}

std::size_t Registry::slot_of(const HostId& id) const noexcept {
  // Mixes both halves (host ids need not be random: UUIDv1/v7 share long prefixes).
  std::uint64_t a = 0, b = 0;
  for (int k = 0; k < 8; ++k) {
    a = a << 8 | id.bytes()[static_cast<std::size_t>(k)];
    b = b << 8 | id.bytes()[static_cast<std::size_t>(k + 8)];
  }
  std::uint64_t h = a * 0x9e3779b97f4a7c15ULL ^ b;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return static_cast<std::size_t>(h) & (index_.size() - 1);
}

void Registry::index_grow(std::size_t want) {
  std::size_t n = 16;
  while (n < 2 * want) n *= 2;
  if (n <= index_.size()) return;
  index_.assign(n, kEmptySlot);
  for (HostIndex i = 0; i < hosts_.size(); ++i) {
    if (!hosts_[i].deleted) index_insert(i);
  }
}

void Registry::index_insert(HostIndex i) {
  std::size_t mask = index_.size() - 1;
  for (std::size_t s = slot_of(hosts_[i].id);; s = (s + 1) & mask) {
    if (index_[s] == kEmptySlot) {
      index_[s] = i;
      return;
    }
  }
}

void Registry::index_erase(const HostId& id) {
  if (index_.empty()) return;
  std::size_t mask = index_.size() - 1;
  std::size_t s = slot_of(id);
  for (;; s = (s + 1) & mask) {
    if (index_[s] == kEmptySlot) return;
    if (hosts_[index_[s]].id == id) break;
  }
  // Backward-shift deletion: move later members of the probe run into the hole.
  for (std::size_t hole = s, next = (s + 1) & mask;; next = (next + 1) & mask) {
    if (index_[next] == kEmptySlot) {
      index_[hole] = kEmptySlot;
      return;
    }
    std::size_t home = slot_of(hosts_[index_[next]].id);
    // next may fill the hole when its home is not in (hole, next] (cyclically).
    bool stays = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next);
    if (!stays) {
      index_[hole] = index_[next];
      hole = next;
    }
  }
}

std::optional<HostIndex> Registry::find(const HostId& id) const {
  if (index_.empty()) return std::nullopt;
  std::size_t mask = index_.size() - 1;
  for (std::size_t s = slot_of(id);; s = (s + 1) & mask) {
    if (index_[s] == kEmptySlot) return std::nullopt;
    if (hosts_[index_[s]].id == id) return index_[s];
  }
}

std::optional<HostIndex> Registry::find(std::string_view host_id) const {
  if (!proto::is_uuid(host_id)) return std::nullopt;
  return find(HostId(host_id));
}

void Registry::reserve(std::size_t hosts) {
  hosts_.reserve(hosts);
  index_grow(hosts);
}

std::shared_ptr<const proto::Labels> Registry::intern(proto::Labels labels) {
  auto it = interned_.find(labels);
  if (it != interned_.end()) {
    if (auto sp = it->second.lock()) return sp;
  }
  auto sp = std::make_shared<const proto::Labels>(labels);
  interned_[std::move(labels)] = sp;
  // Amortised O(1): the expired entries go once the table has doubled (hosts change consumer
  // versions by heartbeat; a table that only grew would be memory any host could claim).
  if (interned_.size() > 2 * interned_after_sweep_ + 16) {
    std::erase_if(interned_, [](const auto& kv) { return kv.second.expired(); });
    interned_after_sweep_ = interned_.size();
  }
  return sp;
}

void Registry::set_bucket_key(const proto::BucketKey& key) {
  bucket_key_ = key;
  for (auto& h : hosts_) {
    if (h.deleted) continue;
    auto text = h.id.text();
    h.bucket = proto::bucket_of(bucket_key_, std::string_view(text.data(), text.size()));
  }
  recompute_membership();
}

HostIndex Registry::upsert(Host h) {
  auto text = h.id.text();
  h.bucket = proto::bucket_of(bucket_key_, std::string_view(text.data(), text.size()));
  if (!h.labels) h.labels = intern({});
  h.ring = ring_for(h);
  if (auto found = find(h.id)) {
    auto& old = hosts_[*found];
    ++membership_version_;
    if (old.ring >= 0) --rings_[static_cast<size_t>(old.ring)].size;
    old = std::move(h);
    if (old.ring >= 0) ++rings_[static_cast<size_t>(old.ring)].size;
    return *found;
  }
  if (2 * (live_ + 1) > index_.size()) index_grow(std::max<std::size_t>(live_ + 1, 2 * live_));
  HostIndex i;
  if (!free_.empty()) {
    i = free_.back();
    free_.pop_back();
    hosts_[i] = std::move(h);
  } else {
    i = static_cast<HostIndex>(hosts_.size());
    hosts_.push_back(std::move(h));
  }
  index_insert(i);
  ++live_;
  if (hosts_[i].ring >= 0) ++rings_[static_cast<size_t>(hosts_[i].ring)].size;
  return i;
}

void Registry::remove(HostIndex i) {
  auto& h = hosts_[i];
  if (h.deleted) return;
  ++membership_version_;
  if (h.ring >= 0) --rings_[static_cast<size_t>(h.ring)].size;
  index_erase(h.id);
  --live_;
  h = Host{};
  h.deleted = true;
  free_.push_back(i);
}

int Registry::ring_for(const Host& h) const {
  if (rings_.empty()) return -1;
  static const proto::Labels kEmpty;
  const auto& labels = h.labels ? *h.labels : kEmpty;
  proto::Labels with_tenant;
  const proto::Labels* view = &labels;
  if (!h.tenant.empty() && !labels.count("tenant")) {
    with_tenant = labels;
    with_tenant["tenant"] = h.tenant;
    view = &with_tenant;
  }
  auto id = h.id.text();
  for (size_t r = 0; r + 1 < rings_.size(); ++r) {
    if (rings_[r].selector.matches(std::string_view(id.data(), id.size()), h.bucket, *view)) {
      return static_cast<int>(r);
    }
  }
  return static_cast<int>(rings_.size() - 1);  // the last ring catches everyone else
}

void Registry::set_rings(std::vector<Ring> rings) {
  std::sort(rings.begin(), rings.end(), [](const Ring& a, const Ring& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.name < b.name;
  });
  rings_ = std::move(rings);
  recompute_membership();
}

int Registry::ring_index(std::string_view name) const {
  for (size_t i = 0; i < rings_.size(); ++i) {
    if (rings_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

void Registry::recompute_membership() {
  ++membership_version_;
  for (auto& r : rings_) r.size = 0;
  for (auto& h : hosts_) {
    if (h.deleted) continue;
    h.ring = ring_for(h);
    if (h.ring >= 0) ++rings_[static_cast<size_t>(h.ring)].size;
  }
}

void Registry::mark_dirty(HostIndex i) {
  auto& h = hosts_[i];
  if (h.dirty) return;
  h.dirty = true;
  dirty_.push_back(i);
}

void Registry::mark_seen(HostIndex i) {
  auto& h = hosts_[i];
  if (h.seen_queued || h.dirty) return;
  h.seen_queued = true;
  seen_.push_back(i);
}

std::vector<HostIndex> Registry::seen_hosts(std::size_t max) {
  std::vector<HostIndex> out;
  while (!seen_.empty() && out.size() < max) {
    auto i = seen_.front();
    seen_.pop_front();
    auto& h = hosts_[i];
    if (!h.seen_queued) continue;  // a stale entry (slot removed, or flushed as dirty)
    h.seen_queued = false;
    if (!h.deleted && !h.dirty) out.push_back(i);
  }
  return out;
}

std::vector<HostIndex> Registry::dirty_hosts(std::size_t max) {
  std::vector<HostIndex> out;
  out.reserve(std::min(max, dirty_.size()));
  while (!dirty_.empty() && out.size() < max) {
    auto i = dirty_.front();
    dirty_.pop_front();
    // A removed (or removed and re-used) slot may be listed twice or no longer be dirty.
    if (hosts_[i].dirty && !hosts_[i].deleted) {
      out.push_back(i);
      hosts_[i].dirty = false;
    }
  }
  std::sort(out.begin(), out.end());  // the store sees hosts in index order, as before
  return out;
}

}  // namespace ringfence::server::fleet
