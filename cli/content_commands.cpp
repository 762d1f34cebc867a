// ringfence channels ... / releases ... / policies ...
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/output.hpp"

namespace ringfence::cli {
using nlohmann::json;

namespace {

void print_release_row(Table& t, const json& r) {
  std::string sha = r.value("sha256", "");
  t.row({cell(r["channel"]), cell(r["version"]), cell(r["state"]), cell(r.value("size", json())),
         sha.substr(0, 12), timestamp(r.value("created", json())),
         cell(r.value("notes", json("")))});
}

void print_release(std::ostream& o, const json& r) {
  Table t({"CHANNEL", "VERSION", "STATE", "SIZE", "SHA256", "CREATED", "NOTES"});
  print_release_row(t, r);
  t.print(o);
}

void print_stages(std::ostream& o, const json& stages) {
  Table t({"STAGE", "RING", "PERCENT", "BAKE", "MIN HOSTS", "APPROVAL", "MAX FAIL RATE"});
  int i = 0;
  for (const auto& s : stages) {
    auto gate = s.value("gate", json::object());
    t.row({std::to_string(i++), cell(s["ring"]), cell(s.value("percent", json())) + "%",
           cell(s.value("bake_s", json())) + "s", cell(s.value("min_hosts", json())),
           cell(s.value("approval", json("auto"))), cell(gate.value("max_failure_rate", json()))});
  }
  t.print(o);
}

void add_channels(CLI::App& app, Context& ctx) {
  auto* channels =
      app.add_subcommand("channels", "Channels: streams of content, each with a schema");
  channels->require_subcommand(1);

  on_run(channels->add_subcommand("list", "List channels"), ctx, [](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/channels");
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      Table t({"NAME", "STABLE", "RELEASES", "MAX BYTES", "VALIDATOR", "CREATED"});
      for (const auto& ch : d.value("channels", json::array())) {
        t.row({cell(ch["name"]), cell(ch.value("stable_version", json())),
               cell(ch.value("releases", json())), cell(ch.value("max_bytes", json())),
               ch.value("validator", json()).is_null() ? "-" : "command",
               timestamp(ch.value("created", json()))});
      }
      t.print(o);
    });
    return Exit::Ok;
  });

  auto name = std::make_shared<std::string>();
  auto* show = channels->add_subcommand("show", "Show one channel (with its schema)");
  show->add_option("name", *name, "channel name")->required();
  on_run(show, ctx, [name](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/channels/" + url_encode(*name));
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) { print_fields(o, d); });
    return Exit::Ok;
  });

  struct Flags {
    std::string name, schema_file, validator_file;
    long long max_bytes = 0;
  };
  for (bool create : {true, false}) {
    auto f = std::make_shared<Flags>();
    auto* cmd = channels->add_subcommand(
        create ? "create" : "update",
        create ? "Create a channel" : "Change a channel's schema, limit or validator");
    cmd->add_option("name", f->name, "channel name")->required();
    cmd->add_option("--schema", f->schema_file, "JSON Schema file every release must pass");
    cmd->add_option("--max-bytes", f->max_bytes, "largest release accepted");
    cmd->add_option(
        "--validator", f->validator_file,
        "JSON file {\"argv\":[...],\"timeout_s\":N}: the consumer's own parser (admin)");
    on_run(cmd, ctx, [f, create](Context& c) -> Result<Exit> {
      const std::string path = "/v1/channels/" + url_encode(f->name);
      json body = json::object();
      if (!create) {
        auto cur = c.api->get(path);
        if (!cur) return tl::unexpected(cur.error());
        body["schema"] = cur->value("schema", json::object());
        if (!cur->value("validator", json()).is_null()) body["validator"] = (*cur)["validator"];
        body["max_bytes"] = cur->value("max_bytes", json());
      } else {
        body["name"] = f->name;
      }
      if (!f->schema_file.empty()) {
        auto s = read_json_file(f->schema_file);
        if (!s) return tl::unexpected(s.error());
        body["schema"] = *s;
      }
      if (!f->validator_file.empty()) {
        auto v = read_json_file(f->validator_file);
        if (!v) return tl::unexpected(v.error());
        body["validator"] = *v;
      }
      if (f->max_bytes > 0) body["max_bytes"] = f->max_bytes;
      auto r = create ? c.api->post("/v1/channels", body) : c.api->put(path, body);
      if (!r) return tl::unexpected(r.error());
      c.emit(*r, [create](std::ostream& o, const json& d) {
        o << (create ? "created channel " : "updated channel ") << cell(d["name"]) << "\n";
      });
      return Exit::Ok;
    });
  }
}

void add_releases(CLI::App& app, Context& ctx) {
  auto* releases =
      app.add_subcommand("releases", "Releases: signed, immutable content for a channel");
  releases->require_subcommand(1);

  struct Upload {
    std::string channel, file, notes;
    long long expires_in = 0;
  };
  auto u = std::make_shared<Upload>();
  auto* upload =
      releases->add_subcommand("upload", "Upload a content file and create a release from it");
  upload->add_option("channel", u->channel, "channel name")->required();
  upload->add_option("file", u->file, "content file")->required();
  upload->add_option("--notes", u->notes, "release notes");
  upload->add_option("--expires-in", u->expires_in, "manifest lifetime in seconds");
  on_run(upload, ctx, [u](Context& c) -> Result<Exit> {
    auto bytes = read_file(u->file);
    if (!bytes) return tl::unexpected(bytes.error());
    auto blob = c.api->upload("/v1/blobs", std::move(*bytes));
    if (!blob) return tl::unexpected(blob.error());
    json body = {{"sha256", (*blob)["sha256"]}, {"notes", u->notes}};
    if (u->expires_in > 0) body["expires_in_s"] = u->expires_in;
    auto r = c.api->post("/v1/channels/" + url_encode(u->channel) + "/releases", body);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_release);
    return Exit::Ok;
  });

  auto ch = std::make_shared<std::string>();
  auto* list = releases->add_subcommand("list", "List a channel's releases");
  list->add_option("channel", *ch, "channel name")->required();
  on_run(list, ctx, [ch](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/channels/" + url_encode(*ch) + "/releases");
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      Table t({"CHANNEL", "VERSION", "STATE", "SIZE", "SHA256", "CREATED", "NOTES"});
      for (const auto& rel : d.value("releases", json::array())) print_release_row(t, rel);
      t.print(o);
    });
    return Exit::Ok;
  });

  struct Ref {
    std::string channel, reason;
    long long version = 0;
  };
  auto s = std::make_shared<Ref>();
  auto* show = releases->add_subcommand("show", "Show one release with its manifest");
  show->add_option("channel", s->channel, "channel name")->required();
  show->add_option("version", s->version, "release version")->required();
  on_run(show, ctx, [s](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/channels/" + url_encode(s->channel) + "/releases/" +
                        std::to_string(s->version));
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) { print_fields(o, d); });
    return Exit::Ok;
  });

  auto q = std::make_shared<Ref>();
  auto* quarantine =
      releases->add_subcommand("quarantine", "Put a release on the channel's known-bad list");
  quarantine->add_option("channel", q->channel, "channel name")->required();
  quarantine->add_option("version", q->version, "release version")->required();
  quarantine->add_option("--reason", q->reason, "why (kept in the event log)")->required();
  on_run(quarantine, ctx, [q](Context& c) -> Result<Exit> {
    auto r = c.api->post("/v1/channels/" + url_encode(q->channel) + "/releases/" +
                             std::to_string(q->version) + "/quarantine",
                         json{{"reason", q->reason}});
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_release);
    return Exit::Ok;
  });
}

void add_policies(CLI::App& app, Context& ctx) {
  auto* policies = app.add_subcommand("policies", "Policies: named rollout plans");
  policies->require_subcommand(1);

  on_run(policies->add_subcommand("list", "List policies"), ctx, [](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/policies");
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      Table t({"NAME", "STAGES", "PLAN"});
      for (const auto& p : d.value("policies", json::array())) {
        std::string plan;
        for (const auto& s : p.value("stages", json::array())) {
          if (!plan.empty()) plan += " -> ";
          plan += cell(s["ring"]) + " " + cell(s.value("percent", json())) + "%";
        }
        t.row({cell(p["name"]), std::to_string(p.value("stages", json::array()).size()), plan});
      }
      t.print(o);
    });
    return Exit::Ok;
  });

  auto name = std::make_shared<std::string>();
  auto* show = policies->add_subcommand("show", "Show a policy's stages");
  show->add_option("name", *name, "policy name")->required();
  on_run(show, ctx, [name](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/policies/" + url_encode(*name));
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      o << "policy " << cell(d["name"]) << "\n";
      print_stages(o, d.value("stages", json::array()));
    });
    return Exit::Ok;
  });

  struct Flags {
    std::string name, file;
    std::vector<std::string> stages;
  };
  for (bool create : {true, false}) {
    auto f = std::make_shared<Flags>();
    auto* cmd = policies->add_subcommand(
        create ? "create" : "update",
        create ? "Create a policy from a JSON file or --stage flags" : "Replace a policy's stages");
    cmd->add_option("name", f->name, "policy name")->required();
    cmd->add_option("--file,--stages-file", f->file,
                    "JSON: an array of stages or {\"stages\": [...]}");
    cmd->add_option("--stage", f->stages,
                    "ring:percent[:bake_s[:min_hosts[:manual]]] (repeat, in order)");
    on_run(cmd, ctx, [f, create](Context& c) -> Result<Exit> {
      auto stages = stages_from(f->file, f->stages);
      if (!stages) return tl::unexpected(stages.error());
      if (stages->empty()) return usage_error("a policy needs stages: --file FILE or --stage ...");
      json body = {{"name", f->name}, {"stages", *stages}};
      auto r = create ? c.api->post("/v1/policies", body)
                      : c.api->put("/v1/policies/" + url_encode(f->name), body);
      if (!r) return tl::unexpected(r.error());
      c.emit(*r, [create](std::ostream& o, const json& d) {
        o << (create ? "created policy " : "updated policy ") << cell(d["name"]) << "\n";
        print_stages(o, d.value("stages", json::array()));
      });
      return Exit::Ok;
    });
  }
}

}  // namespace

void add_content_commands(CLI::App& app, Context& ctx) {
  add_channels(app, ctx);
  add_releases(app, ctx);
  add_policies(app, ctx);
}

}  // namespace ringfence::cli
