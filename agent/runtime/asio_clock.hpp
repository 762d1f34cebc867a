#pragma once
// The real Clock: system/steady clocks and Asio steady_timers on one io_context. Asio stays out
// of this header. Single-threaded: call it only from the io_context's thread.

#include <map>
#include <memory>

#include "agent/runtime/clock.hpp"

namespace boost::asio {
class io_context;
}

namespace ringfence::agent {

class AsioClock final : public Clock {
 public:
  explicit AsioClock(boost::asio::io_context& io);
  ~AsioClock() override;
  AsioClock(const AsioClock&) = delete;
  AsioClock& operator=(const AsioClock&) = delete;

  std::int64_t wall_ms() const override;
  std::int64_t mono_ms() const override;
  TimerId schedule(std::int64_t delay_ms, std::function<void()> fn) override;
  void cancel(TimerId id) override;

 private:
  struct Timer;
  boost::asio::io_context& io_;
  TimerId next_id_ = 1;
  std::map<TimerId, std::unique_ptr<Timer>> timers_;
};

}  // namespace ringfence::agent
