// Service: channels, blobs, releases, policies.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "proto/ids.hpp"
#include "proto/json_fields.hpp"
#include "proto/json_schema.hpp"
#include "proto/messages.hpp"
#include "proto/try.hpp"
#include "server/core/impl.hpp"
#include "server/validation/validator_command.hpp"

namespace ringfence::server::core {
namespace fs = std::filesystem;

namespace {
std::string blob_file(const std::string& data_dir, const std::string& sha) {
  return data_dir + "/blobs/" + sha.substr(0, 2) + "/" + sha;
}

json channel_json(const Channel& c) {
  json j = {{"name", c.name},
            {"schema", c.schema},
            {"max_bytes", c.max_bytes},
            {"stable_version", c.stable_version ? json(*c.stable_version) : json(nullptr)},
            {"releases", c.releases.size()},
            {"created", c.created}};
  j["validator"] = c.validator ? *c.validator : json(nullptr);
  j["consumer"] = c.consumer ? *c.consumer : json(nullptr);
  return j;
}

constexpr std::size_t kMaxConsumerVersionsChecked = 32;

// The channel's "consumer" field: {"name": N, "min_hosts": 1, "versions": [...]}, normalized.
Expected<json> parse_consumer(const json& v) {
  RF_CHECK(proto::require_object(v, "consumer"));
  RF_CHECK(proto::only_keys(v, {"name", "min_hosts", "versions"}));
  RF_TRY(name, proto::get_string(v, "name", 63));
  if (!proto::is_name(name)) {
    return fail(Errc::InvalidArgument, "consumer name must match [a-z0-9][a-z0-9._-]{0,62}");
  }
  RF_TRY(min_hosts, proto::get_opt_int(v, "min_hosts", 1, 10'000'000));
  json versions = json::array();
  if (auto it = v.find("versions"); it != v.end() && !it->is_null()) {
    if (!it->is_array() || it->size() > 16) {
      return fail(Errc::InvalidArgument, "consumer versions must be an array of at most 16");
    }
    for (const auto& s : *it) {
      if (!s.is_string() || !proto::is_consumer_version(s.get_ref<const std::string&>())) {
        return fail(Errc::InvalidArgument,
                    "a consumer version is 1..64 characters of [A-Za-z0-9._+-]");
      }
      versions.push_back(s);
    }
  }
  return json{{"name", name}, {"min_hosts", min_hosts.value_or(1)}, {"versions", versions}};
}

// Runs the channel's validator once per consumer version that runs on at least min_hosts hosts
// (plus the versions the channel lists), "{consumer_version}" replaced by the version. Returns
// the per-version results; Unprocessable (validation_failed) naming every version that refuses
// the content, or when there is no version to check against. Blocks for the commands: call
// without the service lock.
Expected<json> validate_per_consumer_version(const json& validator, const json& consumer,
                                             const std::map<std::string, std::int64_t>& in_field,
                                             const std::string& path) {
  auto name = consumer["name"].get<std::string>();
  auto min_hosts = consumer["min_hosts"].get<std::int64_t>();
  std::vector<std::pair<std::string, std::int64_t>> versions;  // version, hosts
  for (const auto& [v, n] : in_field) {
    if (n >= min_hosts) versions.emplace_back(v, n);
  }
  for (const auto& v : consumer["versions"]) {
    auto s = v.get<std::string>();
    if (std::none_of(versions.begin(), versions.end(),
                     [&](const auto& p) { return p.first == s; })) {
      auto it = in_field.find(s);
      versions.emplace_back(s, it == in_field.end() ? 0 : it->second);
    }
  }
  auto refuse = [&](std::string message, json findings, json results) {
    json details = {{"findings", std::move(findings)},
                    {"consumer", name},
                    {"min_hosts", min_hosts},
                    {"consumer_versions", std::move(results)}};
    return tl::unexpected(
        Error{Errc::Unprocessable, std::move(message), "validation_failed", details.dump()});
  };
  if (versions.empty()) {
    std::string msg = "no version of consumer '" + name + "' runs on at least " +
                      std::to_string(min_hosts) +
                      " hosts (agents report it with --consumer-version) and the channel lists "
                      "none: there is nothing to validate the content against";
    return refuse(msg, json::array({{{"path", ""}, {"message", msg}}}), json::array());
  }
  if (versions.size() > kMaxConsumerVersionsChecked) {
    std::string msg = std::to_string(versions.size()) + " versions of consumer '" + name +
                      "' reach the threshold of " + std::to_string(min_hosts) +
                      " hosts; at most 32 are checked: raise the channel's consumer.min_hosts";
    return refuse(msg, json::array({{{"path", ""}, {"message", msg}}}), json::array());
  }
  auto argv = validator["argv"].get<std::vector<std::string>>();
  auto timeout = std::chrono::seconds(validator.value("timeout_s", 10));
  json results = json::array();
  json findings = json::array();
  std::vector<std::string> failing;
  for (const auto& [version, hosts] : versions) {
    RF_TRY(res, validation::run_validator(validation::with_consumer_version(argv, version), path,
                                          timeout));
    results.push_back({{"version", version},
                       {"hosts", hosts},
                       {"passed", res.passed},
                       {"exit_code", res.exit_code},
                       {"timed_out", res.timed_out},
                       {"output", res.output}});
    if (!res.passed) {
      failing.push_back(version);
      findings.push_back({{"path", ""},
                          {"message", "consumer '" + name + "' version " + version + " (on " +
                                          std::to_string(hosts) + " hosts) refuses the content" +
                                          (res.timed_out ? " (timed out)" : "")}});
    }
  }
  if (!failing.empty()) {
    std::string list;
    for (const auto& v : failing) list += (list.empty() ? "" : ", ") + v;
    return refuse("the validator command refused the content for consumer '" + name +
                      "' version(s) " + list + ", still in the field",
                  std::move(findings), std::move(results));
  }
  return json{{"name", name}, {"min_hosts", min_hosts}, {"versions", results}};
}
}  // namespace

std::map<std::string, std::int64_t> Service::Impl::consumer_versions(
    const std::string& name) const {
  // Hosts share interned consumer maps: count per map, then per version.
  // Only hosts with a track record speak for the field (like their crash evidence): else one
  // fresh enrollee reporting a made-up version would get every release refused.
  std::unordered_map<const proto::Labels*, std::int64_t> per_set;
  auto now = clock.now_ms();
  for (HostIndex i = 0; i < fleet.slots(); ++i) {
    const auto& h = fleet.at(i);
    if (!h.deleted && h.consumers && had_track_record(h, now)) ++per_set[h.consumers.get()];
  }
  std::map<std::string, std::int64_t> out;
  for (const auto& [set, n] : per_set) {
    if (auto it = set->find(name); it != set->end()) out[it->second] += n;
  }
  return out;
}

json Service::Impl::release_json(const Release& r) const {
  return {{"channel", r.channel},
          {"version", r.version},
          {"sha256", r.sha256},
          {"size", r.size},
          {"notes", r.notes},
          {"state", to_string(r.state)},
          {"manifest", json::parse(proto::canonical_bytes(r.manifest))},
          {"signature", r.signature},
          {"key_id", r.key_id},
          {"validation", r.validation},
          {"created", r.created},
          {"updated", r.updated ? r.updated : r.created}};
}

Status Service::Impl::persist_channel(const Channel& c) {
  std::optional<std::string> v;
  if (c.validator) v = c.validator->dump();
  std::optional<std::string> consumer;
  if (c.consumer) consumer = c.consumer->dump();
  return store.put_channel(
      {c.name, c.schema.dump(), v, c.max_bytes, c.stable_version, c.created, consumer});
}

Status Service::Impl::persist_release(Release& r) {
  if (r.updated_state != r.state) {
    r.updated = std::max(now_s(), r.created);
    r.updated_state = r.state;
  }
  return store.put_release({r.channel, r.version, r.sha256, r.size, r.notes,
                            std::string(to_string(r.state)), proto::canonical_bytes(r.manifest),
                            r.signature, r.validation.dump(), r.created, r.updated});
}

json Service::list_channels() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json out = json::array();
  for (const auto& [n, c] : m.channels) out.push_back(channel_json(c));
  return json{{"channels", out}};
}

Expected<json> Service::get_channel(const std::string& name) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.channels.find(name);
  if (it == m.channels.end()) return fail(Errc::NotFound, "no channel named '" + name + "'");
  return channel_json(it->second);
}

Expected<json> Service::put_channel(const Principal& by, const std::string& name, const json& body,
                                    bool create_only) {
  RF_CHECK(proto::only_keys(body, {"name", "schema", "validator", "max_bytes", "consumer"}));
  if (!proto::is_name(name))
    return fail(Errc::InvalidArgument, "channel name must match [a-z0-9][a-z0-9._-]{0,62}");
  if (auto n = body.find("name"); n != body.end() && (!n->is_string() || *n != name)) {
    return fail(Errc::InvalidArgument, "field 'name' does not match the path");
  }
  json schema = json::object();
  if (auto s = body.find("schema"); s != body.end() && !s->is_null()) schema = *s;
  RF_CHECK(proto::compile_schema(schema));
  if (schema.dump().size() > 64 * 1024)
    return fail(Errc::InvalidArgument, "schema larger than 64 KiB");
  std::optional<json> validator;
  if (auto v = body.find("validator"); v != body.end() && !v->is_null()) {
    if (by.role < Role::Admin) {
      return fail(Errc::PermissionDenied, "setting a validator command needs the admin role");
    }
    RF_CHECK(validation::parse_command(*v));
    validator = *v;
  }
  std::optional<json> consumer;
  if (auto c = body.find("consumer"); c != body.end() && !c->is_null()) {
    RF_TRY(parsed, parse_consumer(*c));
    consumer = std::move(parsed);
  }
  // One without the other would check nothing per version (or run the command with the token
  // itself as the version): refused rather than half-configured.
  bool per_version = validator && validation::takes_consumer_version(
                                      (*validator)["argv"].get<std::vector<std::string>>());
  if (consumer && !per_version) {
    return fail(Errc::InvalidArgument,
                "a channel that names its consumer needs a validator command with "
                "{consumer_version} in its argv");
  }
  if (per_version && !consumer) {
    return fail(Errc::InvalidArgument,
                "the validator command takes {consumer_version}: name the channel's consumer");
  }
  RF_TRY(max_bytes, proto::get_opt_int(body, "max_bytes", 1, 256LL << 20));
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.channels.find(name);
  bool exists = it != m.channels.end();
  if (create_only && exists) return fail(Errc::Conflict, "channel '" + name + "' exists", "exists");
  if (exists && !validator && it->second.validator && by.role < Role::Admin) {
    return fail(Errc::PermissionDenied, "removing a validator command needs the admin role");
  }
  Channel c = exists ? it->second : Channel{};
  c.name = name;
  c.schema = schema;
  c.validator = validator;
  c.consumer = consumer;
  c.max_bytes = max_bytes.value_or(exists ? c.max_bytes : m.opt.default_max_bytes);
  if (!exists) c.created = m.now_s();
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.persist_channel(c));
    RF_CHECK(m.event(by.name, exists ? "channel_updated" : "channel_created", std::nullopt,
                     {{"name", name},
                      {"validator", validator ? *validator : json(nullptr)},
                      {"consumer", consumer ? *consumer : json(nullptr)}}));
    return {};
  }));
  auto& slot = m.channels[name];
  slot = std::move(c);
  return channel_json(slot);
}

Expected<json> Service::adopt_blob(const std::string& temp_path) {
  auto& m = *impl_;
  std::ifstream in(temp_path, std::ios::binary);
  if (!in) return fail(Errc::Internal, "upload vanished");
  proto::Sha256 h;
  std::vector<char> buf(1 << 16);
  std::int64_t size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    auto n = in.gcount();
    if (n > 0) {
      h.update(std::string_view(buf.data(), static_cast<size_t>(n)));
      size += n;
    }
  }
  auto sha = h.final_hex();
  auto dest = blob_file(m.opt.data_dir, sha);
  std::error_code ec;
  fs::create_directories(fs::path(dest).parent_path(), ec);
  if (fs::exists(dest, ec)) {
    fs::remove(temp_path, ec);
  } else {
    fs::rename(temp_path, dest, ec);
    if (ec)
      return fail(Errc::Unavailable, "cannot store blob: " + ec.message(), "storage_unavailable");
    ::chmod(dest.c_str(), 0444);
  }
  return json{{"sha256", sha}, {"size", size}, {"url", "/v1/blobs/" + sha}};
}

Expected<std::string> Service::blob_path(const std::string& sha256) const {
  if (!proto::is_sha256_hex(sha256)) {
    return fail(Errc::InvalidArgument, "a blob id is 64 lower-case hex digits");
  }
  auto p = blob_file(impl_->opt.data_dir, sha256);
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return fail(Errc::NotFound, "no blob " + sha256);
  return p;
}

Expected<json> Service::create_release(const Principal& by, const std::string& channel,
                                       const json& body) {
  RF_CHECK(proto::only_keys(body, {"sha256", "notes", "expires_in_s"}));
  RF_TRY(sha, proto::get_string(body, "sha256", 64));
  if (!proto::is_sha256_hex(sha))
    return fail(Errc::InvalidArgument, "sha256 must be 64 lower-case hex digits");
  RF_TRY(notes, proto::get_opt_string(body, "notes", 16 * 1024));
  RF_TRY(ttl, proto::get_opt_int(body, "expires_in_s", 3600, 365LL * 86400));
  auto& m = *impl_;
  // Snapshot the channel's checks under the lock, validate without it (a validator command may
  // take seconds), then assign the version under the lock.
  json schema;
  std::optional<json> validator, consumer;
  std::int64_t max_bytes = 0;
  // The consumer versions in the field the release is checked against: version -> hosts.
  std::map<std::string, std::int64_t> in_field;
  {
    std::lock_guard lock(m.mu);
    auto it = m.channels.find(channel);
    if (it == m.channels.end()) return fail(Errc::NotFound, "no channel named '" + channel + "'");
    schema = it->second.schema;
    validator = it->second.validator;
    consumer = it->second.consumer;
    max_bytes = it->second.max_bytes;
    if (consumer && validator) in_field = m.consumer_versions((*consumer)["name"]);
  }
  RF_TRY(path, blob_path(sha));
  std::error_code ec;
  auto size = static_cast<std::int64_t>(fs::file_size(path, ec));
  json validation = {{"schema", "passed"}};
  std::vector<proto::Finding> findings;
  if (size > max_bytes) {
    findings.push_back({"", "content is " + std::to_string(size) + " bytes; the channel allows " +
                                std::to_string(max_bytes)});
  } else {
    std::ifstream in(path, std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    RF_TRY(compiled, proto::compile_schema(schema));
    bool schema_is_trivial = schema.is_object() && schema.empty();
    if (!schema_is_trivial) {
      findings = proto::validate_content(compiled, content, static_cast<size_t>(max_bytes));
    }
  }
  if (!findings.empty()) {
    Error e{Errc::Unprocessable, "content fails the channel schema", "validation_failed",
            proto::findings_json(findings)};
    return tl::unexpected(e);
  }
  if (validator && consumer) {
    RF_TRY(per, validate_per_consumer_version(*validator, *consumer, in_field, path));
    validation["consumers"] = std::move(per);
  } else if (validator) {
    auto argv_json = (*validator)["argv"];
    std::vector<std::string> argv;
    for (const auto& a : argv_json) argv.push_back(a.get<std::string>());
    auto timeout_s = validator->value("timeout_s", 10);
    RF_TRY(res, validation::run_validator(argv, path, std::chrono::seconds(timeout_s)));
    validation["command"] = {{"passed", res.passed},
                             {"exit_code", res.exit_code},
                             {"timed_out", res.timed_out},
                             {"output", res.output}};
    if (!res.passed) {
      json details = {
          {"findings",
           json::array({{{"path", ""}, {"message", "validator command refused the content"}}})},
          {"command", validation["command"]}};
      return tl::unexpected(Error{Errc::Unprocessable,
                                  "the channel's validator command refused the content",
                                  "validation_failed", details.dump()});
    }
  }
  std::lock_guard lock(m.mu);
  auto it = m.channels.find(channel);
  if (it == m.channels.end()) return fail(Errc::NotFound, "no channel named '" + channel + "'");
  auto& ch = it->second;
  for (const auto& [v, r] : ch.releases) {
    if (r.sha256 == sha && r.state != ReleaseState::Quarantined &&
        r.state != ReleaseState::Superseded) {
      return fail(Errc::Conflict, "this content is already release " + std::to_string(v),
                  "duplicate_release");
    }
  }
  Release r;
  r.channel = channel;
  r.version = ch.releases.empty() ? 1 : ch.releases.rbegin()->first + 1;
  r.sha256 = sha;
  r.size = size;
  r.notes = notes.value_or("");
  r.created = m.now_s();
  r.manifest = {channel, r.version, sha,
                size,    r.created, r.created + ttl.value_or(m.opt.manifest_ttl_s)};
  r.signature = proto::sign(m.keys.content().secret_key, proto::canonical_bytes(r.manifest));
  r.key_id = m.keys.content_id;
  r.validation = validation;
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.persist_release(r));
    RF_CHECK(m.event(by.name, "release_created", std::nullopt,
                     {{"channel", channel}, {"version", r.version}, {"sha256", sha}}));
    return {};
  }));
  auto& slot = ch.releases[r.version];
  slot = std::move(r);
  return m.release_json(slot);
}

Expected<json> Service::list_releases(const std::string& channel) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.channels.find(channel);
  if (it == m.channels.end()) return fail(Errc::NotFound, "no channel named '" + channel + "'");
  json out = json::array();
  for (const auto& [v, r] : it->second.releases) out.push_back(m.release_json(r));
  return json{{"releases", out}};
}

bool Service::release_feeds_public() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  return m.release_feeds_public;
}

Expected<json> Service::set_release_feeds_public(const Principal& by, bool on) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  if (m.release_feeds_public != on) {
    RF_CHECK(m.store.transaction([&]() -> Status {
      RF_CHECK(m.store.put_setting("release_feeds", json{{"public", on}}.dump()));
      RF_CHECK(m.event(by.name, "release_feeds_changed", std::nullopt, {{"public", on}}));
      return {};
    }));
    m.release_feeds_public = on;
  }
  return json{{"public", m.release_feeds_public}};
}

Expected<json> Service::get_release(const std::string& channel, std::int64_t version) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.channels.find(channel);
  if (it == m.channels.end()) return fail(Errc::NotFound, "no channel named '" + channel + "'");
  auto r = it->second.releases.find(version);
  if (r == it->second.releases.end()) {
    return fail(Errc::NotFound,
                "channel '" + channel + "' has no release " + std::to_string(version));
  }
  return m.release_json(r->second);
}

Expected<json> Service::quarantine_release(const Principal& by, const std::string& channel,
                                           std::int64_t version, const std::string& reason) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.channels.find(channel);
  if (it == m.channels.end()) return fail(Errc::NotFound, "no channel named '" + channel + "'");
  auto rit = it->second.releases.find(version);
  if (rit == it->second.releases.end()) {
    return fail(Errc::NotFound,
                "channel '" + channel + "' has no release " + std::to_string(version));
  }
  auto& rel = rit->second;
  if (rel.state == ReleaseState::Quarantined) return m.release_json(rel);
  // An active rollout of this release is aborted (everyone goes back to stable).
  if (auto* r = m.active_rollout(channel); r && r->version == version) {
    RF_CHECK(m.halt(*r, by.name, "release quarantined: " + reason, json::object(), true));
    return m.release_json(rel);
  }
  Channel& ch = it->second;
  auto saved_release = rel;
  auto saved_stable = ch.stable_version;
  rel.state = ReleaseState::Quarantined;
  if (ch.stable_version == version) {
    // The stable release itself is bad: fall back to the newest earlier release that was stable
    // once (superseded). A release that never passed a rollout must not reach the whole fleet
    // through this back door; with none, the channel has no stable release.
    ch.stable_version.reset();
    for (auto p = ch.releases.rbegin(); p != ch.releases.rend(); ++p) {
      if (p->first < version && p->second.state == ReleaseState::Superseded) {
        ch.stable_version = p->first;
        p->second.state = ReleaseState::Stable;
        break;
      }
    }
  }
  auto st = m.store.transaction([&]() -> Status {
    RF_CHECK(m.persist_release(rel));
    if (ch.stable_version) RF_CHECK(m.persist_release(ch.releases[*ch.stable_version]));
    RF_CHECK(m.persist_channel(ch));
    RF_CHECK(m.event(by.name, "release_quarantined", std::nullopt,
                     {{"channel", channel}, {"version", version}, {"reason", reason}}));
    return {};
  });
  if (!st) {
    rel = saved_release;
    if (ch.stable_version) ch.releases[*ch.stable_version].state = ReleaseState::Superseded;
    ch.stable_version = saved_stable;
    return tl::unexpected(st.error());
  }
  m.rebuild_known_bad();
  m.notify_waiters();
  return m.release_json(rel);
}

void Service::Impl::refresh_manifests() {
  auto now_ms = clock.now_ms();
  if (now_ms < next_manifest_check_ms) return;
  next_manifest_check_ms = now_ms + 60'000;
  auto now = now_ms / 1000;
  bool changed = false;
  for (auto& [name, ch] : channels) {
    // Downgrade authorisations near expiry are dropped; the next answer that needs one signs it.
    changed |= std::erase_if(ch.downgrades, [&](const auto& d) {
                 return d.second.manifest.expires - now <= opt.manifest_ttl_s / 2;
               }) > 0;
    for (auto& [v, r] : ch.releases) {
      if (r.state == ReleaseState::Quarantined || r.state == ReleaseState::Superseded) continue;
      if (r.manifest.expires - now > opt.manifest_ttl_s / 2) continue;
      auto saved = r;
      r.manifest.expires = now + opt.manifest_ttl_s;
      r.signature = proto::sign(keys.content().secret_key, proto::canonical_bytes(r.manifest));
      r.key_id = keys.content_id;
      if (!persist_release(r)) {
        r = saved;
        continue;
      }
      changed = true;
    }
  }
  if (changed) {
    ++desired_generation;  // part of every ETag: agents fetch the fresh manifests
    notify_waiters();
  }
}

// ---------------------------------------------------------------- policies

Status parse_strata(const json& stage, StagePlan& p) {
  auto it = stage.find("strata");
  if (it == stage.end() || it->is_null()) return {};
  // Every error names the field and says it is under "strata".
  auto named = [](const Error& e) {
    Error out = e;
    out.message = "strata: " + out.message;
    return tl::unexpected(out);
  };
  if (!it->is_object()) return fail(Errc::InvalidArgument, "field 'strata' must be an object");
  if (auto st = proto::only_keys(*it, {"keys", "min_hosts_per_stratum", "min_stratum_size"}); !st)
    return named(st.error());
  auto k = it->find("keys");
  if (k == it->end() || !k->is_array() || k->empty() || k->size() > 4) {
    return fail(Errc::InvalidArgument, "field 'strata.keys' must be an array of 1 to 4 label keys");
  }
  StrataPlan out;
  for (const auto& key : *k) {
    if (!key.is_string() || !proto::is_label_key(key.get<std::string>())) {
      return fail(Errc::InvalidArgument,
                  "field 'strata.keys' holds an invalid label key (lower-case letter first, then "
                  "[a-z0-9._-], at most 32)");
    }
    auto name = key.get<std::string>();
    if (std::find(out.keys.begin(), out.keys.end(), name) != out.keys.end()) {
      return fail(Errc::InvalidArgument, "field 'strata.keys' names '" + name + "' twice");
    }
    out.keys.push_back(std::move(name));
  }
  auto m = proto::get_opt_int(*it, "min_hosts_per_stratum", 1, 1000);
  if (!m) return named(m.error());
  auto size = proto::get_opt_int(*it, "min_stratum_size", 1, 10'000'000);
  if (!size) return named(size.error());
  if (*m) out.min_hosts = **m;
  if (*size) out.min_size = **size;
  if (out.min_hosts > out.min_size) {
    return fail(Errc::InvalidArgument, "field 'strata.min_hosts_per_stratum' (" +
                                           std::to_string(out.min_hosts) +
                                           ") must not exceed 'strata.min_stratum_size' (" +
                                           std::to_string(out.min_size) + ")");
  }
  p.strata = std::move(out);
  return {};
}

Expected<std::vector<StagePlan>> parse_stages(const json& stages) {
  if (!stages.is_array() || stages.empty() || stages.size() > 32) {
    return fail(Errc::InvalidArgument, "stages must be an array of 1 to 32 stages");
  }
  std::vector<StagePlan> out;
  for (const auto& s : stages) {
    RF_CHECK(proto::require_object(s, "stage"));
    RF_CHECK(proto::only_keys(s, {"ring", "percent", "bake_s", "min_hosts", "gate", "approval",
                                  "pacing", "implicit", "strata"}));
    StagePlan p;
    RF_TRY(ring, proto::get_string(s, "ring", 63));
    if (!proto::is_name(ring) && ring != kWholeFleetRing)
      return fail(Errc::InvalidArgument, "stage ring must be a ring name (or \"*\": every host)");
    RF_CHECK(parse_pacing(s, p));
    RF_CHECK(parse_strata(s, p));
    RF_TRY(percent, proto::get_opt_number(s, "percent", 0.01, 100));
    RF_TRY(bake, proto::get_opt_int(s, "bake_s", 0, 30 * 86400));
    RF_TRY(min_hosts, proto::get_opt_int(s, "min_hosts", 1, 10'000'000));
    RF_TRY(approval, proto::get_opt_string(s, "approval", 16));
    // Set by the server on the final stage it adds (stored with the plan; a restart must not
    // turn it into an ordinary stage whose min_hosts it may never reach).
    RF_TRY(implicit, proto::get_opt_bool(s, "implicit"));
    p.implicit = implicit.value_or(false);
    p.ring = ring;
    p.percent = percent.value_or(100);
    p.bake_s = bake.value_or(300);
    p.min_hosts = min_hosts.value_or(10);
    if (approval && *approval != "auto" && *approval != "manual") {
      return fail(Errc::InvalidArgument, "stage approval must be 'auto' or 'manual'");
    }
    p.manual = approval && *approval == "manual";
    if (auto g = s.find("gate"); g != s.end() && !g->is_null()) {
      RF_CHECK(proto::require_object(*g, "gate"));
      RF_CHECK(proto::only_keys(*g, {"alpha", "beta", "min_ratio", "baseline_floor", "prior_rate",
                                     "prior_hosts", "max_failure_rate", "baseline_ceiling"}));
      RF_TRY(alpha, proto::get_opt_number(*g, "alpha", 1e-9, 0.5));
      RF_TRY(beta, proto::get_opt_number(*g, "beta", 1e-9, 0.5));
      RF_TRY(ratio, proto::get_opt_number(*g, "min_ratio", 1.01, 1000));
      RF_TRY(floor, proto::get_opt_number(*g, "baseline_floor", 1e-6, 0.5));
      RF_TRY(maxr, proto::get_opt_number(*g, "max_failure_rate", 0, 1));
      RF_TRY(prior_rate, proto::get_opt_number(*g, "prior_rate", 1e-6, 0.5));
      RF_TRY(prior_hosts, proto::get_opt_number(*g, "prior_hosts", 0, 1e7));
      RF_TRY(ceiling, proto::get_opt_number(*g, "baseline_ceiling", 1e-6, 0.5));
      if (ceiling) p.gate.baseline_ceiling = *ceiling;
      if (prior_rate) p.gate.prior_rate = *prior_rate;
      if (prior_hosts) p.gate.prior_hosts = *prior_hosts;
      if (alpha) p.gate.alpha = *alpha;
      if (beta) p.gate.beta = *beta;
      if (ratio) p.gate.min_ratio = *ratio;
      if (floor) p.gate.baseline_floor = *floor;
      if (maxr) p.gate.max_failure_rate = *maxr;
    }
    p.gate.min_hosts = p.min_hosts;
    p.gate.bake_s = p.bake_s;
    auto problem = health::check_params(p.gate);
    if (!problem.empty()) return fail(Errc::InvalidArgument, "gate: " + problem);
    out.push_back(std::move(p));
  }
  return out;
}

json stages_json(const std::vector<StagePlan>& plan) {
  json out = json::array();
  for (const auto& p : plan) {
    out.push_back({{"ring", p.ring},
                   {"percent", p.percent},
                   {"bake_s", p.bake_s},
                   {"min_hosts", p.min_hosts},
                   {"approval", p.manual ? "manual" : "auto"},
                   {"pacing", {{"initial", p.pace_initial}, {"growth", p.pace_growth}}},
                   {"implicit", p.implicit},
                   {"gate",
                    {{"alpha", p.gate.alpha},
                     {"beta", p.gate.beta},
                     {"min_ratio", p.gate.min_ratio},
                     {"baseline_floor", p.gate.baseline_floor},
                     {"prior_rate", p.gate.prior_rate},
                     {"prior_hosts", p.gate.prior_hosts},
                     {"baseline_ceiling", p.gate.baseline_ceiling},
                     {"max_failure_rate", p.gate.max_failure_rate}}}});
    if (!p.strata.keys.empty()) {
      out.back()["strata"] = {{"keys", p.strata.keys},
                              {"min_hosts_per_stratum", p.strata.min_hosts},
                              {"min_stratum_size", p.strata.min_size}};
    }
  }
  return out;
}

json Service::list_policies() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json out = json::array();
  for (const auto& [n, p] : m.policies) out.push_back({{"name", n}, {"stages", stages_json(p)}});
  return json{{"policies", out}};
}

Expected<json> Service::get_policy(const std::string& name) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.policies.find(name);
  if (it == m.policies.end()) return fail(Errc::NotFound, "no policy named '" + name + "'");
  return json{{"name", name}, {"stages", stages_json(it->second)}};
}

Expected<json> Service::put_policy(const Principal& by, const std::string& name, const json& body,
                                   bool create_only) {
  RF_CHECK(proto::only_keys(body, {"name", "stages", "description"}));
  if (!proto::is_name(name))
    return fail(Errc::InvalidArgument, "policy name must match [a-z0-9][a-z0-9._-]{0,62}");
  if (auto n = body.find("name"); n != body.end() && (!n->is_string() || *n != name)) {
    return fail(Errc::InvalidArgument, "field 'name' does not match the path");
  }
  auto sit = body.find("stages");
  if (sit == body.end()) return fail(Errc::InvalidArgument, "field 'stages' is required");
  RF_TRY(plan, parse_stages(*sit));
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  bool exists = m.policies.count(name) > 0;
  if (create_only && exists) return fail(Errc::Conflict, "policy '" + name + "' exists", "exists");
  auto doc = stages_json(plan);
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.put_policy({name, doc.dump()}));
    RF_CHECK(m.event(by.name, exists ? "policy_updated" : "policy_created", std::nullopt,
                     {{"name", name}, {"stages", doc}}));
    return {};
  }));
  m.policies[name] = std::move(plan);
  return json{{"name", name}, {"stages", doc}};
}

}  // namespace ringfence::server::core
