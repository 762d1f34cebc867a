#pragma once
// A throw-away PostgreSQL 15 cluster for tests: initdb into a temp dir, pg_ctl start on a free
// loopback port (its unix socket inside the temp dir too), a database "ringfence", trust auth on
// loopback only. Stopped and removed on destruction, nothing left behind.
//
// PostgreSQL refuses to run as root, and CI runs as root: then initdb and pg_ctl run as the
// `postgres` system user (created by Debian's postgresql package) through runuser, with the temp
// dir chowned to it. Clients (libpq, psql) connect over TCP as the cluster's superuser "postgres".
//
// When PostgreSQL is not installed the constructor throws (the test fails, never skips) with a
// message saying to run scripts/install-deps.sh. Not thread-safe; one test thread drives it.

#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace ringfence::testing {

class PostgresCluster {
 public:
  // initdb + start + CREATE DATABASE ringfence. Throws std::runtime_error with initdb's or
  // pg_ctl's log when something fails.
  PostgresCluster();
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // postgresql://postgres@127.0.0.1:PORT/<db>
  std::string url(const std::string& db = "ringfence") const;
  std::uint16_t port() const noexcept { return port_; }
  // Creates another (empty) database; returns its URL.
  std::string create_database(const std::string& name);
  // Runs SQL through psql (unaligned, tuples only, stop at the first error); returns its stdout
  // without the trailing newline. Throws with psql's stderr when psql fails.
  std::string psql(const std::string& sql, const std::string& db = "ringfence") const;

  // pg_ctl stop -m <mode> ("fast", or "immediate": the server's processes quit at once, as in a
  // crash, and the next start runs crash recovery). Throws when it does not stop.
  void stop(const std::string& mode = "fast");
  // pg_ctl start again on the same data and port (a new port only when another process took it
  // meanwhile: url() changes then). Throws when it does not come up.
  void start();
  bool running() const noexcept { return running_; }
  // The server's log so far (for failure messages).
  std::string log() const;

  // Where the PostgreSQL binaries are looked for: RINGFENCE_PG_BIN, else
  // /usr/lib/postgresql/15/bin.
  static std::string bin_dir();

 private:
  // Runs a PostgreSQL server program (initdb, pg_ctl) as the user that may run it; returns
  // whether it exited 0, its output in `out`.
  bool run_server_program(const std::vector<std::string>& argv, std::string& out) const;
  // Stops a running cluster at once (pg_ctl stop -m immediate, else SIGKILL of the postmaster).
  void shutdown() noexcept;
  std::string data_dir() const { return dir_.path() + "/data"; }

  TempDir dir_;
  std::uint16_t port_ = 0;
  bool running_ = false;
  bool as_postgres_user_ = false;
};

}  // namespace ringfence::testing
