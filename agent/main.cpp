// ringfence-agent: flags and environment, logging, the composition root (io_context, clock,
// file system, HTTP client, consumer runner, Agent), signals, run on one thread.
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>

#include "agent/agent.hpp"
#include "agent/net/beast_client.hpp"
#include "agent/runtime/asio_clock.hpp"
#include "agent/runtime/systemd_notify.hpp"
#include "proto/fatal.hpp"
#include "proto/ids.hpp"
#include "proto/messages.hpp"
#include "proto/tls_client.hpp"
#include "proto/url.hpp"

namespace {

[[noreturn]] void die(const std::string& line) {
  std::fprintf(stderr, "ringfence-agent: %s\n", line.c_str());
  std::exit(2);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  while (!s.empty() && s.front() == ' ') s.erase(s.begin());
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  ringfence::install_fatal_handler("ringfence-agent");
  using namespace ringfence;
  using namespace ringfence::agent;

  CLI::App app{"ringfence-agent: applies staged content updates with a local safety net"};
  // As the server: RINGFENCE_CONFIG names the default file (the package's unit passes --config).
  const char* env_config = std::getenv("RINGFENCE_CONFIG");
  std::string config_from_env = env_config ? env_config : "";
  app.set_config("--config", config_from_env,
                 "TOML/INI config file with any of these options (env RINGFENCE_CONFIG)",
                 !config_from_env.empty());
  std::string server, token, state_dir, content_dir, key_file, consumer, log_level = "info";
  std::vector<std::string> labels;
  Config cfg;
  std::int64_t check_timeout_s = 30;
  app.add_option("--server", server, "server URL, https://host[:port] (or http:// on loopback)")
      ->envname("RINGFENCE_SERVER")
      ->required();
  app.add_option("--enroll-token", token, "enrollment token (needed until enrolled)")
      ->envname("RINGFENCE_ENROLL_TOKEN");
  app.add_option("--state-dir", state_dir, "identity, state, spool (kept private, 0700)")
      ->envname("RINGFENCE_STATE_DIR")
      ->required();
  app.add_option("--content-dir", content_dir, "content lands in DIR/<channel>/current")
      ->envname("RINGFENCE_CONTENT_DIR")
      ->required();
  std::string root_key_file;
  app.add_option("--public-key", key_file,
                 "file with the base64 Ed25519 signing key (the first key set, until a "
                 "root-signed one arrives)")
      ->envname("RINGFENCE_PUBLIC_KEY");
  app.add_option("--root-key", root_key_file,
                 "file with the base64 Ed25519 root key that signs key sets (pinned)")
      ->envname("RINGFENCE_ROOT_KEY");
  app.add_option("--label", labels, "host label k=v (repeatable)")
      ->envname("RINGFENCE_LABELS")
      ->delimiter(',');
  app.add_option("--consumer", consumer,
                 "content consumer command: run as CMD --check FILE and CMD --run FILE")
      ->envname("RINGFENCE_CONSUMER");
  std::vector<std::string> consumer_versions;
  app.add_option("--consumer-version", consumer_versions,
                 "NAME=VERSION of a content consumer on this host, reported to the server "
                 "(repeatable)")
      ->envname("RINGFENCE_CONSUMER_VERSION")
      ->delimiter(',');
  app.add_option("--crash-loop-k", cfg.crash_loop_k, "crashes within the window that revert")
      ->envname("RINGFENCE_CRASH_LOOP_K")
      ->check(CLI::Range(1, 100));
  app.add_option("--crash-loop-window-s", cfg.crash_loop_window_s,
                 "crash-loop window after an activation, seconds")
      ->envname("RINGFENCE_CRASH_LOOP_WINDOW_S")
      ->check(CLI::Range(1, 7 * 86400));
  app.add_option("--healthy-after-s", cfg.healthy_after_s,
                 "consumer alive this long after activation = healthy checkpoint")
      ->envname("RINGFENCE_HEALTHY_AFTER_S")
      ->check(CLI::Range(1, 86400));
  app.add_option("--poll-wait-s", cfg.poll_wait_s, "long-poll hold asked of the server")
      ->envname("RINGFENCE_POLL_WAIT_S")
      ->check(CLI::Range(1, 300));
  app.add_option("--backoff-cap-ms", cfg.backoff_cap_ms, "longest backoff between retries")
      ->envname("RINGFENCE_BACKOFF_CAP_MS")
      ->check(CLI::Range(100, 3'600'000));
  app.add_option("--max-content-bytes", cfg.max_content_bytes, "largest content accepted")
      ->envname("RINGFENCE_MAX_CONTENT_BYTES")
      ->check(CLI::Range(1LL, 1LL << 40));
  app.add_option("--check-timeout-s", check_timeout_s, "consumer --check time limit")
      ->envname("RINGFENCE_CHECK_TIMEOUT_S")
      ->check(CLI::Range(1, 3600));
  proto::TlsClientFiles tls;
  bool allow_plaintext = false;
  app.add_option("--ca-file", tls.ca_file, "PEM CA bundle for https:// (default: system store)")
      ->envname("RINGFENCE_CA_FILE");
  app.add_option("--client-cert", tls.client_cert, "PEM client certificate for mTLS")
      ->envname("RINGFENCE_CLIENT_CERT");
  app.add_option("--client-key", tls.client_key, "PEM private key of --client-cert")
      ->envname("RINGFENCE_CLIENT_KEY");
  app.add_flag("--allow-plaintext", allow_plaintext,
               "allow http:// to a server that is not on this machine")
      ->envname("RINGFENCE_ALLOW_PLAINTEXT");
  std::string boot_id_file = "/proc/sys/kernel/random/boot_id";
  app.add_option("--boot-id-file", boot_id_file,
                 "file holding this boot's id: an unclean exit on the same boot is an agent "
                 "restart, on a new boot a crash")
      ->envname("RINGFENCE_BOOT_ID_FILE");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")
      ->envname("RINGFENCE_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.set_version_flag("--version", std::string(kAgentVersion));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every configuration error exits 2, so that the unit's RestartPreventExitStatus=2 leaves an
    // unconfigured agent stopped (with this line in the journal) instead of restarting it.
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  auto logger = spdlog::create<spdlog::sinks::stderr_sink_st>("agent");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::flush_on(spdlog::level::info);

  auto url = proto::parse_server_url(server);
  if (!url) die("--server: " + url.error().message);
  if (!url->tls && !url->is_loopback() && !allow_plaintext) {
    die("refusing plain http:// to " + url->authority() +
        ": the credential and content would cross the network unencrypted; use https:// or "
        "pass --allow-plaintext");
  }
  if (auto st = tls.check(); !st) die(st.error().message);
  // Absolute paths: the consumer is handed content paths, and its working dir is not ours.
  std::error_code path_ec;
  cfg.state_dir = std::filesystem::absolute(state_dir, path_ec).lexically_normal().string();
  cfg.content_dir = std::filesystem::absolute(content_dir, path_ec).lexically_normal().string();
  while (cfg.state_dir.size() > 1 && cfg.state_dir.back() == '/') cfg.state_dir.pop_back();
  while (cfg.content_dir.size() > 1 && cfg.content_dir.back() == '/') cfg.content_dir.pop_back();
  // Sent in the enrollment body; bounded and printable like every value the agent sends.
  if (!token.empty() && (token.size() > 256 || !net::header_safe(token) ||
                         token.find_first_of(" \t") != std::string::npos)) {
    die("--enroll-token must be 1..256 printable characters without spaces");
  }
  cfg.enroll_token = token;
  cfg.check_timeout_ms = check_timeout_s * 1000;
  {
    RealFs fs;
    if (key_file.empty() && root_key_file.empty()) die("--root-key or --public-key is required");
    auto read_key = [&](const std::string& file, const char* flag) {
      auto text = fs.read(file);
      if (!text) die(std::string("cannot read ") + flag + ": " + text.error().message);
      auto pk = proto::parse_public_key(trim(*text));
      if (!pk) die(std::string(flag) + " " + file + ": " + pk.error().message);
      return *pk;
    };
    if (!key_file.empty()) cfg.public_key = read_key(key_file, "--public-key");
    if (!root_key_file.empty()) cfg.root_key = read_key(root_key_file, "--root-key");
    auto id = state::load_identity(fs, state_dir + "/identity.json");
    bool enrolled = id && *id && !(*id)->credential.empty();
    if (!enrolled && token.empty()) die("--enroll-token is required until the host is enrolled");
  }
  for (const auto& l : labels) {
    auto eq = l.find('=');
    std::string k = l.substr(0, eq), v = eq == std::string::npos ? "" : l.substr(eq + 1);
    if (eq == std::string::npos || !proto::is_label_key(k) || !proto::is_label_value(v)) {
      die("--label must be key=value with a valid key and value: " + l);
    }
    cfg.labels[k] = v;
  }
  for (const auto& cv : consumer_versions) {
    auto eq = cv.find('=');
    std::string k = cv.substr(0, eq), v = eq == std::string::npos ? "" : cv.substr(eq + 1);
    if (eq == std::string::npos || !proto::is_name(k) || !proto::is_consumer_version(v)) {
      die("--consumer-version must be NAME=VERSION (a name like a channel's; a version of 1..64 "
          "characters of [A-Za-z0-9._+-]): " +
          cv);
    }
    cfg.consumers[k] = v;
  }
  if (cfg.consumers.size() > proto::kMaxConsumers) die("--consumer-version: at most 8 consumers");
  std::vector<std::string> consumer_argv = split_command(consumer);
  if (!consumer.empty() && (consumer_argv.empty() || consumer_argv[0].front() != '/')) {
    die("--consumer must start with an absolute path (no shell is used): " + consumer);
  }

  ::signal(SIGPIPE, SIG_IGN);
  boost::asio::io_context io(1);
  AsioClock clock(io);
  RealFs fs;
  auto made = net::BeastClient::create(io, *url, tls);
  if (!made) die(made.error().message);
  net::BeastClient& client = **made;
  std::unique_ptr<ProcessConsumerRunner> runner;
  if (!consumer_argv.empty()) runner = std::make_unique<ProcessConsumerRunner>(io, consumer_argv);
  telemetry::ProcSystemInfo system(boot_id_file);

  std::string fault_point;
  if (const char* f = std::getenv("RINGFENCE_AGENT_FAULT")) fault_point = f;
  FaultHook fault;
  if (!fault_point.empty()) {
    fault = [fault_point](std::string_view point) {
      if (point != fault_point) return;
      spdlog::warn("fault injection: killing myself at {}", point);
      ::raise(SIGKILL);
    };
  }

  Agent agent(cfg, Deps{clock, fs, client, runner.get(), system, {}, fault});
  boost::asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  stop_signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: shutting down", sig);
    notify_systemd("STOPPING=1");
    agent.stop();
    io.stop();
  });
  if (auto st = agent.start(); !st) die("cannot start: " + st.error().message);
  // Under systemd: ready once started, and a watchdog ping from this loop at half the interval
  // (WatchdogSec=): a loop that stops turning gets the agent restarted.
  notify_systemd("READY=1");
  boost::asio::steady_timer watchdog(io);
  std::function<void()> ping;
  if (auto every = systemd_watchdog_interval()) {
    ping = [&, half = *every / 2] {
      notify_systemd("WATCHDOG=1");
      watchdog.expires_after(half);
      watchdog.async_wait([&](const boost::system::error_code& ec) {
        if (!ec) ping();
      });
    };
    ping();
  }
  io.run();
  return 0;
} catch (...) {
  ringfence::print_current_exception("ringfence-agent");
  return ringfence::kExitInternal;
}
