#pragma once
// Facts about the host the agent reports: boot id and uptime. Injected so tests can simulate
// reboots. Thread-compatible.

#include <cstdint>
#include <string>

namespace ringfence::agent::telemetry {

class SystemInfo {
 public:
  virtual ~SystemInfo() = default;
  // /proc/sys/kernel/random/boot_id: changes on every boot.
  virtual std::string boot_id() = 0;
  // Seconds since the host booted.
  virtual std::int64_t host_uptime_s() = 0;
};

// Linux /proc. Falls back to "unknown" / 0 when /proc is unavailable.
class ProcSystemInfo final : public SystemInfo {
 public:
  std::string boot_id() override;
  std::int64_t host_uptime_s() override;
};

}  // namespace ringfence::agent::telemetry
