// ringfence rollouts ...
#include <sys/ioctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/output.hpp"
#include "cli/progress.hpp"
#include "cli/watch.hpp"

namespace ringfence::cli {
using nlohmann::json;

namespace {

std::string progress_cell(const json& r) {
  std::int64_t exposed = 0, healthy = 0, failed = 0;
  for (const auto& s : r.value("stages", json::array())) {
    exposed += s.value("exposed", 0);
    healthy += s.value("healthy", 0);
    failed += s.value("failed", 0);
  }
  return std::to_string(healthy) + "/" + std::to_string(exposed) + " healthy" +
         (failed ? ", " + std::to_string(failed) + " failed" : "");
}

void print_rollouts(std::ostream& o, const json& d) {
  Table t({"ID", "CHANNEL", "VERSION", "STATE", "PHASE", "STAGE", "PROGRESS", "UPDATED"});
  for (const auto& r : d.value("rollouts", json::array())) {
    auto n = r.value("stages", json::array()).size();
    t.row({cell(r["id"]), cell(r["channel"]), cell(r["version"]), cell(r["state"]),
           cell(r.value("phase", json())), cell(r.value("stage", json())) + "/" + std::to_string(n),
           progress_cell(r), timestamp(r.value("updated", json()))});
  }
  t.print(o);
}

void print_rollout(std::ostream& o, const json& r) {
  o << summary_line(r) << "\n";
  Table t({"STAGE", "RING", "PERCENT", "STATE", "EXPOSED", "APPLIED", "HEALTHY", "FAILED", "SILENT",
           "GATE", "STATISTIC", "FAIL RATE"});
  int i = 0;
  for (const auto& s : r.value("stages", json::array())) {
    auto g = s.value("gate", json::object());
    char stat[64], rate[64];
    std::snprintf(stat, sizeof stat, "%.2f/%.2f", g.value("statistic", 0.0), g.value("upper", 0.0));
    std::snprintf(rate, sizeof rate, "%.1f%%/%.1f%%", 100 * g.value("failure_rate", 0.0),
                  100 * g.value("params", json::object()).value("max_failure_rate", 0.0));
    t.row({std::to_string(i++), cell(s["ring"]), cell(s.value("percent", json())) + "%",
           cell(s.value("state", json())), cell(s.value("exposed", json())),
           cell(s.value("applied", json())), cell(s.value("healthy", json())),
           cell(s.value("failed", json())), cell(s.value("silent", json())),
           cell(g.value("verdict", json())), stat, rate});
  }
  t.print(o);
  if (r.contains("waiting") && r["waiting"].is_string()) {
    o << "waiting: " << r["waiting"].get<std::string>() << "\n";
  }
  auto stages = r.value("stages", json::array());
  auto cur = static_cast<std::size_t>(r.value("stage", 0));
  if (cur < stages.size()) {
    if (auto p = pacing_text(stages[cur]); !p.empty()) o << "pacing: " << p << "\n";
    auto st = stages[cur].value("strata", json());
    if (st.is_object() && st.contains("qualifying")) {
      o << "strata: " << cell(st.value("covered", json())) << " of "
        << cell(st.value("qualifying", json())) << " qualifying strata covered ("
        << cell(st.value("strata", json())) << " strata)\n";
    }
  }
}

int terminal_columns() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
  return 100;
}

}  // namespace

void add_rollout_commands(CLI::App& app, Context& ctx) {
  auto* rollouts =
      app.add_subcommand("rollouts", "Rollouts: a release travelling through the rings");
  rollouts->require_subcommand(1);

  struct Create {
    std::string channel, policy, stages_file;
    std::vector<std::string> stages;
    long long version = 0;
  };
  auto cr = std::make_shared<Create>();
  auto* create = rollouts->add_subcommand("create", "Create a rollout (pending until started)");
  create->add_option("--channel", cr->channel, "channel name")->required();
  create->add_option("--version", cr->version, "release version")->required();
  create->add_option("--policy", cr->policy, "named policy giving the plan");
  create->add_option("--stages-file", cr->stages_file, "JSON plan instead of a policy");
  create->add_option("--stage", cr->stages, "ring:percent[:bake_s[:min_hosts[:manual]]] (repeat)");
  on_run(create, ctx, [cr](Context& c) -> Result<Exit> {
    json body = {{"channel", cr->channel}, {"version", cr->version}};
    if (!cr->policy.empty()) {
      if (!cr->stages_file.empty() || !cr->stages.empty()) {
        return usage_error("give --policy or a plan (--stages-file / --stage), not both");
      }
      body["policy"] = cr->policy;
    } else {
      auto stages = stages_from(cr->stages_file, cr->stages);
      if (!stages) return tl::unexpected(stages.error());
      if (stages->empty())
        return usage_error("give --policy NAME, --stages-file FILE or --stage ...");
      body["stages"] = *stages;
    }
    auto r = c.api->post("/v1/rollouts", body);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      o << "created rollout " << cell(d["id"]) << " (" << cell(d["channel"]) << " v"
        << cell(d["version"]) << ", pending; start it with: ringfence rollouts start "
        << cell(d["id"]) << ")\n";
    });
    return Exit::Ok;
  });

  struct Filter {
    std::string channel, state;
  };
  auto lf = std::make_shared<Filter>();
  auto* list = rollouts->add_subcommand("list", "List rollouts, newest first");
  list->add_option("--channel", lf->channel, "only this channel");
  list->add_option("--state", lf->state,
                   "only this state (pending, running, paused, completed, ...)");
  on_run(list, ctx, [lf](Context& c) -> Result<Exit> {
    std::string q = "/v1/rollouts";
    std::string sep = "?";
    if (!lf->channel.empty()) q += sep + "channel=" + url_encode(lf->channel), sep = "&";
    if (!lf->state.empty()) q += sep + "state=" + url_encode(lf->state);
    auto r = c.api->get(q);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_rollouts);
    return Exit::Ok;
  });

  auto sid = std::make_shared<long long>(0);
  auto* show = rollouts->add_subcommand("show", "Show a rollout's stages, counts and gates");
  show->add_option("id", *sid, "rollout id")->required();
  on_run(show, ctx, [sid](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/rollouts/" + std::to_string(*sid));
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_rollout);
    return Exit::Ok;
  });

  struct Action {
    long long id = 0;
    std::string reason;
  };
  const std::vector<std::pair<std::string, std::string>> actions = {
      {"start", "Start a pending rollout"},
      {"pause", "Pause: expose no new hosts (exposed hosts keep the release)"},
      {"resume", "Resume a paused rollout"},
      {"approve", "Approve a stage that waits for manual approval"},
      {"abort", "Abort: quarantine the release and send every exposed host back to stable"}};
  for (const auto& [verb, help] : actions) {
    auto a = std::make_shared<Action>();
    auto* cmd = rollouts->add_subcommand(verb, help);
    cmd->add_option("id", a->id, "rollout id")->required();
    cmd->add_option("--reason", a->reason, "kept in the event log");
    std::string v = verb;
    on_run(cmd, ctx, [a, v](Context& c) -> Result<Exit> {
      json body = json::object();
      if (!a->reason.empty()) body["reason"] = a->reason;
      auto r = c.api->post("/v1/rollouts/" + std::to_string(a->id) + "/" + v, body);
      if (!r) return tl::unexpected(r.error());
      c.emit(*r, [](std::ostream& o, const json& d) { o << summary_line(d) << "\n"; });
      return Exit::Ok;
    });
  }

  auto sk = std::make_shared<Action>();
  auto skip_to = std::make_shared<int>(0);
  auto* skip =
      rollouts->add_subcommand("skip", "Jump ahead to stage N (never past the canary's gate)");
  skip->add_option("id", sk->id, "rollout id")->required();
  skip->add_option("--to", *skip_to, "target stage index")->required();
  skip->add_option("--reason", sk->reason, "why (required)")->required();
  on_run(skip, ctx, [sk, skip_to](Context& c) -> Result<Exit> {
    auto r = c.api->post("/v1/rollouts/" + std::to_string(sk->id) + "/skip",
                         json{{"to", *skip_to}, {"reason", sk->reason}});
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) { o << summary_line(d) << "\n"; });
    return Exit::Ok;
  });

  auto pv = std::make_shared<Create>();
  auto* preview =
      rollouts->add_subcommand("preview", "Which hosts each stage of a plan would reach, and when");
  preview->add_option("--channel", pv->channel, "channel name");
  preview->add_option("--policy", pv->policy, "named policy");
  preview->add_option("--stages-file", pv->stages_file, "JSON plan instead of a policy");
  preview->add_option("--stage", pv->stages, "ring:percent[:bake_s[:min_hosts[:manual]]] (repeat)");
  on_run(preview, ctx, [pv](Context& c) -> Result<Exit> {
    json body = json::object();
    if (!pv->channel.empty()) body["channel"] = pv->channel;
    if (!pv->policy.empty()) {
      body["policy"] = pv->policy;
    } else {
      auto stages = stages_from(pv->stages_file, pv->stages);
      if (!stages) return tl::unexpected(stages.error());
      if (stages->empty())
        return usage_error("give --policy NAME, --stages-file FILE or --stage ...");
      body["stages"] = *stages;
    }
    auto r = c.api->post("/v1/rollouts/preview", body);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      Table t({"STAGE", "RING", "PERCENT", "NEW HOSTS", "HELD BACK", "CUMULATIVE", "EARLIEST START",
               "APPROVAL"});
      for (const auto& s : d.value("stages", json::array())) {
        char cum[64];
        std::snprintf(cum, sizeof cum, "%lld (%.1f%%)", s.value("cumulative_hosts", 0LL),
                      s.value("cumulative_percent", 0.0));
        t.row({cell(s["stage"]), cell(s["ring"]), cell(s.value("percent", json())) + "%",
               cell(s.value("new_hosts", json())), cell(s.value("pinned_hosts_held_back", json())),
               cum, "+" + cell(s.value("earliest_start_s", json())) + "s",
               cell(s.value("approval", json()))});
      }
      t.print(o);
      // Strata coverage: per stage with strata, the qualifying strata and the hosts picked.
      for (const auto& s : d.value("stages", json::array())) {
        auto st = s.value("strata", json());
        if (!st.is_object()) continue;
        o << "stage " << cell(s["stage"]) << " strata: " << cell(st.value("qualifying", json()))
          << " of " << cell(st.value("strata", json())) << " strata qualify\n";
        for (const auto& one : st.value("coverage", json::array())) {
          o << "  " << cell(one.value("stratum", json())) << ": "
            << cell(one.value("live_hosts", json())) << " live, "
            << one.value("picked_hosts", json::array()).size() << " picked"
            << (one.value("qualifying", false) ? "" : " (too small to qualify)") << "\n";
        }
      }
      o << cell(d.value("fleet_hosts", json())) << " hosts in the fleet; earliest completion after "
        << cell(d.value("earliest_completion_s", json())) << "s\n";
    });
    return Exit::Ok;
  });

  struct Watch {
    long long id = 0;
    bool plain = false, no_color = false;
    double interval = 1.0;
  };
  auto w = std::make_shared<Watch>();
  auto* watch = rollouts->add_subcommand(
      "watch",
      "Live per-stage progress, gate verdicts and events until the rollout ends.\n"
      "Exit status: 0 completed, 4 halted/rolled_back/aborted, 2 refused, 3 unreachable.");
  watch->add_option("id", w->id, "rollout id")->required();
  watch->add_flag("--plain", w->plain, "plain lines even on a terminal");
  watch->add_flag("--no-color", w->no_color, "no ANSI colours");
  watch->add_option("--interval", w->interval, "re-read the rollout at least every N seconds");
  on_run(watch, ctx, [w](Context& c) -> Result<Exit> {
    WatchOptions o;
    o.tty = !w->plain && !c.as_json && isatty(STDOUT_FILENO);
    o.color = o.tty && !w->no_color && std::getenv("NO_COLOR") == nullptr;
    o.columns = terminal_columns();
    o.poll = std::chrono::milliseconds(static_cast<long long>(std::max(0.1, w->interval) * 1000));
    return watch_rollout(*c.api, w->id, o, *c.out);
  });
}

}  // namespace ringfence::cli
