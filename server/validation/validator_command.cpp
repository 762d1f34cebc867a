#include "server/validation/validator_command.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "proto/json_fields.hpp"
#include "proto/try.hpp"

namespace ringfence::server::validation {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#define RF_HAVE_ADDCLOSEFROM 1
#endif

// After the command exits, output still in flight (or held by a straggler outside its process
// group) is read for at most this long.
constexpr std::chrono::milliseconds kDrainAfterExit{500};

// The whole environment of a validator: nothing of the server's (tokens, paths) leaks in.
const char* const kEnv[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "HOME=/", nullptr};

bool has_nul(const std::string& s) { return s.find('\0') != std::string::npos; }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Owns the spawn attribute/file-action objects for the duration of one spawn.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

std::string substitute(std::string arg, const std::string& path, bool& used) {
  std::size_t pos = 0;
  while ((pos = arg.find(kFileToken, pos)) != std::string::npos) {
    arg.replace(pos, kFileToken.size(), path);
    pos += path.size();
    used = true;
  }
  return arg;
}

// The output ends up in JSON answers and logs: replace every byte that is not part of a
// well-formed UTF-8 sequence (including a sequence cut by the cap) with U+FFFD.
std::string to_valid_utf8(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    auto b = static_cast<unsigned char>(in[i]);
    std::size_t len = b < 0x80                   ? 1
                      : (b >= 0xC2 && b <= 0xDF) ? 2
                      : (b >= 0xE0 && b <= 0xEF) ? 3
                      : (b >= 0xF0 && b <= 0xF4) ? 4
                                                 : 0;
    bool ok = len != 0 && i + len <= in.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
    }
    if (ok && len >= 3) {  // no overlong forms, surrogates or code points above U+10FFFF
      auto b1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(b == 0xE0 && b1 < 0xA0) && !(b == 0xED && b1 > 0x9F) && !(b == 0xF0 && b1 < 0x90) &&
           !(b == 0xF4 && b1 > 0x8F);
    }
    if (ok) {
      out.append(in, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// Collects the child's output, keeping the first kMaxOutputBytes.
class OutputSink {
 public:
  // Reads what the pipe holds now; returns false at EOF.
  bool read_available(int fd) {
    char buf[8192];
    while (true) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        std::size_t take = std::min(static_cast<std::size_t>(n), kMaxOutputBytes - out_.size());
        out_.append(buf, take);
        dropped_ += static_cast<std::size_t>(n) - take;
        continue;
      }
      if (n == 0) return false;
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;  // other errors: treat as EOF
    }
  }
  std::string take() {
    out_ = to_valid_utf8(out_);
    if (dropped_ > 0) {
      out_ += "\n[ringfence: " + std::to_string(dropped_) + " more bytes of output dropped]\n";
    }
    return std::move(out_);
  }

 private:
  std::string out_;
  std::size_t dropped_ = 0;
};

int poll_ms(Clock::time_point deadline, int cap_ms) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, cap_ms));
}

// True once the child has exited; leaves it a zombie (WNOWAIT) so that its pid — and with it the
// process group id — cannot be reused before we have killed the group.
bool child_exited(pid_t pid) {
  siginfo_t info{};
  while (true) {
    int rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (rc == 0) return info.si_pid == pid;
    if (errno != EINTR) return true;  // ECHILD: nothing left to wait for
  }
}

}  // namespace

Expected<ValidatorCommand> parse_command(const json& j) {
  RF_CHECK(proto::require_object(j, "validator"));
  RF_CHECK(proto::only_keys(j, {"argv", "timeout_s"}));
  auto a = j.find("argv");
  if (a == j.end() || !a->is_array() || a->empty() || a->size() > kMaxArgs) {
    return fail(Errc::InvalidArgument,
                "field 'argv' must be an array of 1 to " + std::to_string(kMaxArgs) + " strings");
  }
  ValidatorCommand c;
  for (const auto& arg : *a) {
    if (!arg.is_string()) return fail(Errc::InvalidArgument, "field 'argv' must hold strings");
    const auto& s = arg.get_ref<const std::string&>();
    if (s.size() > kMaxArgBytes || has_nul(s)) {
      return fail(Errc::InvalidArgument, "field 'argv' holds an argument longer than " +
                                             std::to_string(kMaxArgBytes) +
                                             " bytes or with a NUL byte");
    }
    c.argv.push_back(s);
  }
  const std::string& prog = c.argv[0];
  if (prog.size() < 2 || prog[0] != '/' || prog.find(kFileToken) != std::string::npos ||
      prog.find(kConsumerVersionToken) != std::string::npos) {
    return fail(Errc::InvalidArgument,
                "field 'argv' must start with the absolute path of the validator program");
  }
  RF_TRY(timeout, proto::get_opt_int(j, "timeout_s", 1, kMaxTimeout.count() / 1000));
  if (timeout) c.timeout = std::chrono::seconds(*timeout);
  return c;
}

bool takes_consumer_version(const std::vector<std::string>& argv) {
  return std::any_of(argv.begin(), argv.end(), [](const std::string& a) {
    return a.find(kConsumerVersionToken) != std::string::npos;
  });
}

std::vector<std::string> with_consumer_version(std::vector<std::string> argv,
                                               std::string_view version) {
  for (std::size_t k = 1; k < argv.size(); ++k) {
    auto& arg = argv[k];
    for (auto pos = arg.find(kConsumerVersionToken); pos != std::string::npos;
         pos = arg.find(kConsumerVersionToken, pos + version.size())) {
      arg.replace(pos, kConsumerVersionToken.size(), version);
    }
  }
  return argv;
}

json command_json(const ValidatorCommand& c) {
  auto secs = std::chrono::ceil<std::chrono::seconds>(c.timeout).count();
  return json{{"argv", c.argv}, {"timeout_s", secs}};
}

Expected<CommandResult> run_validator(const std::vector<std::string>& argv, const std::string& file,
                                      std::chrono::milliseconds timeout) {
  if (argv.empty()) return fail(Errc::InvalidArgument, "validator command is empty");
  if (timeout <= std::chrono::milliseconds::zero()) {
    return fail(Errc::InvalidArgument, "validator timeout must be positive");
  }
  for (const auto& arg : argv) {
    if (has_nul(arg)) return fail(Errc::InvalidArgument, "validator argument has a NUL byte");
  }
  const std::string& prog = argv[0];
  struct stat st {};
  if (prog.empty() || prog[0] != '/') {
    return fail(Errc::InvalidArgument, "validator program must be an absolute path");
  }
  if (::stat(prog.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(prog.c_str(), X_OK) != 0) {
    return fail(Errc::InvalidArgument,
                "validator program '" + prog + "' is not an executable file");
  }
  if (file.empty() || has_nul(file)) return fail(Errc::InvalidArgument, "invalid content path");
  std::error_code ec;
  std::string path = std::filesystem::absolute(file, ec).string();
  if (ec || ::stat(path.c_str(), &st) != 0) {
    return fail(Errc::NotFound, "content file '" + file + "' does not exist");
  }

  std::vector<std::string> args;
  bool used = false;
  args.push_back(prog);
  for (std::size_t i = 1; i < argv.size(); ++i) args.push_back(substitute(argv[i], path, used));
  if (!used) args.push_back(path);
  std::vector<char*> av;
  for (auto& s : args) av.push_back(s.data());
  av.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return fail(Errc::Unavailable, std::string("pipe: ") + std::strerror(errno));
  }
  Fd rfd(fds[0]);
  Fd wfd(fds[1]);

  SpawnSetup setup;
  posix_spawn_file_actions_addopen(&setup.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&setup.actions, wfd.get(), 1);
  posix_spawn_file_actions_adddup2(&setup.actions, wfd.get(), 2);
#ifdef RF_HAVE_ADDCLOSEFROM
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3);  // fds the server forgot to mark
#endif
  posix_spawn_file_actions_addchdir_np(&setup.actions, "/");
  sigset_t none;
  sigemptyset(&none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig = 1; sig < 32; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaddset(&defaults, sig);
  }
  posix_spawnattr_setpgroup(&setup.attr, 0);  // its own group, so a timeout kills its children
  posix_spawnattr_setsigmask(&setup.attr, &none);
  posix_spawnattr_setsigdefault(&setup.attr, &defaults);  // e.g. undo an ignored SIGPIPE
  posix_spawnattr_setflags(&setup.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, prog.c_str(), &setup.actions, &setup.attr, av.data(),
                         const_cast<char* const*>(kEnv));
  wfd.reset();  // the child holds the only write end now: EOF means it (and its group) closed it
  if (rc != 0) {
    if (rc == ENOEXEC || rc == EACCES || rc == ENOENT) {
      return fail(Errc::InvalidArgument,
                  "cannot execute validator '" + prog + "': " + std::strerror(rc));
    }
    return fail(Errc::Unavailable, "cannot start validator '" + prog + "': " + std::strerror(rc));
  }
  ::fcntl(rfd.get(), F_SETFL, ::fcntl(rfd.get(), F_GETFL) | O_NONBLOCK);
  // A pidfd turns "the child exited" into a poll event; without one (old kernels) poll in slices.
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  OutputSink sink;
  bool eof = false;
  bool killed = false;
  const auto deadline = Clock::now() + timeout;
  while (!child_exited(pid)) {
    if (Clock::now() >= deadline) {
      ::kill(-pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd pfds[2];
    nfds_t n = 0;
    if (!eof) pfds[n++] = pollfd{rfd.get(), POLLIN, 0};
    if (pidfd.get() >= 0) pfds[n++] = pollfd{pidfd.get(), POLLIN, 0};
    int slice = pidfd.get() >= 0 ? 60'000 : 10;
    int prc = ::poll(pfds, n, poll_ms(deadline, slice));
    if (prc < 0 && errno != EINTR) break;  // cannot happen with valid fds; reap below
    if (!eof && prc > 0 && pfds[0].revents != 0) eof = !sink.read_available(rfd.get());
  }
  // Whatever it left running in its group goes with it. The child itself is a zombie or dying,
  // so its pid (the group id) is still ours to signal.
  ::kill(-pid, SIGKILL);
  const auto drain_until = Clock::now() + kDrainAfterExit;
  while (!eof) {
    int ms = poll_ms(drain_until, 1'000);
    pollfd p{rfd.get(), POLLIN, 0};
    int prc = ::poll(&p, 1, ms);
    if (prc < 0 && errno == EINTR) continue;
    if (prc <= 0) break;  // a straggler outside the group still holds the pipe: give up on it
    eof = !sink.read_available(rfd.get());
  }

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return fail(Errc::Internal, "validator process " + std::to_string(pid) + " vanished");
    }
  }

  CommandResult r;
  r.output = sink.take();
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
    r.passed = r.exit_code == 0;
  } else if (WIFSIGNALED(status)) {
    r.signaled = true;
    r.signal = WTERMSIG(status);
    r.timed_out = killed && r.signal == SIGKILL;
  }
  return r;
}

}  // namespace ringfence::server::validation
