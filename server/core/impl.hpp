#pragma once
// Private to server/core: the in-memory model behind Service. Included only by core/*.cpp.

#include <array>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "server/core/keys.hpp"
#include "server/core/service.hpp"

namespace ringfence::server::core {

using fleet::HostIndex;
using nlohmann::json;

struct ApiToken {
  std::string name, hash;
  Role role = Role::Viewer;
  std::int64_t created = 0;
};

struct EnrollToken {
  std::string name, hash;
  proto::Labels labels;
  std::optional<std::int64_t> expires;
  std::int64_t created = 0;
  std::optional<std::int64_t> max_uses;  // hosts it may enroll (re-enrollments excluded)
  std::int64_t uses = 0;
  std::string tenant;                   // given to every host it enrolls ("" = none)
  std::int64_t rate_per_min = 0;        // 0 = Options::enroll_rate_per_min
  std::optional<std::int64_t> revoked;  // unix s
  // Rate limit, memory only: a bucket of up to one minute's enrollments, refilled continuously.
  double allowance = -1;  // < 0: full
  std::int64_t allowance_ms = 0;
};

enum class ReleaseState { Validated, Rolling, Stable, Quarantined, Superseded };
std::string_view to_string(ReleaseState s) noexcept;
std::optional<ReleaseState> release_state_from(std::string_view s) noexcept;

struct Release {
  std::string channel;
  std::int64_t version = 0;
  std::string sha256;
  std::int64_t size = 0;
  std::string notes;
  ReleaseState state = ReleaseState::Validated;
  proto::Manifest manifest;
  std::string signature;
  std::string key_id;  // the content key that made `signature` (found again at load)
  json validation = json::object();
  std::int64_t created = 0;
  // When a reader last saw it change (its state): the release feeds' <updated>. persist_release
  // stamps it when `state` differs from `updated_state`; a re-signed manifest is no change.
  std::int64_t updated = 0;
  std::optional<ReleaseState> updated_state;
};

struct Channel {
  std::string name;
  json schema = json::object();
  std::optional<json> validator;
  // {"name": consumer, "min_hosts": N, "versions": [...]}: the validator command runs once per
  // version of that consumer reported by at least N hosts (and for each listed version).
  std::optional<json> consumer;
  std::int64_t max_bytes = 0;
  std::optional<std::int64_t> stable_version;
  std::int64_t created = 0;
  std::map<std::int64_t, Release> releases;
  // Signed downgrade authorisations (manifest with rollback_from = the newest version), by the
  // version they send hosts down to; made on first use, dropped when near expiry. Memory only.
  struct Downgrade {
    proto::Manifest manifest;
    std::string signature;
    std::string key_id;
  };
  std::map<std::int64_t, Downgrade> downgrades;
};

// Stratified coverage of a stage (policy field "strata"): hosts are grouped by the values of up
// to four label keys (a host without a key has the value "(none)" for it); every stratum with at
// least `min_size` live hosts in the stage's ring (qualifying) must have `min_hosts` healthy hosts
// on the release before the stage can pass, and those hosts are offered the release first
// (pacing's first waves go round-robin over the qualifying strata).
struct StrataPlan {
  std::vector<std::string> keys;  // empty = no strata
  std::int64_t min_hosts = 1;     // per qualifying stratum ("min_hosts_per_stratum")
  std::int64_t min_size = 20;     // live hosts for a stratum to qualify ("min_stratum_size")
};

struct StagePlan {
  std::string ring;
  double percent = 100;
  std::int64_t bake_s = 300;
  std::int64_t min_hosts = 10;
  health::GateParams gate;
  bool manual = false;
  // Pacing (slow start): the stage offers its release first to `pace_initial` of its hosts (the
  // lowest by bucket, then by id hash: sticky), and every host that applied and spoke again a
  // heartbeat interval later (confirmed) lets `pace_growth` more in. A release that kills its
  // hosts confirms none, so it reaches pace_initial hosts whatever the stage's size.
  std::int64_t pace_initial = 8;
  double pace_growth = 2;
  StrataPlan strata;
  // Added by the server (not the policy): the last stage of every rollout covers the whole fleet
  // through a gate; ring "*" = every host.
  bool implicit = false;
};

inline constexpr const char* kWholeFleetRing = "*";

struct StageRuntime {
  std::int64_t started_ms = 0;  // 0 = not started
  bool approved = false;
  health::StageCounts counts;  // exposed..silent maintained incrementally
  health::GateDecision decision;
  std::int64_t control_hosts = 0, control_failed = 0;  // the baseline of that decision
  std::string state =
      "waiting";  // waiting | baking | awaiting_approval | passed | failed | skipped
  // Pacing: hosts of this stage confirmed (applied, not failed, heard from a heartbeat interval
  // after applying). Memory only: after a restart hosts confirm again with their next heartbeat.
  std::int64_t confirmed = 0;
  // Pacing: exposed hosts without a track record that failed. Their failure is not evidence, so
  // each gives its place in the window to another host (else a stage whose first wave is mostly
  // fresh enrollees could neither pass nor halt).
  std::int64_t replaced = 0;
  // Why the stage cannot progress ("" = it can): no live host in its ring, hosts waiting for the
  // budget or the pacing window, too few healthy hosts. Set by evaluate(); an event when it
  // changes.
  std::string blocked, blocked_reason;
};

// Per host per rollout. stage = index of the stage that exposed it. Persisted (the exposures
// table) by the group commit after every change: touch() queues it.
struct Exposure {
  HostIndex host = fleet::kNoHost;
  std::uint8_t stage = 0;
  // The host had a track record when the rollout started (Impl::counts): only then do its
  // applied / healthy / failed signals reach the stage's counts. Set by note_exposed().
  bool counted = true;
  std::uint8_t short_boots = 0;  // new boot ids with a short uptime since applying
  bool applied = false, healthy = false, failed = false, silent = false;
  bool confirmed = false;     // pacing: spoke again a heartbeat interval after applying
  std::uint8_t restarts = 0;  // agent_restart reports while exposed (saturates); events bounded
  bool queued = false;        // in its rollout's dirty_exposures, awaiting the next group commit
  std::int64_t applied_ms = 0;
};

inline constexpr std::int64_t kMinControlHosts = 20;

// The control cohort's failures for one rollout: distinct hosts NOT on the release that crashed
// since the rollout started, counted by the ring each was in when it crashed, so evaluate() reads
// a count per reached ring instead of walking the hosts on every signal. A host leaves the cohort
// when it is exposed (the baseline is the hosts not on the release); `ever` keeps every host that
// crashed while unexposed, the last-resort baseline once (nearly) the whole fleet is on it.
class ControlFailures {
 public:
  void crashed(HostIndex i, int ring) {
    ever_.insert(i);
    if (ring_of_.emplace(i, ring).second) ++by_ring_[ring];
  }
  void exposed(HostIndex i) {
    auto it = ring_of_.find(i);
    if (it == ring_of_.end()) return;
    --by_ring_[it->second];
    ring_of_.erase(it);
  }
  std::int64_t in_ring(int ring) const {
    auto it = by_ring_.find(ring);
    return it == by_ring_.end() ? 0 : it->second;
  }
  std::int64_t unexposed() const { return static_cast<std::int64_t>(ring_of_.size()); }
  std::int64_t ever() const { return static_cast<std::int64_t>(ever_.size()); }

 private:
  std::unordered_map<HostIndex, int> ring_of_;  // crashed, not on the release: their ring then
  std::unordered_map<int, std::int64_t> by_ring_;
  std::unordered_set<HostIndex> ever_;
};

struct Rollout {
  std::int64_t id = 0;
  std::string channel;
  std::int64_t version = 0;
  std::string policy;
  rollout::State state = rollout::State::Pending;
  std::size_t stage = 0;
  std::vector<StagePlan> plan;
  std::vector<StageRuntime> stages;
  std::optional<std::int64_t> previous_stable;
  std::int64_t created = 0, updated = 0;
  std::int64_t first_apply_ms = 0, halted_ms = 0;
  std::string halt_reason;
  ControlFailures control;
  std::unordered_map<HostIndex, Exposure> exposed;
  // The earliest time an applied host of this rollout can be found silent: the tick scans the
  // exposed hosts only from then on (heartbeats only push deadlines later; mark_applied pulls
  // this earlier). 0 = scan at the next tick (as after a restart).
  std::int64_t next_silence_scan_ms = 0;
  // The gate failed but the halt could not be persisted yet (store unavailable): no new host is
  // exposed, and evaluate() retries the halt (with its evidence) instead of judging again.
  bool halt_pending = false;
  json halt_evidence;
  // Exposures changed since the last group commit (see Exposure::queued).
  std::vector<HostIndex> dirty_exposures;
  // Evidence trust (Options::evidence_min_age_s > 0): exposed hosts that count, and the hosts
  // with a track record per ring (index = ring), recomputed when fleet membership changed.
  std::int64_t counted_exposed = 0;
  std::vector<std::int64_t> trusted_by_ring;
  std::uint64_t trusted_version = ~0ull;
  // Pacing order of the current stage: by HostIndex, the rank of each live covered host in the
  // sticky order (kNoRank: not ranked, e.g. enrolled later; let in once the whole stage is open).
  static constexpr std::uint32_t kNoRank = ~0u;
  std::vector<std::uint32_t> pace_rank;
  std::size_t pace_stage = ~std::size_t{0};  // the stage pace_rank was built for
  std::int64_t pace_size = 0;                // ranked hosts
  // Coverage of the current stage, checked at most once a second: live hosts it covers that are
  // not exposed yet (-1 = not checked since the stage started), and why they wait.
  std::int64_t uncovered_live = -1, covered_live = 0;
  // Live hosts it covers that are not exposed and have not polled within poll_bound_ms(): not
  // waited for; reported once per stage (hosts_not_taking_updates) in the stage below.
  std::int64_t not_taking_updates = 0;
  std::size_t not_taking_updates_stage = ~std::size_t{0};
  std::int64_t coverage_checked_ms = 0;
  std::size_t coverage_stage = ~std::size_t{0};
  bool waited_for_budget = false, waited_for_pacing = false;  // since the last coverage check
  // Strata of the current stage (StrataPlan): by HostIndex, the hosts picked to cover a
  // qualifying stratum (covered by the stage whatever its percent; ranked first by pacing),
  // set with the pacing order.
  std::vector<bool> strata_rep;
  // From the last coverage check: every qualifying stratum with its live hosts in the stage's
  // ring and its healthy hosts on the release; how many strata the ring has; whether the gate
  // would have passed but for strata lacking healthy hosts.
  struct StratumCoverage {
    std::string name;
    std::int64_t live = 0, healthy = 0;
    // The current stage's own exposures in it that count (a track record): applied, failed.
    std::int64_t applied = 0, failed = 0;
  };
  std::vector<StratumCoverage> strata_cov;
  std::int64_t strata_total = 0;
  bool strata_blocked = false;
  // Each host's stratum under the current stage's keys, as an index into stratum_names (by
  // HostIndex; kNoStratum = not computed yet): the per-second coverage check must not build a
  // string per host. Dropped when the stage or the fleet's membership (labels) changes.
  static constexpr std::uint32_t kNoStratum = ~0u;
  std::vector<std::uint32_t> stratum_ids;
  std::vector<std::string> stratum_names;
  std::unordered_map<std::string, std::uint32_t> stratum_index;
  std::size_t strata_stage = ~std::size_t{0};
  std::uint64_t strata_membership = ~0ull;
};

struct Waiter {
  HostIndex host;
  std::string etag;
  std::int64_t deadline_ms;
  std::function<void(DesiredAnswer)> reply;
};

// The part of a desired-state answer that hosts offered the same releases share (see
// compute_desired): canonical channel and known-bad JSON for signing, and the wire body up to
// the per-host fields.
struct SharedDesired {
  std::string channels_json, known_bad_json;
  std::string prefix;  // {"channels":..,...,"key_id":"..",  (the per-host fields follow)
  std::int64_t heartbeat_s = 0, poll_s = 0, key_set_version = 0;
};

// The last signed answer of one host: re-signed only when its state tag changes or it is half
// way to expiry, so a poll never signs (a 304 compares the etag, a 200 splices these fields).
struct HostSigned {
  std::uint64_t tag = 0;   // the state it was signed for
  std::uint64_t etag = 0;  // tag mixed with the generation
  std::int64_t generation = 0, issued = 0, expires = 0;
  std::int64_t refresh_ms = 0;       // re-sign at or after this
  std::array<char, 88> signature{};  // base64 of 64 bytes
  std::shared_ptr<const SharedDesired> shared;
};

struct Service::Impl {
  Impl(store::Store& s, const Clock& c, proto::KeyPair k, Options o)
      : store(s), clock(c), key(k), opt(std::move(o)), started_ms(c.now_ms()) {
    // Until load() reads the key files, the first key signs everything.
    keys.content_id = keys.desired_id = proto::key_id(k.public_key);
    keys.online[keys.content_id] = k;
  }

  store::Store& store;
  const Clock& clock;
  proto::KeyPair key;
  Options opt;

  mutable std::mutex mu;
  std::vector<ApiToken> tokens;
  std::vector<EnrollToken> enroll_tokens;
  fleet::Registry fleet;
  std::map<std::string, Channel> channels;
  std::map<std::string, std::vector<StagePlan>> policies;
  std::map<std::string, json> policy_docs;
  std::map<std::int64_t, Rollout> rollouts;
  std::int64_t next_rollout_id = 1;
  bool emergency = false;
  bool release_feeds_public = false;  // setting "release_feeds": the Atom feeds need no token
  std::string emergency_reason;
  std::uint64_t desired_generation = 0;
  // Silence is evidence only once hosts could have spoken to this process: until then (its
  // start plus the agents' longest backoff, Options::restart_grace_s) nobody is found silent.
  std::int64_t silence_not_before_ms = 0;
  // Shared desired-state parts by offered releases (see compute_desired), and per host the
  // signed header (by HostIndex; grown on demand).
  std::unordered_map<std::string, std::shared_ptr<const SharedDesired>> body_cache;
  std::uint64_t body_cache_generation = ~0ull;
  std::vector<HostSigned> host_signed;
  // When this process started, and when each host last asked for its desired state (a poll, or
  // the start of a long poll), by HostIndex (grown on demand; 0 = not since started_ms). Not
  // persisted: after a restart every host gets a full poll bound to poll again.
  std::int64_t started_ms = 0;
  std::vector<std::int64_t> polled_ms;
  std::int64_t last_generation = 0;
  struct Pick {
    const std::string* channel;
    const Release* release;
    bool rollback;
  };
  std::vector<Pick> picks;  // compute_desired's scratch (mu held)
  // Keys (keys.hpp): the ones in use, keyset.json's stamp when read, the next file check.
  ServerKeys keys;
  std::pair<std::int64_t, std::int64_t> key_stamp{0, 0};
  std::int64_t next_key_check_ms = 0;
  std::int64_t next_expiry_warning_ms = 0;                  // key_set_expiring, at most every 6 h
  static constexpr std::int64_t kKeySetWarnS = 14 * 86400;  // warn this long before expiry
  std::vector<proto::KnownBad> known_bad;

  std::multimap<HostIndex, Waiter> waiters;
  std::vector<store::ReportRow> pending_reports;
  // ---- group commit: an agent's evidence is answered only once it is durable.
  // Answers parked until the next group commit writes what they acknowledge.
  std::vector<Service::Ack> commit_waiters;
  std::chrono::steady_clock::time_point first_parked;  // of the current batch, for the metrics
  bool commit_scheduled = false;
  std::function<void(std::function<void()>)> commit_scheduler;  // see set_commit_scheduler
  // Parks `done` until the next group commit (scheduling one), or commits at once when there is
  // no scheduler.
  void park(Service::Ack done);
  // Writes pending reports, dirty hosts and dirty exposures in one transaction, then answers every
  // parked request with its outcome. On failure everything stays queued for the next attempt.
  Status commit_batch();
  // Reports waiting while the store fails are capped: past this, new reports get a 503 at once.
  static constexpr std::size_t kMaxPendingReports = 100'000;
  // Queues an exposure for the next group commit.
  void touch(Rollout& r, Exposure& e);
  // Exposes host i to r at `stage` (counts, control cohort, persistence); returns the exposure.
  Exposure& expose(Rollout& r, HostIndex i, std::size_t stage);
  // A host that reports running (or having applied) the release of an active rollout it is not
  // exposed to got it from a process killed before that exposure was written (the manifest
  // is this server's): it is exposed again, at the first stage so far that covers it.
  void reattach(HostIndex i, const std::string& channel, std::int64_t version);
  // Exposures of finished rollouts are deleted a batch per tick (a rollout to 10 million hosts
  // leaves 10 million rows nothing reads again); these are done.
  std::set<std::int64_t> exposures_pruned;
  static constexpr std::int64_t kPruneRowsPerTick = 5000;
  void prune_exposures();
  // Rollouts halted or aborted whose quarantine or rollback could not be written yet: retried
  // from tick() until the store takes them.
  void retry_rollbacks();
  std::vector<std::pair<std::int64_t, std::function<bool(std::string)>>> subscribers;

  // Blast-radius budget: exposures per minute over the last hour, global and per tenant.
  std::deque<std::pair<std::int64_t, std::int64_t>> budget_minutes;  // (minute, count)
  std::map<std::string, std::deque<std::pair<std::int64_t, std::int64_t>>> tenant_minutes;

  // metrics
  std::uint64_t heartbeats_total = 0, reports_total = 0, polls_total = 0, enrolls_total = 0;
  std::uint64_t group_commits_total = 0, group_commit_failures_total = 0,
                group_commit_answers_total = 0;
  double group_commit_wait_s_total = 0, group_commit_wait_s_max = 0;  // first park -> answered
  // When the group commits began failing (clock ms; 0 while they succeed): /readyz says degraded.
  std::int64_t store_failing_since_ms = 0;
  std::string store_error;
  // What the limits and trust rules refused or ignored (every label is a fixed server-side name).
  struct Refusals {
    std::uint64_t enroll_unknown_token = 0, enroll_revoked = 0, enroll_expired = 0,
                  enroll_used_up = 0, enroll_rate_limited = 0, enroll_host_taken = 0;
    std::uint64_t reports_rate_limited = 0, reports_unknown_channel = 0,
                  reports_version_not_sent = 0;
    std::uint64_t heartbeat_unknown_channel = 0, heartbeat_version_not_sent = 0;
    std::uint64_t signals_without_track_record = 0;  // signals the gates ignored
  } refused;
  // Track records waiting for their batched write (first contact after enrollment).
  std::vector<store::HostTrustRow> pending_trust;
  // Hosts enrolled whose credential has not been used yet, with the token that enrolled them:
  // the same token may enroll such a host again without its credential (the enrollment's answer
  // was lost on the way; the agent has nothing to prove itself with). Emptied by first contact.
  std::unordered_map<HostIndex, std::string> unclaimed;

  // ---- helpers (called with mu held)
  std::int64_t now_s() const { return clock.now_ms() / 1000; }
  Expected<std::int64_t> event(const std::string& actor, const std::string& kind,
                               std::optional<std::int64_t> rollout, json data);
  Status persist_rollout(const Rollout& r);
  Status persist_channel(const Channel& c);
  // Writes the release; `updated` = now when its state changed since it was last stamped.
  Status persist_release(Release& r);
  json rollout_json(const Rollout& r) const;
  json release_json(const Release& r) const;
  json host_json(HostIndex i) const;
  json enroll_token_json(const EnrollToken& t) const;
  Expected<Rollout*> find_rollout(std::int64_t id);
  // The plan of a create/preview body: exactly one of a policy name or inline stages; every
  // stage's ring must exist.
  Expected<std::vector<StagePlan>> plan_from(const json& body,
                                             const std::optional<std::string>& policy) const;
  Rollout* active_rollout(const std::string& channel);
  Status transition(Rollout& r, rollout::Event e, const std::string& actor, json data);
  void start_stage(Rollout& r, std::size_t stage);
  bool stage_covers(const Rollout& r, std::size_t stage, const fleet::Host& h) const;
  // What a stage covers, for scans over the fleet: hosts of `ring` (kEveryRing: all; kNoRing: a
  // ring that no longer exists) whose bucket is below `cut`.
  struct StageCut {
    static constexpr int kEveryRing = -2, kNoRing = -1;
    int ring = kNoRing;
    double cut = 0;
    bool covers(const fleet::Host& h) const {
      return (ring == kEveryRing || (ring != kNoRing && h.ring == ring)) && h.bucket < cut;
    }
  };
  StageCut stage_cut(const StagePlan& p) const;
  // stage_covers, or host i was picked to cover a stratum of the current stage (strata).
  bool covers(const Rollout& r, std::size_t stage, HostIndex i) const;
  // Host i's stratum under the current stage's strata keys (Rollout::stratum_ids, cached).
  std::uint32_t stratum_id(Rollout& r, HostIndex i);
  bool budget_allows(const fleet::Host& h);
  void budget_take(const fleet::Host& h);
  // Whether host i (covered by stage s of r, not exposed) may be exposed now: the stage's pacing
  // window and the blast-radius budget. Records why not (for the stage's blocked reason).
  bool may_expose(Rollout& r, std::size_t s, HostIndex i, const fleet::Host& h);
  // Pacing: a heartbeat from an exposed host; confirms it once a heartbeat interval after
  // applying (opens the window for more hosts).
  void note_alive(Rollout& r, Exposure& e, std::int64_t now_ms);
  void build_pace_order(Rollout& r);
  // initial + growth * confirmed of the current stage (hosts of the sticky order it may reach).
  std::int64_t pace_window(const Rollout& r) const;
  // The current stage's blocked code and sentence from the last coverage check; an event
  // (stage_blocked / stage_unblocked) when the code changes.
  void update_blocked(Rollout& r);
  // Recounts the current stage's live covered hosts not yet exposed (rate-limited to 1/s).
  void check_coverage(Rollout& r, bool force);
  // Whether a live, unpinned host is not exposed to r (the implicit final stage has work).
  bool live_hosts_not_exposed(const Rollout& r) const;
  // A host is live when heard from within this window (polls included).
  std::int64_t live_window_ms() const {
    return std::max<std::int64_t>(2 * opt.poll_s, 3 * opt.exposed_heartbeat_s) * 1000 + 5000;
  }
  // A live host that has not asked for its desired state within this bound is "not taking
  // updates" (a broken or hostile agent that only heartbeats): a stage stops waiting to offer it
  // the release (it could never be offered it) and reports it. silence_intervals of the longest
  // gap between two polls of a working agent (its poll interval, or a long poll held to the end).
  std::int64_t poll_bound_ms() const {
    return opt.silence_intervals * std::max(opt.poll_s, opt.max_long_poll_s) * 1000 + 5000;
  }
  // Whether host i asked for its desired state within poll_bound_ms() of now (or this process
  // started less than that ago, or it holds a long poll now).
  bool takes_updates(HostIndex i, std::int64_t now) const {
    auto since = i < polled_ms.size() ? std::max(polled_ms[i], started_ms) : started_ms;
    return now - since <= poll_bound_ms() || waiters.count(i) > 0;
  }
  bool pacing_opened = false;  // a window grew: parked polls are re-answered at the next tick
  // Budget persistence: (scope, minute) counts changed since the last group commit.
  std::set<std::pair<std::string, std::int64_t>> budget_dirty;
  // The dirty (scope, minute) counts as rows for the next group commit (clears budget_dirty).
  std::vector<store::BudgetRow> budget_rows();
  // Reads the stored budget of the last hour back (load).
  void restore_budget(const std::vector<store::BudgetRow>& rows);
  // Restart grace: the hosts live before the restart (their stored last_seen within the live
  // window of the newest one) are waited for.
  void start_restart_grace();
  // Restart grace: hosts live before the restart that have not spoken since (by HostIndex);
  // silence counts again once all but 5 % of them are back (or restart_grace_s is over).
  std::vector<bool> grace_waiting;
  std::int64_t grace_left = 0, grace_total = 0;
  void note_returned(HostIndex i);
  std::int64_t budget_used(const std::deque<std::pair<std::int64_t, std::int64_t>>& q) const;
  void evaluate(Rollout& r);
  Status halt(Rollout& r, const std::string& actor, const std::string& reason, json evidence,
              bool operator_abort);
  Status finish_rollback(Rollout& r);
  // The known-bad list agents get: quarantined versions that can still matter (rollouts.cpp).
  void rebuild_known_bad();
  static constexpr std::size_t kMaxKnownBadPerChannel = 256;
  void notify_waiters();
  DesiredAnswer compute_desired(HostIndex h, bool want_body);
  // Signs host h's answer for state `tag` over the shared part of its picks.
  void sign_host(HostIndex h, std::uint64_t tag, HostSigned& hs);
  // A generation above every one given out: wall-clock microseconds, or the last one + 1.
  std::int64_t next_generation();
  // Keys (keys.cpp): switch to a loaded set (re-signing content for a new content key and every
  // host's answer for a new desired key or set); reload keyset.json; its JSON for the API.
  void install_keys(ServerKeys k);
  void resign_content();
  void check_key_files();
  Status reload_keys_locked(const std::string& actor);
  json keys_json() const;
  // The release a pinned host holds: N-1, the newest once-stable (superseded) release below the
  // channel's stable one, else the stable one; nullptr when the channel has no stable release.
  const Release* pinned_release(const Channel& ch) const;
  // The signed authorisation to go down to `target` from any version up to the channel's newest
  // (signed on first use; re-signed when the newest version moved or it nears expiry).
  const Channel::Downgrade& downgrade_to(Channel& ch, const Release& target);
  void host_signal(HostIndex h, const std::string& channel, std::int64_t version,
                   proto::ReportKind kind);
  // Consumer `name`'s versions as hosts with a track record last reported them: version -> hosts.
  // O(hosts).
  std::map<std::string, std::int64_t> consumer_versions(const std::string& name) const;
  // An agent_restart report: an event on the timeline of every active rollout exposing the host
  // (evidence an operator sees; the gates never count it).
  void agent_restarted(HostIndex i, const proto::Report& rep);
  // ---- evidence trust (agents.cpp)
  // Whether host h's evidence counts for rollout r: always when evidence_min_age_s is 0, else
  // only when its credential holder was first in contact at least that long before r started.
  // Evidence trust: the host was first in contact at least evidence_min_age_s before at_ms.
  bool had_track_record(const fleet::Host& h, std::int64_t at_ms) const;
  bool counts(const Rollout& r, const fleet::Host& h) const;
  // Called once when host i is exposed to r (its Exposure just created).
  void note_exposed(Rollout& r, HostIndex i, Exposure& e);
  // Hosts with a track record per ring for r (r.trusted_by_ring), recomputed if stale.
  void refresh_trusted(Rollout& r);
  // Whether the server ever offered `version` of `channel` to host i: a release that was
  // stable (everyone got it, or pinned hosts as N-1), or one a rollout exposed i to.
  bool was_sent(HostIndex i, const std::string& channel, std::int64_t version) const;
  // The first agent request after (re-)enrollment starts the host's track record.
  void first_contact(HostIndex i);
  Status flush_trust();
  void mark_failed(Rollout& r, Exposure& e, bool silent);
  void mark_applied(Rollout& r, Exposure& e, std::int64_t when_ms);
  std::int64_t heartbeat_for(HostIndex h) const;
  void publish(const store::EventRow& row);
  // Silence: applied, then nothing for k exposed-heartbeat intervals (plus a second of grace).
  std::int64_t silence_ms() const {
    return opt.silence_intervals * opt.exposed_heartbeat_s * 1000 + 1000;
  }
  // Writes last_seen of up to max hosts of the seen queue (heartbeats that changed nothing else).
  Status flush_seen(std::size_t max);
  // Per tick (4 per second): bounds both the store's write rate for plain heartbeats and the time
  // a tick holds the loop; last_seen in the store then lags by at most seen_pending / 8192 s
  // (12 s for 100 000 hosts heartbeating faster than that; the API reads memory, never lags).
  static constexpr std::size_t kSeenRowsPerTick = 2048;
  // Re-signs manifests of offered releases (validated, rolling, stable) whose expiry is less
  // than half a TTL away, so content an agent may still need never looks stale. Cheap when
  // nothing is due; called from tick().
  void refresh_manifests();
  std::int64_t next_manifest_check_ms = 0;
};

// JSON <-> plan
Expected<std::vector<StagePlan>> parse_stages(const json& stages);
// A stage's optional "pacing": {initial, growth} into p (rollouts.cpp).
Status parse_pacing(const json& stage, StagePlan& p);
json stages_json(const std::vector<StagePlan>& plan);
// A stage's optional "strata": {keys, min_hosts_per_stratum, min_stratum_size} into p.
Status parse_strata(const json& stage, StagePlan& p);
// The stratum of h under `keys`: "k1=v1,k2=v2" ("(none)" for a missing label; label values
// cannot hold ',', '=' or '(' so the name is unambiguous).
std::string stratum_of(const fleet::Host& h, const std::vector<std::string>& keys);
// The sticky pseudo-random order of hosts (pacing, strata): keyed bucket, then id hash.
std::uint64_t sticky_key(const fleet::Host& h);
// A host's store row, as memory has it (boot_hash included).
store::HostRow host_row(const fleet::Host& h);
std::string sse_frame(const store::EventRow& row);
json event_json(const store::EventRow& row);

}  // namespace ringfence::server::core
