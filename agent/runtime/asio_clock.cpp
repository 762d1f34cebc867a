#include "agent/runtime/asio_clock.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

namespace ringfence::agent {

struct AsioClock::Timer {
  explicit Timer(boost::asio::io_context& io) : timer(io) {}
  boost::asio::steady_timer timer;
};

AsioClock::AsioClock(boost::asio::io_context& io) : io_(io) {}
AsioClock::~AsioClock() = default;

std::int64_t AsioClock::wall_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t AsioClock::mono_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Clock::TimerId AsioClock::schedule(std::int64_t delay_ms, std::function<void()> fn) {
  TimerId id = next_id_++;
  auto t = std::make_unique<Timer>(io_);
  t->timer.expires_after(std::chrono::milliseconds(delay_ms < 0 ? 0 : delay_ms));
  t->timer.async_wait([this, id, fn = std::move(fn)](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: the Timer may already be gone, touch nothing
    timers_.erase(id);
    fn();
  });
  timers_.emplace(id, std::move(t));
  return id;
}

void AsioClock::cancel(TimerId id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  it->second->timer.cancel();
  timers_.erase(it);
}

}  // namespace ringfence::agent
