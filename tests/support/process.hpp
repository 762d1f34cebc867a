#pragma once
// Real child processes for integration tests: spawn with argv/env, read stdout lines until a
// pattern appears (with a deadline), signal, wait. No shell is involved.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ringfence::testing {

class Process {
 public:
  // Starts argv[0] (a path) with argv; extra_env is added to the current environment.
  // stdout is captured through a pipe (read with wait_for_line / drain); stderr goes to the
  // test's stderr unless stderr_path is set, in which case it is appended there.
  static Process start(const std::vector<std::string>& argv,
                       const std::map<std::string, std::string>& extra_env = {},
                       const std::string& stderr_path = {});
  Process() = default;
  Process(Process&& o) noexcept;
  Process& operator=(Process&& o) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();  // SIGKILLs and reaps a still-running child

  pid_t pid() const noexcept { return pid_; }
  bool running();
  // Reads stdout until a line containing `needle` appears; returns that line, or nullopt at the
  // deadline or EOF. Lines read are kept in output().
  std::optional<std::string> wait_for_line(const std::string& needle,
                                           std::chrono::milliseconds deadline);
  // Reads whatever stdout has without blocking.
  void drain();
  const std::string& output() const noexcept { return out_; }
  void signal(int sig);
  // Waits up to deadline for exit; returns the raw wait status, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds deadline);

 private:
  void reset();
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string out_;
  std::size_t scanned_ = 0;
};

// A fresh temporary directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// Polls `pred` every 10 ms until true or the deadline passes; returns the last result.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > end) return false;
    struct timespec ts{0, 10'000'000};
    nanosleep(&ts, nullptr);
  }
}

// Path of a built program, from the RINGFENCE_BIN_DIR the CMake test sets, e.g. "server/ringfence-server".
std::string built_program(const std::string& relative);

// The whole file as bytes; empty when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace ringfence::testing
