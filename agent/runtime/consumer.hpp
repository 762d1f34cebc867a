#pragma once
// The content consumer: the program that really parses the content (DESIGN.md, "the
// consumer's own parser"). `--consumer CMD` is split on spaces into argv (no shell); the agent
// runs `CMD --check FILE` before activating a file and keeps `CMD --run FILE` running per
// channel with the active content. An exit on a signal is a crash.
//
// Threading: callbacks run on the agent's loop thread.

#include <functional>
#include <string>
#include <vector>

#include "proto/error.hpp"

namespace boost::asio {
class io_context;
}

namespace ringfence::agent {

struct ConsumerExit {
  bool signaled = false;  // killed by a signal (a crash)
  int code = 0;           // exit status, or the signal number when signaled
};

class ConsumerRunner {
 public:
  virtual ~ConsumerRunner() = default;
  // Runs `CMD --check file`; done(ok) on exit 0, done(Unprocessable "...") otherwise (and after
  // timeout_ms, when the check is killed).
  virtual void check(const std::string& file, std::int64_t timeout_ms,
                     std::function<void(Status)> done) = 0;
  // Starts `CMD --run file` for channel (stopping a previous one); on_exit runs once when it
  // exits by itself. Returns false (and logs) if it could not be started.
  virtual bool run(const std::string& channel, const std::string& file,
                   std::function<void(ConsumerExit)> on_exit) = 0;
  // Stops the channel's consumer (SIGTERM) without calling its on_exit.
  virtual void stop(const std::string& channel) = 0;
  virtual bool running(const std::string& channel) const = 0;
};

// Splits a command line on spaces (runs of spaces are one separator; no quoting).
std::vector<std::string> split_command(const std::string& cmd);

// fork/exec processes reaped through SIGCHLD on the io_context. The children die with the
// agent (PR_SET_PDEATHSIG), so a killed agent never leaves an orphaned consumer behind.
class ProcessConsumerRunner final : public ConsumerRunner {
 public:
  ProcessConsumerRunner(boost::asio::io_context& io, std::vector<std::string> argv);
  ~ProcessConsumerRunner() override;
  ProcessConsumerRunner(const ProcessConsumerRunner&) = delete;
  ProcessConsumerRunner& operator=(const ProcessConsumerRunner&) = delete;

  void check(const std::string& file, std::int64_t timeout_ms,
             std::function<void(Status)> done) override;
  bool run(const std::string& channel, const std::string& file,
           std::function<void(ConsumerExit)> on_exit) override;
  void stop(const std::string& channel) override;
  bool running(const std::string& channel) const override;

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace ringfence::agent
