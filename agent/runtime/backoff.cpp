#include "agent/runtime/backoff.hpp"

#include <sodium.h>

#include <algorithm>

namespace ringfence::agent {

Backoff::Backoff(std::int64_t base_ms, std::int64_t cap_ms, std::function<double()> rand01)
    : base_ms_(std::max<std::int64_t>(1, base_ms)),
      cap_ms_(std::max(base_ms_, cap_ms)),
      rand01_(std::move(rand01)) {
  if (!rand01_) {
    rand01_ = [] {
      if (sodium_init() < 0) return 0.5;
      return static_cast<double>(randombytes_uniform(1'000'000)) / 1'000'000.0;
    };
  }
}

std::int64_t Backoff::ceiling_ms() const noexcept {
  int shift = std::min(failures_, 30);
  std::int64_t c = base_ms_ << shift;
  return std::min(cap_ms_, c);
}

std::int64_t Backoff::next_delay_ms(std::int64_t retry_after_ms) {
  std::int64_t ceiling = ceiling_ms();
  ++failures_;
  double r = std::clamp(rand01_(), 0.0, 0.999999);
  auto delay = static_cast<std::int64_t>(r * static_cast<double>(ceiling + 1));
  // Retry-After is a floor, and the jitter goes on top of it: a fleet told "1 s" all at once must
  // not come back all at once.
  if (retry_after_ms > 0) delay += std::min(retry_after_ms, cap_ms_ * 10);
  return delay;
}

}  // namespace ringfence::agent
