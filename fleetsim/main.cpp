// fleetsim: many simulated agents in one process over real sockets (API.md, "Processes").
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "fleetsim/fleet.hpp"
#include "fleetsim/http_client.hpp"
#include "fleetsim/model.hpp"
#include "proto/fatal.hpp"
#include "proto/ids.hpp"
#include "proto/messages.hpp"
#include "proto/tls_client.hpp"
#include "proto/url.hpp"

namespace {
namespace asio = boost::asio;
using ringfence::fleetsim::Fleet;
using ringfence::fleetsim::FleetOptions;
using ringfence::fleetsim::HttpClient;

// Every long poll is a socket: raise the open-file limit to the hard limit.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
}

bool write_file_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    out << text << "\n";
    if (!out) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}
}  // namespace

int main(int argc, char** argv) try {
  ringfence::install_fatal_handler("fleetsim");
  CLI::App cli{"fleetsim: a simulated fleet of Ringfence agents speaking the real protocol"};
  std::string server, report, status_file;
  std::vector<std::string> model_specs;
  FleetOptions opt;
  std::size_t long_poll = 0;
  bool long_poll_given = false;
  double duration_s = 0, status_every_s = 5;
  std::size_t connections = 32;
  std::uint64_t seed = 0;
  cli.add_option("--server", server, "Server URL, https://HOST[:PORT] or http://HOST[:PORT]")
      ->envname("RINGFENCE_SERVER")
      ->required();
  ringfence::proto::TlsClientFiles tls;
  bool allow_plaintext = false;
  cli.add_option("--ca-file", tls.ca_file, "PEM CA bundle for https:// (default: system store)")
      ->envname("RINGFENCE_CA_FILE");
  cli.add_option("--client-cert", tls.client_cert, "PEM client certificate (mTLS), every host")
      ->envname("RINGFENCE_CLIENT_CERT");
  cli.add_option("--client-key", tls.client_key, "PEM private key of --client-cert")
      ->envname("RINGFENCE_CLIENT_KEY");
  cli.add_flag("--allow-plaintext", allow_plaintext,
               "Speak http:// to a server off this machine without a warning")
      ->envname("RINGFENCE_ALLOW_PLAINTEXT");
  cli.add_option("--enroll-token", opt.enroll_token, "Enrollment token")->required();
  cli.add_option("--hosts", opt.hosts, "Number of simulated hosts")
      ->required()
      ->check(CLI::Range(1, 2'000'000));
  cli.add_option("--model", model_specs,
                 "CHANNEL@VERSION=healthy|crash:P|silent:P|apply-fail:P|crash-rate:R (repeatable)");
  cli.add_flag(
      "--model-from-content", opt.model_from_content,
      "The sample consumer's parser decides: content it would crash on boot-loops silently");
  cli.add_option("--crash-loop-k", opt.crash_loop_k,
                 "Boots of a silently boot-looping host before its agent's crash-loop guard "
                 "restores last-known-good (0: it never comes back)")
      ->envname("RINGFENCE_CRASH_LOOP_K")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  std::vector<std::string> consumer_specs;
  cli.add_option("--consumer-version", consumer_specs,
                 "NAME=VERSION[:WEIGHT]: a version of a consumer in the simulated fleet and its "
                 "share (repeatable; each host runs one version per name)")
      ->envname("RINGFENCE_CONSUMER_VERSION")
      ->delimiter(',');
  cli.add_option("--content-consumer", opt.content_consumer,
                 "The consumer whose version decides --model-from-content per host")
      ->capture_default_str();
  double boot_loop_s = 60;
  cli.add_option("--boot-loop-s", boot_loop_s, "Seconds one boot of a boot-looping host lasts")
      ->envname("RINGFENCE_BOOT_LOOP_S")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  cli.add_option("--background-crash-rate", opt.background_crash_rate,
                 "Crashes per host per hour, every version")
      ->check(CLI::Range(0.0, 1e6));
  cli.add_option("--background-rise", opt.background_rise,
                 "Factor on --background-crash-rate while the fleet-wide rise is on: SIGUSR1 "
                 "turns it on, SIGUSR2 off (a rise that no release causes)")
      ->envname("RINGFENCE_BACKGROUND_RISE")
      ->check(CLI::Range(0.0, 1000.0))
      ->capture_default_str();
  auto* lp = cli.add_option("--long-poll", long_poll,
                            "Hosts holding a long poll each (default: all, up to 10000)");
  cli.add_option("--long-poll-wait", opt.long_poll_wait_s, "wait= seconds of every long poll")
      ->check(CLI::Range(1, 600))
      ->capture_default_str();
  cli.add_option("--duration", duration_s,
                 "Run this many seconds, then report and exit (0: until SIGINT/SIGTERM)")
      ->check(CLI::Range(0.0, 1e9));
  cli.add_option("--report", report, "Write the JSON summary here at the end");
  cli.add_option("--status-file", status_file,
                 "Rewrite the JSON summary here at every status line");
  cli.add_option("--status-every", status_every_s,
                 "Seconds between progress lines on stdout (0: none)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cli.add_option("--seed", seed, "Random seed (host ids, labels, crash draws); default: random");
  cli.add_option("--heartbeat-scale", opt.heartbeat_scale,
                 "Multiply the server's heartbeat and poll intervals by this")
      ->check(CLI::Range(0.01, 100.0))
      ->capture_default_str();
  cli.add_option("--connections", connections,
                 "Pooled connections for heartbeats, reports, polls, downloads")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cli.add_option("--enroll-concurrency", opt.enroll_concurrency, "Enrollments in flight at once")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  CLI11_PARSE(cli, argc, argv);
  long_poll_given = lp->count() > 0;
  opt.boot_loop_ms = static_cast<std::int64_t>(boot_loop_s * 1000);
  for (const auto& spec : consumer_specs) {
    auto eq = spec.find('=');
    auto colon = spec.find(':', eq == std::string::npos ? 0 : eq);
    std::string name = spec.substr(0, eq);
    std::string version = eq == std::string::npos ? "" : spec.substr(eq + 1, colon - eq - 1);
    double weight = 1;
    bool ok = eq != std::string::npos && ringfence::proto::is_name(name) &&
              ringfence::proto::is_consumer_version(version);
    if (ok && colon != std::string::npos) {
      char* end = nullptr;
      std::string w = spec.substr(colon + 1);
      weight = std::strtod(w.c_str(), &end);
      ok = !w.empty() && end == w.c_str() + w.size() && weight > 0 && weight <= 1e6;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "fleetsim: --consumer-version must be NAME=VERSION[:WEIGHT] (a channel-style "
                   "name, a version of [A-Za-z0-9._+-], a positive weight): %s\n",
                   spec.c_str());
      return 2;
    }
    opt.consumer_versions[name].emplace_back(version, weight);
  }

  for (const auto& spec : model_specs) {
    auto m = ringfence::fleetsim::parse_model_spec(spec);
    if (!m) {
      std::fprintf(stderr, "fleetsim: %s\n", m.error().message.c_str());
      return 2;
    }
    opt.models[m->first] = m->second;
  }
  opt.long_poll_hosts =
      long_poll_given ? std::min(long_poll, opt.hosts) : std::min<std::size_t>(opt.hosts, 10000);
  opt.seed = seed ? seed : std::random_device{}();
  auto url = ringfence::proto::parse_server_url(server);
  if (!url) {
    std::fprintf(stderr, "fleetsim: --server: %s\n", url.error().message.c_str());
    return 2;
  }
  if (auto st = tls.check(); !st) {
    std::fprintf(stderr, "fleetsim: %s\n", st.error().message.c_str());
    return 2;
  }
  // A simulator may well run beside a test server on a private network: warn, do not refuse.
  if (!url->tls && !url->is_loopback() && !allow_plaintext) {
    std::fprintf(stderr,
                 "fleetsim: warning: plain http:// to %s (credentials unencrypted); use https:// "
                 "or --allow-plaintext to silence this\n",
                 url->authority().c_str());
  }
  raise_fd_limit();

  std::string error;
  asio::io_context io(1);
  auto client = HttpClient::create(io, *url, tls, connections, error);
  if (!client) {
    std::fprintf(stderr, "fleetsim: %s\n", error.c_str());
    return 1;
  }
  Fleet fleet(io, *client, opt);
  std::printf("fleetsim: %zu hosts (%zu long polls) against %s, seed %llu\n", opt.hosts,
              opt.long_poll_hosts, server.c_str(), static_cast<unsigned long long>(opt.seed));
  std::fflush(stdout);

  // SIGUSR1/SIGUSR2: the fleet-wide background rise on/off (below).
  asio::signal_set rise_signals(io, SIGUSR1, SIGUSR2);
  bool ok = true;
  auto finish = [&]() {
    fleet.stop();
    std::printf("%s\n", fleet.status_line().c_str());
    std::fflush(stdout);
    if (!report.empty() && !write_file_atomically(report, fleet.summary_json())) {
      std::fprintf(stderr, "fleetsim: cannot write %s\n", report.c_str());
      ok = false;
    }
    client->shutdown();
    rise_signals.cancel();
    io.stop();
  };

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) finish();
  });
  // The fleet-wide background rise, switched from outside (scripts/scenarios.py, the rise during
  // a good release) at a moment the caller chooses.
  std::function<void()> await_rise = [&]() {
    rise_signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      fleet.set_background_rise(sig == SIGUSR1);
      std::printf("fleetsim: background rise %s\n", sig == SIGUSR1 ? "on" : "off");
      std::fflush(stdout);
      await_rise();
    });
  };
  await_rise();
  asio::steady_timer end_timer(io);
  if (duration_s > 0) {
    end_timer.expires_after(std::chrono::milliseconds(static_cast<long long>(duration_s * 1000)));
    end_timer.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) finish();
    });
  }
  asio::steady_timer status_timer(io);
  std::function<void()> status;
  status = [&]() {
    std::printf("%s\n", fleet.status_line().c_str());
    std::fflush(stdout);
    if (!status_file.empty()) (void)write_file_atomically(status_file, fleet.summary_json());
    status_timer.expires_after(
        std::chrono::milliseconds(static_cast<long long>(status_every_s * 1000)));
    status_timer.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) status();
    });
  };
  if (status_every_s > 0) {
    status_timer.expires_after(
        std::chrono::milliseconds(static_cast<long long>(status_every_s * 1000)));
    status_timer.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) status();
    });
  }
  fleet.start();
  io.run();
  return ok ? 0 : 1;
} catch (...) {
  ringfence::print_current_exception("fleetsim");
  return ringfence::kExitInternal;
}
