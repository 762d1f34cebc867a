#pragma once
// The command tree of `ringfence <noun> <verb>`. Each add_*_commands registers its nouns on the
// CLI11 app; a verb's parse callback stores the action in the Context, and main runs it once
// parsing succeeded (so usage errors never reach the server).

#include <functional>
#include <iosfwd>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "cli/api.hpp"

namespace CLI {
class App;
}

namespace ringfence::cli {

struct Context {
  std::string server = "http://127.0.0.1:8080";
  std::string token;
  bool as_json = false;   // print the server's JSON instead of tables
  double timeout_s = 30;  // per request
  std::ostream* out = nullptr;
  Api* api = nullptr;  // set by main after parsing
  std::function<Result<Exit>(Context&)> action;

  // Prints `doc` as JSON (--json) or through `human`.
  void emit(const nlohmann::json& doc,
            const std::function<void(std::ostream&, const nlohmann::json&)>& human) const;
};

// Sets `sub`'s action: runs `fn` after a successful parse.
void on_run(CLI::App* sub, Context& ctx, std::function<Result<Exit>(Context&)> fn);

// Reads a whole file; a usage error naming the file when it cannot be read.
Result<std::string> read_file(const std::string& path);
// Reads a file as JSON; a usage error when unreadable or not JSON.
Result<nlohmann::json> read_json_file(const std::string& path);
// Parses "ring:percent[:bake_s[:min_hosts[:manual|auto]]]" into a stage object.
Result<nlohmann::json> parse_stage_flag(const std::string& spec);
// Stages from --stages-file (an array, or an object with "stages") or from --stage flags.
Result<nlohmann::json> stages_from(const std::string& file, const std::vector<std::string>& flags);

void add_fleet_commands(CLI::App& app, Context& ctx);    // rings, hosts
void add_content_commands(CLI::App& app, Context& ctx);  // channels, releases, policies
void add_rollout_commands(CLI::App& app, Context& ctx);  // rollouts
void add_admin_commands(CLI::App& app, Context& ctx);    // events, tokens, enrollment-tokens,
                                                         // emergency-stop

}  // namespace ringfence::cli
