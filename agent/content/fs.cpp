#include "agent/content/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proto/signing.hpp"

namespace ringfence::agent {
namespace {

tl::unexpected<Error> io_error(const std::string& what, const std::string& path) {
  return fail(Errc::Unavailable, what + " " + path + ": " + std::strerror(errno));
}

Status write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("write", path);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

std::string temp_name(const std::string& path) { return path + ".tmp-" + proto::random_hex(4); }

Status copy_file(const std::string& src, const std::string& dst) {
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return io_error("open", src);
  int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    ::close(in);
    return io_error("create", dst);
  }
  char buf[16384];
  Status st;
  while (st) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = io_error("read", src);
      break;
    }
    if (n == 0) break;
    st = write_all(out, std::string_view(buf, static_cast<std::size_t>(n)), dst);
  }
  if (st && ::fsync(out) != 0) st = io_error("fsync", dst);
  ::close(in);
  ::close(out);
  return st;
}

}  // namespace

std::string dir_of(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error("open dir", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return io_error("fsync dir", dir);
  return {};
}

Expected<std::string> RealFs::read(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return fail(Errc::NotFound, path + " does not exist");
    return io_error("open", path);
  }
  std::string out;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return io_error("read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

Status RealFs::write_atomic(const std::string& path, std::string_view data, unsigned mode) {
  std::string tmp = temp_name(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return io_error("create", tmp);
  Status st = write_all(fd, data, tmp);
  if (st && ::fchmod(fd, mode) != 0) st = io_error("chmod", tmp);
  if (st && ::fsync(fd) != 0) st = io_error("fsync", tmp);
  ::close(fd);
  if (st && ::rename(tmp.c_str(), path.c_str()) != 0) st = io_error("rename", tmp);
  if (!st) {
    ::unlink(tmp.c_str());
    return st;
  }
  return fsync_dir(dir_of(path));
}

std::optional<std::int64_t> RealFs::file_size(const std::string& path) {
  struct stat s {};
  if (::stat(path.c_str(), &s) != 0 || !S_ISREG(s.st_mode)) return std::nullopt;
  return static_cast<std::int64_t>(s.st_size);
}

bool RealFs::exists(const std::string& path) {
  struct stat s {};
  return ::lstat(path.c_str(), &s) == 0;
}

Status RealFs::make_dirs(const std::string& path, unsigned mode) {
  std::string cur;
  std::size_t i = 0;
  while (i <= path.size()) {
    auto j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    i = j + 1;
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return io_error("mkdir", cur);
  }
  return {};
}

Status RealFs::remove(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return io_error("unlink", path);
  return {};
}

Status RealFs::install(const std::string& src, const std::string& dst) {
  if (::rename(src.c_str(), dst.c_str()) != 0) {
    if (errno != EXDEV) return io_error("rename", src);
    std::string tmp = temp_name(dst);
    if (auto st = copy_file(src, tmp); !st) {
      ::unlink(tmp.c_str());
      return st;
    }
    if (::rename(tmp.c_str(), dst.c_str()) != 0) return io_error("rename", tmp);
    ::unlink(src.c_str());
  }
  return fsync_dir(dir_of(dst));
}

Status RealFs::symlink_atomic(const std::string& target, const std::string& link) {
  std::string tmp = temp_name(link);
  if (::symlink(target.c_str(), tmp.c_str()) != 0) return io_error("symlink", tmp);
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return io_error("rename", tmp);
  }
  return fsync_dir(dir_of(link));
}

std::optional<std::string> RealFs::read_link(const std::string& link) {
  char buf[4096];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace ringfence::agent
