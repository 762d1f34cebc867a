#pragma once
// Facts about the host the agent reports: boot id and uptime. Injected so tests can simulate
// reboots. Thread-compatible.

#include <cstdint>
#include <string>
#include <utility>

namespace ringfence::agent::telemetry {

class SystemInfo {
 public:
  virtual ~SystemInfo() = default;
  // /proc/sys/kernel/random/boot_id: changes on every boot.
  virtual std::string boot_id() = 0;
  // Seconds since the host booted.
  virtual std::int64_t host_uptime_s() = 0;
};

// Linux /proc. Falls back to "unknown" / 0 when /proc is unavailable. The boot id file can be
// another one (--boot-id-file): a host whose /proc boot id is not its own (some containers), or
// a test that simulates reboots of a real agent process.
class ProcSystemInfo final : public SystemInfo {
 public:
  explicit ProcSystemInfo(std::string boot_id_file = "/proc/sys/kernel/random/boot_id")
      : boot_id_file_(std::move(boot_id_file)) {}
  std::string boot_id() override;
  std::int64_t host_uptime_s() override;

 private:
  std::string boot_id_file_;
};

}  // namespace ringfence::agent::telemetry
