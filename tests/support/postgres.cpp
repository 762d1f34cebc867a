#include "tests/support/postgres.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "tests/support/process.hpp"

namespace ringfence::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A loopback port free right now, below the kernel's ephemeral range (32768-60999 by default):
// a restart reuses the cluster's port, and on a box where other tests hold thousands of loopback
// connections an ephemeral port is soon some client's local port. Another process may still take
// it before the cluster binds: start() then retries on a new one.
std::uint16_t free_loopback_port() {
  static std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto port = static_cast<std::uint16_t>(std::uniform_int_distribution<int>(20000, 32767)(rng));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket() failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) return port;
  }
  throw std::runtime_error("cannot find a free loopback port in 20000-32767");
}

// Runs argv to completion (deadline); true when it exited with status 0. Its stdout in `out`,
// its stderr in `err` (or appended to `out` when err is null).
bool run(const std::vector<std::string>& argv, const std::string& scratch, std::string& out,
         std::string* err = nullptr, std::chrono::milliseconds deadline = 60s) {
  std::string err_path = scratch + "/cmd.err";
  fs::remove(err_path);
  auto p = Process::start(argv, {}, err_path);
  auto st = p.wait(deadline);
  p.drain();
  out = p.output();
  (err ? *err : out) += read_file(err_path);
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
}

}  // namespace

std::string PostgresCluster::bin_dir() {
  const char* env = std::getenv("RINGFENCE_PG_BIN");
  return env ? env : "/usr/lib/postgresql/15/bin";
}

bool PostgresCluster::run_server_program(const std::vector<std::string>& argv,
                                         std::string& out) const {
  std::vector<std::string> full;
  if (as_postgres_user_) full = {"/usr/sbin/runuser", "-u", "postgres", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  return run(full, dir_.path(), out);
}

PostgresCluster::PostgresCluster() {
  for (const char* prog : {"initdb", "pg_ctl", "postgres", "psql"}) {
    if (!fs::exists(bin_dir() + "/" + prog)) {
      throw std::runtime_error("PostgreSQL 15 is not installed (" + bin_dir() + "/" + prog +
                               " is missing): run scripts/install-deps.sh");
    }
  }
  as_postgres_user_ = ::geteuid() == 0;
  if (as_postgres_user_) {
    // PostgreSQL refuses root: the cluster belongs to the postgres system user.
    struct passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
      throw std::runtime_error(
          "running as root and there is no `postgres` user to run PostgreSQL as: run "
          "scripts/install-deps.sh (the postgresql-15 package creates it)");
    }
    if (::chown(dir_.path().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      throw std::runtime_error("cannot chown " + dir_.path() + " to postgres");
    }
  }
  std::string out;
  if (!run_server_program({bin_dir() + "/initdb", "-D", data_dir(), "-U", "postgres",
                           "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"},
                          out)) {
    throw std::runtime_error("initdb failed:\n" + out);
  }
  {
    // Crash recovery (after stop("immediate")) first fsyncs every file of the data directory one
    // by one, seconds on a slow disk; one syncfs() does the same job.
    std::ofstream conf(data_dir() + "/postgresql.conf", std::ios::app);
    conf << "\nrecovery_init_sync_method = syncfs\n";
  }
  start();
  try {
    psql("CREATE DATABASE ringfence", "postgres");
  } catch (...) {
    shutdown();  // a constructor that throws gets no destructor call
    throw;
  }
}

PostgresCluster::~PostgresCluster() { shutdown(); }

void PostgresCluster::shutdown() noexcept {
  if (!running_) return;
  running_ = false;
  try {
    std::string out;
    if (run_server_program(
            {bin_dir() + "/pg_ctl", "-D", data_dir(), "-m", "immediate", "-w", "-t", "30", "stop"},
            out)) {
      return;
    }
  } catch (...) {
  }
  // pg_ctl could not stop it: end the postmaster by its pid file (its children follow it).
  std::ifstream pidfile(data_dir() + "/postmaster.pid");
  pid_t pid = 0;
  if (pidfile >> pid && pid > 0) ::kill(pid, SIGKILL);
}

void PostgresCluster::start() {
  std::string out;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (port_ == 0 || attempt > 0) port_ = free_loopback_port();
    {
      // Later lines win: a retry appends a new port.
      std::ofstream conf(data_dir() + "/postgresql.conf", std::ios::app);
      conf << "\nlisten_addresses = '127.0.0.1'\nport = " << port_
           << "\nunix_socket_directories = '" << dir_.path() << "'\n";
    }
    if (run_server_program({bin_dir() + "/pg_ctl", "-D", data_dir(), "-l", dir_.path() + "/pg.log",
                            "-w", "-t", "60", "start"},
                           out)) {
      running_ = true;
      return;
    }
    // Only a port taken in the meantime is worth another try.
    if (log().find("could not bind") == std::string::npos &&
        log().find("Address already in use") == std::string::npos) {
      break;
    }
  }
  throw std::runtime_error("pg_ctl start failed:\n" + out + "\nserver log:\n" + log());
}

void PostgresCluster::stop(const std::string& mode) {
  std::string out;
  if (!run_server_program(
          {bin_dir() + "/pg_ctl", "-D", data_dir(), "-m", mode, "-w", "-t", "60", "stop"}, out)) {
    throw std::runtime_error("pg_ctl stop failed:\n" + out);
  }
  running_ = false;
}

std::string PostgresCluster::url(const std::string& db) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::string PostgresCluster::create_database(const std::string& name) {
  psql("CREATE DATABASE \"" + name + "\"", "postgres");
  return url(name);
}

std::string PostgresCluster::psql(const std::string& sql, const std::string& db) const {
  std::string out, err;
  if (!run({bin_dir() + "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url(db),
            "-c", sql},
           dir_.path(), out, &err)) {
    throw std::runtime_error("psql failed on `" + sql + "`:\n" + out + err);
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string PostgresCluster::log() const { return read_file(dir_.path() + "/pg.log"); }

}  // namespace ringfence::testing
