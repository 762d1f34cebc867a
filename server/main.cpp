// ringfence-server: flags / config file / environment, logging, then the App.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string_view>

#include "proto/fatal.hpp"
#include "server/app.hpp"
#include "server/keys_command.hpp"
#include "server/logging.hpp"

#ifndef RINGFENCE_VERSION
#define RINGFENCE_VERSION "0.0.0"
#endif
#ifndef RINGFENCE_DEFAULT_WEB_DIR
#define RINGFENCE_DEFAULT_WEB_DIR ""
#endif

namespace {
// The repo's web/ at build time (server/CMakeLists.txt): the dashboard when --web-dir is not given.
constexpr const char* kDefaultWebDir = RINGFENCE_DEFAULT_WEB_DIR;
}  // namespace

int main(int argc, char** argv) try {
  ringfence::install_fatal_handler("ringfence-server");
  if (argc > 1 && std::string_view(argv[1]) == "keys") {
    return ringfence::server::keys_command(argc - 1, argv + 1);
  }
  ringfence::server::AppConfig cfg;
  CLI::App cli{"ringfence-server: staged rollouts of content updates with automatic rollback"};
  // CLI11 reads the config file before it looks at environment variables, so RINGFENCE_CONFIG is
  // passed as the default file, required when set: a file it names that is missing is fatal.
  const char* env_config = std::getenv("RINGFENCE_CONFIG");
  std::string config_from_env = env_config ? env_config : "";
  cli.set_config("--config", config_from_env,
                 "TOML/INI config file with any of these options (env RINGFENCE_CONFIG)",
                 !config_from_env.empty());
  cli.set_version_flag("--version", std::string("ringfence-server ") + RINGFENCE_VERSION);
  std::string log_level = "info";
  std::string log_format = "text";
  cli.add_option("--log-format", log_format,
                 "Log lines as text or as one JSON object per line (time, level, message and "
                 "fields: request_id, method, path, status, bytes, duration_us, remote)")
      ->envname("RINGFENCE_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  auto& c = cfg.core;
  cli.add_option("--data-dir", cfg.data_dir, "Data directory (database, blobs, keys)")
      ->envname("RINGFENCE_DATA_DIR")
      ->required();
  cli.add_option("--store", cfg.store,
                 "Where state is stored: \"sqlite\" (default: ringfence.db in --data-dir) or a "
                 "postgres://user:password@host:port/db URL (PostgreSQL, shared by replicas)")
      ->envname("RINGFENCE_STORE");
  cli.add_option("--listen", cfg.listen, "host:port to listen on; port 0 picks a free one")
      ->envname("RINGFENCE_LISTEN")
      ->capture_default_str();
  cli.add_option("--threads", cfg.threads, "I/O threads")
      ->envname("RINGFENCE_THREADS")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cli.add_option("--upload-limit", cfg.upload_limit, "Largest blob upload, bytes")
      ->envname("RINGFENCE_UPLOAD_LIMIT")
      ->capture_default_str();
  cli.add_option("--upload-timeout-s", cfg.upload_timeout_s,
                 "Longest a blob upload may take; its connection is closed then")
      ->envname("RINGFENCE_UPLOAD_TIMEOUT_S")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cli.add_option("--upload-min-rate", cfg.upload_min_rate,
                 "Slowest average upload rate, bytes/s, after 10 s (0 = off); slower is 408")
      ->envname("RINGFENCE_UPLOAD_MIN_RATE")
      ->capture_default_str();
  cli.add_option("--upload-space-bytes", cfg.upload_space_bytes,
                 "Bytes all uploads in progress may hold on disk together; beyond it 503")
      ->envname("RINGFENCE_UPLOAD_SPACE_BYTES")
      ->capture_default_str();
  cli.add_option("--max-connections", cfg.max_connections,
                 "Open connections in total (each agent holds one long poll); more are closed")
      ->envname("RINGFENCE_MAX_CONNECTIONS")
      ->check(CLI::Range(1, 10'000'000))
      ->capture_default_str();
  cli.add_option("--max-connections-per-ip", cfg.max_connections_per_ip,
                 "Open connections per peer address (a NAT counts as one; loopback is exempt)")
      ->envname("RINGFENCE_MAX_CONNECTIONS_PER_IP")
      ->check(CLI::Range(1, 10'000'000))
      ->capture_default_str();
  auto* tls_cert = cli.add_option("--tls-cert", cfg.tls_cert,
                                  "TLS certificate chain, PEM (server first); SIGHUP reloads it")
                       ->envname("RINGFENCE_TLS_CERT");
  auto* tls_key = cli.add_option("--tls-key", cfg.tls_key, "TLS private key, PEM")
                      ->envname("RINGFENCE_TLS_KEY");
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
  cli.add_option("--agent-client-ca", cfg.agent_client_ca,
                 "CA (PEM) whose client certificates /v1/agent/* requires (needs --tls-cert)")
      ->envname("RINGFENCE_AGENT_CLIENT_CA")
      ->needs(tls_cert);
  cli.add_option("--tls-handshake-timeout-s", cfg.tls_handshake_timeout_s,
                 "A TLS handshake not finished in this time is dropped")
      ->envname("RINGFENCE_TLS_HANDSHAKE_TIMEOUT_S")
      ->check(CLI::Range(1, 300))
      ->capture_default_str();
  cli.add_flag("--allow-plaintext", cfg.allow_plaintext,
               "Allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy)")
      ->envname("RINGFENCE_ALLOW_PLAINTEXT");
  auto* web_dir = cli.add_option("--web-dir", cfg.web_dir,
                                 "Dashboard static files (default: " + std::string(kDefaultWebDir) +
                                     " when it exists; \"\" serves no dashboard)")
                      ->envname("RINGFENCE_WEB_DIR");
  bool no_web = false;
  cli.add_flag("--no-web", no_web, "Serve no dashboard (overrides --web-dir)")
      ->envname("RINGFENCE_NO_WEB");
  cli.add_option("--shutdown-grace-s", cfg.shutdown_grace_s,
                 "After SIGTERM, keep serving this long with /readyz answering 503, then stop")
      ->envname("RINGFENCE_SHUTDOWN_GRACE_S")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  cli.add_flag("--access-log,!--no-access-log", cfg.access_log,
               "Log every request (the default), or not")
      ->envname("RINGFENCE_NO_ACCESS_LOG");
  cli.add_option("--log-level", log_level, "trace|debug|info|warn|error")
      ->envname("RINGFENCE_LOG_LEVEL")
      ->capture_default_str();
  cli.add_option("--heartbeat-s", c.heartbeat_s,
                 "Heartbeat interval for hosts not on a rolling release")
      ->envname("RINGFENCE_HEARTBEAT_S")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cli.add_option("--exposed-heartbeat-s", c.exposed_heartbeat_s, "Heartbeat interval while exposed")
      ->envname("RINGFENCE_EXPOSED_HEARTBEAT_S")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  cli.add_option("--poll-s", c.poll_s, "Poll interval told to agents")
      ->envname("RINGFENCE_POLL_S")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cli.add_option("--silence-intervals", c.silence_intervals,
                 "Missed heartbeats that count as a crash")
      ->envname("RINGFENCE_SILENCE_INTERVALS")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cli.add_option("--healthy-after-s", c.healthy_after_s, "Healthy heartbeats needed after applying")
      ->envname("RINGFENCE_HEALTHY_AFTER_S")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  cli.add_option("--manifest-ttl-s", c.manifest_ttl_s, "Manifest lifetime")
      ->envname("RINGFENCE_MANIFEST_TTL_S")
      ->check(CLI::Range(3600, 365 * 86400))
      ->capture_default_str();
  cli.add_option("--budget-per-hour", c.budget_per_hour,
                 "Hosts newly exposed per hour, all rollouts (0 = off)")
      ->envname("RINGFENCE_BUDGET_PER_HOUR")
      ->check(CLI::Range(0, 1'000'000'000))
      ->capture_default_str();
  cli.add_option("--tenant-budget-per-hour", c.tenant_budget_per_hour,
                 "The same per tenant (0 = off)")
      ->envname("RINGFENCE_TENANT_BUDGET_PER_HOUR")
      ->check(CLI::Range(0, 1'000'000'000))
      ->capture_default_str();
  cli.add_option("--restart-grace-s", c.restart_grace_s,
                 "After a start, seconds before any host can be found silent (agents come back)")
      ->envname("RINGFENCE_RESTART_GRACE_S")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  cli.add_option("--max-long-poll-s", c.max_long_poll_s, "Longest long poll held")
      ->envname("RINGFENCE_MAX_LONG_POLL_S")
      ->check(CLI::Range(1, 600))
      ->capture_default_str();
  cli.add_option(
         "--desired-ttl-s", c.desired_ttl_s,
         "Lifetime of a signed desired state (re-signed half way; above 2x the long-poll cap)")
      ->envname("RINGFENCE_DESIRED_TTL_S")
      ->check(CLI::Range(60, 7 * 86400))
      ->capture_default_str();
  cli.add_option("--evidence-min-age-s,--min-track-record-s", c.evidence_min_age_s,
                 "A host's signals count toward a rollout's gate only when it was first in "
                 "contact this long before the rollout started (0 = every host counts)")
      ->envname("RINGFENCE_EVIDENCE_MIN_AGE_S")
      ->check(CLI::Range(0, 365 * 86400))
      ->capture_default_str();
  cli.add_option("--enroll-rate-per-min", c.enroll_rate_per_min,
                 "Enrollments per minute per enrollment token, unless the token sets its own "
                 "(0 = unlimited)")
      ->envname("RINGFENCE_ENROLL_RATE_PER_MIN")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  cli.add_option("--reports-per-min", c.reports_per_min,
                 "Agent reports per host per minute (0 = unlimited)")
      ->envname("RINGFENCE_REPORTS_PER_MIN")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  CLI11_PARSE(cli, argc, argv);
  if (c.desired_ttl_s < 2 * c.max_long_poll_s + 10) {
    std::fprintf(
        stderr,
        "ringfence-server: --desired-ttl-s must be at least twice --max-long-poll-s + 10\n");
    return 2;
  }
  if (no_web) {
    cfg.web_dir.clear();
  } else if (web_dir->count() == 0 && std::filesystem::is_directory(kDefaultWebDir)) {
    cfg.web_dir = kDefaultWebDir;
  }

  auto logger = spdlog::stderr_color_mt("ringfence");
  logger->set_formatter(ringfence::server::logging::make_formatter(
      *ringfence::server::logging::parse_format(log_format)));
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::flush_every(std::chrono::seconds(1));
  if (cfg.web_dir.empty()) {
    spdlog::info("serving no dashboard");
  } else {
    spdlog::info("dashboard files from {}", cfg.web_dir);
  }

  ringfence::server::App app(cfg);
  auto port = app.start();
  if (!port) {
    std::fprintf(stderr, "ringfence-server: %s\n", port.error().message.c_str());
    return 1;
  }
  auto colon = cfg.listen.rfind(':');
  std::printf("listening on %s:%u\n", cfg.listen.substr(0, colon).c_str(), unsigned{*port});
  std::fflush(stdout);
  // Under systemd (Type=notify) the unit is started once the socket listens and the store is
  // loaded; a no-op anywhere else (no NOTIFY_SOCKET).
  sd_notifyf(0, "READY=1\nSTATUS=listening on %s:%u", cfg.listen.substr(0, colon).c_str(),
             unsigned{*port});
  app.run();
  spdlog::info("stopped");
  return 0;
} catch (...) {
  ringfence::print_current_exception("ringfence-server");
  return ringfence::kExitInternal;
}
