#pragma once
// The report spool: reports wait on disk (one JSON file, replaced atomically) until the server
// acknowledges them, so crash and rollback reports survive both an unreachable server and a
// killed agent. Deduplicated by (kind, time, boot_id, channel, version) — the same key the
// server dedups by (host, boot_id, kind, time) — so a report re-queued after a restart is sent
// once. Two different reports of one kind in the same millisecond get distinct times.
//
// Threading: thread-compatible; owned by the agent's loop thread.

#include <cstddef>
#include <string>
#include <vector>

#include "agent/content/fs.hpp"
#include "proto/messages.hpp"

namespace ringfence::agent::telemetry {

class Spool {
 public:
  // path: the spool file; capacity: oldest reports are dropped beyond it.
  Spool(Fs& fs, std::string path, std::size_t capacity = 1000);

  // Loads the file; a missing file is an empty spool, a corrupt one is set aside (renamed to
  // .corrupt) and reported as an error so the agent can log it.
  Status load();
  // Adds a report unless an equal key is already queued; persists. Returns false for a dup.
  Expected<bool> add(proto::Report r);
  // Up to max reports, oldest first, for one POST.
  std::vector<proto::Report> batch(std::size_t max = proto::kMaxReportsPerBatch) const;
  // Drops the given reports (acknowledged by the server); persists.
  Status ack(const std::vector<proto::Report>& sent);
  std::size_t size() const noexcept { return reports_.size(); }
  const std::vector<proto::Report>& reports() const noexcept { return reports_; }

  static std::string key(const proto::Report& r);

 private:
  Status persist();
  Fs& fs_;
  std::string path_;
  std::size_t capacity_;
  std::vector<proto::Report> reports_;
};

}  // namespace ringfence::agent::telemetry
