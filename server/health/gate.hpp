#pragma once
// Health gate evaluation: pure functions of counts -> verdict, with the statistic. No I/O, no
// clock, no state: the rollout controller feeds it counts on every new signal. Every function
// here is thread-safe (no shared state) and cheap: a handful of logarithms and one formatted
// sentence per call.
//
// The test is a sequential probability ratio test on "a host failed after applying the release"
// (one Bernoulli trial per applied host, each host counted once) against the failure rate of the
// control cohort (hosts in the same rings NOT on the release) over the same window:
//
//   H0: p = p0                 the baseline (see "The baseline" below)
//   H1: p = p0 * R             for R in a small grid of ratios R_0 = min_ratio, R_j = 4 * R_{j-1},
//                              as long as p0 * R_j <= 0.5 (at least R_0 is always kept, capped
//                              at p1 = 0.5); K = the number of ratios in the grid.
//
// For one ratio, Wald's log-likelihood ratio after n applied hosts with f failures is
//   llr_R = f * ln(p1/p0) + (n - f) * ln((1-p1)/(1-p0))
// and the statistic is the log of the equally weighted mixture of the K likelihood ratios:
//   statistic = ln( (1/K) * sum_j exp(llr_Rj) )
// Fail when statistic >= upper = ln((1-beta)/alpha), Wald's upper boundary.
//
// Why a mixture rather than one alternative: a single H1 must choose between speed and reach.
// With H1 = 2x (needed to ever catch a doubling: a test tuned for 5x drifts *towards* H0 when the
// truth is 2x) a release that crashes every host needs ~10 failures; tuned for 5x it needs ~5 but
// never catches a doubling. The mixture catches both (an all-fail release after ~3-6 failures,
// a doubling once a few thousand hosts have reported at a 0.5% background) for the price of ln K
// (~1.1) on the threshold. Its likelihood ratio is still a non-negative martingale under H0, so
// by Ville's inequality the probability that a good release EVER crosses `upper` during a stage,
// however long the stage runs and however often we evaluate, is at most alpha / (1 - beta)
// (when p0 is the true baseline). The test never stops at the lower boundary; `lower` is reported
// for the dashboard only, and passing a stage needs bake time and min_hosts healthy.
//
// The baseline p0 (the estimate's uncertainty matters: a small or spotless control group must not
// make a single failure look damning):
//   p0 = max(baseline_floor, (control_failed + prior_hosts * prior_rate)
//                            / (control_hosts + prior_hosts))
// i.e. the posterior mean of a Beta prior worth `prior_hosts` hosts centred on `prior_rate`
// (a pseudo-count / Laplace-style estimate). A large control cohort (thousands of hosts) speaks for
// itself; a small one is pulled towards the prior; with no control hosts at all p0 = prior_rate.
// The floor keeps p0 away from zero whatever the data. The ceiling keeps it from being raised
// past `baseline_ceiling` by the control cohort: the control is the one input hosts that never
// take the release can move, so a set of hosts reporting crashes (hostile, or a fleet-wide
// incident) could otherwise excuse a release crashing at any rate below theirs. Above the ceiling
// the gate compares against the ceiling: a release failing at twice it is caught however badly
// the control fares, and during a real fleet-wide incident the gate errs towards halting (the
// operator resumes once it is understood), never towards shipping more change into it.
//
// Absolute floor: once applied >= min_hosts, fail when failed / applied > max_failure_rate, like
// other tools' abort thresholds, whatever the statistic says.
//
// Defaults and why:
//   alpha 0.001   false-halt probability per stage for a good release (with ~3 gated stages a
//                 good release is halted in < 0.5% of rollouts, and the bound holds however
//                 often evaluate() is called).
//   beta 0.05     sets Wald's boundaries: upper = ln(0.95/0.001) = 6.86.
//   min_ratio 2   "one that doubles a tiny background rate must be caught": a doubling is the
//                 smallest rise worth a halt; bigger rises are covered by the mixture's grid.
//   baseline_floor 0.002, prior_rate 0.01, prior_hosts 100: a control cohort of a few thousand
//                 hosts dominates the prior; with none, a 1% baseline is assumed (conservative:
//                 fewer false halts, still catches an all-fail release after a handful).
//   baseline_ceiling 0.05: twenty times the floor and five times the prior; a background above
//                 one host in twenty failing per window is an incident, not a baseline.
//   max_failure_rate 0.2 with min_hosts 10: one in five applied hosts failing is never noise.
//   bake_s 300    five minutes: 60 heartbeat intervals at the rolling-release rate (5 s), well
//                 past the 15 s silence detection.

#include <cstdint>
#include <string>

namespace ringfence::server::health {

struct GateParams {
  double alpha = 0.001;            // false-halt probability per stage (good release halted)
  double beta = 0.05;              // miss probability at min_ratio; sets Wald's boundaries
  double min_ratio = 2.0;          // smallest failure-rate ratio worth catching (> 1)
  double baseline_floor = 0.002;   // lowest p0 used, whatever the control cohort shows
  double prior_rate = 0.01;        // baseline assumed before any control data ...
  double prior_hosts = 100;        // ... worth this many control hosts (pseudo-count, >= 0)
  double baseline_ceiling = 0.05;  // highest p0 the control cohort can set (a higher floor wins)
  double max_failure_rate = 0.2;   // absolute floor: fail when failed/applied exceeds it ...
  std::int64_t min_hosts = 10;     // ... once this many hosts applied; also the pass sample
  std::int64_t bake_s = 300;       // the stage must bake at least this long before passing
};

// Figures for one stage of one rollout, at one moment. Each host is counted once (a host that
// crashed three times is one failed host). evaluate() tolerates inconsistent counts rather than
// trusting them: negatives read as 0, applied is raised to failed (a host that failed to apply
// did try), healthy is capped at applied - failed, control_failed at control_hosts.
struct StageCounts {
  std::int64_t exposed = 0;  // hosts the stage offers the release to
  std::int64_t applied = 0;  // hosts that acknowledged applying it (ever)
  std::int64_t healthy = 0;  // applied and heartbeated healthily for the healthy window
  std::int64_t failed = 0;   // applied, then crashed / failed / rolled back locally / went silent
  std::int64_t silent = 0;   // subset of failed: no heartbeat for k intervals after applying
  std::int64_t control_hosts = 0;   // hosts in the same rings NOT on the release
  std::int64_t control_failed = 0;  // of those, failed within the same window
  double elapsed_s = 0;             // since the stage started
};

enum class Verdict { Waiting, Pass, Fail };
// "waiting", "pass", "fail"; "unknown" for a value outside the enum.
const char* to_string(Verdict v) noexcept;

struct GateDecision {
  Verdict verdict = Verdict::Waiting;
  double statistic = 0;          // the SPRT log-likelihood ratio (log of the mixture, see above)
  double upper = 0;              // fail boundary ln((1-beta)/alpha)
  double lower = 0;              // Wald's accept-H0 boundary ln(beta/(1-alpha)), reported only
  double baseline = 0;           // p0 used
  bool baseline_capped = false;  // the control cohort's estimate was above baseline_ceiling
  double failure_rate = 0;       // failed / applied (0 when none applied)
  std::string reason;            // one human sentence: why pass / fail / still waiting
};

// Validates parameters: alpha, beta in (0, 0.5); min_ratio > 1 and finite; baseline_floor and
// prior_rate in (0, 0.5); baseline_ceiling in (0, 0.5); prior_hosts >= 0 and finite;
// max_failure_rate in (0, 1]; min_hosts >= 1; bake_s >= 0. NaN is rejected everywhere. Returns an
// empty string when valid, else the first problem as a sentence naming the field (for a 400 answer
// to the operator).
std::string check_params(const GateParams& p);

// The decision for a stage. Order: SPRT fail or absolute floor fail -> Fail; otherwise Pass when
// elapsed >= bake_s and healthy >= min_hosts; otherwise Waiting with the reason. Invalid params
// (check_params non-empty) give Fail with the problem as the reason: the caller is expected to
// validate at configuration time, and a gate that cannot judge must not let a release through.
GateDecision evaluate(const GateParams& p, const StageCounts& c);

}  // namespace ringfence::server::health
