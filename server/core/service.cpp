// Service: construction, loading, auth, tokens, rings, hosts, events.
#include <algorithm>
#include <filesystem>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <fstream>

#include "proto/bucket.hpp"
#include "proto/ids.hpp"
#include "proto/json_fields.hpp"
#include "proto/try.hpp"
#include "server/core/impl.hpp"

namespace ringfence::server::core {

std::string_view to_string(Role r) noexcept {
  switch (r) {
    case Role::Viewer:
      return "viewer";
    case Role::Operator:
      return "operator";
    case Role::Release:
      return "release";
    case Role::Admin:
      return "admin";
  }
  return "viewer";
}

std::optional<Role> role_from(std::string_view s) noexcept {
  if (s == "viewer") return Role::Viewer;
  if (s == "operator") return Role::Operator;
  if (s == "release") return Role::Release;
  if (s == "admin") return Role::Admin;
  return std::nullopt;
}

std::string_view to_string(ReleaseState s) noexcept {
  switch (s) {
    case ReleaseState::Validated:
      return "validated";
    case ReleaseState::Rolling:
      return "rolling";
    case ReleaseState::Stable:
      return "stable";
    case ReleaseState::Quarantined:
      return "quarantined";
    case ReleaseState::Superseded:
      return "superseded";
  }
  return "validated";
}

std::optional<ReleaseState> release_state_from(std::string_view s) noexcept {
  for (auto st : {ReleaseState::Validated, ReleaseState::Rolling, ReleaseState::Stable,
                  ReleaseState::Quarantined, ReleaseState::Superseded}) {
    if (to_string(st) == s) return st;
  }
  return std::nullopt;
}

Service::Service(store::Store& store, const Clock& clock, proto::KeyPair signing_key,
                 Options options)
    : impl_(std::make_unique<Impl>(store, clock, signing_key, std::move(options))) {}

Service::~Service() = default;

namespace {
proto::Labels labels_from_json(const std::string& text) {
  proto::Labels out;
  auto j = json::parse(text, nullptr, false);
  if (!j.is_object()) return out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it->is_string()) out[it.key()] = it->get<std::string>();
  }
  return out;
}

std::string bearer(std::string_view header) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (header.size() <= kPrefix.size() || header.substr(0, kPrefix.size()) != kPrefix) return {};
  auto t = header.substr(kPrefix.size());
  if (t.size() > 256) return {};
  return std::string(t);
}

Expected<std::vector<fleet::Ring>> rings_from_rows(const std::vector<store::RingRow>& rows) {
  std::vector<fleet::Ring> out;
  for (const auto& r : rows) {
    auto sj = json::parse(r.selector_json, nullptr, false);
    auto sel = fleet::parse_selector(sj);
    if (!sel) return fail(Errc::Internal, "stored ring " + r.name + " has a bad selector");
    out.push_back(fleet::Ring{r.name, r.rank, std::move(*sel), r.description, 0});
  }
  return out;
}
}  // namespace

Status Service::load() {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  RF_TRY(keys, load_server_keys(m.opt.data_dir, m.key, m.now_s()));
  m.keys = std::move(keys);
  m.key_stamp = file_stamp(m.opt.data_dir + "/keyset.json");
  RF_TRY(snap, m.store.load());
  for (const auto& t : snap.tokens) {
    m.tokens.push_back({t.name, t.hash, role_from(t.role).value_or(Role::Viewer), t.created});
  }
  for (const auto& t : snap.enroll_tokens) {
    EnrollToken et;
    et.name = t.name;
    et.hash = t.hash;
    et.labels = labels_from_json(t.labels_json);
    et.expires = t.expires;
    et.created = t.created;
    et.max_uses = t.max_uses;
    et.uses = t.uses;
    et.tenant = t.tenant;
    et.rate_per_min = t.rate_per_min;
    et.revoked = t.revoked;
    m.enroll_tokens.push_back(std::move(et));
  }
  // The installation's bucket key: made once, kept in the settings, never served. Every bucket
  // (and so every bucket-range ring) depends on it, so it must never change afterwards.
  std::optional<proto::BucketKey> bucket_key;
  for (const auto& [k, v] : snap.settings) {
    if (k != "bucket_key") continue;
    if (v.size() != 64) return fail(Errc::Internal, "stored bucket_key is not 64 hex digits");
    bucket_key = fleet::Digest32::from_hex(v).bytes;
  }
  if (!bucket_key) {
    bucket_key = proto::random_bucket_key();
    RF_CHECK(m.store.put_setting("bucket_key", fleet::Digest32{*bucket_key}.hex()));
  }
  m.fleet.set_bucket_key(*bucket_key);
  RF_TRY(rings, rings_from_rows(snap.rings));
  m.fleet.set_rings(std::move(rings));
  m.fleet.reserve(snap.hosts.size());
  for (const auto& h : snap.hosts) {
    fleet::Host host;
    host.id = h.host_id;
    host.credential_hash = fleet::Digest32::from_hex(h.credential_hash);
    host.labels = m.fleet.intern(labels_from_json(h.labels_json));
    host.tenant = h.tenant;
    host.pinned = h.pinned;
    host.agent_version = h.agent_version;
    host.enrolled = h.enrolled;
    host.last_seen_ms = h.last_seen * 1000;
    host.boot_id_hash = static_cast<std::uint64_t>(h.boot_hash);
    if (auto consumers = labels_from_json(h.consumers_json); !consumers.empty())
      host.consumers = m.fleet.intern(std::move(consumers));
    auto cj = json::parse(h.channels_json, nullptr, false);
    if (cj.is_object()) {
      for (auto it = cj.begin(); it != cj.end(); ++it) {
        if (!it->is_object()) continue;
        host.channels.push_back(
            {it.key(), it->value("version", std::int64_t{0}), it->value("state", std::string())});
      }
    }
    m.fleet.upsert(std::move(host));
  }
  for (const auto& t : snap.host_trust) {
    auto i = m.fleet.find(t.host_id);
    if (!i) continue;
    m.fleet.at(*i).trust_since_ms = t.since_ms;
    if (t.since_ms == 0 && !t.enroll_token.empty() && t.enroll_token.rfind("reset:", 0) != 0) {
      m.unclaimed[*i] = t.enroll_token;
    }
  }
  // The rows' strings were interleaved on the heap with long-lived allocations (SQLite's page
  // cache), so freeing them returns nothing to the system by itself: hand the free pages back
  // (a million hosts' rows are ~200 MB of resident memory otherwise).
  std::vector<store::HostRow>().swap(snap.hosts);
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  for (const auto& c : snap.channels) {
    Channel ch;
    ch.name = c.name;
    ch.schema = json::parse(c.schema_json, nullptr, false);
    if (c.validator_json) ch.validator = json::parse(*c.validator_json, nullptr, false);
    if (c.consumer_json) ch.consumer = json::parse(*c.consumer_json, nullptr, false);
    ch.max_bytes = c.max_bytes;
    ch.stable_version = c.stable_version;
    ch.created = c.created;
    m.channels[c.name] = std::move(ch);
  }
  for (const auto& r : snap.releases) {
    auto cit = m.channels.find(r.channel);
    if (cit == m.channels.end()) continue;
    Release rel;
    rel.channel = r.channel;
    rel.version = r.version;
    rel.sha256 = r.sha256;
    rel.size = r.size;
    rel.notes = r.notes;
    rel.state = release_state_from(r.state).value_or(ReleaseState::Validated);
    auto mj = json::parse(r.manifest_json, nullptr, false);
    rel.manifest = {r.channel,
                    r.version,
                    r.sha256,
                    r.size,
                    mj.value("created", std::int64_t{0}),
                    mj.value("expires", std::int64_t{0})};
    rel.signature = r.signature;
    // Which online key signed it is not stored: found again here for content still offered
    // (resign_content then signs with the current content key whatever no key here verifies).
    if (rel.state != ReleaseState::Quarantined && rel.state != ReleaseState::Superseded) {
      auto bytes = proto::canonical_bytes(rel.manifest);
      for (const auto& [id, kp] : m.keys.online) {
        if (proto::verify(kp.public_key, bytes, rel.signature)) rel.key_id = id;
      }
    }
    rel.validation = json::parse(r.validation_json, nullptr, false);
    rel.updated = r.updated ? r.updated : r.created;
    rel.updated_state = rel.state;
    rel.created = r.created;
    cit->second.releases[r.version] = std::move(rel);
  }
  for (const auto& p : snap.policies) {
    auto pj = json::parse(p.stages_json, nullptr, false);
    auto plan = parse_stages(pj);
    if (!plan) continue;
    m.policies[p.name] = std::move(*plan);
    m.policy_docs[p.name] = pj;
  }
  for (const auto& r : snap.rollouts) {
    auto body = json::parse(r.body_json, nullptr, false);
    Rollout ro;
    ro.id = r.id;
    ro.channel = r.channel;
    ro.version = r.version;
    ro.state = rollout::state_from(r.state).value_or(rollout::State::Aborted);
    ro.stage = static_cast<std::size_t>(r.stage);
    ro.created = r.created;
    ro.updated = r.updated;
    if (body.is_object()) {
      auto plan = parse_stages(body.value("plan", json::array()));
      if (plan) ro.plan = std::move(*plan);
      ro.policy = body.value("policy", std::string());
      if (body.contains("previous_stable") && body["previous_stable"].is_number_integer()) {
        ro.previous_stable = body["previous_stable"].get<std::int64_t>();
      }
      ro.first_apply_ms = body.value("first_apply_ms", std::int64_t{0});
      ro.halted_ms = body.value("halted_ms", std::int64_t{0});
      ro.halt_reason = body.value("halt_reason", std::string());
      ro.stages.resize(ro.plan.size());
      auto st = body.value("stages", json::array());
      for (std::size_t i = 0; i < ro.stages.size() && i < st.size(); ++i) {
        ro.stages[i].started_ms = st[i].value("started_ms", std::int64_t{0});
        ro.stages[i].approved = st[i].value("approved", false);
        ro.stages[i].state = st[i].value("state", std::string("waiting"));
        if (rollout::is_terminal(ro.state) && st[i].contains("counts")) {
          // A finished rollout's figures as it ended (an active one's are rebuilt from its
          // exposures below).
          auto c = st[i]["counts"];
          auto& k = ro.stages[i].counts;
          k.exposed = c.value("exposed", std::int64_t{0});
          k.applied = c.value("applied", std::int64_t{0});
          k.healthy = c.value("healthy", std::int64_t{0});
          k.failed = c.value("failed", std::int64_t{0});
          k.silent = c.value("silent", std::int64_t{0});
        }
      }
    }
    m.next_rollout_id = std::max(m.next_rollout_id, r.id + 1);
    m.rollouts[r.id] = std::move(ro);
  }
  for (const auto& [k, v] : snap.settings) {
    if (k == "release_feeds") {
      m.release_feeds_public = json::parse(v, nullptr, false).value("public", false);
    }
    if (k == "emergency_stop") {
      auto j = json::parse(v, nullptr, false);
      m.emergency = j.value("on", false);
      m.emergency_reason = j.value("reason", std::string());
    }
  }
  // Exposure is stored per host (every acknowledged change is); for a database from before it
  // was, or a host whose exposure was not written yet, it is rebuilt from what the hosts said:
  // a host exposed at the stage of the first reached ring that covers it.
  auto attach = [&m](Rollout& r, HostIndex i) -> Exposure& {
    if (auto e = r.exposed.find(i); e != r.exposed.end()) return e->second;
    std::size_t stage = 0;
    for (std::size_t s = 0; s <= r.stage && s < r.plan.size(); ++s) {
      if (m.stage_covers(r, s, m.fleet.at(i))) {
        stage = s;
        break;
      }
    }
    return m.expose(r, i, stage);
  };
  for (auto& [id, r] : m.rollouts) {
    if (rollout::is_terminal(r.state) || r.stages.empty()) continue;
    RF_TRY(stored, m.store.list_exposures(r.id));
    for (const auto& row : stored) {
      auto i = m.fleet.find(row.host_id);
      if (!i || r.exposed.count(*i)) continue;
      auto stage = static_cast<std::size_t>(
          std::clamp<std::int64_t>(row.stage, 0, static_cast<std::int64_t>(r.stages.size()) - 1));
      auto& e = r.exposed[*i];
      e.host = *i;
      e.stage = static_cast<std::uint8_t>(stage);
      e.short_boots = static_cast<std::uint8_t>(std::clamp<std::int64_t>(row.short_boots, 0, 255));
      auto& c = r.stages[stage].counts;
      ++c.exposed;
      m.note_exposed(r, *i, e);  // counted (track record), out of the control cohort
      // Only hosts with a track record move the gate's counts (see Impl::counts).
      const std::int64_t k = e.counted ? 1 : 0;
      if (row.applied_ms > 0) {
        e.applied = true;
        e.applied_ms = row.applied_ms;
        c.applied += k;
      }
      if (row.failed) {
        e.failed = true;
        c.failed += k;
        if (row.silent) {
          e.silent = true;
          c.silent += k;
        }
      } else if (row.healthy && e.applied) {
        e.healthy = true;
        c.healthy += k;
      }
    }
    // Hosts that report running the rolling release applied it.
    for (HostIndex i = 0; i < m.fleet.slots(); ++i) {
      const auto& h = m.fleet.at(i);
      if (h.deleted) continue;
      for (const auto& c : h.channels) {
        if (c.channel == r.channel && c.version == r.version) {
          m.mark_applied(r, attach(r, i), h.last_seen_ms);
        }
      }
    }
    if (!rollout::is_active(r.state) || r.stages.empty() || !r.stages[0].started_ms) continue;
    // The gate's evidence: the channel's reports since the rollout started, through the path live
    // reports take (failures on the release, crashes of the control cohort). A host that failed
    // and has since gone back to stable was exposed all the same. Reports that were still in
    // memory when the process died (less than one flush, 250 ms) are lost.
    RF_TRY(rows, m.store.list_reports(r.channel, r.stages[0].started_ms / 1000, 10'000'000));
    for (const auto& row : rows) {
      auto i = m.fleet.find(row.host_id);
      auto kind = proto::report_kind_from(row.kind);
      if (!i || !kind || !row.version) continue;
      if (*row.version == r.version) attach(r, *i);
      m.host_signal(*i, r.channel, *row.version, *kind);
    }
  }
  // A halt or an abort a killed process left half-done is finished now (the quarantine and the
  // rollback are idempotent: a finished one changes nothing).
  // When the store cannot take them now (a full disk at start), tick() retries them: the server
  // still comes up to serve reads and agents.
  m.retry_rollbacks();
  // The fleet could not talk to a stopped server: silence counts again once every agent has
  // had the time to come back (the stored last_seen may be from long ago).
  // The grace ends early once the fleet is back (Impl::note_returned).
  for (const auto& [id, r] : m.rollouts) {
    if (rollout::is_active(r.state))
      m.silence_not_before_ms = m.clock.now_ms() + m.opt.restart_grace_s * 1000;
  }
  if (m.silence_not_before_ms > m.clock.now_ms()) m.start_restart_grace();
  m.restore_budget(snap.budget);
  m.resign_content();
  m.rebuild_known_bad();
  return {};
}

Expected<std::optional<std::string>> Service::bootstrap_admin(std::optional<std::string> wanted) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  for (const auto& t : m.tokens) {
    if (t.role == Role::Admin) return std::optional<std::string>{};
  }
  std::string token = wanted && !wanted->empty() ? *wanted : "rf_" + proto::random_hex(24);
  if (token.size() < 16 || token.size() > 200) {
    return fail(Errc::InvalidArgument, "RINGFENCE_ADMIN_TOKEN must be 16..200 characters");
  }
  ApiToken t{"admin", proto::sha256_hex(token), Role::Admin, m.now_s()};
  RF_CHECK(m.store.put_token({t.name, "admin", t.hash, t.created}));
  m.tokens.push_back(t);
  return std::optional<std::string>(token);
}

std::string Service::signing_public_key() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  const auto& pk = m.keys.content().public_key;
  return proto::base64_encode(
      std::string_view(reinterpret_cast<const char*>(pk.data()), pk.size()));
}

Expected<Principal> Service::authenticate(std::string_view header) const {
  auto& m = *impl_;
  auto tok = bearer(header);
  if (tok.empty()) {
    return fail(Errc::Unauthenticated, "missing or malformed Authorization: Bearer token");
  }
  auto hash = proto::sha256_hex(tok);
  std::lock_guard lock(m.mu);
  const ApiToken* found = nullptr;
  for (const auto& t : m.tokens) {  // compare every hash in constant time, no early exit
    if (proto::constant_time_equal(t.hash, hash)) found = &t;
  }
  if (!found) return fail(Errc::Unauthenticated, "unknown token");
  return Principal{found->name, found->role};
}

Expected<std::int64_t> Service::authenticate_host(std::string_view header) const {
  auto& m = *impl_;
  auto tok = bearer(header);
  // Host credentials are "<host_id>.<secret>".
  auto dot = tok.find('.');
  if (tok.empty() || dot != 36) {
    return fail(Errc::Unauthenticated, "missing or malformed host credential");
  }
  auto id = tok.substr(0, dot);
  auto hash = fleet::Digest32::sha256_of(std::string_view(tok).substr(dot + 1));
  std::lock_guard lock(m.mu);
  auto idx = m.fleet.find(id);
  if (!idx || !m.fleet.at(*idx).credential_hash.equals(hash)) {
    return fail(Errc::Unauthenticated, "unknown host credential");
  }
  return static_cast<std::int64_t>(*idx);
}

// ---------------------------------------------------------------- tokens

Expected<json> Service::create_token(const Principal& by, const json& body) {
  RF_CHECK(proto::only_keys(body, {"name", "role"}));
  RF_TRY(name, proto::get_string(body, "name", 63));
  RF_TRY(role_s, proto::get_string(body, "role", 16));
  if (!proto::is_name(name))
    return fail(Errc::InvalidArgument, "name must match [a-z0-9][a-z0-9._-]{0,62}");
  auto role = role_from(role_s);
  if (!role) return fail(Errc::InvalidArgument, "role must be viewer, operator, release or admin");
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  for (const auto& t : m.tokens) {
    if (t.name == name) return fail(Errc::Conflict, "token '" + name + "' exists", "exists");
  }
  std::string token = "rf_" + proto::random_hex(24);
  ApiToken t{name, proto::sha256_hex(token), *role, m.now_s()};
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.put_token({t.name, std::string(to_string(t.role)), t.hash, t.created}));
    RF_CHECK(m.event(by.name, "token_created", std::nullopt, {{"name", name}, {"role", role_s}}));
    return {};
  }));
  m.tokens.push_back(t);
  return json{{"name", name}, {"role", role_s}, {"token", token}, {"created", t.created}};
}

json Service::list_tokens() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json out = json::array();
  for (const auto& t : m.tokens) {
    out.push_back({{"name", t.name}, {"role", to_string(t.role)}, {"created", t.created}});
  }
  return json{{"tokens", out}};
}

Status Service::delete_token(const Principal& by, const std::string& name) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = std::find_if(m.tokens.begin(), m.tokens.end(),
                         [&](const ApiToken& t) { return t.name == name; });
  if (it == m.tokens.end()) return fail(Errc::NotFound, "no token named '" + name + "'");
  if (it->role == Role::Admin &&
      std::count_if(m.tokens.begin(), m.tokens.end(),
                    [](const ApiToken& t) { return t.role == Role::Admin; }) == 1) {
    return fail(Errc::Conflict, "cannot delete the last admin token", "last_admin");
  }
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.delete_token(name));
    RF_CHECK(m.event(by.name, "token_deleted", std::nullopt, {{"name", name}}));
    return {};
  }));
  m.tokens.erase(it);
  return {};
}

Expected<json> Service::create_enrollment_token(const Principal& by, const json& body) {
  RF_CHECK(proto::only_keys(
      body, {"name", "labels", "expires_in_s", "max_uses", "tenant", "rate_per_min"}));
  RF_TRY(name, proto::get_string(body, "name", 63));
  if (!proto::is_name(name))
    return fail(Errc::InvalidArgument, "name must match [a-z0-9][a-z0-9._-]{0,62}");
  RF_TRY(expires_in, proto::get_opt_int(body, "expires_in_s", 60, 10LL * 365 * 86400));
  RF_TRY(max_uses, proto::get_opt_int(body, "max_uses", 1, 100'000'000));
  RF_TRY(rate_per_min, proto::get_opt_int(body, "rate_per_min", 1, 1'000'000));
  RF_TRY(tenant, proto::get_opt_string(body, "tenant", 128));
  if (tenant && !proto::is_label_value(*tenant)) {
    return fail(Errc::InvalidArgument, "field 'tenant' must be a label value");
  }
  proto::Labels labels;
  if (auto it = body.find("labels"); it != body.end() && !it->is_null()) {
    if (!it->is_object() || it->size() > proto::kMaxLabels) {
      return fail(Errc::InvalidArgument, "labels must be an object of at most 32 entries");
    }
    for (auto l = it->begin(); l != it->end(); ++l) {
      if (!proto::is_label_key(l.key()) || !l->is_string() ||
          !proto::is_label_value(l->get_ref<const std::string&>())) {
        return fail(Errc::InvalidArgument, "invalid label '" + l.key().substr(0, 40) + "'");
      }
      labels[l.key()] = l->get<std::string>();
    }
  }
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  for (const auto& t : m.enroll_tokens) {
    if (t.name == name)
      return fail(Errc::Conflict, "enrollment token '" + name + "' exists", "exists");
  }
  std::string token = "rfe_" + proto::random_hex(24);
  EnrollToken t;
  t.name = name;
  t.hash = proto::sha256_hex(token);
  t.labels = labels;
  t.created = m.now_s();
  if (expires_in) t.expires = t.created + *expires_in;
  t.max_uses = max_uses;
  t.tenant = tenant.value_or("");
  t.rate_per_min = rate_per_min.value_or(0);
  store::EnrollTokenRow row;
  row.name = t.name;
  row.hash = t.hash;
  row.labels_json = json(labels).dump();
  row.expires = t.expires;
  row.created = t.created;
  row.max_uses = t.max_uses;
  row.tenant = t.tenant;
  row.rate_per_min = t.rate_per_min;
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.put_enroll_token(row));
    RF_CHECK(m.event(by.name, "enrollment_token_created", std::nullopt,
                     {{"name", name},
                      {"tenant", t.tenant},
                      {"max_uses", max_uses ? json(*max_uses) : json(nullptr)},
                      {"rate_per_min", t.rate_per_min}}));
    return {};
  }));
  m.enroll_tokens.push_back(t);
  json out = m.enroll_token_json(m.enroll_tokens.back());
  out["token"] = token;
  return out;
}

json Service::Impl::enroll_token_json(const EnrollToken& t) const {
  auto rate = t.rate_per_min > 0 ? t.rate_per_min : opt.enroll_rate_per_min;
  std::string state = t.revoked                             ? "revoked"
                      : t.expires && *t.expires < now_s()   ? "expired"
                      : t.max_uses && t.uses >= *t.max_uses ? "used_up"
                                                            : "active";
  return {{"name", t.name},
          {"labels", t.labels},
          {"tenant", t.tenant.empty() ? json(nullptr) : json(t.tenant)},
          {"max_uses", t.max_uses ? json(*t.max_uses) : json(nullptr)},
          {"uses", t.uses},
          {"rate_per_min", rate > 0 ? json(rate) : json(nullptr)},
          {"expires", t.expires ? json(*t.expires) : json(nullptr)},
          {"created", t.created},
          {"revoked", t.revoked ? json(*t.revoked) : json(nullptr)},
          {"state", state}};
}

json Service::list_enrollment_tokens() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json out = json::array();
  for (const auto& t : m.enroll_tokens) out.push_back(m.enroll_token_json(t));
  return json{{"enrollment_tokens", out}};
}

Status Service::revoke_enrollment_token(const Principal& by, const std::string& name) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = std::find_if(m.enroll_tokens.begin(), m.enroll_tokens.end(),
                         [&](const EnrollToken& t) { return t.name == name; });
  if (it == m.enroll_tokens.end()) {
    return fail(Errc::NotFound, "no enrollment token named '" + name + "'");
  }
  if (it->revoked) return {};
  auto when = m.now_s();
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.revoke_enroll_token(name, when));
    RF_CHECK(m.event(by.name, "enrollment_token_revoked", std::nullopt,
                     {{"name", name}, {"uses", it->uses}}));
    return {};
  }));
  it->revoked = when;
  return {};
}

// ---------------------------------------------------------------- rings

json Service::readiness() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json out{{"emergency_stop", m.emergency}};
  if (m.store_failing_since_ms != 0) {
    out["store_failing_since"] = m.store_failing_since_ms / 1000;
    out["store_error"] = m.store_error;
  }
  return out;
}

json Service::list_rings() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json out = json::array();
  for (const auto& r : m.fleet.rings()) {
    out.push_back({{"name", r.name},
                   {"rank", r.rank},
                   {"selector", json::parse(fleet::selector_json(r.selector))},
                   {"description", r.description},
                   {"hosts", r.size}});
  }
  return json{{"rings", out}};
}

Expected<json> Service::get_ring(const std::string& name) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  int i = m.fleet.ring_index(name);
  if (i < 0) return fail(Errc::NotFound, "no ring named '" + name + "'");
  const auto& r = m.fleet.rings()[static_cast<size_t>(i)];
  return json{{"name", r.name},
              {"rank", r.rank},
              {"selector", json::parse(fleet::selector_json(r.selector))},
              {"description", r.description},
              {"hosts", r.size},
              {"catch_all", static_cast<size_t>(i) + 1 == m.fleet.rings().size()}};
}

Expected<json> Service::put_ring(const Principal& by, const std::string& name, const json& body,
                                 bool create_only) {
  RF_CHECK(proto::only_keys(body, {"name", "rank", "selector", "description"}));
  if (!proto::is_name(name))
    return fail(Errc::InvalidArgument, "ring name must match [a-z0-9][a-z0-9._-]{0,62}");
  if (auto n = body.find("name"); n != body.end() && (!n->is_string() || *n != name)) {
    return fail(Errc::InvalidArgument, "field 'name' does not match the path");
  }
  RF_TRY(rank, proto::get_int(body, "rank", 0, 1000000));
  RF_TRY(desc, proto::get_opt_string(body, "description", 1024));
  auto sit = body.find("selector");
  if (sit == body.end()) return fail(Errc::InvalidArgument, "field 'selector' is required");
  RF_TRY(sel, fleet::parse_selector(*sit));
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  bool exists = m.fleet.ring_index(name) >= 0;
  if (create_only && exists) return fail(Errc::Conflict, "ring '" + name + "' exists", "exists");
  if (m.fleet.rings().size() >= 256 && !exists) return fail(Errc::Conflict, "at most 256 rings");
  store::RingRow row{name, rank, fleet::selector_json(sel), desc.value_or("")};
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.put_ring(row));
    RF_CHECK(
        m.event(by.name, exists ? "ring_updated" : "ring_created", std::nullopt,
                {{"name", name}, {"rank", rank}, {"selector", json::parse(row.selector_json)}}));
    return {};
  }));
  auto rings = m.fleet.rings();
  fleet::Ring ring{name, rank, std::move(sel), desc.value_or(""), 0};
  bool replaced = false;
  for (auto& r : rings) {
    if (r.name == name) {
      r = ring;
      replaced = true;
    }
  }
  if (!replaced) rings.push_back(ring);
  m.fleet.set_rings(std::move(rings));
  m.notify_waiters();
  int i = m.fleet.ring_index(name);
  const auto& r = m.fleet.rings()[static_cast<size_t>(i)];
  return json{{"name", r.name},
              {"rank", r.rank},
              {"selector", json::parse(fleet::selector_json(r.selector))},
              {"description", r.description},
              {"hosts", r.size}};
}

Status Service::delete_ring(const Principal& by, const std::string& name) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  if (m.fleet.ring_index(name) < 0) return fail(Errc::NotFound, "no ring named '" + name + "'");
  for (const auto& [id, r] : m.rollouts) {
    if (rollout::is_terminal(r.state)) continue;
    for (const auto& s : r.plan) {
      if (s.ring == name) {
        return fail(Errc::Conflict,
                    "ring '" + name + "' is used by active rollout " + std::to_string(id),
                    "in_use");
      }
    }
  }
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.delete_ring(name));
    RF_CHECK(m.event(by.name, "ring_deleted", std::nullopt, {{"name", name}}));
    return {};
  }));
  auto rings = m.fleet.rings();
  rings.erase(std::remove_if(rings.begin(), rings.end(),
                             [&](const fleet::Ring& r) { return r.name == name; }),
              rings.end());
  m.fleet.set_rings(std::move(rings));
  m.notify_waiters();
  return {};
}

Expected<json> Service::ring_hosts(const std::string& name, std::int64_t limit,
                                   const std::string& after) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  int ri = m.fleet.ring_index(name);
  if (ri < 0) return fail(Errc::NotFound, "no ring named '" + name + "'");
  std::vector<const fleet::Host*> members;
  for (HostIndex i = 0; i < m.fleet.slots(); ++i) {
    const auto& h = m.fleet.at(i);
    if (!h.deleted && h.ring == ri && h.id.str() > after) members.push_back(&h);
  }
  std::sort(members.begin(), members.end(),
            [](const fleet::Host* a, const fleet::Host* b) { return a->id < b->id; });
  json out = json::array();
  std::string next;
  for (const auto* h : members) {
    if (static_cast<std::int64_t>(out.size()) >= limit) {
      next = out.back()["host_id"];
      break;
    }
    out.push_back(m.host_json(*m.fleet.find(h->id)));
  }
  json res = {
      {"ring", name}, {"hosts", out}, {"total", m.fleet.rings()[static_cast<size_t>(ri)].size}};
  if (!next.empty()) res["next"] = next;
  return res;
}

// ---------------------------------------------------------------- hosts

json Service::Impl::host_json(HostIndex i) const {
  const auto& h = fleet.at(i);
  json chans = json::object();
  for (const auto& c : h.channels) chans[c.channel] = {{"version", c.version}, {"state", c.state}};
  json exposed = json::array();
  for (const auto& [id, r] : rollouts) {
    if (r.exposed.count(i)) exposed.push_back(id);
  }
  return {
      {"host_id", h.id.str()},
      {"labels", *h.labels},
      {"ring", h.ring >= 0 ? json(fleet.rings()[static_cast<size_t>(h.ring)].name) : json(nullptr)},
      {"bucket", h.bucket},
      {"tenant", h.tenant.empty() ? json(nullptr) : json(h.tenant)},
      {"pinned", h.pinned},
      {"last_seen", h.last_seen_ms / 1000},
      {"agent_version", h.agent_version},
      {"enrolled", h.enrolled},
      // Since when this credential holder has been in contact (its evidence counts for rollouts
      // started --evidence-min-age-s after it); null = not yet.
      {"track_record_since", h.trust_since_ms ? json(h.trust_since_ms / 1000) : json(nullptr)},
      {"reset", h.credential_hash.equals(fleet::Digest32{})},
      {"channels", chans},
      {"consumers", h.consumers ? json(*h.consumers) : json::object()},
      {"exposed_to_rollouts", exposed}};
}

Expected<json> Service::list_hosts(const HostFilter& f) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  int ri = -1;
  if (f.ring) {
    ri = m.fleet.ring_index(*f.ring);
    if (ri < 0) return fail(Errc::NotFound, "no ring named '" + *f.ring + "'");
  }
  std::vector<std::pair<std::string, HostIndex>> match;
  for (HostIndex i = 0; i < m.fleet.slots(); ++i) {
    const auto& h = m.fleet.at(i);
    if (h.deleted || h.id.str() <= f.after) continue;
    if (f.ring && h.ring != ri) continue;
    if (f.label_key) {
      auto it = h.labels->find(*f.label_key);
      if (it == h.labels->end() || (f.label_value && it->second != *f.label_value)) continue;
    }
    if (f.channel || f.version) {
      bool ok = false;
      for (const auto& c : h.channels) {
        if ((!f.channel || c.channel == *f.channel) && (!f.version || c.version == *f.version))
          ok = true;
      }
      if (!ok) continue;
    }
    match.emplace_back(h.id.str(), i);
  }
  std::sort(match.begin(), match.end());
  json out = json::array();
  std::string next;
  for (const auto& [id, i] : match) {
    if (static_cast<std::int64_t>(out.size()) >= f.limit) {
      next = out.back()["host_id"];
      break;
    }
    out.push_back(m.host_json(i));
  }
  json res = {{"hosts", out}, {"total", match.size()}};
  if (!next.empty()) res["next"] = next;
  return res;
}

Expected<json> Service::get_host(const std::string& id) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto i = m.fleet.find(id);
  if (!i) return fail(Errc::NotFound, "no host " + id);
  return m.host_json(*i);
}

Expected<json> Service::patch_host(const Principal& by, const std::string& id, const json& body) {
  RF_CHECK(proto::only_keys(body, {"labels", "tenant", "pinned"}));
  RF_TRY(pinned, proto::get_opt_bool(body, "pinned"));
  std::optional<std::string> tenant;
  if (auto t = body.find("tenant"); t != body.end()) {
    if (t->is_null()) {
      tenant = "";
    } else if (!t->is_string() || !proto::is_label_value(t->get_ref<const std::string&>())) {
      return fail(Errc::InvalidArgument, "field 'tenant' must be a label value or null");
    } else {
      tenant = t->get<std::string>();
    }
  }
  std::optional<proto::Labels> labels;
  if (auto l = body.find("labels"); l != body.end()) {
    if (!l->is_object() || l->size() > proto::kMaxLabels) {
      return fail(Errc::InvalidArgument, "labels must be an object of at most 32 entries");
    }
    labels.emplace();
    for (auto it = l->begin(); it != l->end(); ++it) {
      if (!proto::is_label_key(it.key()) || !it->is_string() ||
          !proto::is_label_value(it->get_ref<const std::string&>())) {
        return fail(Errc::InvalidArgument, "invalid label '" + it.key().substr(0, 40) + "'");
      }
      (*labels)[it.key()] = it->get<std::string>();
    }
  }
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto i = m.fleet.find(id);
  if (!i) return fail(Errc::NotFound, "no host " + id);
  fleet::Host h = m.fleet.at(*i);
  if (pinned) h.pinned = *pinned;
  if (tenant) h.tenant = *tenant;
  if (labels) h.labels = m.fleet.intern(*labels);
  auto row = host_row(h);
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.upsert_hosts({row}));
    RF_CHECK(m.event(by.name, "host_updated", std::nullopt, {{"host_id", id}, {"change", body}}));
    return {};
  }));
  m.fleet.upsert(std::move(h));
  m.notify_waiters();
  return m.host_json(*i);
}

Expected<json> Service::reset_host(const Principal& by, const std::string& id, const json& body) {
  RF_CHECK(proto::only_keys(body, {"reason"}));
  RF_TRY(reason, proto::get_string(body, "reason", 1024));
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto i = m.fleet.find(id);
  if (!i) return fail(Errc::NotFound, "no host " + id);
  fleet::Host h = m.fleet.at(*i);
  h.credential_hash = fleet::Digest32{};  // no secret hashes to zero: the credential is dead
  h.trust_since_ms = 0;
  auto row = host_row(h);
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.upsert_hosts({row}));
    RF_CHECK(m.store.put_host_trust({{id, 0, "reset:" + by.name}}));
    RF_CHECK(m.event(by.name, "host_reset", std::nullopt, {{"host_id", id}, {"reason", reason}}));
    return {};
  }));
  // A first request the old holder made is no longer its track record.
  std::erase_if(m.pending_trust, [&](const store::HostTrustRow& t) { return t.host_id == id; });
  m.unclaimed.erase(*i);
  m.fleet.upsert(std::move(h));
  // The old holder's parked polls end now (a 304; its next request is refused).
  auto range = m.waiters.equal_range(*i);
  std::vector<Waiter> ended;
  for (auto it = range.first; it != range.second; ++it) ended.push_back(std::move(it->second));
  m.waiters.erase(range.first, range.second);
  for (auto& w : ended) w.reply(DesiredAnswer{true, w.etag, {}});
  return m.host_json(*i);
}

Status Service::delete_host(const Principal& by, const std::string& id) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto i = m.fleet.find(id);
  if (!i) return fail(Errc::NotFound, "no host " + id);
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.delete_host(id));
    RF_CHECK(m.event(by.name, "host_deleted", std::nullopt, {{"host_id", id}}));
    return {};
  }));
  for (auto& [rid, r] : m.rollouts) {
    auto e = r.exposed.find(*i);
    if (e == r.exposed.end()) continue;
    if (e->second.counted) --r.counted_exposed;
    r.exposed.erase(e);
  }
  auto range = m.waiters.equal_range(*i);
  for (auto it = range.first; it != range.second; ++it) {
    it->second.reply(DesiredAnswer{true, it->second.etag, {}});
  }
  m.waiters.erase(*i);
  m.unclaimed.erase(*i);
  m.fleet.remove(*i);
  return {};
}

// ---------------------------------------------------------------- events

json event_json(const store::EventRow& row) {
  json j = {{"id", row.id},
            {"time", row.time},
            {"actor", row.actor},
            {"kind", row.kind},
            {"data", json::parse(row.data_json, nullptr, false)}};
  if (row.rollout) j["rollout"] = *row.rollout;
  return j;
}

std::string sse_frame(const store::EventRow& row) {
  return "id: " + std::to_string(row.id) + "\nevent: " + row.kind +
         "\ndata: " + event_json(row).dump() + "\n\n";
}

Expected<std::int64_t> Service::Impl::event(const std::string& actor, const std::string& kind,
                                            std::optional<std::int64_t> rollout, json data) {
  store::EventRow row{0, clock.now_ms(), actor, kind, rollout, data.dump()};
  RF_TRY(id, store.append_event(row));
  row.id = id;
  // Live subscribers hear of it once it is durable: a rolled-back event is never streamed.
  store.after_commit([this, row = std::move(row)] { publish(row); });
  return id;
}

void Service::Impl::publish(const store::EventRow& row) {
  if (subscribers.empty()) return;
  auto frame = sse_frame(row);
  subscribers.erase(std::remove_if(subscribers.begin(), subscribers.end(),
                                   [&](auto& s) {
                                     if (s.first >= row.id) return false;
                                     return !s.second(frame);
                                   }),
                    subscribers.end());
}

Expected<json> Service::list_events(std::optional<std::int64_t> rollout, std::int64_t after,
                                    std::int64_t limit) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  RF_TRY(rows, m.store.list_events({rollout, after, limit}));
  json out = json::array();
  for (const auto& r : rows) out.push_back(event_json(r));
  json res = {{"events", out}};
  if (!rows.empty()) res["next_after"] = rows.back().id;
  return res;
}

constexpr std::size_t kMaxSubscribers = 256;

Status Service::subscribe_events(std::int64_t after, std::function<bool(std::string)> writer) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  if (m.subscribers.size() >= kMaxSubscribers) {
    // Streams whose client left are dropped only when a write fails: probe them all with a
    // comment line first, so a quiet server is not full of dashboards that were closed.
    std::erase_if(m.subscribers, [](auto& s) { return !s.second(": probe\n\n"); });
  }
  if (m.subscribers.size() >= kMaxSubscribers) {
    return fail(Errc::TooManyRequests, "too many event stream subscribers");
  }
  // Replay what the client missed (up to kMaxReplay events), then stream live. A client further
  // behind gets a "gap" event naming the last id replayed: the rest is in GET /v1/events.
  constexpr std::int64_t kPage = 1000, kMaxReplay = 10 * kPage;
  std::int64_t last = after;
  if (after >= 0) {
    for (std::int64_t replayed = 0;;) {
      RF_TRY(rows, m.store.list_events({std::nullopt, last, kPage}));
      for (const auto& r : rows) {
        if (!writer(sse_frame(r))) return {};
        last = r.id;
      }
      replayed += static_cast<std::int64_t>(rows.size());
      if (static_cast<std::int64_t>(rows.size()) < kPage) break;
      if (replayed >= kMaxReplay) {
        if (!writer("event: gap\ndata: {\"after\":" + std::to_string(last) + "}\n\n")) return {};
        break;
      }
    }
  }
  if (!writer(": connected\n\n")) return {};
  m.subscribers.emplace_back(last, std::move(writer));
  return {};
}

}  // namespace ringfence::server::core
