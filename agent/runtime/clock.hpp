#pragma once
// Time and timers, injected. The agent never reads the system clock or arms an Asio timer
// directly: it asks a Clock, so tests drive time with a fake (tests/agent/fakes.hpp) and the
// real one (AsioClock) runs on the agent's single io_context thread.
//
// Threading: a Clock and the callbacks it fires belong to one thread (the event loop).

#include <cstdint>
#include <functional>
#include <memory>

namespace ringfence::agent {

class Clock {
 public:
  using TimerId = std::uint64_t;
  virtual ~Clock() = default;
  // Wall-clock time in unix milliseconds (report times, manifest expiry).
  virtual std::int64_t wall_ms() const = 0;
  // Monotonic milliseconds since an arbitrary origin (intervals, timeouts).
  virtual std::int64_t mono_ms() const = 0;
  // Runs fn once, no earlier than delay_ms from now, on the loop thread. Returns an id that
  // cancel() accepts; ids are never reused.
  virtual TimerId schedule(std::int64_t delay_ms, std::function<void()> fn) = 0;
  // Cancels a pending timer; a no-op for one that already ran or was cancelled.
  virtual void cancel(TimerId id) = 0;
};

}  // namespace ringfence::agent
