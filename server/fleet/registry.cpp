#include "server/fleet/registry.hpp"

#include <algorithm>

#include "proto/bucket.hpp"

namespace ringfence::server::fleet {

std::shared_ptr<const proto::Labels> Registry::intern(proto::Labels labels) {
  auto it = interned_.find(labels);
  if (it != interned_.end()) {
    if (auto sp = it->second.lock()) return sp;
  }
  auto sp = std::make_shared<const proto::Labels>(labels);
  interned_[std::move(labels)] = sp;
  return sp;
}

HostIndex Registry::upsert(Host h) {
  h.bucket = proto::bucket_of(h.id);
  if (!h.labels) h.labels = intern({});
  h.ring = ring_for(h);
  if (auto it = index_.find(h.id); it != index_.end()) {
    auto& old = hosts_[it->second];
    if (old.ring >= 0) --rings_[static_cast<size_t>(old.ring)].size;
    old = std::move(h);
    if (old.ring >= 0) ++rings_[static_cast<size_t>(old.ring)].size;
    return it->second;
  }
  HostIndex i;
  if (!free_.empty()) {
    i = free_.back();
    free_.pop_back();
    hosts_[i] = std::move(h);
  } else {
    i = static_cast<HostIndex>(hosts_.size());
    hosts_.push_back(std::move(h));
  }
  index_[hosts_[i].id] = i;
  if (hosts_[i].ring >= 0) ++rings_[static_cast<size_t>(hosts_[i].ring)].size;
  return i;
}

void Registry::remove(HostIndex i) {
  auto& h = hosts_[i];
  if (h.deleted) return;
  if (h.ring >= 0) --rings_[static_cast<size_t>(h.ring)].size;
  index_.erase(h.id);
  h = Host{};
  h.deleted = true;
  free_.push_back(i);
}

std::optional<HostIndex> Registry::find(std::string_view host_id) const {
  auto it = index_.find(std::string(host_id));
  if (it == index_.end()) return std::nullopt;
  return it->second;
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
  for (size_t r = 0; r + 1 < rings_.size(); ++r) {
    if (rings_[r].selector.matches(h.id, h.bucket, *view)) return static_cast<int>(r);
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
  for (auto& r : rings_) r.size = 0;
  for (auto& h : hosts_) {
    if (h.deleted) continue;
    h.ring = ring_for(h);
    if (h.ring >= 0) ++rings_[static_cast<size_t>(h.ring)].size;
  }
}

std::vector<HostIndex> Registry::dirty_hosts() {
  std::vector<HostIndex> out;
  for (HostIndex i = 0; i < hosts_.size(); ++i) {
    if (hosts_[i].dirty && !hosts_[i].deleted) {
      out.push_back(i);
      hosts_[i].dirty = false;
    }
  }
  return out;
}

}  // namespace ringfence::server::fleet
