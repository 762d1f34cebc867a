#pragma once
// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
// Jitter"): the n-th consecutive failure waits uniform(0, min(cap, base * 2^n)) — so a server
// restart is met by a spread-out trickle, not a thundering herd. A server's Retry-After is a
// floor, with the jitter drawn on top of it. Thread-compatible; the random source is injected for
// tests.

#include <cstdint>
#include <functional>

namespace ringfence::agent {

class Backoff {
 public:
  // rand01 returns a uniform double in [0, 1); the default uses libsodium's CSPRNG.
  explicit Backoff(std::int64_t base_ms = 500, std::int64_t cap_ms = 60'000,
                   std::function<double()> rand01 = {});

  // Delay before the next attempt after one more failure. retry_after_ms > 0 (from the
  // server's Retry-After, itself capped at 10 * cap) is a lower bound: the delay is it plus the
  // usual jittered draw.
  std::int64_t next_delay_ms(std::int64_t retry_after_ms = 0);
  // The upper bound the next call draws from (for tests and logs).
  std::int64_t ceiling_ms() const noexcept;
  void reset() noexcept { failures_ = 0; }
  int failures() const noexcept { return failures_; }

 private:
  std::int64_t base_ms_;
  std::int64_t cap_ms_;
  std::function<double()> rand01_;
  int failures_ = 0;
};

}  // namespace ringfence::agent
