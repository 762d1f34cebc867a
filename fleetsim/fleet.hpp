#pragma once
// The simulated fleet: many hosts, each speaking the real agent protocol (proto/messages.hpp)
// through one HttpClient — enroll, long-poll or poll the desired state, download (once per
// sha256, cached) and verify signed content, heartbeat, report — and reacting to each content
// version by its crash model (fleetsim/model.hpp) or by what the sample consumer makes of the
// content (--model-from-content).
//
// Threading: one io_context run by one thread; every member function on that thread. The fleet
// schedules its own work with one timer (a time-ordered queue of per-host events), so 100 000
// hosts cost 100 000 small structs, not 100 000 timers.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fleetsim/http_client.hpp"
#include "fleetsim/model.hpp"

namespace ringfence::fleetsim {

struct FleetOptions {
  std::string enroll_token;
  std::size_t hosts = 100;
  std::size_t long_poll_hosts = 100;   // the first this many hosts hold a long poll each
  std::int64_t long_poll_wait_s = 30;  // wait= of every long poll
  ModelTable models;
  bool model_from_content = false;
  double background_crash_rate = 0;  // crashes per host per hour, any version
  // What set_background_factor(true) multiplies the background by: a fleet-wide rise that has
  // nothing to do with any release (a bad OS patch, a heat wave in one data centre).
  double background_rise = 5;
  double heartbeat_scale = 1.0;  // multiplies the server's heartbeat/poll intervals
  // The agent's crash-loop guard: a host that boot-loops silently (silent:P, or content the
  // sample consumer crashes on) comes back after crash_loop_k boots of boot_loop_ms each, on its
  // last-known-good content, and reports the crash and a local_rollback. 0 = never (it stays
  // down for good).
  int crash_loop_k = 2;
  std::int64_t boot_loop_ms = 60'000;
  // Consumer name -> the versions of it in the fleet with their weights; each host picks one
  // per name and reports it in its heartbeats (validation against every version in the field).
  std::map<std::string, std::vector<std::pair<std::string, double>>> consumer_versions;
  // The consumer whose version (a number of values, fleetsim/sample_content.hpp) decides what
  // --model-from-content does on each host; hosts without it use the content's own rule.
  std::string content_consumer = "sensor";
  std::size_t enroll_concurrency = 64;
  std::uint64_t seed = 1;
};

class Fleet {
 public:
  Fleet(boost::asio::io_context& io, HttpClient& client, FleetOptions options);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Fetches the signing key (retrying until the server answers), then enrolls every host.
  void start();
  // Stops scheduling; requests in flight are abandoned by the caller's HttpClient::shutdown().
  void stop();

  // Turns the fleet-wide background rise on (background_crash_rate x background_rise) or off.
  // Every live host's next background crash is drawn again at the new rate (the exponential is
  // memoryless, so this is exact), from now on.
  void set_background_rise(bool on);

  // One progress line (no newline).
  std::string status_line() const;
  // The JSON summary (--report): per channel/version where hosts ended, crashes, silent hosts,
  // requests sent, errors.
  std::string summary_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringfence::fleetsim
