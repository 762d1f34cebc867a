// ringfence: the operators' command-line client. Parses `ringfence [globals] <noun> <verb> ...`,
// then runs the chosen action against the server. Exit codes: see cli/api.hpp (Exit).
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>

#include "cli/api.hpp"
#include "cli/commands.hpp"
#include "cli/http_client.hpp"
#include "proto/fatal.hpp"

namespace {
constexpr const char* kExitCodes =
    "Exit status: 0 ok; 1 usage error; 2 the server refused (4xx, its message on stderr);\n"
    "3 server unreachable or failing (no connection, timeout, 5xx);\n"
    "4 `rollouts watch`: the rollout ended halted, rolled_back or aborted;\n"
    "70 an internal error (a bug; the one line on stderr says what).";
}

int main(int argc, char** argv) try {
  ringfence::install_fatal_handler("ringfence");
  using namespace ringfence::cli;
  Context ctx;
  ctx.out = &std::cout;

  CLI::App app{"ringfence: staged rollouts of content updates, from the command line", "ringfence"};
  app.footer(kExitCodes);
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the noun and verb
  app.add_option("--server", ctx.server, "server URL, https://host[:port] (or http:// on loopback)")
      ->envname("RINGFENCE_SERVER")
      ->capture_default_str();
  app.add_option("--token", ctx.token, "API token (Bearer)")->envname("RINGFENCE_TOKEN");
  app.add_flag("--json", ctx.as_json, "print the server's JSON instead of tables");
  app.add_option("--timeout", ctx.timeout_s, "seconds to wait for each answer")
      ->capture_default_str();
  ringfence::proto::TlsClientFiles tls;
  bool allow_plaintext = false;
  app.add_option("--ca-file", tls.ca_file, "PEM CA bundle for https:// (default: system store)")
      ->envname("RINGFENCE_CA_FILE");
  app.add_option("--client-cert", tls.client_cert, "PEM client certificate (mTLS)")
      ->envname("RINGFENCE_CLIENT_CERT");
  app.add_option("--client-key", tls.client_key, "PEM private key of --client-cert")
      ->envname("RINGFENCE_CLIENT_KEY");
  app.add_flag("--allow-plaintext", allow_plaintext,
               "allow http:// to a server that is not on this machine")
      ->envname("RINGFENCE_ALLOW_PLAINTEXT");
  app.set_version_flag("--version", "ringfence 0.1.0");
  // The package's /etc/ringfence/cli.conf (server URL, CA file) when it exists;
  // RINGFENCE_CLI_CONFIG or --config name another. The command line wins over the file, the file
  // over the environment (CLI11 reads the file first), so the shipped file sets nothing until an
  // admin edits it.
  const char* env_config = std::getenv("RINGFENCE_CLI_CONFIG");
  app.set_config("--config", env_config ? env_config : "/etc/ringfence/cli.conf",
                 "TOML/INI file with any of the global options (env RINGFENCE_CLI_CONFIG)",
                 env_config != nullptr);

  add_fleet_commands(app, ctx);
  add_content_commands(app, ctx);
  add_rollout_commands(app, ctx);
  add_admin_commands(app, ctx);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return static_cast<int>(Exit::Usage);
  }
  if (!ctx.action) {
    std::cerr << "ringfence: nothing to do (see --help)\n";
    return static_cast<int>(Exit::Usage);
  }

  auto url = parse_server_url(ctx.server);
  if (!url) {
    std::cerr << "ringfence: --server: " << url.error().message << "\n";
    return static_cast<int>(Exit::Usage);
  }
  if (!url->tls && !url->is_loopback() && !allow_plaintext) {
    std::cerr << "ringfence: refusing plain http:// to " << url->authority()
              << ": the token would cross the network unencrypted; use https:// or pass "
                 "--allow-plaintext\n";
    return static_cast<int>(Exit::Usage);
  }
  if (!(ctx.timeout_s > 0)) {
    std::cerr << "ringfence: --timeout must be positive\n";
    return static_cast<int>(Exit::Usage);
  }
  auto http = HttpClient::create(
      *url, std::chrono::milliseconds(static_cast<long long>(ctx.timeout_s * 1000)), tls);
  if (!http) {
    std::cerr << "ringfence: " << http.error().message << "\n";
    return static_cast<int>(Exit::Usage);
  }
  Api api(**http, ctx.token);
  ctx.api = &api;

  auto result = ctx.action(ctx);
  std::cout.flush();
  if (!result) {
    std::cerr << "ringfence: " << result.error().message << "\n" << result.error().details;
    return static_cast<int>(result.error().exit);
  }
  return static_cast<int>(*result);
} catch (...) {
  ringfence::print_current_exception("ringfence");
  return ringfence::kExitInternal;
}
