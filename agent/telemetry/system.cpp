#include "agent/telemetry/system.hpp"

#include <fstream>
#include <string>

namespace ringfence::agent::telemetry {

std::string ProcSystemInfo::boot_id() {
  std::ifstream in(boot_id_file_);
  std::string id;
  if (!(in >> id) || id.size() > 64) return "unknown";
  return id;
}

std::int64_t ProcSystemInfo::host_uptime_s() {
  std::ifstream in("/proc/uptime");
  double up = 0;
  if (!(in >> up) || up < 0) return 0;
  return static_cast<std::int64_t>(up);
}

}  // namespace ringfence::agent::telemetry
