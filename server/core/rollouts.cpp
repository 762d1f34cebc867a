// Service: rollouts, the controller (exposure, gates, halt and rollback), emergency stop.
#include <algorithm>
#include <cmath>
#include <limits>

#include "proto/ids.hpp"
#include "proto/json_fields.hpp"
#include "proto/try.hpp"
#include "server/core/impl.hpp"

namespace ringfence::server::core {
using rollout::Event;
using rollout::State;

namespace {
json counts_json(const health::StageCounts& c) {
  return {{"exposed", c.exposed},
          {"applied", c.applied},
          {"healthy", c.healthy},
          {"failed", c.failed},
          {"silent", c.silent}};
}
json decision_json(const health::GateDecision& d) {
  return {{"verdict", health::to_string(d.verdict)},
          {"statistic", std::isfinite(d.statistic) ? d.statistic : 0.0},
          {"upper", d.upper},
          {"lower", d.lower},
          {"baseline", d.baseline},
          {"failure_rate", d.failure_rate},
          {"reason", d.reason}};
}
// The thresholds a decision was taken against: part of every gate event, so a decision can be
// read back with its evidence alone.
json params_json(const StagePlan& p) {
  return {{"alpha", p.gate.alpha},         {"beta", p.gate.beta},
          {"min_ratio", p.gate.min_ratio}, {"max_failure_rate", p.gate.max_failure_rate},
          {"min_hosts", p.min_hosts},      {"bake_s", p.bake_s}};
}
// The qualifying strata of the current stage with fewer healthy hosts than the stage asks, as a
// sentence naming the first ten ("" when every one is covered or the stage has no strata).
std::string strata_missing(const Rollout& r) {
  const auto& sp = r.plan[r.stage].strata;
  if (sp.keys.empty()) return "";
  std::string names;
  std::size_t missing = 0;
  for (const auto& c : r.strata_cov) {
    if (c.healthy >= sp.min_hosts) continue;
    if (++missing > 10) continue;
    if (!names.empty()) names += "; ";
    names += c.name + " (" + std::to_string(c.healthy) + " of " + std::to_string(sp.min_hosts) +
             " healthy, " + std::to_string(c.live) + " live)";
  }
  if (missing == 0) return "";
  if (missing > 10) names += "; and " + std::to_string(missing - 10) + " more";
  return std::to_string(missing) + " of " + std::to_string(r.strata_cov.size()) +
         " qualifying strata lack healthy hosts on the release: " + names;
}
}  // namespace

json Service::Impl::rollout_json(const Rollout& r) const {
  json stages_out = json::array();
  for (std::size_t i = 0; i < r.plan.size(); ++i) {
    const auto& p = r.plan[i];
    const auto& s = r.stages[i];
    json st = counts_json(s.counts);
    st["ring"] = p.ring;
    st["percent"] = p.percent;
    st["bake_s"] = p.bake_s;
    st["min_hosts"] = p.min_hosts;
    st["approval"] = p.manual ? "manual" : "auto";
    st["state"] = s.state;
    st["started"] = s.started_ms ? json(s.started_ms / 1000) : json(nullptr);
    st["gate"] = decision_json(s.decision);
    st["gate"]["params"] = params_json(p);
    st["gate"]["control_hosts"] = s.control_hosts;
    st["gate"]["control_failed"] = s.control_failed;
    st["implicit"] = p.implicit;
    json pacing = {
        {"initial", p.pace_initial}, {"growth", p.pace_growth}, {"confirmed", s.confirmed}};
    if (i == r.stage && r.pace_stage == r.stage && rollout::is_active(r.state)) {
      pacing["window"] = std::min(pace_window(r), r.pace_size);
      pacing["ranked_hosts"] = r.pace_size;
    }
    st["pacing"] = pacing;
    if (!p.strata.keys.empty()) {
      json sj = {{"keys", p.strata.keys},
                 {"min_hosts_per_stratum", p.strata.min_hosts},
                 {"min_stratum_size", p.strata.min_size}};
      if (i == r.stage && rollout::is_active(r.state) && r.coverage_stage == r.stage &&
          r.uncovered_live >= 0) {
        // Coverage as of the last check (at most a second old while the stage bakes). The list
        // is cut at 20: the missing strata first (by name), then the covered ones, so what an
        // operator must act on is never cut off behind strata that are fine.
        json per = json::array();
        std::int64_t covered = 0;
        for (const auto& c : r.strata_cov) {
          if (c.healthy >= p.strata.min_hosts) ++covered;
        }
        for (bool want : {false, true}) {
          for (const auto& c : r.strata_cov) {
            bool ok = c.healthy >= p.strata.min_hosts;
            if (ok != want || per.size() >= 20) continue;
            per.push_back({{"stratum", c.name},
                           {"live_hosts", c.live},
                           {"healthy", c.healthy},
                           {"applied", c.applied},
                           {"failed", c.failed},
                           {"covered", ok}});
          }
        }
        sj["strata"] = r.strata_total;
        sj["qualifying"] = r.strata_cov.size();
        sj["covered"] = covered;
        sj["coverage"] = per;
        auto missing = strata_missing(r);
        sj["missing"] = missing.empty() ? json(nullptr) : json(missing);
      }
      st["strata"] = sj;
    }
    st["blocked"] = s.blocked.empty() ? json(nullptr)
                                      : json{{"code", s.blocked}, {"message", s.blocked_reason}};
    stages_out.push_back(std::move(st));
  }
  json j = {{"id", r.id},
            {"channel", r.channel},
            {"version", r.version},
            {"policy", r.policy.empty() ? json(nullptr) : json(r.policy)},
            {"state", rollout::public_state(r.state)},
            {"phase", rollout::to_string(r.state)},
            {"stage", r.stage},
            {"stages", stages_out},
            {"exposed", r.exposed.size()},
            {"previous_stable", r.previous_stable ? json(*r.previous_stable) : json(nullptr)},
            {"created", r.created},
            {"updated", r.updated}};
  if (!r.halt_reason.empty()) j["halt_reason"] = r.halt_reason;
  if (rollout::is_active(r.state) && r.stage < r.stages.size()) {
    // Why the current stage has not passed yet (the gate's sentence) and, when it cannot
    // progress on its own, why (blocked).
    const auto& cs = r.stages[r.stage];
    j["waiting"] = r.state == State::Baking ? json(cs.decision.reason) : json(nullptr);
    j["blocked"] = cs.blocked.empty() ? json(nullptr)
                                      : json{{"code", cs.blocked}, {"message", cs.blocked_reason}};
    if (r.uncovered_live >= 0) {
      j["not_offered_live_hosts"] = r.uncovered_live;
      j["not_taking_updates_hosts"] = r.not_taking_updates;
    }
  }
  if (r.first_apply_ms) j["first_apply"] = r.first_apply_ms;
  if (r.halted_ms) j["halted"] = r.halted_ms;
  if (emergency && rollout::is_active(r.state)) j["frozen_by_emergency_stop"] = true;
  if (opt.budget_per_hour > 0) {
    // The blast-radius budget, shared by every rollout: when it is used up, stages wait.
    auto used = budget_used(budget_minutes);
    j["budget"] = {
        {"per_hour", opt.budget_per_hour},
        {"used_last_hour", used},
        {"waiting_for_budget", rollout::is_active(r.state) && used >= opt.budget_per_hour}};
  }
  return j;
}

Status Service::Impl::persist_rollout(const Rollout& r) {
  json st = json::array();
  for (const auto& s : r.stages) {
    st.push_back({{"started_ms", s.started_ms},
                  {"approved", s.approved},
                  {"state", s.state},
                  {"counts", counts_json(s.counts)},
                  {"gate", decision_json(s.decision)}});
  }
  json body = {{"plan", stages_json(r.plan)},
               {"policy", r.policy},
               {"stages", st},
               {"previous_stable", r.previous_stable ? json(*r.previous_stable) : json(nullptr)},
               {"first_apply_ms", r.first_apply_ms},
               {"halted_ms", r.halted_ms},
               {"halt_reason", r.halt_reason}};
  return store.put_rollout({r.id, r.channel, r.version, std::string(rollout::to_string(r.state)),
                            static_cast<std::int64_t>(r.stage), body.dump(), r.created, r.updated});
}

Expected<Rollout*> Service::Impl::find_rollout(std::int64_t id) {
  auto it = rollouts.find(id);
  if (it == rollouts.end()) return fail(Errc::NotFound, "no rollout " + std::to_string(id));
  return &it->second;
}

Rollout* Service::Impl::active_rollout(const std::string& channel) {
  for (auto& [id, r] : rollouts) {
    if (r.channel == channel && rollout::is_active(r.state)) return &r;
  }
  return nullptr;
}

// Applies a state-machine event: the new state and its event are persisted (one transaction)
// before any side effect; on a storage failure memory is left unchanged.
Status Service::Impl::transition(Rollout& r, Event e, const std::string& actor, json data) {
  RF_TRY(out, rollout::apply(r.state, e));
  if (!out.changed && e != Event::Skip) return {};
  Rollout before = r;
  r.state = out.next;
  r.updated = now_s();
  data["from"] = rollout::to_string(before.state);
  data["to"] = rollout::to_string(r.state);
  data["stage"] = r.stage;
  auto st = store.transaction([&]() -> Status {
    RF_CHECK(persist_rollout(r));
    RF_CHECK(event(actor, "rollout_" + std::string(rollout::to_string(e)), r.id, data));
    return {};
  });
  if (!st) {
    r = std::move(before);
    return st;
  }
  return {};
}

void Service::Impl::start_stage(Rollout& r, std::size_t stage) {
  r.stage = stage;
  auto& s = r.stages[stage];
  s.started_ms = clock.now_ms();
  s.state = r.state == State::AwaitingApproval ? "awaiting_approval" : "baking";
  s.decision = {};
  s.decision.reason = "stage started";
}

std::string stratum_of(const fleet::Host& h, const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) {
    if (!out.empty()) out += ',';
    out += k;
    out += '=';
    const std::string* v = nullptr;
    if (h.labels) {
      if (auto it = h.labels->find(k); it != h.labels->end()) v = &it->second;
    }
    if (!v && k == "tenant" && !h.tenant.empty()) v = &h.tenant;
    out += v ? *v : std::string("(none)");
  }
  return out;
}

std::uint64_t sticky_key(const fleet::Host& h) {
  auto text = h.id.text();
  auto idh = proto::fnv1a64(std::string_view(text.data(), text.size()));
  return (static_cast<std::uint64_t>(h.bucket) << 40) | (idh >> 24);
}

std::uint32_t Service::Impl::stratum_id(Rollout& r, HostIndex i) {
  if (r.strata_stage != r.stage || r.strata_membership != fleet.membership_version()) {
    r.stratum_ids.clear();
    r.stratum_names.clear();
    r.stratum_index.clear();
    r.strata_stage = r.stage;
    r.strata_membership = fleet.membership_version();
  }
  if (r.stratum_ids.size() < fleet.slots())
    r.stratum_ids.resize(fleet.slots(), Rollout::kNoStratum);
  auto& id = r.stratum_ids[i];
  if (id == Rollout::kNoStratum) {
    auto name = stratum_of(fleet.at(i), r.plan[r.stage].strata.keys);
    auto [it, fresh] = r.stratum_index.emplace(std::move(name),
                                               static_cast<std::uint32_t>(r.stratum_names.size()));
    if (fresh) r.stratum_names.push_back(it->first);
    id = it->second;
  }
  return id;
}

bool Service::Impl::covers(const Rollout& r, std::size_t stage, HostIndex i) const {
  if (stage == r.stage && r.pace_stage == r.stage && i < r.strata_rep.size() && r.strata_rep[i])
    return true;
  return stage_covers(r, stage, fleet.at(i));
}

Service::Impl::StageCut Service::Impl::stage_cut(const StagePlan& p) const {
  if (p.ring == kWholeFleetRing) return {StageCut::kEveryRing, 10000.0 * p.percent / 100.0};
  int ri = fleet.ring_index(p.ring);
  if (ri < 0) return {};
  const auto& sel = fleet.rings()[static_cast<size_t>(ri)].selector;
  // percent of the ring by bucket: relative to a bucket ring's own range, else of all buckets.
  double lo = 0, hi = 10000;
  if (sel.kind == fleet::Selector::Kind::Buckets) {
    lo = sel.lo;
    hi = sel.hi;
  }
  return {ri, lo + (hi - lo) * p.percent / 100.0};
}

bool Service::Impl::stage_covers(const Rollout& r, std::size_t stage, const fleet::Host& h) const {
  return stage_cut(r.plan[stage]).covers(h);
}

std::int64_t Service::Impl::budget_used(
    const std::deque<std::pair<std::int64_t, std::int64_t>>& q) const {
  std::int64_t minute = clock.now_ms() / 60000, n = 0;
  for (const auto& [m, c] : q) {
    if (m > minute - 60) n += c;
  }
  return n;
}

bool Service::Impl::budget_allows(const fleet::Host& h) {
  if (opt.budget_per_hour > 0 && budget_used(budget_minutes) >= opt.budget_per_hour) return false;
  if (opt.tenant_budget_per_hour > 0 && !h.tenant.empty()) {
    auto it = tenant_minutes.find(h.tenant);
    if (it != tenant_minutes.end() && budget_used(it->second) >= opt.tenant_budget_per_hour) {
      return false;
    }
  }
  return true;
}

void Service::Impl::budget_take(const fleet::Host& h) {
  std::int64_t minute = clock.now_ms() / 60000;
  auto bump = [&](std::deque<std::pair<std::int64_t, std::int64_t>>& q) {
    while (!q.empty() && q.front().first <= minute - 60) q.pop_front();
    if (q.empty() || q.back().first != minute) q.emplace_back(minute, 0);
    ++q.back().second;
  };
  bump(budget_minutes);
  budget_dirty.emplace("", minute);
  if (!h.tenant.empty()) {
    bump(tenant_minutes[h.tenant]);
    budget_dirty.emplace("tenant:" + h.tenant, minute);
  }
}

std::vector<store::BudgetRow> Service::Impl::budget_rows() {
  std::vector<store::BudgetRow> out;
  auto count = [](const std::deque<std::pair<std::int64_t, std::int64_t>>& q, std::int64_t m) {
    for (const auto& [minute, n] : q) {
      if (minute == m) return n;
    }
    return std::int64_t{0};
  };
  for (const auto& [scope, minute] : budget_dirty) {
    if (scope.empty()) {
      out.push_back({scope, minute, count(budget_minutes, minute)});
    } else if (auto it = tenant_minutes.find(scope.substr(7)); it != tenant_minutes.end()) {
      out.push_back({scope, minute, count(it->second, minute)});
    }
  }
  budget_dirty.clear();
  return out;
}

void Service::Impl::restore_budget(const std::vector<store::BudgetRow>& rows) {
  auto minute = clock.now_ms() / 60000;
  std::vector<store::BudgetRow> recent;
  for (const auto& b : rows) {
    if (b.minute > minute - 60 && b.hosts > 0) recent.push_back(b);
  }
  std::sort(recent.begin(), recent.end(),
            [](const auto& a, const auto& b) { return a.minute < b.minute; });
  budget_minutes.clear();
  tenant_minutes.clear();
  for (const auto& b : recent) {
    auto& q = b.scope.empty() ? budget_minutes : tenant_minutes[b.scope.substr(7)];
    if (b.scope.empty() || b.scope.rfind("tenant:", 0) == 0) q.emplace_back(b.minute, b.hosts);
  }
}

void Service::Impl::start_restart_grace() {
  std::int64_t newest = 0;
  for (HostIndex i = 0; i < fleet.slots(); ++i) {
    if (!fleet.at(i).deleted) newest = std::max(newest, fleet.at(i).last_seen_ms);
  }
  grace_waiting.assign(fleet.slots(), false);
  grace_total = 0;
  for (HostIndex i = 0; i < fleet.slots(); ++i) {
    const auto& h = fleet.at(i);
    if (h.deleted || h.last_seen_ms < newest - live_window_ms()) continue;
    grace_waiting[i] = true;
    ++grace_total;
  }
  grace_left = grace_total;
}

void Service::Impl::note_returned(HostIndex i) {
  if (grace_left <= 0 || i >= grace_waiting.size() || !grace_waiting[i]) return;
  grace_waiting[i] = false;
  --grace_left;
  // Back: all but 5 % of the hosts that were live before the restart (the rest may be the very
  // hosts a release killed). Silence counts again from now: a host still silent is found so
  // within the silence window, k heartbeat intervals.
  if (grace_left * 20 > grace_total) return;
  auto now = clock.now_ms();
  if (silence_not_before_ms > now - 1000) {
    silence_not_before_ms = now - 1000;  // silence_ms() adds this second back
    for (auto& [id, r] : rollouts) r.next_silence_scan_ms = 0;
    (void)event("controller", "restart_grace_over", std::nullopt,
                {{"hosts_back", grace_total - grace_left}, {"hosts_live_before", grace_total}});
  }
  grace_left = 0;
  grace_waiting.clear();
}

bool Service::Impl::may_expose(Rollout& r, std::size_t s, HostIndex i, const fleet::Host& h) {
  if (s == r.stage) {
    if (r.pace_stage != r.stage) build_pace_order(r);
    auto window = pace_window(r);
    if (window < r.pace_size) {
      auto rank = i < r.pace_rank.size() ? r.pace_rank[i] : Rollout::kNoRank;
      if (rank == Rollout::kNoRank || static_cast<std::int64_t>(rank) >= window) {
        r.waited_for_pacing = true;
        return false;
      }
    }
  }
  if (!budget_allows(h)) {
    r.waited_for_budget = true;
    return false;
  }
  return true;
}

std::int64_t Service::Impl::pace_window(const Rollout& r) const {
  const auto& p = r.plan[r.stage];
  const auto& st = r.stages[r.stage];
  double w = static_cast<double>(p.pace_initial + st.replaced) +
             p.pace_growth * static_cast<double>(st.confirmed);
  return w >= 9e15 ? std::numeric_limits<std::int64_t>::max() : static_cast<std::int64_t>(w);
}

void Service::Impl::build_pace_order(Rollout& r) {
  // The sticky order: the keyed bucket first (what a percent of a ring cuts by), then a hash of
  // the host id; only hosts live now are ranked, so a wave is not spent on hosts that are away.
  // With strata, the hosts picked to cover the qualifying strata come first, round-robin over
  // the strata, so the first waves reach every stratum (still sticky inside each stratum).
  auto now = clock.now_ms();
  auto live_since = now - live_window_ms();
  const auto& p = r.plan[r.stage];
  bool strata = !p.strata.keys.empty();
  int scope = p.ring == kWholeFleetRing ? -2 : fleet.ring_index(p.ring);
  struct Stratum {
    std::int64_t live = 0, have = 0;  // live hosts in the ring; earlier stages' exposures on it
    std::vector<std::pair<std::uint64_t, HostIndex>> candidates;
  };
  std::vector<Stratum> by_id;  // by stratum_id()
  std::vector<std::pair<std::uint64_t, HostIndex>> order;
  for (HostIndex i = 0; i < fleet.slots(); ++i) {
    const auto& h = fleet.at(i);
    if (h.deleted || h.pinned) continue;
    auto e = r.exposed.find(i);
    bool live = h.last_seen_ms >= live_since;
    // A host not taking updates (it never polls) is neither ranked nor picked: a place in a wave
    // given to it would never be used, and a first wave of such hosts would never grow.
    bool deaf = e == r.exposed.end() && !takes_updates(i, now);
    auto key = sticky_key(h);
    if (strata && (scope == -2 || h.ring == scope)) {
      auto sid = stratum_id(r, i);
      if (by_id.size() <= sid) by_id.resize(sid + 1);
      auto& st = by_id[sid];
      if (live) ++st.live;
      if (e != r.exposed.end() && e->second.stage != r.stage) {
        if (!e->second.failed) ++st.have;
      } else if (e == r.exposed.end() ? live && !deaf : !e->second.failed) {
        // A pick that failed is replaced by the next host of its stratum (its failure is the
        // gate's evidence; the stratum still needs its healthy hosts).
        st.candidates.emplace_back(key, i);
      }
    }
    if (!stage_covers(r, r.stage, h)) continue;
    // Hosts an earlier stage exposed are not this stage's to pace (a "*" stage covers them too).
    if (e != r.exposed.end() && e->second.stage != r.stage) continue;
    if ((!live || deaf) && e == r.exposed.end()) continue;
    order.emplace_back(key, i);
  }
  std::sort(order.begin(), order.end());
  r.pace_rank.assign(fleet.slots(), Rollout::kNoRank);
  r.strata_rep.assign(strata ? fleet.slots() : 0, false);
  std::uint32_t rank = 0;
  if (strata) {
    // Qualifying strata in the order of their first candidate (sticky, not alphabetical: the
    // first wave may be smaller than the number of strata).
    std::vector<std::vector<std::pair<std::uint64_t, HostIndex>>> picks;
    for (auto& st : by_id) {
      if (st.live < p.strata.min_size) continue;
      auto need = std::max<std::int64_t>(0, p.strata.min_hosts - st.have);
      if (need == 0 || st.candidates.empty()) continue;
      auto n = std::min<std::size_t>(static_cast<std::size_t>(need), st.candidates.size());
      std::partial_sort(st.candidates.begin(), st.candidates.begin() + static_cast<long>(n),
                        st.candidates.end());
      st.candidates.resize(n);
      picks.push_back(std::move(st.candidates));
    }
    std::sort(picks.begin(), picks.end(),
              [](const auto& a, const auto& b) { return a.front() < b.front(); });
    for (std::size_t round = 0; round < static_cast<std::size_t>(p.strata.min_hosts); ++round) {
      for (const auto& pk : picks) {
        if (round >= pk.size()) continue;
        auto i = pk[round].second;
        r.strata_rep[i] = true;
        r.pace_rank[i] = rank++;
      }
    }
  }
  for (const auto& [key, i] : order) {
    if (r.pace_rank[i] == Rollout::kNoRank) r.pace_rank[i] = rank++;
  }
  r.pace_size = static_cast<std::int64_t>(rank);
  r.pace_stage = r.stage;
}

void Service::Impl::note_alive(Rollout& r, Exposure& e, std::int64_t now_ms) {
  if (e.confirmed || !e.applied || e.failed) return;
  if (now_ms - e.applied_ms < opt.exposed_heartbeat_s * 1000) return;
  e.confirmed = true;
  ++r.stages[e.stage].confirmed;
  if (e.stage == r.stage) pacing_opened = true;
}

void Service::Impl::update_blocked(Rollout& r) {
  auto& st = r.stages[r.stage];
  const auto& p = r.plan[r.stage];
  std::string code, message;
  if (r.uncovered_live >= 0) {
    bool budget_out = opt.budget_per_hour > 0 && budget_used(budget_minutes) >= opt.budget_per_hour;
    std::int64_t could_be_healthy = r.covered_live - st.counts.failed;
    if (r.covered_live == 0) {
      code = "no_live_hosts";
      message = "no live host in " +
                (p.ring == kWholeFleetRing ? std::string("the fleet") : "ring '" + p.ring + "'") +
                " is covered by this stage (none heard from in the last " +
                std::to_string(live_window_ms() / 1000) + " s)";
    } else if (r.uncovered_live > 0 && (budget_out || r.waited_for_budget)) {
      code = "waiting_for_budget";
      message = std::to_string(r.uncovered_live) +
                " live hosts wait for the blast-radius budget (" +
                std::to_string(budget_used(budget_minutes)) + " of " +
                std::to_string(opt.budget_per_hour) + " hosts used in the last hour" +
                (r.waited_for_budget && !budget_out ? ", or their tenant's budget" : "") + ")";
    } else if (st.counts.healthy < p.min_hosts && could_be_healthy < p.min_hosts) {
      code = "not_enough_hosts";
      message = "the stage needs " + std::to_string(p.min_hosts) + " healthy hosts; only " +
                std::to_string(std::max<std::int64_t>(could_be_healthy, 0)) +
                " live hosts it covers could be (" + std::to_string(r.covered_live) + " live, " +
                std::to_string(st.counts.failed) + " failed)";
    } else if (r.strata_blocked) {
      code = "strata_not_covered";
      message = strata_missing(r);
    }
  }
  if (code == st.blocked) {
    st.blocked_reason = message;  // the figures move; the event says when the cause changes
    return;
  }
  st.blocked = code;
  st.blocked_reason = message;
  json data = {{"stage", r.stage}, {"code", code}, {"message", message}};
  (void)event("controller", code.empty() ? "stage_unblocked" : "stage_blocked", r.id, data);
}

bool Service::Impl::live_hosts_not_exposed(const Rollout& r) const {
  auto live_since = clock.now_ms() - live_window_ms();
  for (HostIndex i = 0; i < fleet.slots(); ++i) {
    const auto& h = fleet.at(i);
    if (!h.deleted && !h.pinned && h.last_seen_ms >= live_since && !r.exposed.count(i) &&
        takes_updates(i, clock.now_ms()))
      return true;
  }
  return false;
}

void Service::Impl::check_coverage(Rollout& r, bool force) {
  auto now = clock.now_ms();
  if (r.coverage_stage != r.stage) {
    r.coverage_stage = r.stage;
    r.uncovered_live = -1;
    r.waited_for_budget = r.waited_for_pacing = false;
  }
  if (!force && r.uncovered_live >= 0 && now - r.coverage_checked_ms < 1000) return;
  r.coverage_checked_ms = now;
  auto live_since = now - live_window_ms();
  // Ring index and bucket cut of every stage reached (a ring lookup per host would be slow).
  std::vector<StageCut> cuts;
  for (std::size_t s = 0; s <= r.stage && s < r.plan.size(); ++s)
    cuts.push_back(stage_cut(r.plan[s]));
  // Strata of the current stage: live hosts and healthy hosts on the release per stratum of the
  // stage's ring (exposed by any stage so far).
  const auto& sp = r.plan[r.stage];
  bool strata = !sp.strata.keys.empty();
  if (strata && r.pace_stage != r.stage) build_pace_order(r);
  int scope = sp.ring == kWholeFleetRing ? -2 : fleet.ring_index(sp.ring);
  std::vector<Rollout::StratumCoverage> census;  // by stratum_id()
  bool rep_gone = false;
  std::int64_t uncovered = 0, stage_live = 0, not_polling_n = 0;
  std::vector<std::string> not_polling;  // the first ten ids
  for (HostIndex i = 0; i < fleet.slots(); ++i) {
    const auto& h = fleet.at(i);
    if (h.deleted || h.pinned) continue;
    bool rep = strata && i < r.strata_rep.size() && r.strata_rep[i];
    bool live = h.last_seen_ms >= live_since;
    auto e = r.exposed.find(i);
    if (strata && (scope == -2 || h.ring == scope)) {
      // Failed hosts of this stage count whether live or not (a silent one is not).
      bool mine = e != r.exposed.end() && e->second.stage == r.stage && e->second.counted &&
                  (e->second.applied || e->second.failed);
      if (live || mine) {
        auto sid = stratum_id(r, i);
        if (census.size() <= sid) census.resize(sid + 1);
        auto& c = census[sid];
        if (live) {
          ++c.live;
          if (e != r.exposed.end() && e->second.healthy && !e->second.failed) ++c.healthy;
        }
        if (mine) {
          ++c.applied;
          if (e->second.failed) ++c.failed;
        }
      }
    }
    if (rep && e != r.exposed.end() && e->second.failed) rep_gone = true;  // replaced
    if (!live) {
      // A host picked for a stratum that went away before it took the release: pick again.
      if (rep && e == r.exposed.end()) rep_gone = true;
      continue;
    }
    bool covered = false, current = false;
    for (std::size_t s = 0; s < cuts.size(); ++s) {
      if (cuts[s].covers(h)) {
        covered = true;
        current = s == r.stage;
        break;
      }
    }
    if (!covered && rep) covered = current = true;
    if (!covered) continue;
    if (e == r.exposed.end() && !takes_updates(i, now)) {
      // Live (it heartbeats) but not asking for its desired state: it can never be offered
      // the release, and waiting for it would hold the stage open for good. Ranked by pacing
      // while it still polled: the order is made again without it (build_pace_order).
      if (not_polling.size() < 10) not_polling.push_back(h.id.str());
      ++not_polling_n;
      if (r.pace_stage == r.stage && i < r.pace_rank.size() && r.pace_rank[i] != Rollout::kNoRank)
        rep_gone = true;
      continue;
    }
    if (current) ++stage_live;
    if (e == r.exposed.end()) ++uncovered;
  }
  r.uncovered_live = uncovered;
  r.covered_live = stage_live;
  r.not_taking_updates = not_polling_n;
  if (not_polling_n > 0 && r.not_taking_updates_stage != r.stage) {
    // Once per stage: the hosts it stopped waiting for (the first ten).
    r.not_taking_updates_stage = r.stage;
    json data = {{"stage", r.stage},
                 {"hosts", not_polling_n},
                 {"host_ids", not_polling},
                 {"message", std::to_string(not_polling_n) +
                                 " live hosts the stage covers have not asked for their desired "
                                 "state in " +
                                 std::to_string(poll_bound_ms() / 1000) +
                                 " s: not taking updates, not waited for"}};
    (void)event("controller", "hosts_not_taking_updates", r.id, data);
  }
  r.strata_cov.clear();
  r.strata_total = 0;
  for (std::size_t sid = 0; sid < census.size(); ++sid) {
    auto& c = census[sid];
    if (c.live > 0) ++r.strata_total;
    if (c.live < sp.strata.min_size) continue;
    c.name = r.stratum_names[sid];
    r.strata_cov.push_back(std::move(c));
  }
  std::sort(r.strata_cov.begin(), r.strata_cov.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  if (rep_gone) r.pace_stage = ~std::size_t{0};  // rebuilt (sticky) at the next exposure
}

void Service::Impl::mark_applied(Rollout& r, Exposure& e, std::int64_t when_ms) {
  if (e.applied) return;
  e.applied = true;
  e.applied_ms = when_ms;
  r.next_silence_scan_ms = std::min(r.next_silence_scan_ms, when_ms + silence_ms());
  if (e.counted) ++r.stages[e.stage].counts.applied;
  if (!r.first_apply_ms) r.first_apply_ms = when_ms;
  touch(r, e);
}

void Service::Impl::mark_failed(Rollout& r, Exposure& e, bool silent) {
  if (e.failed) return;
  e.failed = true;
  if (e.confirmed) {  // the pacing window grows only on healthy evidence
    e.confirmed = false;
    --r.stages[e.stage].confirmed;
  }
  if (!e.counted) {  // no track record: its failure is not evidence (see Impl::counts)
    ++r.stages[e.stage].replaced;
    if (e.stage == r.stage) pacing_opened = true;
    e.silent = silent;
    e.healthy = false;
    touch(r, e);
    return;
  }
  auto& c = r.stages[e.stage].counts;
  ++c.failed;
  if (silent) {
    e.silent = true;
    ++c.silent;
  }
  if (e.healthy) {
    e.healthy = false;
    --c.healthy;
  }
  touch(r, e);
}

// The gate decision for the current stage, on every new signal and on bake expiry.
void Service::Impl::evaluate(Rollout& r) {
  if (r.state != State::Baking && r.state != State::Paused && r.state != State::AwaitingApproval) {
    return;
  }
  if (r.halt_pending) {
    // The gate failed once: that stands. Retry the halt it decided, not a new judgement (later
    // successes must not let a failed stage pass while the store was away).
    if (halt(r, "gate", r.halt_reason, r.halt_evidence, false)) r.halt_pending = false;
    return;
  }
  auto now = clock.now_ms();
  const auto& plan = r.plan[r.stage];
  auto& st = r.stages[r.stage];
  // Control cohort: members of the rings reached so far that are not on the release.
  std::int64_t reached_ring_hosts = 0;
  std::vector<int> reached;  // ring indices
  for (std::size_t i = 0; i <= r.stage; ++i) {
    std::vector<int> rings_of_stage;
    if (r.plan[i].ring == kWholeFleetRing) {
      for (std::size_t k = 0; k < fleet.rings().size(); ++k) rings_of_stage.push_back(int(k));
    } else {
      rings_of_stage.push_back(fleet.ring_index(r.plan[i].ring));
    }
    for (int ri : rings_of_stage) {
      if (ri < 0 || std::find(reached.begin(), reached.end(), ri) != reached.end()) continue;
      reached.push_back(ri);
      reached_ring_hosts += static_cast<std::int64_t>(fleet.rings()[static_cast<size_t>(ri)].size);
    }
  }
  health::StageCounts cum;
  for (std::size_t i = 0; i <= r.stage; ++i) {
    const auto& c = r.stages[i].counts;
    cum.exposed += c.exposed;
    cum.applied += c.applied;
    cum.healthy += c.healthy;
    cum.failed += c.failed;
    cum.silent += c.silent;
  }
  // Control cohort: unexposed hosts of the reached rings; when those are too few to estimate a
  // baseline (stages at 100 % of their ring), every unexposed host of the fleet.
  auto total_exposed = static_cast<std::int64_t>(r.exposed.size());
  auto fleet_hosts = static_cast<std::int64_t>(fleet.live());
  if (opt.evidence_min_age_s > 0) {
    // Only hosts with a track record count, on both sides (Impl::counts): fresh enrollees
    // neither raise the baseline with made-up crashes nor dilute it.
    refresh_trusted(r);
    reached_ring_hosts = fleet_hosts = 0;
    for (int ri : reached) reached_ring_hosts += r.trusted_by_ring[static_cast<std::size_t>(ri)];
    for (auto n : r.trusted_by_ring) fleet_hosts += n;
    total_exposed = r.counted_exposed;
  }
  cum.control_hosts = std::max<std::int64_t>(0, reached_ring_hosts - total_exposed);
  // Their crashes since the rollout started, whenever their ring was reached: a ring's hosts are
  // a control group from the start, not only from the stage that reaches the ring.
  cum.control_failed = 0;
  for (int ri : reached) cum.control_failed += r.control.in_ring(ri);
  if (cum.control_hosts < kMinControlHosts) {
    cum.control_hosts = std::max<std::int64_t>(0, fleet_hosts - total_exposed);
    cum.control_failed = r.control.unexposed();
  }
  if (cum.control_hosts < kMinControlHosts) {
    // No control cohort is left (the release is on nearly every host): the fleet's failure rate
    // while it was not on the release, over the rollout so far. Conservative (that window is
    // longer than the exposed hosts'), never the bare prior, which a busy fleet's background
    // can exceed.
    cum.control_hosts = fleet_hosts;
    cum.control_failed = r.control.ever();
  }
  cum.elapsed_s = r.stages[0].started_ms ? (now - r.stages[0].started_ms) / 1000.0 : 0;
  health::StageCounts cur = st.counts;
  cur.control_hosts = cum.control_hosts;
  cur.control_failed = cum.control_failed;
  cur.elapsed_s = st.started_ms ? (now - st.started_ms) / 1000.0 : 0;

  // Failure is judged on every host the rollout reached so far, and on the current stage's own
  // hosts (a ring whose hosts fail where earlier rings' did not - another OS, another site - is
  // diluted in the cumulative figures); passing needs the current stage's own bake time and
  // healthy sample. Two tests: a good release's false-halt bound is at most twice the one-test
  // bound of gate.hpp.
  auto whole = health::evaluate(plan.gate, cum);
  auto decision = whole;
  if (whole.verdict != health::Verdict::Fail) {
    // The implicit final stage asks for the sample its new hosts can give (it may add only a few
    // hosts, e.g. a ring the plan reached at 99 %).
    auto own_gate = plan.gate;
    bool nobody_new = false;
    if (plan.implicit && r.state == State::Baking) {
      check_coverage(r, false);
      if (r.uncovered_live >= 0)
        own_gate.min_hosts = std::clamp<std::int64_t>(r.covered_live, 1, own_gate.min_hosts);
      // It has offered the release to nobody and no live host waits to be offered it (the hosts
      // it was started for went away, or the hosts it covers were all exposed by earlier stages
      // before a ring change): there is nothing left to judge, and waiting would strand the
      // rollout.
      nobody_new = r.uncovered_live == 0 && cur.exposed == 0;
    }
    auto stage = health::evaluate(own_gate, cur);
    if (nobody_new && stage.verdict == health::Verdict::Waiting) {
      stage.verdict = health::Verdict::Pass;
      stage.reason =
          "pass: no live host is new to the final stage (hosts that return later get the release "
          "as the stable one)";
    }
    decision = stage;
    if (stage.verdict == health::Verdict::Fail) {
      decision.reason = "stage " + std::to_string(r.stage) + " alone: " + stage.reason;
    } else {
      decision.statistic = whole.statistic;
    }
  }
  if (decision.verdict != health::Verdict::Fail && !plan.strata.keys.empty()) {
    // Each qualifying stratum is also judged alone (its hosts' failures would be diluted in a
    // large stage: a release that kills one OS), by the SPRT only, at alpha / (qualifying strata)
    // so the stage's false-halt bound holds (Bonferroni). Figures from the last coverage check.
    check_coverage(r, false);
    auto g = plan.gate;
    g.alpha = plan.gate.alpha / static_cast<double>(std::max<std::size_t>(1, r.strata_cov.size()));
    g.max_failure_rate = 1;  // no absolute floor on a few hosts
    for (const auto& c : r.strata_cov) {
      if (c.failed == 0) continue;
      health::StageCounts sc;
      sc.exposed = sc.applied = c.applied;
      sc.failed = c.failed;
      sc.healthy = c.applied - c.failed;
      sc.control_hosts = cum.control_hosts;
      sc.control_failed = cum.control_failed;
      sc.elapsed_s = cur.elapsed_s;
      auto d = health::evaluate(g, sc);
      if (d.verdict != health::Verdict::Fail) continue;
      decision = d;
      decision.reason =
          "stage " + std::to_string(r.stage) + ", stratum " + c.name + " alone: " + d.reason;
      break;
    }
  }
  auto previous = st.decision.verdict;
  st.decision = decision;
  st.control_hosts = cum.control_hosts;
  st.control_failed = cum.control_failed;
  if (decision.verdict == health::Verdict::Fail) {
    json evidence = {{"stage", r.stage},
                     {"counts", counts_json(cum)},
                     {"stage_counts", counts_json(cur)},
                     {"control_hosts", cum.control_hosts},
                     {"control_failed", cum.control_failed},
                     {"gate", decision_json(decision)},
                     {"params", params_json(plan)}};
    st.state = "failed";
    r.halt_pending = true;
    r.halt_evidence = evidence;
    if (halt(r, "gate", decision.reason, evidence, false)) r.halt_pending = false;
    return;
  }
  // A gate that would pass still waits until every live host the stage covers was offered the
  // release under the gate and the budget (pacing and budget hold hosts back; completion must not
  // hand them the release ungated).
  if (r.state == State::Baking) {
    check_coverage(r, false);
    r.strata_blocked = false;
    if (decision.verdict == health::Verdict::Pass && r.uncovered_live != 0) {
      decision.verdict = health::Verdict::Waiting;
      decision.reason = "the gate passes, but " +
                        std::to_string(std::max<std::int64_t>(r.uncovered_live, 0)) +
                        " live hosts the stage covers have not been offered the release yet";
      st.decision = decision;
    }
    if (decision.verdict == health::Verdict::Pass) {
      if (auto missing = strata_missing(r); !missing.empty()) {
        decision.verdict = health::Verdict::Waiting;
        decision.reason = "the gate passes, but " + missing;
        st.decision = decision;
        r.strata_blocked = true;
      }
    }
    update_blocked(r);
  }
  if (decision.verdict != previous && decision.verdict == health::Verdict::Waiting) {
    (void)event("gate", "gate_waiting", r.id,
                {{"stage", r.stage},
                 {"counts", counts_json(cur)},
                 {"gate", decision_json(decision)},
                 {"params", params_json(plan)}});
  }
  if (decision.verdict != health::Verdict::Pass || r.state != State::Baking || emergency) return;
  json ev = {{"stage", r.stage},
             {"counts", counts_json(cur)},
             {"gate", decision_json(decision)},
             {"params", params_json(plan)}};
  std::size_t next = r.stage + 1;
  if (next + 1 == r.plan.size() && r.plan[next].implicit && !live_hosts_not_exposed(r)) {
    next = r.plan.size();  // the implicit final stage would offer the release to nobody new
    r.stages.back().state = "skipped";
  }
  if (next >= r.plan.size()) {
    // Completed: the release becomes stable; the previous stable is superseded. The rollout and
    // the channel change in memory only once the store has both: a failed write (a full disk)
    // leaves them as they were, and the next evaluation (every tick) tries again.
    auto& ch = channels[r.channel];
    auto saved_channel = ch;
    Rollout saved = r;
    st.state = "passed";
    auto old_stable = ch.stable_version;
    ch.stable_version = r.version;
    ch.releases[r.version].state = ReleaseState::Stable;
    if (old_stable && ch.releases.count(*old_stable)) {
      ch.releases[*old_stable].state = ReleaseState::Superseded;
    }
    auto ok = store.transaction([&]() -> Status {
      RF_CHECK(transition(r, Event::Finish, "gate", ev));
      RF_CHECK(persist_channel(ch));
      RF_CHECK(persist_release(ch.releases[r.version]));
      if (old_stable && ch.releases.count(*old_stable))
        RF_CHECK(persist_release(ch.releases[*old_stable]));
      return {};
    });
    if (!ok) {
      // transition() swapped the rollout in when its part was written, but the transaction it
      // joined did not commit.
      ch = std::move(saved_channel);
      r = std::move(saved);
      return;
    }
    notify_waiters();
    return;
  }
  bool needs_approval = r.plan[next].manual && !r.stages[next].approved;
  Rollout saved = r;
  st.state = "passed";
  r.stage = next;
  r.stages[next].state = needs_approval ? "awaiting_approval" : "baking";
  r.stages[next].started_ms = now;
  auto ok = transition(r, needs_approval ? Event::AdvanceToApproval : Event::Advance, "gate", ev);
  if (!ok) {
    r = std::move(saved);
    return;
  }
  notify_waiters();
}

// Halt (gate) or abort (operator): persisted first, then quarantine and send everyone back.
Status Service::Impl::halt(Rollout& r, const std::string& actor, const std::string& reason,
                           json evidence, bool operator_abort) {
  auto saved_reason = r.halt_reason;
  auto saved_ms = r.halted_ms;
  r.halt_reason = reason;
  r.halted_ms = clock.now_ms();
  evidence["reason"] = reason;
  auto st = transition(r, operator_abort ? Event::Abort : Event::GateFail, actor, evidence);
  if (!st) {
    r.halt_reason = std::move(saved_reason);
    r.halted_ms = saved_ms;
    return st;
  }
  // Halted (or aborted) is durable from here on: what follows, if the store refuses it now, is
  // finished by retry_rollbacks() (each tick) or by the next start.
  return finish_rollback(r);
}

void Service::Impl::retry_rollbacks() {
  for (auto& [id, r] : rollouts) {
    if (r.state != State::Halted && r.state != State::Aborted) continue;
    auto& ch = channels[r.channel];
    auto rit = ch.releases.find(r.version);
    bool quarantined = rit == ch.releases.end() || rit->second.state == ReleaseState::Quarantined;
    if (r.state == State::Halted || !quarantined) (void)finish_rollback(r);
  }
}

Status Service::Impl::finish_rollback(Rollout& r) {
  auto& ch = channels[r.channel];
  auto rit = ch.releases.find(r.version);
  if (rit != ch.releases.end() && rit->second.state != ReleaseState::Quarantined) {
    // Memory follows the store: quarantined in memory once it is written.
    auto quarantined = rit->second;
    quarantined.state = ReleaseState::Quarantined;
    RF_CHECK(store.transaction([&]() -> Status {
      RF_CHECK(persist_release(quarantined));
      RF_CHECK(event("controller", "release_quarantined", r.id,
                     {{"channel", r.channel}, {"version", r.version}, {"reason", r.halt_reason}}));
      return {};
    }));
    rit->second.state = ReleaseState::Quarantined;
  }
  rebuild_known_bad();
  notify_waiters();  // long-polling hosts hear the rollback now
  if (r.state == State::Halted) {
    RF_CHECK(transition(
        r, Event::RollbackDone, "controller",
        {{"exposed", r.exposed.size()},
         {"rollback_to", ch.stable_version ? json(*ch.stable_version) : json(nullptr)}}));
  }
  return {};
}

void Service::Impl::rebuild_known_bad() {
  known_bad.clear();
  for (const auto& [n, c] : channels) {
    // Only what can still matter: versions at or above the oldest one any host may be offered
    // (the stable release, or N-1 for pinned hosts); every host is sent at least that, and the
    // agent never loads a version below it without a signed rollback. With no stable release
    // every quarantined version counts, the newest kMaxKnownBadPerChannel of them.
    std::int64_t floor = 0;
    if (c.stable_version) {
      floor = *c.stable_version;
      if (const auto* pinned = pinned_release(c)) floor = std::min(floor, pinned->version);
    }
    std::vector<proto::KnownBad> mine;
    for (auto it = c.releases.rbegin(); it != c.releases.rend() && it->first >= floor; ++it) {
      if (it->second.state != ReleaseState::Quarantined) continue;
      mine.push_back({n, it->first});
      if (mine.size() >= kMaxKnownBadPerChannel) break;
    }
    known_bad.insert(known_bad.end(), mine.rbegin(), mine.rend());
  }
  ++desired_generation;
}

// ---------------------------------------------------------------- API

Status parse_pacing(const json& stage, StagePlan& p) {
  auto it = stage.find("pacing");
  if (it == stage.end() || it->is_null()) return {};
  RF_CHECK(proto::require_object(*it, "pacing"));
  RF_CHECK(proto::only_keys(*it, {"initial", "growth"}));
  RF_TRY(initial, proto::get_opt_int(*it, "initial", 1, 100'000'000));
  RF_TRY(growth, proto::get_opt_number(*it, "growth", 1, 100));
  if (initial) p.pace_initial = *initial;
  if (growth) p.pace_growth = *growth;
  return {};
}

Expected<std::vector<StagePlan>> Service::Impl::plan_from(
    const json& body, const std::optional<std::string>& policy) const {
  bool has_stages = body.contains("stages");
  if (policy.has_value() == has_stages) {
    return fail(Errc::InvalidArgument, "give exactly one of 'policy' or 'stages'");
  }
  std::vector<StagePlan> plan;
  if (has_stages) {
    RF_TRY(p, parse_stages(body["stages"]));
    plan = std::move(p);
  } else {
    auto it = policies.find(*policy);
    if (it == policies.end()) return fail(Errc::NotFound, "no policy named '" + *policy + "'");
    plan = it->second;
  }
  for (const auto& st : plan) {
    if (st.ring != kWholeFleetRing && fleet.ring_index(st.ring) < 0) {
      return fail(Errc::InvalidArgument, "stage ring '" + st.ring + "' does not exist");
    }
  }
  // No ungated exposure: when the release becomes stable, every host not on it yet gets it. So the
  // plan must reach every host through a gate: every ring (or the whole fleet, ring "*") at 100 %.
  // A plan that does not gets an implicit final stage over the whole fleet, with the last stage's
  // bake, sample, gate and pacing (README: Rollouts).
  bool whole = false;
  std::vector<bool> ring_done(fleet.rings().size(), false);
  for (const auto& st : plan) {
    if (st.percent < 100) continue;
    if (st.ring == kWholeFleetRing) whole = true;
    int ri = fleet.ring_index(st.ring);
    if (ri >= 0) ring_done[static_cast<std::size_t>(ri)] = true;
  }
  if (!whole && std::find(ring_done.begin(), ring_done.end(), false) != ring_done.end()) {
    if (plan.size() >= 32) {
      return fail(Errc::InvalidArgument,
                  "the plan does not cover every host at 100 % and has no room for the implicit "
                  "final stage (32 stages at most)");
    }
    StagePlan last = plan.back();
    last.ring = kWholeFleetRing;
    last.percent = 100;
    last.manual = false;
    last.implicit = true;
    plan.push_back(std::move(last));
  }
  return plan;
}

Expected<json> Service::create_rollout(const Principal& by, const json& body) {
  RF_CHECK(proto::only_keys(body, {"channel", "version", "policy", "stages"}));
  RF_TRY(channel, proto::get_string(body, "channel", 63));
  RF_TRY(version, proto::get_int(body, "version", 1, 1'000'000'000'000LL));
  RF_TRY(policy, proto::get_opt_string(body, "policy", 63));
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  RF_TRY(plan, m.plan_from(body, policy));
  auto cit = m.channels.find(channel);
  if (cit == m.channels.end()) return fail(Errc::NotFound, "no channel named '" + channel + "'");
  auto rit = cit->second.releases.find(version);
  if (rit == cit->second.releases.end()) {
    return fail(Errc::NotFound,
                "channel '" + channel + "' has no release " + std::to_string(version));
  }
  if (rit->second.state != ReleaseState::Validated) {
    return fail(Errc::Conflict,
                "release " + std::to_string(version) + " is " +
                    std::string(to_string(rit->second.state)) +
                    "; only a validated release can roll out",
                "invalid_state");
  }
  if (cit->second.stable_version && version <= *cit->second.stable_version) {
    return fail(Errc::Conflict,
                "release " + std::to_string(version) + " is not newer than the stable release " +
                    std::to_string(*cit->second.stable_version),
                "not_newer");
  }
  if (auto* active = m.active_rollout(channel)) {
    return fail(Errc::Conflict,
                "channel '" + channel + "' already has active rollout " +
                    std::to_string(active->id) + " (" +
                    std::string(rollout::public_state(active->state)) + ")",
                "channel_busy");
  }
  Rollout r;
  r.id = m.next_rollout_id;
  r.channel = channel;
  r.version = version;
  r.policy = policy.value_or("");
  r.plan = std::move(plan);
  r.stages.resize(r.plan.size());
  r.previous_stable = cit->second.stable_version;
  r.created = r.updated = m.now_s();
  RF_CHECK(m.store.transaction([&]() -> Status {
    RF_CHECK(m.persist_rollout(r));
    RF_CHECK(m.event(by.name, "rollout_created", r.id,
                     {{"channel", channel},
                      {"version", version},
                      {"policy", r.policy},
                      {"stages", stages_json(r.plan)}}));
    return {};
  }));
  ++m.next_rollout_id;
  auto& slot = m.rollouts[r.id];
  slot = std::move(r);
  return m.rollout_json(slot);
}

Expected<json> Service::list_rollouts(const std::optional<std::string>& channel,
                                      const std::optional<std::string>& state) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  json out = json::array();
  for (auto it = m.rollouts.rbegin(); it != m.rollouts.rend(); ++it) {
    const auto& r = it->second;
    if (channel && r.channel != *channel) continue;
    if (state && rollout::public_state(r.state) != *state && rollout::to_string(r.state) != *state)
      continue;
    out.push_back(m.rollout_json(r));
    if (out.size() >= 500) break;
  }
  return json{{"rollouts", out}};
}

Expected<json> Service::get_rollout(std::int64_t id) const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.rollouts.find(id);
  if (it == m.rollouts.end()) return fail(Errc::NotFound, "no rollout " + std::to_string(id));
  return m.rollout_json(it->second);
}

Expected<json> Service::rollout_action(const Principal& by, std::int64_t id,
                                       const std::string& action, const json& body) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  RF_TRY(r, m.find_rollout(id));
  std::string reason;
  if (body.is_object()) {
    RF_TRY(rs, proto::get_opt_string(body, "reason", 1024));
    reason = rs.value_or("");
  }
  json data = {{"reason", reason}};
  if (action == "start") {
    if (m.emergency && r->state == State::Pending) {
      return fail(Errc::Conflict,
                  "rollout is pending and an emergency stop is in force; nothing may start",
                  "emergency_stop");
    }
    bool gated = r->plan[0].manual;
    RF_TRY(out, rollout::apply(r->state, gated ? Event::StartGated : Event::Start));
    if (out.changed) {
      Rollout saved = *r;
      r->stage = 0;
      r->stages[0].started_ms = m.clock.now_ms();
      r->stages[0].state = gated ? "awaiting_approval" : "baking";
      auto& rel = m.channels[r->channel].releases[r->version];
      rel.state = ReleaseState::Rolling;
      auto st = m.store.transaction([&]() -> Status {
        RF_CHECK(m.transition(*r, gated ? Event::StartGated : Event::Start, by.name, data));
        RF_CHECK(m.persist_release(rel));
        return {};
      });
      if (!st) {
        *r = saved;
        rel.state = ReleaseState::Validated;
        return tl::unexpected(st.error());
      }
      m.notify_waiters();
    }
  } else if (action == "pause") {
    // The stage's state is part of the row the transition persists: set it first.
    RF_TRY(out, rollout::apply(r->state, Event::Pause));
    if (out.changed) {
      auto saved = r->stages[r->stage].state;
      r->stages[r->stage].state = "paused";
      auto st = m.transition(*r, Event::Pause, by.name, data);
      if (!st) {
        r->stages[r->stage].state = saved;
        return tl::unexpected(st.error());
      }
    }
  } else if (action == "resume") {
    RF_TRY(out, rollout::apply(r->state, Event::Resume));
    if (out.changed) {
      bool needs = r->plan[r->stage].manual && !r->stages[r->stage].approved;
      Rollout saved = *r;
      r->stages[r->stage].state = needs ? "awaiting_approval" : "baking";
      auto st = m.store.transaction([&]() -> Status {
        RF_CHECK(m.transition(*r, Event::Resume, by.name, data));
        if (needs) RF_CHECK(m.transition(*r, Event::NeedApproval, "controller", json::object()));
        return {};
      });
      if (!st) {
        *r = std::move(saved);
        return tl::unexpected(st.error());
      }
      m.notify_waiters();
    }
  } else if (action == "approve") {
    RF_TRY(out, rollout::apply(r->state, Event::Approve));
    if (out.changed) {
      Rollout saved = *r;
      r->stages[r->stage].approved = true;
      r->stages[r->stage].started_ms = m.clock.now_ms();
      r->stages[r->stage].state = "baking";
      auto st = m.transition(*r, Event::Approve, by.name, data);
      if (!st) {
        *r = saved;
        return tl::unexpected(st.error());
      }
      m.notify_waiters();
    }
  } else if (action == "abort") {
    RF_TRY(out, rollout::apply(r->state, Event::Abort));
    if (out.changed) {
      RF_CHECK(m.halt(*r, by.name, reason.empty() ? "aborted by " + by.name : reason,
                      json::object(), true));
    }
  } else if (action == "skip") {
    if (by.role < Role::Release) return fail(Errc::PermissionDenied, "skip needs the release role");
    if (reason.empty()) return fail(Errc::InvalidArgument, "skip needs a 'reason'");
    RF_TRY(to, proto::get_int(body, "to", 0, 31));
    RF_CHECK(rollout::apply(r->state, Event::Skip));
    auto target = static_cast<std::size_t>(to);
    if (target >= r->plan.size()) {
      return fail(Errc::InvalidArgument, "stage " + std::to_string(to) + " does not exist");
    }
    if (target == r->stage) return m.rollout_json(*r);  // already there: the same answer again
    if (target < r->stage) {
      return fail(Errc::Conflict,
                  "rollout is " + std::string(rollout::public_state(r->state)) + " at stage " +
                      std::to_string(r->stage) + "; skip only goes forward",
                  "invalid_state");
    }
    // Urgent is not unstaged: the canary stage must have passed its own gate first.
    if (r->stage == 0 && r->stages[0].decision.verdict != health::Verdict::Pass) {
      return fail(Errc::Conflict,
                  "the canary stage has not passed its gate (" + r->stages[0].decision.reason +
                      "); skip never skips the canary or its minimum sample",
                  "canary_not_passed");
    }
    Rollout saved = *r;
    for (std::size_t i = r->stage; i < target; ++i) {
      if (r->stages[i].state != "passed") r->stages[i].state = "skipped";
    }
    r->stage = target;
    r->stages[target].started_ms = m.clock.now_ms();
    r->stages[target].approved = true;
    r->stages[target].state = r->state == State::Paused ? "paused" : "baking";
    data["to_stage"] = to;
    auto st = m.transition(*r, Event::Skip, by.name, data);
    if (!st) {
      *r = saved;
      return tl::unexpected(st.error());
    }
    if (r->state == State::AwaitingApproval) {
      (void)m.transition(*r, Event::Approve, by.name, json::object());
    }
    m.notify_waiters();
  } else {
    return fail(Errc::NotFound, "no action '" + action + "'");
  }
  m.evaluate(*r);
  return m.rollout_json(*r);
}

Expected<json> Service::preview(const json& body) const {
  RF_CHECK(proto::only_keys(body, {"channel", "policy", "stages"}));
  RF_TRY(channel, proto::get_opt_string(body, "channel", 63));
  RF_TRY(policy, proto::get_opt_string(body, "policy", 63));
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  if (channel && !m.channels.count(*channel))
    return fail(Errc::NotFound, "no channel named '" + *channel + "'");
  RF_TRY(plan, m.plan_from(body, policy));
  Rollout probe;
  probe.plan = plan;
  json stages = json::array();
  std::int64_t cumulative = 0, earliest_s = 0, total = static_cast<std::int64_t>(m.fleet.live());
  std::vector<bool> counted(m.fleet.slots(), false);
  auto live_since = m.clock.now_ms() - m.live_window_ms();
  for (std::size_t s = 0; s < plan.size(); ++s) {
    std::int64_t n = 0, pinned = 0;
    json sample = json::array();
    // Strata: the hosts a rollout would pick first for each qualifying stratum (the same sticky
    // order build_pace_order uses), counted as this stage's hosts.
    json strata = nullptr;
    std::vector<HostIndex> picked;
    if (const auto& sp = plan[s].strata; !sp.keys.empty()) {
      int scope = plan[s].ring == kWholeFleetRing ? -2 : m.fleet.ring_index(plan[s].ring);
      struct Stratum {
        std::int64_t live = 0, have = 0;
        std::vector<std::pair<std::uint64_t, HostIndex>> candidates;
      };
      std::map<std::string, Stratum> by_name;
      for (HostIndex i = 0; i < m.fleet.slots(); ++i) {
        const auto& h = m.fleet.at(i);
        if (h.deleted || h.pinned || h.last_seen_ms < live_since) continue;
        if (scope != -2 && h.ring != scope) continue;
        auto& st = by_name[stratum_of(h, sp.keys)];
        ++st.live;
        if (counted[i]) {
          ++st.have;  // an earlier stage reaches it
        } else {
          st.candidates.emplace_back(sticky_key(h), i);
        }
      }
      json per = json::array();
      std::int64_t qualifying = 0;
      for (auto& [name, st] : by_name) {
        bool q = st.live >= sp.min_size;
        json ids = json::array();
        if (q) {
          ++qualifying;
          auto need = static_cast<std::size_t>(std::max<std::int64_t>(0, sp.min_hosts - st.have));
          auto k = std::min(need, st.candidates.size());
          std::partial_sort(st.candidates.begin(), st.candidates.begin() + static_cast<long>(k),
                            st.candidates.end());
          for (std::size_t j = 0; j < k; ++j) {
            picked.push_back(st.candidates[j].second);
            if (ids.size() < 5) ids.push_back(m.fleet.at(st.candidates[j].second).id.str());
          }
        }
        if (per.size() < 20 && (q || per.size() < 10)) {
          per.push_back({{"stratum", name},
                         {"live_hosts", st.live},
                         {"qualifying", q},
                         {"reached_by_earlier_stages", st.have},
                         {"picked_hosts", ids}});
        }
      }
      strata = {{"keys", sp.keys},
                {"min_hosts_per_stratum", sp.min_hosts},
                {"min_stratum_size", sp.min_size},
                {"strata", by_name.size()},
                {"qualifying", qualifying},
                {"coverage", per}};
    }
    for (HostIndex i = 0; i < m.fleet.slots(); ++i) {
      const auto& h = m.fleet.at(i);
      if (h.deleted || counted[i] || !m.stage_covers(probe, s, h)) continue;
      if (h.pinned) {
        ++pinned;
        continue;
      }
      counted[i] = true;
      ++n;
      if (sample.size() < 20) sample.push_back(h.id.str());
    }
    for (auto i : picked) {
      if (counted[i]) continue;
      counted[i] = true;
      ++n;
      if (sample.size() < 20) sample.push_back(m.fleet.at(i).id.str());
    }
    cumulative += n;
    stages.push_back(
        {{"stage", s},
         {"ring", plan[s].ring},
         {"percent", plan[s].percent},
         {"new_hosts", n},
         {"pinned_hosts_held_back", pinned},
         {"cumulative_hosts", cumulative},
         {"cumulative_percent",
          total ? 100.0 * static_cast<double>(cumulative) / static_cast<double>(total) : 0.0},
         {"earliest_start_s", earliest_s},
         {"approval", plan[s].manual ? "manual" : "auto"},
         {"implicit", plan[s].implicit},
         {"pacing", {{"initial", plan[s].pace_initial}, {"growth", plan[s].pace_growth}}},
         {"sample_hosts", sample},
         {"strata", strata}});
    earliest_s += plan[s].bake_s;
  }
  return json{{"fleet_hosts", total}, {"stages", stages}, {"earliest_completion_s", earliest_s}};
}

Expected<json> Service::set_emergency_stop(const Principal& by, bool on,
                                           const std::string& reason) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  if (on && reason.empty())
    return fail(Errc::InvalidArgument, "an emergency stop needs a 'reason'");
  if (m.emergency != on) {
    json v = {{"on", on}, {"reason", reason}, {"by", by.name}, {"time", m.now_s()}};
    RF_CHECK(m.store.transaction([&]() -> Status {
      RF_CHECK(m.store.put_setting("emergency_stop", v.dump()));
      RF_CHECK(m.event(by.name, on ? "emergency_stop" : "emergency_stop_lifted", std::nullopt,
                       {{"reason", reason}}));
      return {};
    }));
    m.emergency = on;
    m.emergency_reason = on ? reason : "";
    m.notify_waiters();
  }
  return json{{"emergency_stop", m.emergency}, {"reason", m.emergency_reason}};
}

json Service::emergency_state() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  return json{{"emergency_stop", m.emergency}, {"reason", m.emergency_reason}};
}

}  // namespace ringfence::server::core
