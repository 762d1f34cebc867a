#include "tests/http/server_process.hpp"

#include <fstream>
#include <regex>
#include <sstream>

namespace ringfence::testing {

ServerProcess::ServerProcess(const std::vector<std::string>& extra,
                             const std::vector<std::string>& prefix,
                             const std::map<std::string, std::string>& env) {
  data_dir_ = dir_.path() + "/data";
  log_path_ = dir_.path() + "/server.log";
  std::vector<std::string> argv = prefix;
  for (const std::string& a : {built_program("server/ringfence-server"), std::string("--data-dir"),
                               data_dir_, std::string("--no-web")}) {
    argv.push_back(a);
  }
  bool has_listen = false, access_log = false;
  for (const auto& a : extra) {
    has_listen |= a == "--listen";
    access_log |= a == "--access-log";
  }
  if (!access_log) argv.push_back("--no-access-log");
  if (!has_listen) {
    argv.push_back("--listen");
    argv.push_back("127.0.0.1:0");
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto e = env;
  e.emplace("RINGFENCE_ADMIN_TOKEN", kAdminToken);
  proc_ = Process::start(argv, e, log_path_);
  auto line = proc_.wait_for_line("listening on", std::chrono::seconds(20));
  if (!line) return;
  static const std::regex kLine(R"(listening on \S+:(\d+))");
  std::smatch m;
  if (std::regex_search(*line, m, kLine)) port_ = static_cast<std::uint16_t>(std::stoi(m[1]));
}

std::string ServerProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double metric(const std::string& page, const std::string& name_and_labels) {
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name_and_labels + " ", 0) == 0) {
      return std::stod(line.substr(name_and_labels.size() + 1));
    }
  }
  return -1;
}

}  // namespace ringfence::testing
