#pragma once
// A real ringfence-server process for transport tests: a temp data dir, 127.0.0.1:0 (or the
// arguments given), a known admin token, stderr captured to a file that tests can read.

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace ringfence::testing {

inline constexpr const char* kAdminToken = "rf_test_admin_token_0123456789abcdef";

class ServerProcess {
 public:
  // Starts `prefix... ringfence-server --data-dir D --listen 127.0.0.1:0 --no-access-log extra...`
  // (--no-access-log unless extra has --access-log)
  // and waits for its "listening on" line; port() is 0 when it did not come.
  explicit ServerProcess(const std::vector<std::string>& extra = {},
                         const std::vector<std::string>& prefix = {},
                         const std::map<std::string, std::string>& env = {});
  std::uint16_t port() const noexcept { return port_; }
  Process& process() noexcept { return proc_; }
  const std::string& data_dir() const noexcept { return data_dir_; }
  std::string log() const;  // everything the server wrote to stderr so far

 private:
  TempDir dir_;
  std::string data_dir_, log_path_;
  Process proc_;
  std::uint16_t port_ = 0;
};

// The value of an unlabelled (or exactly labelled) line of a Prometheus text page, or -1.
double metric(const std::string& page, const std::string& name_and_labels);

}  // namespace ringfence::testing
