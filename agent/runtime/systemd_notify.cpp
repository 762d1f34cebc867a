#include "agent/runtime/systemd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ringfence::agent {

bool notify_systemd(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return false;
  std::string_view p(path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // '@' names a socket in the abstract namespace (a leading NUL byte on the wire).
  if (p.size() >= sizeof addr.sun_path || (p.front() != '/' && p.front() != '@')) return false;
  std::memcpy(addr.sun_path, p.data(), p.size());
  if (p.front() == '@') addr.sun_path[0] = '\0';
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + p.size());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ssize_t sent;
  do {
    sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                    reinterpret_cast<const sockaddr*>(&addr), len);
  } while (sent < 0 && errno == EINTR);
  ::close(fd);
  return sent == static_cast<ssize_t>(state.size());
}

std::optional<std::chrono::microseconds> systemd_watchdog_interval() {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (!usec || !*usec) return std::nullopt;
  if (const char* pid = std::getenv("WATCHDOG_PID"); pid && *pid) {
    char* end = nullptr;
    long long v = std::strtoll(pid, &end, 10);
    if (*end != '\0' || v != static_cast<long long>(::getpid())) return std::nullopt;
  }
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(usec, &end, 10);
  if (errno || *end != '\0' || v == 0 || v > 24ULL * 3600 * 1000000) return std::nullopt;
  return std::chrono::microseconds(static_cast<std::int64_t>(v));
}

}  // namespace ringfence::agent
