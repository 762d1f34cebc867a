// gate_eval: proof by simulation that the health gate contains bad releases and lets good ones
// through. Runs the real server::health::evaluate() on many simulated staged rollouts in fake
// time (no sockets, no clock) and prints one table. Deterministic for a given --seed. The decision
// rule is the server's (Service::Impl::evaluate in server/core/rollouts.cpp): on every signal, the
// cumulative counts of every stage reached so far and the current stage's own counts are both
// judged; either failing halts; the current stage's own verdict passes it.
//
//   gate_eval [--runs N] [--seed S] [--quick]
//
// A second table models evidence trust (the server's --evidence-min-age-s): a share of fresh
// hosts whose signals do not count, and fake fresh hosts that report crashes in the canary or in
// the control cohort, with the rule on and off.
//
// Exit status: 0 when the containment claims hold, 1 when they do not (an all-fail release not
// halted in the canary in every run, a good release halted in more than 5% of runs, with trust
// on: fake canary crashers halting a good release in more than 5% of runs or fake control
// crashers letting a 10%-crash release through once), 2 on bad flags. The CTest smoke test runs
// it with --quick.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <queue>
#include <string>
#include <vector>

#include "server/health/gate.hpp"

namespace {

namespace health = ringfence::server::health;

// ---- the model -------------------------------------------------------------------------------

struct Stage {
  const char* name;
  double percent;  // cumulative share of the fleet on the release once this stage has started
};

struct Model {
  std::int64_t fleet = 10000;
  std::vector<Stage> stages = {{"canary", 1}, {"early", 10}, {"broad", 50}};
  double background = 0.005;  // per-host failure probability in a window, release or not
  double window_s = 300;      // a failing host fails uniformly within this after its start
  // An offered host applies within about a second: the real agent holds a long poll and is
  // answered the moment the stage lets it in (was: an exponential delay with a 60 s mean, which
  // hid how much of a stage a lethal release reaches before the halt).
  double apply_min_s = 0.2, apply_max_s = 1.0;
  // Pacing (the server's slow start, StagePlan::pace_*): a stage offers its release to
  // pace_initial hosts, and each host that applied and heartbeated a heartbeat interval later
  // (confirmed) lets pace_growth more in; a confirmed host that fails takes its share back. A stage
  // passes only once all its hosts were offered it. pace_initial 0 = off (all at the stage start).
  // A host whose failure is not evidence (no track record) gives its place to another.
  std::int64_t pace_initial = 8;
  double pace_growth = 2;
  double heartbeat_s = 5;        // heartbeat interval while a rollout is live
  int silent_intervals = 3;      // silence for this many intervals = failure detected
  double healthy_window_s = 60;  // applied and fine this long = healthy
  double detect_s() const { return heartbeat_s * silent_intervals; }
  // Evidence trust (the server's --evidence-min-age-s): a host's signals count only with a track
  // record. `fresh_share` of the honest hosts (exposed and control alike) enrolled too recently:
  // with `trust` on their signals are ignored, exactly as the server ignores them.
  bool trust = true;
  double fresh_share = 0;
  // Hostile hosts, all freshly enrolled (no track record): `hostile_canary` land in the canary and
  // report a crash at once; `hostile_control` are never exposed and report a crash of the old
  // version at once (the baseline poisoned). With trust on they count for nothing.
  std::int64_t hostile_canary = 0;
  std::int64_t hostile_control = 0;
};

// What the program asserts about a scenario (the smoke test's exit status).
enum class Claim { None, HaltedInCanary, RarelyHalted };

struct Release {
  const char* name;
  double fail_prob;     // per-host probability that an applied host fails in the window
  bool crash_on_apply;  // fails at once on activation (boot loop) instead of within the window
  Claim claim = Claim::None;
  bool good = false;        // a good release: report false halts against alpha
  double alpha = 0;         // gate alpha for this scenario (0 = the default)
  std::int64_t bake_s = 0;  // every stage's bake (0 = the default)
  double report_s = -1;     // >= 0: a failure is detected this long after it (a crash report),
                            // instead of by silence (k heartbeat intervals)
};

// ---- deterministic randomness: raw mt-free splitmix/xoshiro, no std distributions (their
// output is implementation-defined; results must match on every standard library) -------------

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) {
    for (auto& word : s_) word = splitmix64(seed);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double exponential(double mean) { return -mean * std::log1p(-uniform()); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t next() {  // xoshiro256**
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  std::uint64_t s_[4];
};

// ---- one rollout -----------------------------------------------------------------------------
//
// One timeline for the whole rollout, as the server sees it: a stage's hosts keep reporting after
// their stage passed, and the gate is evaluated on every signal the way
// Service::Impl::evaluate (server/core/rollouts.cpp) does it.

enum class Ev : std::uint8_t {
  Apply,
  Healthy,
  FailDetected,
  FailDetectedWasHealthy,
  ControlFail,
  BakeDone,
  Hostile,    // the hostile hosts' crash reports (trust off only), at t = 1 s
  Confirm,    // pacing: an applied host heartbeated a heartbeat interval later
  Unconfirm,  // pacing: a confirmed host failed (detected)
  Replace     // pacing: a host without a track record failed: not evidence, so it gives its place
};

struct Event {
  double t;           // since the rollout started
  std::uint64_t seq;  // ties break in push order: deterministic on every standard library
  Ev kind;
  std::uint8_t stage;  // the host's stage (ControlFail: the stage that will expose it, or
                       // stages.size() when none does); BakeDone: the stage baking
};

struct Later {
  bool operator()(const Event& a, const Event& b) const {
    return a.t != b.t ? a.t > b.t : a.seq > b.seq;
  }
};

enum class Test : std::uint8_t { Cumulative, Stage };

struct RunResult {
  int halted_stage = -1;  // index of the current stage when the gate failed, -1 = never halted
  Test halted_by = Test::Cumulative;  // which of the two tests failed
  int stuck_stage = -1;    // a stage that ran out of signals without passing (should not happen)
  double halt_time_s = 0;  // since the rollout started
  std::int64_t applied_total = 0;    // hosts that applied the release before the halt (all stages)
  std::int64_t applied_at_halt = 0;  // in the halting stage
  std::int64_t failed_at_halt = 0;   // detected failures in the halting stage
  double completed_s = 0;            // when the last stage passed (the rollout completed)
  std::vector<double> covered_s;     // per stage: from its start until every host was offered it
  std::string reason;
};

RunResult run_rollout(const Model& m, const Release& r, const health::GateParams& params,
                      std::uint64_t seed) {
  Rng rng(seed);
  RunResult out;
  const std::size_t n = m.stages.size();
  std::vector<std::int64_t> upto(n);  // hosts exposed once stage s has started (cumulative)
  for (std::size_t s = 0; s < n; ++s) {
    upto[s] = static_cast<std::int64_t>(std::llround(m.fleet * m.stages[s].percent / 100.0));
  }
  std::priority_queue<Event, std::vector<Event>, Later> q;
  std::uint64_t seq = 0;
  auto push = [&](double t, Ev kind, std::size_t stage) {
    q.push({t, seq++, kind, static_cast<std::uint8_t>(stage)});
  };

  // Honest hosts whose signals count, by the stage that exposes them (n: never); the draw is
  // made only when some hosts are fresh, so the figures without fresh hosts stay those of a
  // server without the trust rule.
  const bool draw_fresh = m.trust && m.fresh_share > 0;
  std::vector<std::int64_t> counted_of(n + 1, 0);
  auto counted = [&] { return !draw_fresh || rng.uniform() >= m.fresh_share; };
  const bool hostile_count = !m.trust && (m.hostile_canary > 0 || m.hostile_control > 0);
  const std::int64_t hostile_control_hosts = hostile_count ? m.hostile_control : 0;
  if (hostile_count) push(1.0, Ev::Hostile, 0);

  // Control cohort: every host not exposed at rollout start may fail within a window of the
  // rollout's start. The server counts a crash of a host not (yet) on the release once, and drops
  // it from the control cohort when that host is exposed (the baseline is the failure rate of the
  // hosts NOT on the release); a failure after the host's exposure is not a control failure (its
  // own release draw below covers it).
  for (std::size_t k = 1; k <= n; ++k) {
    const std::int64_t hosts = (k < n ? upto[k] : m.fleet) - upto[k - 1];
    for (std::int64_t h = 0; h < hosts; ++h) {
      if (!counted()) {  // no track record: neither in the cohort nor among its failures
        if (rng.uniform() < m.background) rng.uniform();
        continue;
      }
      ++counted_of[k];
      if (rng.uniform() < m.background) {
        push(rng.uniform() * m.window_s + m.detect_s(), Ev::ControlFail, k);
      }
    }
  }

  std::vector<health::StageCounts> sc(n);
  std::vector<double> started(n, 0);
  std::vector<std::int64_t> offered(n, 0), confirmed(n, 0), replaced(n, 0), stage_hosts(n, 0);
  out.covered_s.assign(n, -1);
  std::size_t cur = 0;
  std::int64_t control_failed = 0;
  std::vector<std::int64_t> control_failed_of(n + 1, 0);  // by the stage that will expose them
  // One host of stage s offered the release at t0: its apply, health, failure and (pacing)
  // confirmation.
  auto offer_host = [&](std::size_t s, double t0) {
    ++offered[s];
    ++sc[s].exposed;
    if (offered[s] == stage_hosts[s]) out.covered_s[s] = t0 - started[s];
    const bool counts = counted();
    const double apply = t0 + m.apply_min_s + rng.uniform() * (m.apply_max_s - m.apply_min_s);
    const bool fails = rng.uniform() < r.fail_prob;
    const double fail_at =
        fails ? apply + (r.crash_on_apply ? 0.0 : rng.uniform() * m.window_s) : 0.0;
    const double confirm_at = apply + m.heartbeat_s;
    const bool confirms = m.pace_initial > 0 && (!fails || fail_at > confirm_at);
    if (confirms) push(confirm_at, Ev::Confirm, s);
    const double detect = r.report_s >= 0 ? r.report_s : m.detect_s();
    if (confirms && fails) push(fail_at + detect, Ev::Unconfirm, s);
    if (!counts) {  // exposed all the same; its signals are not evidence
      if (fails && m.pace_initial > 0) push(fail_at + detect, Ev::Replace, s);
      return;
    }
    push(apply, Ev::Apply, s);
    const bool becomes_healthy = !fails || fail_at > apply + m.healthy_window_s;
    if (becomes_healthy) push(apply + m.healthy_window_s, Ev::Healthy, s);
    if (fails) {
      push(fail_at + detect, becomes_healthy ? Ev::FailDetectedWasHealthy : Ev::FailDetected, s);
    }
  };
  // Pacing: offer hosts of stage s up to its window (all of them without pacing).
  auto open_window = [&](std::size_t s, double t) {
    std::int64_t window = stage_hosts[s];
    if (m.pace_initial > 0) {
      const double w = static_cast<double>(m.pace_initial + replaced[s]) +
                       m.pace_growth * static_cast<double>(confirmed[s]);
      window = std::min<std::int64_t>(window, static_cast<std::int64_t>(w));
    }
    while (offered[s] < window) offer_host(s, t);
  };
  auto start_stage = [&](std::size_t s, double t0) {
    started[s] = t0;
    control_failed -= control_failed_of[s];  // now on the release: out of the control cohort
    control_failed_of[s] = 0;
    stage_hosts[s] = upto[s] - (s > 0 ? upto[s - 1] : 0);
    if (stage_hosts[s] == 0) out.covered_s[s] = 0;
    open_window(s, t0);
    push(t0 + static_cast<double>(params.bake_s), Ev::BakeDone, s);
  };
  start_stage(0, 0);

  while (!q.empty()) {
    const Event e = q.top();
    q.pop();
    health::StageCounts& own = sc[e.stage < n ? e.stage : 0];
    switch (e.kind) {
      case Ev::Apply:
        ++own.applied;
        break;
      case Ev::Healthy:
        ++own.healthy;
        break;
      case Ev::FailDetectedWasHealthy:
        --own.healthy;
        [[fallthrough]];
      case Ev::FailDetected:
        ++own.failed;
        ++own.silent;
        break;
      case Ev::ControlFail:
        if (e.stage <= cur) continue;  // exposed by now: not a control host any more
        ++control_failed;
        ++control_failed_of[e.stage];
        break;
      case Ev::BakeDone:
        if (e.stage != cur) continue;  // only the current stage's bake expiry is a signal
        break;
      case Ev::Confirm:
        ++confirmed[e.stage];
        if (e.stage == cur) open_window(cur, e.t);
        continue;  // no signal for the gate
      case Ev::Unconfirm:
        --confirmed[e.stage];
        continue;
      case Ev::Replace:
        ++replaced[e.stage];
        if (e.stage == cur) open_window(cur, e.t);
        continue;
      case Ev::Hostile:  // without the trust rule: counted like anyone else, each host once
        sc[0].exposed += m.hostile_canary;
        sc[0].applied += m.hostile_canary;
        sc[0].failed += m.hostile_canary;
        control_failed += m.hostile_control;
        control_failed_of[n] += m.hostile_control;
        break;
    }

    // (a) every host the rollout reached so far, against the hosts not on the release.
    health::StageCounts cum;
    for (std::size_t s = 0; s <= cur; ++s) {
      cum.exposed += sc[s].exposed;
      cum.applied += sc[s].applied;
      cum.healthy += sc[s].healthy;
      cum.failed += sc[s].failed;
      cum.silent += sc[s].silent;
    }
    // One ring: every host not exposed (that counts).
    cum.control_hosts = hostile_control_hosts;
    if (draw_fresh) {
      for (std::size_t k = cur + 1; k <= n; ++k) cum.control_hosts += counted_of[k];
    } else {
      cum.control_hosts += m.fleet - upto[cur];
    }
    cum.control_failed = control_failed;
    cum.elapsed_s = e.t;
    health::GateDecision d = health::evaluate(params, cum);
    Test by = Test::Cumulative;
    // (b) the current stage's own hosts (in stage 0 they are the same counts: one test).
    if (d.verdict != health::Verdict::Fail && cur > 0) {
      health::StageCounts own_stage = sc[cur];
      own_stage.control_hosts = cum.control_hosts;
      own_stage.control_failed = cum.control_failed;
      own_stage.elapsed_s = e.t - started[cur];
      d = health::evaluate(params, own_stage);
      by = Test::Stage;
      if (d.verdict == health::Verdict::Fail) {
        d.reason = "stage " + std::to_string(cur) + " alone: " + d.reason;
      }
    }
    if (d.verdict == health::Verdict::Fail) {
      out.halted_stage = static_cast<int>(cur);
      out.halted_by = by;
      out.halt_time_s = e.t;
      out.applied_total = cum.applied;
      out.applied_at_halt = sc[cur].applied;
      out.failed_at_halt = sc[cur].failed;
      out.reason = d.reason;
      return out;
    }
    if (d.verdict == health::Verdict::Pass && offered[cur] < stage_hosts[cur]) {
      continue;  // the server passes a stage only once every host of it was offered the release
    }
    if (d.verdict == health::Verdict::Pass) {
      if (cur + 1 == n) {  // the rollout completes: the release is stable, no gate any more
        out.completed_s = e.t;
        return out;
      }
      ++cur;
      start_stage(cur, e.t);
    }
  }
  out.stuck_stage = static_cast<int>(cur);
  return out;
}

// ---- statistics helpers ----------------------------------------------------------------------

struct Interval {
  double lo, hi;
};

// Wilson score interval, 95%.
Interval wilson(std::int64_t k, std::int64_t n) {
  if (n == 0) return {0, 1};
  const double z = 1.959963984540054;
  const double p = static_cast<double>(k) / static_cast<double>(n);
  const double nn = static_cast<double>(n);
  const double denom = 1 + z * z / nn;
  const double centre = (p + z * z / (2 * nn)) / denom;
  const double half = z * std::sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn)) / denom;
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

struct Summary {
  const Release* release;
  std::int64_t runs = 0;
  std::vector<std::int64_t> halted_by_stage;
  std::int64_t stuck = 0;
  std::int64_t by_cumulative = 0, by_stage = 0;  // which test failed, over all halts
  std::vector<double> halt_time, applied_total, applied_at_halt, failed_at_halt, completed;
  std::vector<std::vector<double>> covered;  // per stage: time to offer it to all its hosts
  std::string example_reason;
};

Summary simulate(const Model& m, const Release& r, const health::GateParams& base,
                 std::int64_t runs, std::uint64_t seed, std::uint64_t scenario) {
  health::GateParams params = base;
  if (r.alpha > 0) params.alpha = r.alpha;
  if (r.bake_s > 0) params.bake_s = r.bake_s;
  Summary sum;
  sum.release = &r;
  sum.runs = runs;
  sum.halted_by_stage.assign(m.stages.size(), 0);
  const std::int64_t step = std::max<std::int64_t>(runs / 10, 1);
  for (std::int64_t i = 0; i < runs; ++i) {
    std::uint64_t mix =
        seed * 0x100000001b3ULL + scenario * 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(i);
    const RunResult res = run_rollout(m, r, params, splitmix64(mix));
    if (res.halted_stage >= 0) {
      ++sum.halted_by_stage[static_cast<std::size_t>(res.halted_stage)];
      ++(res.halted_by == Test::Cumulative ? sum.by_cumulative : sum.by_stage);
      sum.halt_time.push_back(res.halt_time_s);
      sum.applied_total.push_back(static_cast<double>(res.applied_total));
      sum.applied_at_halt.push_back(static_cast<double>(res.applied_at_halt));
      sum.failed_at_halt.push_back(static_cast<double>(res.failed_at_halt));
      if (sum.example_reason.empty()) sum.example_reason = res.reason;
    } else if (res.stuck_stage >= 0) {
      ++sum.stuck;
    } else {
      sum.completed.push_back(res.completed_s);
      sum.covered.resize(res.covered_s.size());
      for (std::size_t k = 0; k < res.covered_s.size(); ++k) {
        if (res.covered_s[k] >= 0) sum.covered[k].push_back(res.covered_s[k]);
      }
    }
    if (runs >= 200 && (i + 1) % step == 0) {
      std::fprintf(stderr, "  %-28s %lld/%lld runs\n", r.name, static_cast<long long>(i + 1),
                   static_cast<long long>(runs));
    }
  }
  return sum;
}

std::int64_t halted(const Summary& s) {
  std::int64_t n = 0;
  for (std::int64_t h : s.halted_by_stage) n += h;
  return n;
}

void print_table(const std::vector<Summary>& results, const std::vector<std::string>& names) {
  std::printf(
      "| release | runs | halted in canary | by end of early | by end of broad | "
      "not halted | hosts applied before halt (median / p95) | time to halt s "
      "(median / p95) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Summary& s = results[i];
    std::int64_t cum = 0;
    std::printf("| %s | %lld", names.empty() ? s.release->name : names[i].c_str(),
                static_cast<long long>(s.runs));
    for (std::int64_t h : s.halted_by_stage) {
      cum += h;
      std::printf(" | %.1f%%", 100.0 * static_cast<double>(cum) / static_cast<double>(s.runs));
    }
    std::printf(" | %.1f%%",
                100.0 * static_cast<double>(s.runs - halted(s)) / static_cast<double>(s.runs));
    if (s.halt_time.empty()) {
      std::printf(" | - | - |\n");
    } else {
      std::printf(" | %.0f / %.0f | %.0f / %.0f |\n", quantile(s.applied_total, 0.5),
                  quantile(s.applied_total, 0.95), quantile(s.halt_time, 0.5),
                  quantile(s.halt_time, 0.95));
    }
  }
}

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--runs N] [--seed S] [--quick]\n"
               "       %s --containment [--fleet N]... [--runs N] [--seed S]\n",
               argv0, argv0);
}

// Exposure at halt against fleet size, with and without pacing (issue 14): a release that kills
// every host it reaches, silently (found by silence) or with a crash report, on a plan of canary
// 0.5 % -> 10 % -> 50 % -> 100 % (the whole fleet through a gate); and what pacing costs a good
// release (time to offer each stage to all its hosts, time to complete).
int containment(const std::vector<std::int64_t>& fleets, std::int64_t runs, std::uint64_t seed) {
  const health::GateParams params;
  const Release silent{"kills every host, silently", 1.0, true, Claim::HaltedInCanary};
  Release crashing{"kills every host, crash report", 1.0, true, Claim::HaltedInCanary};
  crashing.report_s = 2;
  const Release good{"good (background only)", 0.005, false, Claim::None, true};
  std::printf(
      "# gate_eval --containment: seed %llu; plan canary 0.5%% -> 10%% -> 50%% -> 100%%;"
      " gate defaults (bake %lld s, min_hosts %lld)\n",
      static_cast<unsigned long long>(seed), static_cast<long long>(params.bake_s),
      static_cast<long long>(params.min_hosts));
  std::printf(
      "# Applies 0.2-1.0 s after the offer; heartbeat 5 s; silence = 3 intervals;"
      " crash report 2 s after the crash.\n\n");
  std::printf(
      "| fleet | release | pacing | runs | halted in canary | hosts applied at halt "
      "(median / p95 / max) | time to halt s (median / p95) |\n");
  std::printf("|---:|---|---|---:|---:|---:|---:|\n");
  bool ok = true;
  std::uint64_t scenario = 500;
  for (std::int64_t fleet : fleets) {
    for (bool pacing : {true, false}) {
      for (const Release* r : {&silent, static_cast<const Release*>(&crashing)}) {
        Model m;
        m.fleet = fleet;
        m.stages = {{"canary", 0.5}, {"early", 10}, {"broad", 50}, {"all", 100}};
        m.pace_initial = pacing ? 8 : 0;
        const std::int64_t n = fleet > 1'000'000 ? std::min<std::int64_t>(runs, 100) : runs;
        Summary sum = simulate(m, *r, params, n, seed, ++scenario);
        std::printf("| %lld | %s | %s | %lld | %lld | %.0f / %.0f / %.0f | %.1f / %.1f |\n",
                    static_cast<long long>(fleet), r->name, pacing ? "8, x2" : "off",
                    static_cast<long long>(n), static_cast<long long>(sum.halted_by_stage[0]),
                    quantile(sum.applied_total, 0.5), quantile(sum.applied_total, 0.95),
                    quantile(sum.applied_total, 1.0), quantile(sum.halt_time, 0.5),
                    quantile(sum.halt_time, 0.95));
        if (pacing && (sum.halted_by_stage[0] != n || quantile(sum.applied_total, 1.0) > 25)) {
          ok = false;
        }
      }
    }
  }
  std::printf(
      "\nWhat pacing costs a good release (median seconds; stage k covered = from its start "
      "until every\nhost of it was offered the release):\n\n");
  std::printf(
      "| fleet | pacing | runs | canary covered | early covered | broad covered | all "
      "covered | completed | halted |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (std::int64_t fleet : fleets) {
    for (bool pacing : {true, false}) {
      Model m;
      m.fleet = fleet;
      m.stages = {{"canary", 0.5}, {"early", 10}, {"broad", 50}, {"all", 100}};
      m.pace_initial = pacing ? 8 : 0;
      const std::int64_t n =
          std::max<std::int64_t>(1, std::min<std::int64_t>(runs, 2'000'000'000 / fleet / 100));
      Summary sum = simulate(m, good, params, n, seed, ++scenario);
      std::printf("| %lld | %s | %lld", static_cast<long long>(fleet), pacing ? "8, x2" : "off",
                  static_cast<long long>(n));
      for (std::size_t k = 0; k < 4; ++k) {
        if (k < sum.covered.size() && !sum.covered[k].empty()) {
          std::printf(" | %.0f", quantile(sum.covered[k], 0.5));
        } else {
          std::printf(" | -");
        }
      }
      std::printf(
          " | %s | %lld |\n",
          sum.completed.empty()
              ? "-"
              : std::to_string(static_cast<long long>(quantile(sum.completed, 0.5))).c_str(),
          static_cast<long long>(halted(sum)));
    }
  }
  std::printf("\n%s\n", ok ? "OK: with pacing, a release that kills every host is halted in the "
                             "canary with <= 25 hosts applied at every fleet size"
                           : "FAILED: pacing did not hold a lethal release to <= 25 hosts");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t runs = 1000;
  std::uint64_t seed = 1;
  bool quick = false;
  bool runs_set = false;
  bool contain = false;
  std::vector<std::int64_t> fleets;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(a, "--containment") == 0) {
      contain = true;
    } else if (std::strcmp(a, "--fleet") == 0 && i + 1 < argc) {
      char* end = nullptr;
      const long long v = std::strtoll(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || v < 1000 || v > 100'000'000) {
        usage(argv[0]);
        return 2;
      }
      fleets.push_back(v);
    } else if ((std::strcmp(a, "--runs") == 0 || std::strcmp(a, "--seed") == 0) && i + 1 < argc) {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || argv[i][0] == '-') {
        usage(argv[0]);
        return 2;
      }
      if (a[2] == 'r') {
        if (v < 1 || v > 10000000) {
          usage(argv[0]);
          return 2;
        }
        runs = static_cast<std::int64_t>(v);
        runs_set = true;
      } else {
        seed = v;
      }
    } else if (std::strcmp(a, "--help") == 0 || std::strcmp(a, "-h") == 0) {
      usage(argv[0]);
      return 0;
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  if (quick && !runs_set) runs = 50;
  if (contain) {
    if (fleets.empty()) fleets = {100'000, 8'500'000};
    return containment(fleets, runs_set ? runs : 200, seed);
  }

  const Model m;
  const health::GateParams params;  // the gate's defaults, as a policy gets them
  const double b = m.background;
  const std::vector<Release> releases = {
      {"(a) crashes every host", 1.0, true, Claim::HaltedInCanary},
      {"(b) 5x background (2.5%)", 5 * b, false},
      {"(d) 2x background (1.0%)", 2 * b, false},
      {"(c) good (0.5% = background)", b, false, Claim::RarelyHalted, true},
      {"(c') good, alpha 0.05", b, false, Claim::None, true, 0.05},
      {"(b) 5x, bake 900 s", 5 * b, false, Claim::None, false, 0, 900},
      {"(d) 2x, bake 900 s", 2 * b, false, Claim::None, false, 0, 900},
      {"(c) good, bake 900 s", b, false, Claim::None, true, 0, 900},
  };

  std::printf("# gate_eval: %lld simulated rollouts per release, seed %llu\n",
              static_cast<long long>(runs), static_cast<unsigned long long>(seed));
  std::printf("# Model (fake time, the real health::evaluate on every signal):\n");
  std::printf("#  fleet %lld hosts; stages", static_cast<long long>(m.fleet));
  for (const Stage& s : m.stages) std::printf(" %s %g%%", s.name, s.percent);
  std::printf(" (cumulative), one ring.\n");
  std::printf(
      "#  One timeline: a stage's hosts keep reporting after it passed. The gate as the server"
      " runs it, on\n#  every signal: (a) the cumulative counts of every stage reached so far and"
      " (b) the current stage's\n#  own counts; halt when either fails; pass when (b) passes"
      " (bake_s since the stage started and\n#  min_hosts of its own hosts healthy) and (a) did"
      " not fail.\n");
  std::printf(
      "#  The control cohort = hosts not yet exposed; its failures counted from rollout start,"
      " each host once,\n#  and dropped from it when that host is exposed (as the server does).\n");
  std::printf(
      "#  An offered host applies %.1f-%.1f s later (long poll). Pacing: a stage offers %lld"
      " hosts, then %g more\n#  per host confirmed (applied and heartbeating a heartbeat"
      " interval later); it passes only once all\n#  its hosts were offered it.\n",
      m.apply_min_s, m.apply_max_s, static_cast<long long>(m.pace_initial), m.pace_growth);
  std::printf(
      "#  Every host (on the release or not) fails with the background probability %.1f%%"
      " per window;\n",
      m.background * 100);
  std::printf(
      "#  a host on a bad release fails with the release's probability instead. A failing"
      " host fails\n#  uniformly within %.0f s of applying (control: of rollout start), or at"
      " once (crashes every host).\n",
      m.window_s);
  std::printf(
      "#  Failures are detected by silence only: %d heartbeat intervals of %.0f s = %.0f s"
      " after the failure\n#  (the slow path; crash reports arrive sooner). Healthy = "
      "applied and fine for %.0f s.\n",
      m.silent_intervals, m.heartbeat_s, m.detect_s(), m.healthy_window_s);
  std::printf(
      "#  Next stage starts the moment the gate says pass; the rollout completes (and the gate"
      " stops) when\n#  the last stage passes.\n");
  std::printf(
      "# Gate: alpha %g, beta %g, min_ratio %g, baseline_floor %g, prior %g x %g hosts,"
      " max_failure_rate %g, min_hosts %lld, bake_s %lld per stage (defaults unless a row says)\n",
      params.alpha, params.beta, params.min_ratio, params.baseline_floor, params.prior_rate,
      params.prior_hosts, params.max_failure_rate, static_cast<long long>(params.min_hosts),
      static_cast<long long>(params.bake_s));
  std::printf("\n");

  std::vector<Summary> results;
  for (std::size_t i = 0; i < releases.size(); ++i) {
    results.push_back(simulate(m, releases[i], params, runs, seed, i + 1));
  }

  print_table(results, {});
  std::printf("Halts by test (cumulative / stage's own):");
  for (std::size_t i = 0; i < results.size(); ++i) {
    std::printf("%s %s %lld / %lld", i ? ";" : "", results[i].release->name,
                static_cast<long long>(results[i].by_cumulative),
                static_cast<long long>(results[i].by_stage));
  }
  std::printf(".\n\n");

  bool ok = true;
  // (a) detail: the canary, a handful of failures.
  const Summary& all_fail = *std::find_if(results.begin(), results.end(), [](const Summary& s) {
    return s.release->claim == Claim::HaltedInCanary;
  });
  std::printf(
      "(a) crashes every host: halted in the canary in %lld of %lld runs; at halt "
      "median %.0f (max %.0f) hosts applied and %.0f (max %.0f) failures detected, "
      "%.0f s (max %.0f s) after the canary started.\n",
      static_cast<long long>(all_fail.halted_by_stage[0]), static_cast<long long>(all_fail.runs),
      quantile(all_fail.applied_at_halt, 0.5), quantile(all_fail.applied_at_halt, 1.0),
      quantile(all_fail.failed_at_halt, 0.5), quantile(all_fail.failed_at_halt, 1.0),
      quantile(all_fail.halt_time, 0.5), quantile(all_fail.halt_time, 1.0));
  if (!all_fail.example_reason.empty()) {
    std::printf("    e.g. \"%s\"\n", all_fail.example_reason.c_str());
  }
  if (all_fail.halted_by_stage[0] != all_fail.runs) {
    std::printf("FAIL: a release that crashes every host left the canary in %lld runs\n",
                static_cast<long long>(all_fail.runs - all_fail.halted_by_stage[0]));
    ok = false;
  }

  // (c) false halts against alpha.
  for (const Summary& s : results) {
    if (!s.release->good) continue;
    const double alpha = s.release->alpha > 0 ? s.release->alpha : params.alpha;
    // Two tests per stage (cumulative and the stage's own): at most twice the one-test bound.
    const double per_stage = 2 * alpha / (1 - params.beta);
    const double stages = static_cast<double>(m.stages.size());
    const double bound = 1 - std::pow(1 - per_stage, stages);
    const std::int64_t k = halted(s);
    const Interval ci = wilson(k, s.runs);
    std::printf(
        "%s: halted %lld of %lld (%.2f%%, 95%% CI %.2f%%..%.2f%%); alpha %g per stage, "
        "bound 2 alpha/(1-beta) = %.3f%% per stage (two tests), %.2f%% over %zu stages: %s.",
        s.release->name, static_cast<long long>(k), static_cast<long long>(s.runs),
        100.0 * static_cast<double>(k) / static_cast<double>(s.runs), 100 * ci.lo, 100 * ci.hi,
        alpha, 100 * per_stage, 100 * bound, m.stages.size(),
        ci.lo <= bound ? "consistent" : "NOT consistent");
    std::printf(" Per stage:");
    for (std::size_t st = 0; st < m.stages.size(); ++st) {
      std::printf(" %s %lld", m.stages[st].name, static_cast<long long>(s.halted_by_stage[st]));
    }
    std::printf(" (cumulative test %lld, stage's own test %lld)",
                static_cast<long long>(s.by_cumulative), static_cast<long long>(s.by_stage));
    if (!s.completed.empty()) {
      std::printf("; median time to pass all stages %.0f s", quantile(s.completed, 0.5));
    }
    std::printf(".\n");
    if (s.release->claim == Claim::RarelyHalted &&
        static_cast<double>(k) > 0.05 * static_cast<double>(s.runs)) {
      std::printf("FAIL: a good release was halted in more than 5%% of runs\n");
      ok = false;
    }
  }
  // ---- evidence trust: the price in detection speed, and the attacks it stops.
  struct Variant {
    std::string name;
    Model model;
    Release release;
    enum { None, MostlyPasses, AlwaysHalted } claim = None;
  };
  auto with = [&m](double fresh, bool trust, std::int64_t canary, std::int64_t control) {
    Model v = m;
    v.fresh_share = fresh;
    v.trust = trust;
    v.hostile_canary = canary;
    v.hostile_control = control;
    return v;
  };
  const Release all_crash = releases[0], five = releases[1], two = releases[2], good = releases[3];
  const Release ten{"10% crash", 0.10, false};
  const std::vector<Variant> variants = {
      {"(a) crashes every host, 20% of hosts fresh", with(0.2, true, 0, 0), all_crash},
      {"(b) 5x, 20% fresh", with(0.2, true, 0, 0), five},
      {"(d) 2x, 20% fresh", with(0.2, true, 0, 0), two},
      {"(c) good, 20% fresh", with(0.2, true, 0, 0), good},
      {"(a) crashes every host, 50% fresh", with(0.5, true, 0, 0), all_crash},
      {"(b) 5x, 50% fresh", with(0.5, true, 0, 0), five},
      {"(e) good + 4 fake canary crashers, trust off", with(0, false, 4, 0), good},
      {"(e) good + 4 fake canary crashers, trust on", with(0, true, 4, 0), good,
       Variant::MostlyPasses},
      {"(e) good + 20 fake canary crashers, trust on", with(0, true, 20, 0), good,
       Variant::MostlyPasses},
      {"(f) 10% crash + 3000 fake control crashers, trust off", with(0, false, 0, 3000), ten},
      {"(f) 10% crash + 3000 fake control crashers, trust on", with(0, true, 0, 3000), ten,
       Variant::AlwaysHalted},
  };
  std::printf(
      "\n# Evidence trust (--evidence-min-age-s): \"fresh\" hosts have no track record when the "
      "rollout starts;\n#  with trust on their signals are ignored in the stage and the control "
      "cohort alike (they still get\n#  the release). Fake hosts are fresh enrollees that report "
      "one crash each at t = 1 s: in the canary\n#  (on the release) or never exposed (a crash of "
      "the old version: the control cohort). Same gate, same seed.\n\n");
  std::vector<Summary> trust_results;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    trust_results.push_back(
        simulate(variants[i].model, variants[i].release, params, runs, seed, 100 + i));
    names.push_back(variants[i].name);
  }
  print_table(trust_results, names);
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const auto k = halted(trust_results[i]);
    const auto n = trust_results[i].runs;
    if (variants[i].claim == Variant::MostlyPasses &&
        static_cast<double>(k) > 0.05 * static_cast<double>(n)) {
      std::printf("FAIL: %s: halted in %lld of %lld runs\n", variants[i].name.c_str(),
                  static_cast<long long>(k), static_cast<long long>(n));
      ok = false;
    }
    if (trust_results[i].stuck > 0) {
      std::printf("FAIL: %s: %lld rollouts stalled in a stage without a verdict\n",
                  variants[i].name.c_str(), static_cast<long long>(trust_results[i].stuck));
      ok = false;
    }
    if (variants[i].claim == Variant::AlwaysHalted && k != n) {
      std::printf("FAIL: %s: not halted in %lld of %lld runs\n", variants[i].name.c_str(),
                  static_cast<long long>(n - k), static_cast<long long>(n));
      ok = false;
    }
  }
  std::printf("\n");

  for (const Summary& s : results) {
    if (s.stuck > 0) {
      std::printf("FAIL: %s: %lld rollouts stalled in a stage without a verdict\n", s.release->name,
                  static_cast<long long>(s.stuck));
      ok = false;
    }
  }
  std::printf("%s\n", ok ? "OK: containment claims hold" : "FAILED: containment claims broken");
  return ok ? 0 : 1;
}
