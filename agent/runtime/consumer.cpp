#include "agent/runtime/consumer.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>

namespace ringfence::agent {

std::vector<std::string> split_command(const std::string& cmd) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : cmd) {
    if (c == ' ') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

namespace {

// fork + exec without a shell. The child dies with the agent (PR_SET_PDEATHSIG) and gets its
// own process group so a stop reaches its children too. Returns -1 on failure.
pid_t spawn(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

struct ProcessConsumerRunner::Impl {
  struct Child {
    std::string channel;  // empty for a check
    std::function<void(ConsumerExit)> on_exit;
    std::unique_ptr<boost::asio::steady_timer> deadline;  // checks only
    bool timed_out = false;
  };

  Impl(boost::asio::io_context& io_, std::vector<std::string> argv_)
      : io(io_), signals(io_, SIGCHLD), argv(std::move(argv_)) {
    wait_for_children();
  }

  void wait_for_children() {
    signals.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      reap();
      wait_for_children();
    });
  }

  void reap() {
    while (true) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      auto it = children.find(pid);
      if (it == children.end()) continue;
      Child child = std::move(it->second);
      children.erase(it);
      if (!child.channel.empty()) {
        auto r = running.find(child.channel);
        if (r != running.end() && r->second == pid) running.erase(r);
      }
      ConsumerExit ex;
      if (WIFSIGNALED(status)) {
        ex.signaled = true;
        ex.code = WTERMSIG(status);
      } else {
        ex.code = WEXITSTATUS(status);
      }
      if (child.timed_out) ex = ConsumerExit{false, -1};
      if (child.on_exit) child.on_exit(ex);
    }
  }

  boost::asio::io_context& io;
  boost::asio::signal_set signals;
  std::vector<std::string> argv;
  std::map<pid_t, Child> children;
  std::map<std::string, pid_t> running;  // channel -> pid of its --run consumer
};

ProcessConsumerRunner::ProcessConsumerRunner(boost::asio::io_context& io,
                                             std::vector<std::string> argv)
    : impl_(new Impl(io, std::move(argv))) {}

ProcessConsumerRunner::~ProcessConsumerRunner() {
  for (auto& [pid, child] : impl_->children) {
    ::kill(-pid, SIGTERM);
    ::kill(pid, SIGTERM);
  }
  delete impl_;
}

void ProcessConsumerRunner::check(const std::string& file, std::int64_t timeout_ms,
                                  std::function<void(Status)> done) {
  auto argv = impl_->argv;
  argv.push_back("--check");
  argv.push_back(file);
  pid_t pid = spawn(argv);
  if (pid < 0) {
    boost::asio::post(
        impl_->io, [done] { done(fail(Errc::Unavailable, "cannot start the consumer's check")); });
    return;
  }
  Impl::Child child;
  child.deadline = std::make_unique<boost::asio::steady_timer>(impl_->io);
  child.deadline->expires_after(std::chrono::milliseconds(timeout_ms));
  child.deadline->async_wait([this, pid](const boost::system::error_code& ec) {
    if (ec) return;
    auto it = impl_->children.find(pid);
    if (it == impl_->children.end()) return;
    it->second.timed_out = true;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
  });
  auto* timer = child.deadline.get();
  child.on_exit = [done, timer, timeout_ms](ConsumerExit ex) {
    timer->cancel();
    if (!ex.signaled && ex.code == 0) return done({});
    if (!ex.signaled && ex.code == -1) {
      return done(
          fail(Errc::Unprocessable, "check timed out after " + std::to_string(timeout_ms) + " ms"));
    }
    done(fail(Errc::Unprocessable, ex.signaled
                                       ? "check died on signal " + std::to_string(ex.code)
                                       : "check exited with status " + std::to_string(ex.code)));
  };
  impl_->children.emplace(pid, std::move(child));
  boost::asio::post(impl_->io, [this] { impl_->reap(); });  // it may already have exited
}

bool ProcessConsumerRunner::run(const std::string& channel, const std::string& file,
                                std::function<void(ConsumerExit)> on_exit) {
  stop(channel);
  auto argv = impl_->argv;
  argv.push_back("--run");
  argv.push_back(file);
  pid_t pid = spawn(argv);
  if (pid < 0) return false;
  spdlog::info("consumer for {} started (pid {}) on {}", channel, pid, file);
  Impl::Child child;
  child.channel = channel;
  child.on_exit = std::move(on_exit);
  impl_->children.emplace(pid, std::move(child));
  impl_->running[channel] = pid;
  boost::asio::post(impl_->io, [this] { impl_->reap(); });
  return true;
}

void ProcessConsumerRunner::stop(const std::string& channel) {
  auto it = impl_->running.find(channel);
  if (it == impl_->running.end()) return;
  pid_t pid = it->second;
  impl_->running.erase(it);
  auto c = impl_->children.find(pid);
  if (c != impl_->children.end()) c->second.on_exit = nullptr;  // a stop is not a crash
  ::kill(-pid, SIGTERM);
  ::kill(pid, SIGTERM);
}

bool ProcessConsumerRunner::running(const std::string& channel) const {
  return impl_->running.count(channel) > 0;
}

}  // namespace ringfence::agent
