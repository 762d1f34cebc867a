#pragma once
// The file-system seam. Every effect the agent has on its state dir and content dir goes
// through an Fs, so tests can inject a failure at the n-th effect (a simulated kill -9) and
// then "restart" the agent on the same directories. Paths are built by the agent only from
// validated names (proto::is_name) and numbers — never from raw server input.
//
// Threading: thread-compatible; the agent uses it from its loop thread only.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proto/error.hpp"

namespace ringfence::agent {

class Fs {
 public:
  virtual ~Fs() = default;
  // Whole file as bytes; NotFound when it does not exist, Unavailable on other I/O errors.
  virtual Expected<std::string> read(const std::string& path) = 0;
  // Durable replace: write a temp file in the same dir, fsync it, rename over path, fsync the
  // dir. Readers see the old bytes or the new ones, never a mix. mode applies to the new file.
  virtual Status write_atomic(const std::string& path, std::string_view data,
                              unsigned mode = 0600) = 0;
  // Size of a regular file, nullopt if absent.
  virtual std::optional<std::int64_t> file_size(const std::string& path) = 0;
  virtual bool exists(const std::string& path) = 0;
  // mkdir -p with mode for created dirs.
  virtual Status make_dirs(const std::string& path, unsigned mode = 0755) = 0;
  // Removes a file or symlink; absent is success.
  virtual Status remove(const std::string& path) = 0;
  // Moves a complete file to dst durably (rename; copy + fsync across file systems), then
  // fsyncs dst's dir. src is gone afterwards.
  virtual Status install(const std::string& src, const std::string& dst) = 0;
  // Points link at target atomically (symlink to a temp name, rename over link, fsync dir).
  virtual Status symlink_atomic(const std::string& target, const std::string& link) = 0;
  // The target of a symlink, nullopt if link is not a symlink.
  virtual std::optional<std::string> read_link(const std::string& link) = 0;
};

// The real file system (POSIX).
class RealFs final : public Fs {
 public:
  Expected<std::string> read(const std::string& path) override;
  Status write_atomic(const std::string& path, std::string_view data, unsigned mode) override;
  std::optional<std::int64_t> file_size(const std::string& path) override;
  bool exists(const std::string& path) override;
  Status make_dirs(const std::string& path, unsigned mode) override;
  Status remove(const std::string& path) override;
  Status install(const std::string& src, const std::string& dst) override;
  Status symlink_atomic(const std::string& target, const std::string& link) override;
  std::optional<std::string> read_link(const std::string& link) override;
};

// The directory part of a path ("a/b/c" -> "a/b", "c" -> ".").
std::string dir_of(const std::string& path);
// fsyncs a directory so a rename in it survives power loss.
Status fsync_dir(const std::string& dir);

}  // namespace ringfence::agent
