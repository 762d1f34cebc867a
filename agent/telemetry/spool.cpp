#include "agent/telemetry/spool.hpp"

#include <algorithm>
#include <set>

namespace ringfence::agent::telemetry {

Spool::Spool(Fs& fs, std::string path, std::size_t capacity)
    : fs_(fs), path_(std::move(path)), capacity_(capacity) {}

std::string Spool::key(const proto::Report& r) {
  return std::string(proto::to_string(r.kind)) + "|" + std::to_string(r.time) + "|" + r.boot_id +
         "|" + r.channel.value_or("") + "|" + std::to_string(r.version.value_or(0));
}

Status Spool::load() {
  reports_.clear();
  auto text = fs_.read(path_);
  if (!text) {
    if (text.error().errc == Errc::NotFound) return {};
    return tl::unexpected(text.error());
  }
  auto decoded = proto::decode_reports(*text);
  if (!decoded) {
    (void)fs_.install(path_, path_ + ".corrupt");
    return fail(Errc::InvalidArgument,
                "report spool was corrupt and was set aside: " + decoded.error().message);
  }
  reports_ = std::move(*decoded);
  return {};
}

Expected<bool> Spool::add(proto::Report r) {
  for (const auto& q : reports_) {
    if (key(q) == key(r)) return false;
  }
  // Same kind and boot in the same millisecond: the server would merge them, so nudge the time.
  while (std::any_of(reports_.begin(), reports_.end(), [&](const proto::Report& q) {
    return q.kind == r.kind && q.boot_id == r.boot_id && q.time == r.time;
  })) {
    ++r.time;
  }
  reports_.push_back(std::move(r));
  if (reports_.size() > capacity_) {
    reports_.erase(reports_.begin(),
                   reports_.begin() + static_cast<std::ptrdiff_t>(reports_.size() - capacity_));
  }
  if (auto st = persist(); !st) return tl::unexpected(st.error());
  return true;
}

std::vector<proto::Report> Spool::batch(std::size_t max) const {
  std::size_t n = std::min(max, reports_.size());
  return {reports_.begin(), reports_.begin() + static_cast<std::ptrdiff_t>(n)};
}

Status Spool::ack(const std::vector<proto::Report>& sent) {
  std::set<std::string> keys;
  for (const auto& r : sent) keys.insert(key(r));
  auto before = reports_.size();
  std::erase_if(reports_, [&](const proto::Report& r) { return keys.count(key(r)) > 0; });
  if (reports_.size() == before) return {};
  return persist();
}

Status Spool::persist() { return fs_.write_atomic(path_, proto::encode(reports_), 0600); }

}  // namespace ringfence::agent::telemetry
