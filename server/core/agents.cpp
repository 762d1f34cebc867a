// Service: the agent API (enroll, desired state + long polls, heartbeats, reports) and the
// periodic work (silence sweep, bake expiry, batched flushes).
#include <algorithm>
#include <cmath>
#include <optional>

#include "proto/bucket.hpp"
#include "proto/try.hpp"
#include "server/core/impl.hpp"

namespace ringfence::server::core {
using rollout::State;

namespace {
// The all-zero credential digest marks a host an operator reset: no secret hashes to it, so the
// old credential is dead, and the next enrollment of that id needs no credential.
bool is_reset(const fleet::Digest32& d) { return d.equals(fleet::Digest32{}); }

tl::unexpected<Error> rate_limited(std::string message, std::int64_t retry_after_s) {
  Error e{Errc::TooManyRequests, std::move(message), "rate_limited",
          json{{"retry_after_s", std::max<std::int64_t>(1, retry_after_s)}}.dump()};
  return tl::unexpected<Error>(std::move(e));
}

}  // namespace

store::HostRow host_row(const fleet::Host& h) {
  json chans = json::object();
  for (const auto& c : h.channels) chans[c.channel] = {{"version", c.version}, {"state", c.state}};
  return {h.id.str(),
          h.credential_hash.hex(),
          json(*h.labels).dump(),
          h.tenant,
          h.pinned,
          h.agent_version,
          h.enrolled,
          h.last_seen_ms / 1000,
          chans.dump(),
          static_cast<std::int64_t>(h.boot_id_hash),
          h.consumers ? json(*h.consumers).dump() : std::string("{}")};
}

Expected<proto::EnrollResponse> Service::enroll(const proto::EnrollRequest& req,
                                                std::string_view authorization) {
  auto& m = *impl_;
  auto hash = proto::sha256_hex(req.enrollment_token);
  std::lock_guard lock(m.mu);
  EnrollToken* tok = nullptr;
  for (auto& t : m.enroll_tokens) {
    if (proto::constant_time_equal(t.hash, hash)) tok = &t;
  }
  auto now_ms = m.clock.now_ms();
  if (!tok) {
    ++m.refused.enroll_unknown_token;
    return fail(Errc::Unauthenticated, "unknown enrollment token");
  }
  if (tok->revoked) {
    ++m.refused.enroll_revoked;
    return fail(Errc::Unauthenticated, "enrollment token '" + tok->name + "' was revoked",
                "token_revoked");
  }
  if (tok->expires && *tok->expires < m.now_s()) {
    ++m.refused.enroll_expired;
    return fail(Errc::Unauthenticated, "enrollment token expired");
  }
  // Who may enroll this id: anyone with a valid token when it is new (or reset); otherwise only
  // the holder of its current credential (a takeover needs the operator's reset).
  auto existing = m.fleet.find(req.host_id);
  bool fresh = !existing || is_reset(m.fleet.at(*existing).credential_hash);
  // The same token again for a host whose credential was never used: the answer to its
  // enrollment was lost (the agent saw a reset connection, a timeout, a crash before it stored
  // the credential). It gets a new credential; the one it never received dies.
  bool retry = false;
  if (!fresh && authorization.empty()) {
    auto u = m.unclaimed.find(*existing);
    retry = u != m.unclaimed.end() && m.fleet.at(*existing).trust_since_ms == 0 &&
            u->second == tok->name;
  }
  if (!fresh && !retry) {
    if (authorization.empty()) {
      ++m.refused.enroll_host_taken;
      return fail(Errc::Conflict,
                  "host " + req.host_id +
                      " is enrolled; re-enrolling it needs its current credential "
                      "(Authorization: Bearer) or an operator's reset (POST /v1/hosts/" +
                      req.host_id + "/reset)",
                  "host_enrolled");
    }
    constexpr std::string_view kPrefix = "Bearer ";
    auto cred = authorization.substr(0, kPrefix.size()) == kPrefix
                    ? authorization.substr(kPrefix.size())
                    : std::string_view();
    auto dot = cred.find('.');
    bool ok = dot == 36 && cred.substr(0, dot) == req.host_id &&
              m.fleet.at(*existing).credential_hash.equals(
                  fleet::Digest32::sha256_of(cred.substr(dot + 1)));
    if (!ok) {
      ++m.refused.enroll_host_taken;
      return fail(Errc::Unauthenticated,
                  "the credential sent is not host " + req.host_id + "'s current credential");
    }
  }
  if (fresh && tok->max_uses && tok->uses >= *tok->max_uses) {
    ++m.refused.enroll_used_up;
    return fail(Errc::PermissionDenied,
                "enrollment token '" + tok->name + "' has enrolled its " +
                    std::to_string(*tok->max_uses) + " hosts (max_uses)",
                "token_used_up");
  }
  // Rate: a bucket of one minute's enrollments, refilled continuously; taken only on success.
  auto rate = tok->rate_per_min > 0 ? tok->rate_per_min : m.opt.enroll_rate_per_min;
  double allowance = 0;
  if (rate > 0) {
    allowance =
        tok->allowance < 0
            ? static_cast<double>(rate)
            : std::min<double>(static_cast<double>(rate),
                               tok->allowance + static_cast<double>(now_ms - tok->allowance_ms) *
                                                    static_cast<double>(rate) / 60000.0);
    if (allowance < 1) {
      ++m.refused.enroll_rate_limited;
      auto wait_ms = (1 - allowance) * 60000.0 / static_cast<double>(rate);
      return rate_limited("enrollment token '" + tok->name + "' enrolls at most " +
                              std::to_string(rate) + " hosts a minute",
                          static_cast<std::int64_t>(std::ceil(wait_ms / 1000)));
    }
  }
  proto::Labels labels = req.labels;
  for (const auto& [k, v] : tok->labels) labels[k] = v;      // the token's labels win
  if (!tok->tenant.empty()) labels["tenant"] = tok->tenant;  // and its tenant
  std::string secret = proto::random_hex(32);
  fleet::Host h;
  if (existing) h = m.fleet.at(*existing);
  h.id = req.host_id;
  h.credential_hash = fleet::Digest32::sha256_of(secret);
  if (auto t = labels.find("tenant"); t != labels.end()) h.tenant = t->second;
  h.labels = m.fleet.intern(std::move(labels));
  h.agent_version = req.agent_version;
  if (fresh) {
    // A new credential holder: a new enrollment, and a track record from its first request.
    h.enrolled = m.now_s();
    h.trust_since_ms = 0;
  }
  h.last_seen_ms = now_ms;
  std::int64_t uses = tok->uses + (fresh ? 1 : 0);
  // Durable before answering: the credential must survive a restart; the enrollment is
  // attributed to its token in the event log.
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.store.upsert_hosts({host_row(h)}));
    if (fresh) {
      RF_CHECK(m.store.put_host_trust({{h.id.str(), 0, tok->name}}));
      RF_CHECK(m.store.set_enroll_token_uses(tok->name, uses));
    }
    RF_CHECK(m.event("enrollment-token:" + tok->name, "host_enrolled", std::nullopt,
                     {{"host_id", req.host_id},
                      {"token", tok->name},
                      {"reenrolled", !fresh},
                      {"answer_lost", retry},
                      {"tenant", h.tenant},
                      {"agent_version", req.agent_version}}));
    return {};
  }));
  tok->uses = uses;
  if (rate > 0) {
    tok->allowance = allowance - 1;
    tok->allowance_ms = now_ms;
  }
  auto idx = m.fleet.upsert(std::move(h));
  if (fresh || retry) {
    m.unclaimed[idx] = tok->name;
  } else {
    m.unclaimed.erase(idx);
  }
  ++m.enrolls_total;
  // A re-enrolled host's old parked polls end now (its old credential is gone): each gets its
  // answer (a 304) rather than being dropped, so no agent connection is left hanging.
  auto [first, last] = m.waiters.equal_range(idx);
  std::vector<Waiter> ended;
  for (auto it = first; it != last; ++it) ended.push_back(std::move(it->second));
  m.waiters.erase(first, last);
  for (auto& w : ended) w.reply(DesiredAnswer{true, w.etag, {}});
  return proto::EnrollResponse{req.host_id, req.host_id + "." + secret, m.heartbeat_for(idx),
                               m.opt.poll_s};
}

// ---------------------------------------------------------------- evidence trust

bool Service::Impl::had_track_record(const fleet::Host& h, std::int64_t at_ms) const {
  if (opt.evidence_min_age_s <= 0) return true;
  return h.trust_since_ms > 0 && at_ms > 0 &&
         h.trust_since_ms + opt.evidence_min_age_s * 1000 <= at_ms;
}

bool Service::Impl::counts(const Rollout& r, const fleet::Host& h) const {
  return had_track_record(h, r.stages.empty() ? 0 : r.stages[0].started_ms);
}

void Service::Impl::note_exposed(Rollout& r, HostIndex i, Exposure& e) {
  e.counted = counts(r, fleet.at(i));
  if (e.counted) ++r.counted_exposed;
  // On the release now: its earlier crashes leave the control cohort's figures.
  r.control.exposed(i);
}

void Service::Impl::refresh_trusted(Rollout& r) {
  if (r.trusted_version == fleet.membership_version() &&
      r.trusted_by_ring.size() == fleet.rings().size())
    return;
  r.trusted_by_ring.assign(fleet.rings().size(), 0);
  for (HostIndex i = 0; i < fleet.slots(); ++i) {
    const auto& h = fleet.at(i);
    if (h.deleted || h.ring < 0) continue;
    if (counts(r, h)) ++r.trusted_by_ring[static_cast<std::size_t>(h.ring)];
  }
  r.trusted_version = fleet.membership_version();
}

bool Service::Impl::was_sent(HostIndex i, const std::string& channel, std::int64_t version) const {
  auto c = channels.find(channel);
  if (c == channels.end()) return false;
  auto rel = c->second.releases.find(version);
  if (rel == c->second.releases.end()) return false;
  // Stable once (offered to every host), or quarantined (a host may still hold or have rolled
  // back from it after a restart forgot whom its rollout exposed: its local_rollback and crash
  // reports are evidence to keep, and they feed no active rollout's gate).
  if (rel->second.state == ReleaseState::Stable || rel->second.state == ReleaseState::Superseded ||
      rel->second.state == ReleaseState::Quarantined)
    return true;
  for (const auto& [id, r] : rollouts) {
    if (r.version != version || r.channel != channel) continue;
    if (r.exposed.count(i)) return true;
    // Offered by a process that was killed before it wrote the exposure: a host that a reached
    // stage covers may hold it (reattach() records it again).
    if (rollout::is_active(r.state) && !fleet.at(i).pinned) {
      for (std::size_t s = 0; s <= r.stage && s < r.plan.size(); ++s) {
        if (covers(r, s, i)) return true;
      }
    }
  }
  return false;
}

void Service::Impl::first_contact(HostIndex i) {
  auto& h = fleet.at(i);
  if (h.trust_since_ms != 0) return;
  unclaimed.erase(i);
  h.trust_since_ms = clock.now_ms();
  pending_trust.push_back({h.id.str(), h.trust_since_ms, {}});
}

Status Service::Impl::flush_trust() {
  if (pending_trust.empty()) return {};
  auto st = store.put_host_trust(pending_trust);
  if (st) pending_trust.clear();
  return st;
}

std::int64_t Service::Impl::heartbeat_for(HostIndex i) const {
  const auto& h = fleet.at(i);
  bool exposed = false;
  for (const auto& [id, r] : rollouts) {
    if (rollout::is_active(r.state) && r.exposed.count(i)) exposed = true;
  }
  std::int64_t base = exposed ? opt.exposed_heartbeat_s : opt.heartbeat_s;
  // Stable per-host jitter (up to +10%) spreads the fleet's heartbeats over time.
  std::int64_t spread = base / 10;
  return base + (spread > 0 ? static_cast<std::int64_t>(h.bucket) % (spread + 1) : 0);
}

const Release* Service::Impl::pinned_release(const Channel& ch) const {
  if (!ch.stable_version) return nullptr;
  auto stable = ch.releases.find(*ch.stable_version);
  for (auto it = std::make_reverse_iterator(stable); it != ch.releases.rend(); ++it) {
    if (it->second.state == ReleaseState::Superseded) return &it->second;
  }
  return &stable->second;
}

const Channel::Downgrade& Service::Impl::downgrade_to(Channel& ch, const Release& target) {
  auto newest = ch.releases.rbegin()->first;
  auto now = clock.now_ms() / 1000;
  auto& d = ch.downgrades[target.version];
  if (d.signature.empty() || d.manifest.rollback_from != newest ||
      d.manifest.expires - now <= opt.manifest_ttl_s / 2 || d.key_id != keys.content_id) {
    d.manifest = target.manifest;
    d.manifest.rollback_from = newest;
    d.manifest.expires = now + opt.manifest_ttl_s;
    d.signature = proto::sign(keys.content().secret_key, proto::canonical_bytes(d.manifest));
    d.key_id = keys.content_id;
  }
  return d;
}

std::int64_t Service::Impl::next_generation() {
  last_generation = std::max(last_generation + 1, clock.now_ms() * 1000);
  return last_generation;
}

namespace {
std::uint64_t mix(std::uint64_t h, std::uint64_t v) { return (h ^ v) * 0x100000001b3ULL; }

void append_hex16(std::string& out, std::uint64_t v) {
  static const char* kHex = "0123456789abcdef";
  for (int k = 0; k < 16; ++k) out += kHex[(v >> (60 - 4 * k)) & 15];
}
}  // namespace

void Service::Impl::sign_host(HostIndex i, std::uint64_t tag, HostSigned& hs) {
  const auto& h = fleet.at(i);
  auto id_text = h.id.text();
  std::string_view host_id(id_text.data(), id_text.size());
  auto hb = heartbeat_for(i);
  // Hosts offered the same releases share the channels, the known-bad list and the wire body
  // up to the per-host fields; desired_generation (manifests re-signed, known-bad or keys
  // changed) empties the cache.
  std::string key = std::to_string(hb);
  for (const auto& p : picks) {
    key += '|';
    key += *p.channel;
    key += ':';
    key += std::to_string(p.release->version);
    // A downgrade authorisation names the channel's newest version: part of the key.
    if (p.rollback) {
      key += 'r';
      key += std::to_string(channels.at(*p.channel).releases.rbegin()->first);
    }
  }
  if (body_cache_generation != desired_generation || body_cache.size() > 4096) {
    body_cache.clear();
    body_cache_generation = desired_generation;
  }
  auto it = body_cache.find(key);
  if (it == body_cache.end()) {
    std::vector<proto::DesiredChannel> chans;
    for (const auto& p : picks) {
      proto::DesiredChannel dc;
      dc.channel = *p.channel;
      dc.version = p.release->version;
      dc.sha256 = p.release->sha256;
      dc.size = p.release->size;
      dc.url = "/v1/blobs/" + p.release->sha256;
      if (p.rollback) {
        const auto& down = downgrade_to(channels.at(*p.channel), *p.release);
        dc.manifest = down.manifest;
        dc.signature = down.signature;
        dc.key_id = down.key_id;
      } else {
        dc.manifest = p.release->manifest;
        dc.signature = p.release->signature;
        dc.key_id = p.release->key_id;
      }
      dc.rollback = p.rollback;
      chans.push_back(std::move(dc));
    }
    auto shared = std::make_shared<SharedDesired>();
    shared->channels_json = proto::canonical_channels(chans);
    shared->known_bad_json = proto::canonical_known_bad(known_bad);
    shared->heartbeat_s = hb;
    shared->poll_s = opt.poll_s;
    shared->key_set_version = keys.version();
    auto& w = shared->prefix;
    w = "{\"channels\":" + shared->channels_json + ",\"known_bad\":" + shared->known_bad_json +
        ",\"heartbeat_s\":" + std::to_string(hb) + ",\"poll_s\":" + std::to_string(opt.poll_s) +
        ",\"key_set_version\":" + std::to_string(keys.version()) + ",\"key_id\":\"" +
        keys.desired_id + "\",";
    if (!keys.key_set_json.empty()) w += "\"key_set\":" + keys.key_set_json + ",";
    it = body_cache.emplace(std::move(key), std::move(shared)).first;
  }
  const auto& sh = *it->second;
  auto now_ms = clock.now_ms();
  hs.tag = tag;
  hs.shared = it->second;
  hs.generation = next_generation();
  hs.issued = now_ms / 1000;
  hs.expires = hs.issued + opt.desired_ttl_s;
  hs.refresh_ms = now_ms + opt.desired_ttl_s * 500;
  hs.etag = mix(tag, static_cast<std::uint64_t>(hs.generation) * 0x9e3779b97f4a7c15ULL);
  auto bytes = proto::canonical_desired_bytes(
      sh.channels_json, sh.known_bad_json,
      proto::DesiredHeader{host_id, hs.generation, hs.issued, hs.expires, sh.heartbeat_s, sh.poll_s,
                           sh.key_set_version});
  auto sig = proto::sign(keys.desired().secret_key, bytes);
  std::copy_n(sig.data(), std::min(sig.size(), hs.signature.size()), hs.signature.begin());
}

DesiredAnswer Service::Impl::compute_desired(HostIndex i, bool want_body) {
  const auto& h = fleet.at(i);
  picks.clear();
  auto id_text = h.id.text();
  std::uint64_t tag = proto::fnv1a64(std::string_view(id_text.data(), id_text.size())) ^
                      (desired_generation * 0x9e3779b97f4a7c15ULL);
  for (auto& [name, ch] : channels) {
    const Release* chosen = nullptr;
    Rollout* r = active_rollout(name);
    if (r &&
        (r->state == State::Baking || r->state == State::AwaitingApproval ||
         r->state == State::Paused) &&
        !h.pinned) {
      auto e = r->exposed.find(i);
      if (e != r->exposed.end()) {
        chosen = &ch.releases[r->version];
      } else if (r->state == State::Baking && !emergency && !r->halt_pending) {
        for (std::size_t s = 0; s <= r->stage; ++s) {
          // The current stage's strata picks are part of what it covers (made with its order).
          if (s == r->stage && r->pace_stage != r->stage) build_pace_order(*r);
          if (covers(*r, s, i)) {
            // Pacing and the budget: the stage waits (its blocked reason says why).
            if (!may_expose(*r, s, i, h)) break;
            budget_take(h);
            expose(*r, i, s);  // counted, out of the control cohort, persisted
            chosen = &ch.releases[r->version];
            break;
          }
        }
      }
    }
    bool rollback = false;
    if (!chosen && ch.stable_version) {
      chosen = h.pinned ? pinned_release(ch) : &ch.releases[*ch.stable_version];
      // Sent back from a newer, quarantined release, or held at N-1: the host may run a newer
      // version than this one, so the answer carries the signed authorisation to go down.
      rollback = h.pinned && chosen->version < ch.releases.rbegin()->first;
      for (auto it = ch.releases.upper_bound(chosen->version); it != ch.releases.end(); ++it) {
        if (it->second.state == ReleaseState::Quarantined) rollback = true;
      }
    }
    if (!chosen) continue;
    tag = mix(tag, proto::fnv1a64(name));
    tag = mix(tag,
              static_cast<std::uint64_t>(chosen->version) ^ (rollback ? 0x8000000000000000ULL : 0));
    picks.push_back({&name, chosen, rollback});
  }
  tag = mix(tag, static_cast<std::uint64_t>(heartbeat_for(i)));
  // The signed answer is made once per host per change (or half way to its expiry): a poll
  // that finds it current costs a comparison, a 200 a few string appends.
  if (host_signed.size() <= i) host_signed.resize(std::max<std::size_t>(i + 1, fleet.slots()));
  auto& hs = host_signed[i];
  if (!hs.shared || hs.tag != tag || clock.now_ms() >= hs.refresh_ms) sign_host(i, tag, hs);
  DesiredAnswer a;
  a.etag.reserve(16);
  append_hex16(a.etag, hs.etag);
  if (want_body) {
    const auto& sh = *hs.shared;
    a.body.reserve(sh.prefix.size() + 320);
    a.body = sh.prefix;
    a.body += "\"etag\":\"";
    a.body += a.etag;
    a.body += "\",\"host_id\":\"";
    a.body.append(id_text.data(), id_text.size());
    a.body += "\",\"generation\":";
    a.body += std::to_string(hs.generation);
    a.body += ",\"issued\":";
    a.body += std::to_string(hs.issued);
    a.body += ",\"expires\":";
    a.body += std::to_string(hs.expires);
    a.body += ",\"signature\":\"";
    a.body.append(hs.signature.data(), hs.signature.size());
    a.body += "\"}";
  }
  return a;
}

Expected<std::optional<DesiredAnswer>> Service::desired(std::int64_t host,
                                                        std::string_view if_none_match,
                                                        std::int64_t wait_s,
                                                        std::function<void(DesiredAnswer)> reply) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto i = static_cast<HostIndex>(host);
  if (i >= m.fleet.slots() || m.fleet.at(i).deleted)
    return fail(Errc::Unauthenticated, "unknown host");
  ++m.polls_total;
  m.first_contact(i);
  m.note_returned(i);
  auto& h = m.fleet.at(i);
  h.last_seen_ms = m.clock.now_ms();
  if (m.polled_ms.size() <= i) m.polled_ms.resize(std::max<std::size_t>(i + 1, m.fleet.slots()));
  m.polled_ms[i] = h.last_seen_ms;  // it takes updates (Impl::takes_updates)
  auto probe = m.compute_desired(i, false);
  if (!if_none_match.empty() && if_none_match == probe.etag) {
    if (wait_s > 0) {
      wait_s = std::min(wait_s, m.opt.max_long_poll_s);
      if (m.waiters.count(i) >= 2) {
        return fail(Errc::TooManyRequests, "this host already holds two long polls");
      }
      m.waiters.emplace(i,
                        Waiter{i, probe.etag, m.clock.now_ms() + wait_s * 1000, std::move(reply)});
      return std::optional<DesiredAnswer>{};
    }
    probe.not_modified = true;
    return std::optional<DesiredAnswer>(probe);
  }
  return std::optional<DesiredAnswer>(m.compute_desired(i, true));
}

void Service::Impl::notify_waiters() {
  if (waiters.empty()) return;
  for (auto it = waiters.begin(); it != waiters.end();) {
    auto probe = compute_desired(it->first, false);
    if (probe.etag != it->second.etag) {
      auto reply = std::move(it->second.reply);
      auto host = it->first;
      it = waiters.erase(it);
      reply(compute_desired(host, true));
    } else {
      ++it;
    }
  }
}

std::size_t Service::long_polls() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  return m.waiters.size();
}

void Service::heartbeat(std::int64_t host, const proto::Heartbeat& sent, Ack done) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto i = static_cast<HostIndex>(host);
  if (i >= m.fleet.slots() || m.fleet.at(i).deleted)
    return done(fail(Errc::Unauthenticated, "unknown host"));
  m.first_contact(i);
  m.note_returned(i);
  // Channel states the server never sent this host (made-up channels or versions) are dropped:
  // they would reach the host's record and /metrics. Copied only when something is dropped.
  std::optional<proto::Heartbeat> kept;
  for (const auto& [name, st] : sent.channels) {
    if (m.was_sent(i, name, st.version)) continue;
    if (st.version == 0 && m.channels.count(name)) continue;  // a known channel, no content yet
    // A host may still hold a quarantined release after a restart forgot whom it exposed: that
    // stays visible (the version exists; only the gates ignore it).
    if (auto c = m.channels.find(name); c != m.channels.end()) {
      auto rel = c->second.releases.find(st.version);
      if (rel != c->second.releases.end() && rel->second.state == ReleaseState::Quarantined)
        continue;
    }
    if (!kept) kept = sent;
    kept->channels.erase(name);
    ++(m.channels.count(name) ? m.refused.heartbeat_version_not_sent
                              : m.refused.heartbeat_unknown_channel);
  }
  const proto::Heartbeat& hb = kept ? *kept : sent;
  auto& h = m.fleet.at(i);
  auto now = m.clock.now_ms();
  ++m.heartbeats_total;
  // Boot loop signal: a new boot id with a short uptime while exposed.
  auto boot = hb.boot_id.empty() ? 0 : proto::fnv1a64(hb.boot_id) | 1;  // 0 = none reported
  bool rebooted = h.boot_id_hash != 0 && h.boot_id_hash != boot;
  bool new_boot = boot != 0 && boot != h.boot_id_hash;  // first or new boot id: stored
  h.boot_id_hash = boot;
  h.uptime_s = hb.uptime_s;
  h.last_seen_ms = now;
  // Most heartbeats repeat what the host said last time: then only last_seen is new, and it goes
  // to the store through the bounded seen queue instead of a full row write.
  bool same = h.channels.size() == hb.channels.size();
  if (same) {
    auto c = h.channels.begin();
    for (const auto& [name, st] : hb.channels) {  // both in channel-name order
      if (c->channel != name || c->version != st.version || c->state != st.state) {
        same = false;
        break;
      }
      ++c;
    }
  }
  // Consumer versions change rarely (a consumer upgrade): a change is stored like a channel's.
  bool consumers_same = h.consumers ? *h.consumers == hb.consumers : hb.consumers.empty();
  if (!consumers_same) {
    h.consumers = hb.consumers.empty() ? nullptr : m.fleet.intern(hb.consumers);
    same = false;
  }
  if (!same) {
    h.channels.clear();
    for (const auto& [name, st] : hb.channels) {
      h.channels.push_back({name, st.version, st.state});
      m.reattach(i, name, st.version);
    }
  }
  bool evidence = false;  // an exposure changed (applied, healthy, failed)
  for (auto& [id, r] : m.rollouts) {
    if (!rollout::is_active(r.state)) continue;
    auto e = r.exposed.find(i);
    if (e == r.exposed.end()) continue;
    auto cs = hb.channels.find(r.channel);
    bool running = cs != hb.channels.end() && cs->second.version == r.version;
    bool changed = false;
    auto short_boots = e->second.short_boots;
    if (running && !e->second.applied) {
      m.mark_applied(r, e->second, now);
      changed = true;
    }
    // A boot loop: the second short-lived boot since applying (one reboot is a patch Tuesday;
    // a crash before it is reported by the agent itself).
    if (e->second.applied && rebooted && hb.uptime_s < 120 && !e->second.failed &&
        ++e->second.short_boots >= 2) {
      m.mark_failed(r, e->second, false);
      (void)m.event("host:" + h.id.str(), "boot_loop_suspected", r.id,
                    {{"host_id", h.id.str()},
                     {"uptime_s", hb.uptime_s},
                     {"short_boots", e->second.short_boots}});
      changed = true;
    }
    if (running && e->second.applied && !e->second.failed && !e->second.healthy &&
        now - e->second.applied_ms >= m.opt.healthy_after_s * 1000) {
      e->second.healthy = true;
      if (e->second.counted) ++r.stages[e->second.stage].counts.healthy;
      changed = true;
    }
    if (running) m.note_alive(r, e->second, now);  // pacing: confirmed once alive a while
    if (changed || e->second.short_boots != short_boots) {
      evidence = true;
      m.touch(r, e->second);
    }
    if (changed) m.evaluate(r);
  }
  // A heartbeat that changed state is answered once the store has it; a plain repeat (only
  // last_seen moved) goes through the bounded seen queue and is answered at once: losing it to
  // a crash costs nothing. A repeat of a change the store has not taken yet (its commit failed:
  // the host is still dirty) waits for it like the first one.
  if (same && !new_boot && !evidence && !h.dirty) {
    m.fleet.mark_seen(i);
    return done({});
  }
  m.fleet.mark_dirty(i);
  m.park(std::move(done));
}

Status Service::heartbeat(std::int64_t host, const proto::Heartbeat& hb) {
  std::optional<Status> out;
  heartbeat(host, hb, [&out](Status st) { out = std::move(st); });
  if (!out) commit();
  return out.value_or(Status{});
}

void Service::Impl::agent_restarted(HostIndex i, const proto::Report& rep) {
  // What one host says must not flood the audit trail (reports are allowed 600 a minute, and
  // resent until acknowledged): the first few restarts per exposure are events, the rest counted.
  constexpr std::uint8_t kRestartEvents = 3;
  const auto& h = fleet.at(i);
  for (auto& [id, r] : rollouts) {
    if (!rollout::is_active(r.state)) continue;
    auto e = r.exposed.find(i);
    if (e == r.exposed.end()) continue;
    if (e->second.restarts < 255) ++e->second.restarts;
    if (e->second.restarts > kRestartEvents) continue;
    json data = {{"host_id", h.id.str()},          {"channel", r.channel},
                 {"version", r.version},           {"boot_id", rep.boot_id},
                 {"restarts", e->second.restarts}, {"counted_as_failure", false}};
    if (e->second.restarts == kRestartEvents) data["more_not_logged"] = true;
    (void)event("host:" + h.id.str(), "agent_restarted", r.id, data);
  }
}

void Service::Impl::host_signal(HostIndex i, const std::string& channel, std::int64_t version,
                                proto::ReportKind kind) {
  // About the host's link or the agent process, not a release: the gates ignore them.
  if (kind == proto::ReportKind::StaleDesiredState || kind == proto::ReportKind::AgentRestart) {
    return;
  }
  auto now = clock.now_ms();
  for (auto& [id, r] : rollouts) {
    if (!rollout::is_active(r.state) || r.channel != channel) continue;
    auto e = r.exposed.find(i);
    if (e == r.exposed.end()) {
      // Control cohort: a crash on a host that is not on the release (each host counts once).
      if (kind == proto::ReportKind::Crash && version != r.version) {
        if (!counts(r, fleet.at(i))) {
          ++refused.signals_without_track_record;
          continue;
        }
        if (!was_sent(i, channel, version)) continue;
        r.control.crashed(i, fleet.at(i).ring);
        evaluate(r);
      }
      continue;
    }
    if (version != r.version) continue;
    if (!e->second.counted) ++refused.signals_without_track_record;
    switch (kind) {
      case proto::ReportKind::Applied:
        mark_applied(r, e->second, now);
        break;
      case proto::ReportKind::ApplyFailed:
      case proto::ReportKind::Crash:
      case proto::ReportKind::LocalRollback:
        mark_applied(r, e->second, now);  // it reached the host
        mark_failed(r, e->second, false);
        break;
      case proto::ReportKind::StaleDesiredState:
      case proto::ReportKind::AgentRestart:
        break;
    }
    evaluate(r);
  }
}

void Service::reports(std::int64_t host, const std::vector<proto::Report>& reports, Ack done,
                      std::size_t* kept_out) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto i = static_cast<HostIndex>(host);
  if (i >= m.fleet.slots() || m.fleet.at(i).deleted)
    return done(fail(Errc::Unauthenticated, "unknown host"));
  // The store has been failing long enough for this much evidence to wait in memory: take no
  // more than can be acknowledged (the agent spools it and resends).
  if (m.pending_reports.size() + reports.size() > Impl::kMaxPendingReports) {
    return done(fail(Errc::Unavailable, "storage is not taking reports; send them again later",
                     "storage_unavailable"));
  }
  auto& h = m.fleet.at(i);
  auto now = m.clock.now_ms();
  m.first_contact(i);
  if (m.opt.reports_per_min > 0) {
    auto minute = static_cast<std::int32_t>(now / 60000);
    if (h.report_minute != minute) {
      h.report_minute = minute;
      h.reports_in_minute = 0;
    }
    auto n = static_cast<std::int64_t>(reports.size());
    if (h.reports_in_minute > 0 && h.reports_in_minute + n > m.opt.reports_per_min) {
      ++m.refused.reports_rate_limited;
      return done(rate_limited("a host may send " + std::to_string(m.opt.reports_per_min) +
                                   " reports a minute; this one has sent " +
                                   std::to_string(h.reports_in_minute),
                               (static_cast<std::int64_t>(minute) + 1) * 60 - now / 1000));
    }
    h.reports_in_minute += static_cast<std::int32_t>(n);
  }
  // Reports about a channel that does not exist, or a version never sent to this host, are
  // dropped: stored, they would grow the database and (replayed) feed the gates.
  std::vector<proto::Report> kept;
  const std::vector<proto::Report>* taken = &reports;
  for (std::size_t k = 0; k < reports.size(); ++k) {
    const auto& r = reports[k];
    bool ok = !r.channel || (m.channels.count(*r.channel) &&
                             (!r.version || m.was_sent(i, *r.channel, *r.version)));
    if (ok && taken != &kept) continue;
    if (taken != &kept) {
      kept.assign(reports.begin(), reports.begin() + static_cast<std::ptrdiff_t>(k));
      taken = &kept;
    }
    if (ok) {
      kept.push_back(r);
    } else {
      ++(m.channels.count(*r.channel) ? m.refused.reports_version_not_sent
                                      : m.refused.reports_unknown_channel);
    }
  }
  h.last_seen_ms = now;
  if (kept_out) *kept_out = taken->size();
  for (const auto& r : *taken) {
    ++m.reports_total;
    m.pending_reports.push_back({h.id.str(), r.boot_id, std::string(proto::to_string(r.kind)),
                                 r.time, r.channel, r.version, r.detail_json, now / 1000});
    if (r.kind == proto::ReportKind::AgentRestart) m.agent_restarted(i, r);
    if (r.channel && r.version) {
      m.reattach(i, *r.channel, *r.version);
      m.host_signal(i, *r.channel, *r.version, r.kind);
    } else if (r.kind == proto::ReportKind::Crash) {
      // A crash without a named channel counts against every version the host runs.
      for (const auto& c : h.channels) m.host_signal(i, c.channel, c.version, r.kind);
    }
  }
  m.park(std::move(done));
}

Status Service::reports(std::int64_t host, const std::vector<proto::Report>& reports) {
  std::optional<Status> out;
  this->reports(host, reports, [&out](Status st) { out = std::move(st); });
  if (!out) commit();
  return out.value_or(Status{});
}

void Service::set_commit_scheduler(std::function<void(std::function<void()>)> post) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  m.commit_scheduler = std::move(post);
}

void Service::commit() {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  (void)m.commit_batch();
}

void Service::Impl::park(Ack done) {
  if (commit_waiters.empty()) first_parked = std::chrono::steady_clock::now();
  commit_waiters.push_back(std::move(done));
  if (!commit_scheduler) {
    (void)commit_batch();
    return;
  }
  if (commit_scheduled) return;
  commit_scheduled = true;
  // The job runs after the requests already read (one io thread: everything queued before it),
  // so they share this commit: writes stay batched under load, and one alone waits only for its
  // own commit.
  commit_scheduler([this] {
    std::lock_guard lock(mu);
    (void)commit_batch();
  });
}

void Service::Impl::touch(Rollout& r, Exposure& e) {
  if (e.queued) return;
  e.queued = true;
  r.dirty_exposures.push_back(e.host);
}

void Service::Impl::reattach(HostIndex i, const std::string& channel, std::int64_t version) {
  Rollout* r = active_rollout(channel);
  if (!r || r->version != version || r->exposed.count(i) || r->stages.empty()) return;
  if (r->state != State::Baking && r->state != State::AwaitingApproval &&
      r->state != State::Paused) {
    return;
  }
  const auto& h = fleet.at(i);
  if (h.pinned) return;
  for (std::size_t s = 0; s <= r->stage && s < r->plan.size(); ++s) {
    if (covers(*r, s, i)) {
      expose(*r, i, s);
      return;
    }
  }
}

Exposure& Service::Impl::expose(Rollout& r, HostIndex i, std::size_t stage) {
  auto& e = r.exposed[i];
  e.host = i;
  e.stage = static_cast<std::uint8_t>(stage);
  ++r.stages[stage].counts.exposed;
  r.waited_for_budget = false;
  note_exposed(r, i, e);  // counted (track record), out of the control cohort
  touch(r, e);
  return e;
}

Status Service::Impl::commit_batch() {
  commit_scheduled = false;
  auto waiters = std::move(commit_waiters);
  commit_waiters.clear();
  auto dirty = fleet.dirty_hosts();
  std::vector<store::HostRow> hosts;
  hosts.reserve(dirty.size());
  for (auto i : dirty) hosts.push_back(host_row(fleet.at(i)));
  std::vector<store::ExposureRow> exposures;
  std::vector<std::pair<Rollout*, HostIndex>> taken;
  for (auto& [id, r] : rollouts) {
    for (auto i : r.dirty_exposures) {
      auto it = r.exposed.find(i);
      if (it == r.exposed.end()) continue;  // the host was deleted
      auto& e = it->second;
      e.queued = false;
      taken.emplace_back(&r, i);
      exposures.push_back({r.id, fleet.at(i).id.str(), e.stage, e.applied ? e.applied_ms : 0,
                           e.healthy, e.failed, e.silent, e.short_boots});
    }
    r.dirty_exposures.clear();
  }
  auto budget = budget_rows();  // the budget the exposures took, in the same transaction
  Status st;
  if (!pending_reports.empty() || !hosts.empty() || !exposures.empty() || !budget.empty()) {
    st = store.transaction([&]() -> Status {
      if (!pending_reports.empty()) RF_CHECK(store.insert_reports(pending_reports));
      if (!hosts.empty()) RF_CHECK(store.upsert_hosts(hosts));
      if (!exposures.empty()) RF_CHECK(store.upsert_exposures(exposures));
      if (!budget.empty()) RF_CHECK(store.put_budget(budget, clock.now_ms() / 60000 - 60));
      return {};
    });
    ++group_commits_total;
  }
  if (st) {
    pending_reports.clear();
    store_failing_since_ms = 0;
  } else {
    if (store_failing_since_ms == 0) store_failing_since_ms = clock.now_ms();
    store_error = st.error().message;
    // Nothing of it is durable: all of it waits for the next attempt (tick, or the next batch).
    ++group_commit_failures_total;
    for (auto i : dirty) fleet.mark_dirty(i);
    for (const auto& b : budget) budget_dirty.emplace(b.scope, b.minute);
    for (auto [r, i] : taken) {
      auto it = r->exposed.find(i);
      if (it != r->exposed.end()) touch(*r, it->second);
    }
  }
  if (!waiters.empty()) {
    double wait_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - first_parked).count();
    group_commit_wait_s_total += wait_s;
    group_commit_wait_s_max = std::max(group_commit_wait_s_max, wait_s);
    group_commit_answers_total += waiters.size();
  }
  for (auto& w : waiters) w(st);
  return st;
}

Status Service::Impl::flush_seen(std::size_t max) {
  auto seen = fleet.seen_hosts(max);
  if (seen.empty()) return {};
  std::vector<store::HostSeenRow> rows;
  rows.reserve(seen.size());
  for (auto i : seen) rows.push_back({fleet.at(i).id.str(), fleet.at(i).last_seen_ms / 1000});
  auto st = store.touch_hosts(rows);
  if (!st) {
    for (auto i : seen) fleet.mark_seen(i);  // retry later
  }
  return st;
}

void Service::tick() {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto now = m.clock.now_ms();
  // Long polls whose time is up get a 304.
  for (auto it = m.waiters.begin(); it != m.waiters.end();) {
    if (it->second.deadline_ms <= now) {
      auto reply = std::move(it->second.reply);
      DesiredAnswer a{true, it->second.etag, {}};
      it = m.waiters.erase(it);
      reply(std::move(a));
    } else {
      ++it;
    }
  }
  // Silence: applied, then nothing for k exposed-heartbeat intervals = suspected crash. A scan
  // visits every exposed host, so it runs only once the earliest deadline has come (a fleet
  // heartbeating on time is scanned every silence - heartbeat interval, not every tick).
  auto silence_ms = m.silence_ms();
  for (auto& [id, r] : m.rollouts) {
    if (r.state != State::Baking && r.state != State::AwaitingApproval && r.state != State::Paused)
      continue;
    if (now > r.next_silence_scan_ms) {
      auto next = now + silence_ms;
      for (auto& [hi, e] : r.exposed) {
        if (!e.applied || e.failed) continue;
        const auto& h = m.fleet.at(hi);
        auto deadline =
            std::max({h.last_seen_ms, e.applied_ms, m.silence_not_before_ms}) + silence_ms;
        if (now > deadline) {
          m.mark_failed(r, e, true);
        } else {
          next = std::min(next, deadline);
        }
      }
      r.next_silence_scan_ms = next;
    }
    m.evaluate(r);  // also catches bake expiry
  }
  // Pacing windows that grew: parked polls of the hosts now let in are answered.
  if (m.pacing_opened) {
    m.pacing_opened = false;
    m.notify_waiters();
  }
  m.retry_rollbacks();
  m.refresh_manifests();
  m.check_key_files();
  // Exposures of newly offered hosts and whatever a failed commit left behind (its requests
  // were answered 503 by that attempt) go in a commit of their own.
  (void)m.commit_batch();
  (void)m.flush_seen(Impl::kSeenRowsPerTick);
  (void)m.flush_trust();
  m.prune_exposures();
}

void Service::Impl::prune_exposures() {
  for (auto& [id, r] : rollouts) {
    if (!rollout::is_terminal(r.state) || exposures_pruned.count(id)) continue;
    auto n = store.prune_exposures(id, kPruneRowsPerTick);
    if (n && *n < kPruneRowsPerTick) exposures_pruned.insert(id);
    return;  // one batch per tick
  }
}

void Service::release_long_polls() {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto waiters = std::move(m.waiters);
  m.waiters.clear();
  for (auto& [host, w] : waiters) w.reply(DesiredAnswer{true, w.etag, {}});
}

void Service::flush() {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  (void)m.commit_batch();
  (void)m.flush_seen(SIZE_MAX);
  (void)m.flush_trust();
}

json Service::metrics() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json rings = json::array();
  for (const auto& r : m.fleet.rings()) rings.push_back({{"ring", r.name}, {"hosts", r.size}});
  std::map<std::string, std::int64_t> by_state;
  json active = json::array();
  for (const auto& [id, r] : m.rollouts) {
    ++by_state[std::string(rollout::to_string(r.state))];
    if (rollout::is_active(r.state) && r.stage < r.stages.size()) {
      const auto& s = r.stages[r.stage];
      active.push_back(
          {{"id", id},
           {"channel", r.channel},
           {"stage", r.stage},
           {"statistic", std::isfinite(s.decision.statistic) ? s.decision.statistic : 0.0},
           {"upper", s.decision.upper},
           {"failure_rate", s.decision.failure_rate},
           {"exposed", s.counts.exposed},
           {"applied", s.counts.applied},
           {"healthy", s.counts.healthy},
           {"failed", s.counts.failed}});
    }
  }
  std::map<std::string, std::int64_t> versions;
  for (HostIndex i = 0; i < m.fleet.slots(); ++i) {
    const auto& h = m.fleet.at(i);
    if (h.deleted) continue;
    for (const auto& c : h.channels) {
      // Only channels and versions that exist become series (a stored record may predate the
      // heartbeat filter).
      auto ch = m.channels.find(c.channel);
      if (ch == m.channels.end() || !ch->second.releases.count(c.version)) continue;
      ++versions[c.channel + "\x1f" + std::to_string(c.version)];
    }
  }
  json ver = json::array();
  for (const auto& [k, n] : versions) {
    auto sep = k.find('\x1f');
    ver.push_back({{"channel", k.substr(0, sep)}, {"version", k.substr(sep + 1)}, {"hosts", n}});
  }
  return {{"hosts", m.fleet.live()},
          {"rings", rings},
          {"rollouts_by_state", by_state},
          {"active_stages", active},
          {"host_versions", ver},
          {"heartbeats_total", m.heartbeats_total},
          {"reports_total", m.reports_total},
          {"polls_total", m.polls_total},
          {"enrolls_total", m.enrolls_total},
          {"group_commits_total", m.group_commits_total},
          {"group_commit_failures_total", m.group_commit_failures_total},
          {"group_commit_answers_total", m.group_commit_answers_total},
          {"group_commit_wait_seconds_total", m.group_commit_wait_s_total},
          {"group_commit_wait_seconds_max", m.group_commit_wait_s_max},
          {"reports_pending", m.pending_reports.size()},
          {"long_polls", m.waiters.size()},
          {"refused",
           {{"enroll",
             {{"unknown_token", m.refused.enroll_unknown_token},
              {"revoked", m.refused.enroll_revoked},
              {"expired", m.refused.enroll_expired},
              {"used_up", m.refused.enroll_used_up},
              {"rate_limited", m.refused.enroll_rate_limited},
              {"host_enrolled", m.refused.enroll_host_taken}}},
            {"reports",
             {{"rate_limited", m.refused.reports_rate_limited},
              {"unknown_channel", m.refused.reports_unknown_channel},
              {"version_not_sent", m.refused.reports_version_not_sent}}},
            {"heartbeat_channels",
             {{"unknown_channel", m.refused.heartbeat_unknown_channel},
              {"version_not_sent", m.refused.heartbeat_version_not_sent}}},
            {"signals_without_track_record", m.refused.signals_without_track_record}}},
          {"emergency_stop", m.emergency},
          {"key_set_expires", m.keys.key_set ? json(m.keys.key_set->set.expires) : json(nullptr)}};
}

}  // namespace ringfence::server::core
