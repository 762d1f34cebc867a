// ringfence rings ... / ringfence hosts ...
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/output.hpp"

namespace ringfence::cli {
using nlohmann::json;

namespace {

struct RingFlags {
  std::string name, description, labels, buckets;
  std::vector<std::string> hosts;
  int rank = -1;
};

void add_ring_flags(CLI::App* c, RingFlags& f) {
  c->add_option("--rank", f.rank, "order in which rings are reached (0 first)");
  c->add_option("--buckets", f.buckets, "selector: bucket range LO:HI of 0..10000 (1% = 0:100)");
  c->add_option("--labels", f.labels,
                "selector: label expression, e.g. 'os=windows,site in (fra1)'");
  c->add_option("--hosts", f.hosts, "selector: explicit host ids")->delimiter(',');
  c->add_option("--description", f.description, "free text");
}

// The selector the flags name, or null when none was given.
Result<json> selector_of(const RingFlags& f) {
  int given = !f.buckets.empty() + !f.labels.empty() + !f.hosts.empty();
  if (given > 1) return usage_error("give one selector: --buckets, --labels or --hosts");
  if (!f.labels.empty()) return json{{"labels", f.labels}};
  if (!f.hosts.empty()) return json{{"hosts", f.hosts}};
  if (!f.buckets.empty()) {
    auto colon = f.buckets.find(':');
    try {
      if (colon == std::string::npos) throw std::invalid_argument("no colon");
      return json{
          {"buckets",
           {std::stoll(f.buckets.substr(0, colon)), std::stoll(f.buckets.substr(colon + 1))}}};
    } catch (const std::exception&) {
      return usage_error("--buckets wants LO:HI, e.g. 0:100");
    }
  }
  return json(nullptr);
}

void print_rings(std::ostream& o, const json& doc) {
  Table t({"NAME", "RANK", "SELECTOR", "HOSTS", "DESCRIPTION"});
  for (const auto& r : doc.value("rings", json::array())) {
    t.row({cell(r["name"]), cell(r["rank"]), selector_text(r["selector"]),
           cell(r.value("hosts", json())), cell(r.value("description", json("")))});
  }
  t.print(o);
}

void print_hosts(std::ostream& o, const json& doc) {
  Table t({"HOST", "RING", "BUCKET", "TENANT", "PINNED", "LAST SEEN", "CHANNELS"});
  for (const auto& h : doc.value("hosts", json::array())) {
    std::string chans;
    // One copy, iterated: begin() and end() of two temporaries compare unequal containers.
    const json channels = h.value("channels", json::object());
    for (auto it = channels.begin(); it != channels.end(); ++it) {
      if (!chans.empty()) chans += " ";
      chans += it.key() + "@" + cell(it->value("version", json())) + "(" +
               cell(it->value("state", json())) + ")";
    }
    t.row({cell(h["host_id"]), cell(h.value("ring", json())), cell(h.value("bucket", json())),
           cell(h.value("tenant", json())), cell(h.value("pinned", json(false))),
           timestamp(h.value("last_seen", json())), chans.empty() ? "-" : chans});
  }
  t.print(o);
  if (doc.contains("total")) o << doc["total"] << " host(s) in all\n";
}

void print_host(std::ostream& o, const json& h) { print_fields(o, h); }

void add_rings(CLI::App& app, Context& ctx) {
  auto* rings = app.add_subcommand("rings", "Rings: ordered groups of hosts reached in turn");
  rings->require_subcommand(1);

  on_run(rings->add_subcommand("list", "List rings with their sizes"), ctx,
         [](Context& c) -> Result<Exit> {
           auto r = c.api->get("/v1/rings");
           if (!r) return tl::unexpected(r.error());
           c.emit(*r, print_rings);
           return Exit::Ok;
         });

  auto name = std::make_shared<std::string>();
  auto* show = rings->add_subcommand("show", "Show one ring");
  show->add_option("name", *name, "ring name")->required();
  on_run(show, ctx, [name](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/rings/" + url_encode(*name));
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, [](std::ostream& o, const json& d) {
      json v = d;
      v["selector"] = selector_text(d.value("selector", json()));
      print_fields(o, v);
    });
    return Exit::Ok;
  });

  auto cf = std::make_shared<RingFlags>();
  auto* create = rings->add_subcommand("create", "Create a ring");
  create->add_option("name", cf->name, "ring name")->required();
  add_ring_flags(create, *cf);
  on_run(create, ctx, [cf](Context& c) -> Result<Exit> {
    auto sel = selector_of(*cf);
    if (!sel) return tl::unexpected(sel.error());
    if (sel->is_null())
      return usage_error("a new ring needs a selector: --buckets, --labels or --hosts");
    if (cf->rank < 0) return usage_error("a new ring needs --rank");
    json body = {{"name", cf->name}, {"rank", cf->rank}, {"selector", *sel}};
    if (!cf->description.empty()) body["description"] = cf->description;
    auto r = c.api->post("/v1/rings", body);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r,
           [](std::ostream& o, const json& d) { o << "created ring " << cell(d["name"]) << "\n"; });
    return Exit::Ok;
  });

  auto uf = std::make_shared<RingFlags>();
  auto* update = rings->add_subcommand("update", "Change a ring's rank, selector or description");
  update->add_option("name", uf->name, "ring name")->required();
  add_ring_flags(update, *uf);
  on_run(update, ctx, [uf](Context& c) -> Result<Exit> {
    auto sel = selector_of(*uf);
    if (!sel) return tl::unexpected(sel.error());
    const std::string path = "/v1/rings/" + url_encode(uf->name);
    auto cur = c.api->get(path);
    if (!cur) return tl::unexpected(cur.error());
    json body = {{"rank", uf->rank >= 0 ? json(uf->rank) : (*cur)["rank"]},
                 {"selector", sel->is_null() ? (*cur)["selector"] : *sel},
                 {"description", uf->description.empty() ? cur->value("description", json(""))
                                                         : json(uf->description)}};
    auto r = c.api->put(path, body);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r,
           [](std::ostream& o, const json& d) { o << "updated ring " << cell(d["name"]) << "\n"; });
    return Exit::Ok;
  });

  auto dname = std::make_shared<std::string>();
  auto* del = rings->add_subcommand("delete", "Delete a ring");
  del->add_option("name", *dname, "ring name")->required();
  on_run(del, ctx, [dname](Context& c) -> Result<Exit> {
    auto r = c.api->del("/v1/rings/" + url_encode(*dname));
    if (!r) return tl::unexpected(r.error());
    c.emit(json{{"deleted", *dname}},
           [&](std::ostream& o, const json&) { o << "deleted ring " << *dname << "\n"; });
    return Exit::Ok;
  });

  struct Members {
    std::string name, after;
    int limit = 100;
  };
  auto m = std::make_shared<Members>();
  auto* hosts = rings->add_subcommand("hosts", "List a ring's member hosts");
  hosts->add_option("name", m->name, "ring name")->required();
  hosts->add_option("--limit", m->limit, "page size (1..1000)");
  hosts->add_option("--after", m->after, "host id to page after");
  on_run(hosts, ctx, [m](Context& c) -> Result<Exit> {
    std::string q = "/v1/rings/" + url_encode(m->name) + "/hosts?limit=" + std::to_string(m->limit);
    if (!m->after.empty()) q += "&after=" + url_encode(m->after);
    auto r = c.api->get(q);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_hosts);
    return Exit::Ok;
  });
}

void add_hosts(CLI::App& app, Context& ctx) {
  auto* hosts = app.add_subcommand("hosts", "Hosts: enrolled endpoints");
  hosts->require_subcommand(1);

  struct Filter {
    std::string ring, label, channel, after;
    long long version = 0;
    int limit = 100;
  };
  auto f = std::make_shared<Filter>();
  auto* list = hosts->add_subcommand("list", "List hosts");
  list->add_option("--ring", f->ring, "only this ring's members");
  list->add_option("--label", f->label, "key or key=value");
  list->add_option("--channel", f->channel, "hosts that hold this channel");
  list->add_option("--version", f->version, "... at this version");
  list->add_option("--limit", f->limit, "page size (1..1000)");
  list->add_option("--after", f->after, "host id to page after");
  on_run(list, ctx, [f](Context& c) -> Result<Exit> {
    std::string q = "/v1/hosts?limit=" + std::to_string(f->limit);
    if (!f->ring.empty()) q += "&ring=" + url_encode(f->ring);
    if (!f->label.empty()) q += "&label=" + url_encode(f->label);
    if (!f->channel.empty()) q += "&channel=" + url_encode(f->channel);
    if (f->version > 0) q += "&version=" + std::to_string(f->version);
    if (!f->after.empty()) q += "&after=" + url_encode(f->after);
    auto r = c.api->get(q);
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_hosts);
    return Exit::Ok;
  });

  auto id = std::make_shared<std::string>();
  auto* show = hosts->add_subcommand("show", "Show one host");
  show->add_option("id", *id, "host id")->required();
  on_run(show, ctx, [id](Context& c) -> Result<Exit> {
    auto r = c.api->get("/v1/hosts/" + url_encode(*id));
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_host);
    return Exit::Ok;
  });

  for (bool pin : {true, false}) {
    auto pid = std::make_shared<std::string>();
    auto* cmd = hosts->add_subcommand(pin ? "pin" : "unpin",
                                      pin ? "Hold a host on each channel's stable release (N-1)"
                                          : "Let a pinned host take rollouts again");
    cmd->add_option("id", *pid, "host id")->required();
    on_run(cmd, ctx, [pid, pin](Context& c) -> Result<Exit> {
      auto r = c.api->patch("/v1/hosts/" + url_encode(*pid), json{{"pinned", pin}});
      if (!r) return tl::unexpected(r.error());
      c.emit(*r, [&](std::ostream& o, const json&) {
        o << (pin ? "pinned " : "unpinned ") << *pid << "\n";
      });
      return Exit::Ok;
    });
  }

  struct Label {
    std::string id;
    std::vector<std::string> set, remove;
  };
  auto l = std::make_shared<Label>();
  auto* label = hosts->add_subcommand("label", "Set or remove a host's labels");
  label->add_option("id", l->id, "host id")->required();
  label->add_option("labels", l->set, "key=value ...");
  label->add_option("--remove", l->remove, "label keys to remove");
  on_run(label, ctx, [l](Context& c) -> Result<Exit> {
    if (l->set.empty() && l->remove.empty())
      return usage_error("give key=value labels or --remove KEY");
    const std::string path = "/v1/hosts/" + url_encode(l->id);
    auto cur = c.api->get(path);
    if (!cur) return tl::unexpected(cur.error());
    json labels = cur->value("labels", json::object());
    for (const auto& kv : l->set) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        return usage_error("labels are key=value, not '" + kv + "'");
      labels[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (const auto& k : l->remove) labels.erase(k);
    auto r = c.api->patch(path, json{{"labels", labels}});
    if (!r) return tl::unexpected(r.error());
    c.emit(*r, print_host);
    return Exit::Ok;
  });

  auto did = std::make_shared<std::string>();
  auto* del = hosts->add_subcommand("delete", "Forget a host (it must enroll again)");
  del->add_option("id", *did, "host id")->required();
  on_run(del, ctx, [did](Context& c) -> Result<Exit> {
    auto r = c.api->del("/v1/hosts/" + url_encode(*did));
    if (!r) return tl::unexpected(r.error());
    c.emit(json{{"deleted", *did}},
           [&](std::ostream& o, const json&) { o << "deleted host " << *did << "\n"; });
    return Exit::Ok;
  });
}

}  // namespace

void add_fleet_commands(CLI::App& app, Context& ctx) {
  add_rings(app, ctx);
  add_hosts(app, ctx);
}

}  // namespace ringfence::cli
