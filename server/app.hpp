#pragma once
// Composition root of ringfence-server: owns the io_context, the store, the service, the router
// and the HTTP server, and wires them. Nothing else lives here.

#include <cstdint>
#include <memory>
#include <string>

#include "proto/error.hpp"
#include "server/core/service.hpp"

namespace ringfence::server {

struct AppConfig {
  std::string data_dir;
  // "" or "sqlite": SQLite in data_dir; "postgres://..." / "postgresql://...": PostgreSQL (the
  // data dir still holds the signing key, blobs and uploads).
  std::string store;
  std::string listen = "127.0.0.1:8080";
  int threads = 1;
  std::uint64_t upload_limit = 256ull << 20;
  // Uploads: whole-upload deadline, minimum average rate (bytes/s, 0 = off), and the bytes all
  // uploads in progress may hold on disk together (503 upload_space_full beyond it).
  int upload_timeout_s = 600;
  std::uint64_t upload_min_rate = 16 * 1024;
  std::uint64_t upload_space_bytes = 1ull << 30;
  // Connection caps (sized for one long poll per agent): beyond them a new connection is closed
  // at once and counted.
  std::size_t max_connections = 20000;
  std::size_t max_connections_per_ip = 256;
  // TLS: PEM certificate chain and key (SIGHUP reloads both); a CA whose client certificates
  // /v1/agent/* then requires. Plain HTTP on a non-loopback address needs allow_plaintext.
  std::string tls_cert, tls_key, agent_client_ca;
  bool allow_plaintext = false;
  int tls_handshake_timeout_s = 10;
  bool access_log = true;
  std::string web_dir;
  // After SIGINT/SIGTERM: seconds to keep serving with /readyz answering 503 before stopping.
  int shutdown_grace_s = 0;
  core::Options core;
};

class App {
 public:
  explicit App(AppConfig config);
  ~App();
  App(const App&) = delete;
  App& operator=(const App&) = delete;

  // Prepares the data dir (signing key, admin token), opens + migrates the store, loads state,
  // binds. Returns the bound port. Errors are fatal start-up problems, one clear line each.
  Expected<std::uint16_t> start();
  // Runs until SIGINT/SIGTERM: then /readyz answers 503 and, after shutdown_grace_s (or at a second
  // signal), it stops accepting, lets in-flight requests finish, flushes and closes the store.
  void run();

 private:
  struct Impl;
  struct Drain;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringfence::server
