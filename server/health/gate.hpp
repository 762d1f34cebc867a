#pragma once
// Health gate evaluation: pure functions of counts -> verdict, with the statistic. No I/O, no
// clock, no state: the rollout controller feeds it counts on every new signal.
//
// The test: Wald's sequential probability ratio test on "a host failed after applying the
// release" (Bernoulli per applied host) with
//   H0: p = p0        where p0 = the control cohort's failure rate in the same window
//                     (floored at baseline_floor so a spotless control group cannot make a single
//                     failure look infinitely unlikely)
//   H1: p = p0 * min_ratio   (the smallest rate ratio worth catching), capped below 1.
// Log-likelihood ratio after n applied hosts with f failures:
//   llr = f * ln(p1/p0) + (n - f) * ln((1-p1)/(1-p0))
// Fail when llr >= ln((1-beta)/alpha); the "accept H0" boundary ln(beta/(1-alpha)) is reported
// but passing a stage also needs bake time and min_hosts healthy.

#include <cstdint>
#include <string>

namespace ringfence::server::health {

struct GateParams {
  double alpha = 0.001;           // false-halt probability per stage (good release halted)
  double beta = 0.05;             // miss probability for a release at min_ratio x baseline
  double min_ratio = 5.0;         // smallest failure-rate ratio worth catching (> 1)
  double baseline_floor = 0.002;  // lowest p0 used, whatever the control cohort shows
  double max_failure_rate = 0.2;  // absolute floor: fail when failed/applied exceeds it ...
  std::int64_t min_hosts = 10;    // ... once this many hosts applied; also the pass sample
  std::int64_t bake_s = 300;      // the stage must bake at least this long before passing
};

// Figures for one stage of one rollout, at one moment.
struct StageCounts {
  std::int64_t exposed = 0;   // hosts the stage offers the release to
  std::int64_t applied = 0;   // hosts that acknowledged applying it (ever)
  std::int64_t healthy = 0;   // applied and heartbeated healthily for the healthy window
  std::int64_t failed = 0;    // applied, then crashed / failed / rolled back locally / went silent
  std::int64_t silent = 0;    // subset of failed: no heartbeat for k intervals after applying
  std::int64_t control_hosts = 0;     // hosts in the same rings NOT on the release
  std::int64_t control_failed = 0;    // of those, failed within the same window
  double elapsed_s = 0;               // since the stage started
};

enum class Verdict { Waiting, Pass, Fail };
const char* to_string(Verdict v) noexcept;

struct GateDecision {
  Verdict verdict = Verdict::Waiting;
  double statistic = 0;        // the SPRT log-likelihood ratio
  double upper = 0;            // fail boundary ln((1-beta)/alpha)
  double lower = 0;            // accept-H0 boundary ln(beta/(1-alpha))
  double baseline = 0;         // p0 used
  double failure_rate = 0;     // failed / applied (0 when none applied)
  std::string reason;          // one human sentence: why pass / fail / still waiting
};

// Validates parameters (alpha, beta in (0, 0.5); min_ratio > 1; rates in [0,1]; min_hosts >= 1;
// bake_s >= 0). Returns an empty string when valid, else the problem as a sentence.
std::string check_params(const GateParams& p);

// The decision for a stage. Order: SPRT fail or absolute floor fail -> Fail; otherwise Pass when
// elapsed >= bake_s and healthy >= min_hosts; otherwise Waiting with the reason.
GateDecision evaluate(const GateParams& p, const StageCounts& c);

}  // namespace ringfence::server::health
