#pragma once
// Time is injected: the server reads time only through a Clock, tests use FakeClock.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace ringfence::server {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::int64_t now_ms() const = 0;  // unix milliseconds
};

class SystemClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  std::int64_t now_ms() const override { return now_.load(); }
  void advance_ms(std::int64_t d) { now_ += d; }

 private:
  std::atomic<std::int64_t> now_;
};

}  // namespace ringfence::server
