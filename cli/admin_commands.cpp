// ringfence events ... / tokens ... / enrollment-tokens ... / emergency-stop ...
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/output.hpp"
#include "cli/progress.hpp"
#include "cli/watch.hpp"

namespace ringfence::cli {
using nlohmann::json;

namespace {

void add_events(CLI::App& app, Context& ctx) {
  auto* events = app.add_subcommand("events", "The audit log and rollout timeline");
  events->require_subcommand(1);
  struct Flags {
    long long rollout = 0, after = 0;
    int limit = 100;
    bool follow = false;
  };
  auto f = std::make_shared<Flags>();
  auto* list =
      events->add_subcommand("list", "List events (oldest first); --follow streams new ones");
  list->add_option("--rollout", f->rollout, "only this rollout's events");
  list->add_option("--after", f->after, "events after this id");
  list->add_option("--limit", f->limit, "page size (1..1000)");
  list->add_flag("--follow,-f", f->follow, "keep printing events as they happen (Ctrl-C to stop)");
  on_run(list, ctx, [f](Context& c) -> Result<Exit> {
    std::string q =
        "/v1/events?after=" + std::to_string(f->after) + "&limit=" + std::to_string(f->limit);
    if (f->rollout > 0) q += "&rollout=" + std::to_string(f->rollout);
    auto r = c.api->get(q);
    if (!r) return tl::unexpected(r.error());
    auto page = r->value("events", json::array());
    if (c.as_json && !f->follow) {
      *c.out << r->dump(2) << '\n';
      return Exit::Ok;
    }
    for (const auto& ev : page) *c.out << (c.as_json ? ev.dump() : event_line(ev)) << '\n';
    if (!f->follow) {
      if (page.empty()) *c.out << "(no events)\n";
      return Exit::Ok;
    }
    c.out->flush();
    std::int64_t after =
        r->contains("next_after") ? (*r)["next_after"].get<std::int64_t>() : f->after;
    return follow_events(*c.api, after, f->rollout, c.as_json, *c.out);
  });
}

void add_tokens(CLI::App& app, Context& ctx) {
  auto* tokens = app.add_subcommand("tokens", "API tokens (admin)");
  tokens->require_subcommand(1);

  struct Create {
    std::string name, role;
  };
  auto cr = std::make_shared<Create>();
  auto* create = tokens->add_subcommand("create", "Create an API token; prints it once");
  create->add_option("name", cr->name, "token name")->required();
  create->add_option("--role", cr->role, "viewer, operator, release or admin")
      ->required()
      ->check(CLI::IsMember({"viewer", "operator", "release", "admin"}));
  on_run(create, ctx, [cr](Context& c) -> Result<Exit> {
    auto r = c.api->post("/v1/tokens", json{{"name", cr->name}, {"role", cr->role}});
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      o << "token " << cell(d["name"]) << " (" << cell(d["role"]) << "): " << cell(d["token"])
        << "\n"
        << "it is shown only this once\n";
    });
    return Exit::Ok;
  });

  on_run(tokens->add_subcommand("list", "List API tokens (names and roles, never secrets)"), ctx,
         [](Context& c) -> Result<Exit> {
           auto r = c.api->get("/v1/tokens");
           if (!r) return tl::unexpected(r.error());
           c.emit(*r, [](std::ostream& o, const json& d) {
             Table t({"NAME", "ROLE", "CREATED"});
             for (const auto& tk : d.value("tokens", json::array())) {
               t.row({cell(tk["name"]), cell(tk["role"]), timestamp(tk.value("created", json()))});
             }
             t.print(o);
           });
           return Exit::Ok;
         });

  auto name = std::make_shared<std::string>();
  auto* del = tokens->add_subcommand("delete", "Revoke an API token");
  del->add_option("name", *name, "token name")->required();
  on_run(del, ctx, [name](Context& c) -> Result<Exit> {
    auto r = c.api->del("/v1/tokens/" + url_encode(*name));
    if (!r) return tl::unexpected(r.error());
    c.emit(json{{"deleted", *name}},
           [&](std::ostream& o, const json&) { o << "deleted token " << *name << "\n"; });
    return Exit::Ok;
  });
}

void add_enrollment(CLI::App& app, Context& ctx) {
  auto* enroll = app.add_subcommand("enrollment-tokens", "Tokens agents enroll with");
  enroll->require_subcommand(1);
  struct Flags {
    std::string name;
    std::vector<std::string> labels;
    long long expires_in = 0;
  };
  auto f = std::make_shared<Flags>();
  auto* create = enroll->add_subcommand("create", "Create an enrollment token; prints it");
  create->add_option("name", f->name, "token name")->required();
  create->add_option("--label", f->labels, "key=value given to hosts enrolling with it (repeat)");
  create->add_option("--expires-in", f->expires_in, "lifetime in seconds");
  on_run(create, ctx, [f](Context& c) -> Result<Exit> {
    json body = {{"name", f->name}};
    if (!f->labels.empty()) {
      json labels = json::object();
      for (const auto& kv : f->labels) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
          return usage_error("--label wants key=value, not '" + kv + "'");
        labels[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      body["labels"] = labels;
    }
    if (f->expires_in > 0) body["expires_in_s"] = f->expires_in;
    auto r = c.api->post("/v1/enrollment-tokens", body);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) { o << cell(d["token"]) << "\n"; });
    return Exit::Ok;
  });
}

void add_emergency(CLI::App& app, Context& ctx) {
  auto* es = app.add_subcommand("emergency-stop",
                                "Freeze every channel at once (no new exposure anywhere)");
  es->require_subcommand(1);
  auto print = [](std::ostream& o, const json& d) {
    bool on = d.value("emergency_stop", false);
    o << "emergency stop: " << (on ? "ON" : "off");
    if (on && !d.value("reason", std::string()).empty())
      o << " (" << d["reason"].get<std::string>() << ")";
    o << "\n";
  };
  auto on_reason = std::make_shared<std::string>();
  auto* on = es->add_subcommand("on", "Turn the emergency stop on");
  on->add_option("--reason", *on_reason, "why (kept in the event log)")->required();
  on_run(on, ctx, [on_reason, print](Context& c) -> Result<Exit> {
    auto r = c.api->post("/v1/emergency-stop", json{{"reason", *on_reason}});
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print);
    return Exit::Ok;
  });
  auto off_reason = std::make_shared<std::string>();
  auto* off = es->add_subcommand("off", "Lift the emergency stop");
  off->add_option("--reason", *off_reason, "kept in the event log");
  on_run(off, ctx, [off_reason, print](Context& c) -> Result<Exit> {
    json body = json::object();
    if (!off_reason->empty()) body["reason"] = *off_reason;
    auto r = c.api->del("/v1/emergency-stop", &body);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print);
    return Exit::Ok;
  });
  on_run(es->add_subcommand("status", "Is the emergency stop on?"), ctx,
         [print](Context& c) -> Result<Exit> {
           auto r = c.api->get("/v1/emergency-stop");
           if (!r) return tl::unexpected(r.error());
           c.emit(*r, print);
           return Exit::Ok;
         });
}

}  // namespace

void add_admin_commands(CLI::App& app, Context& ctx) {
  add_events(app, ctx);
  add_tokens(app, ctx);
  add_enrollment(app, ctx);
  add_emergency(app, ctx);
}

}  // namespace ringfence::cli
