#include "server/health/gate.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

namespace ringfence::server::health {
namespace {

// A realistic control cohort: 9 900 hosts not on the release, 0.5% of them failed in the window.
constexpr std::int64_t kControl = 9900;
constexpr std::int64_t kControlFailed = 50;

StageCounts counts(std::int64_t applied, std::int64_t failed, std::int64_t healthy,
                   double elapsed_s, std::int64_t control = kControl,
                   std::int64_t control_failed = kControlFailed) {
  StageCounts c;
  c.exposed = std::max<std::int64_t>(applied, 100);
  c.applied = applied;
  c.failed = failed;
  c.healthy = healthy;
  c.control_hosts = control;
  c.control_failed = control_failed;
  c.elapsed_s = elapsed_s;
  return c;
}

struct Row {
  const char* name;
  StageCounts counts;
  GateParams params;
  Verdict verdict;
  std::vector<std::string> reason_has;  // substrings the reason must contain
};

GateParams with_bake(std::int64_t bake_s) {
  GateParams p;
  p.bake_s = bake_s;
  return p;
}

const std::vector<Row>& table() {
  static const std::vector<Row> rows = {
      // A release that crashes every host: a handful of failures among the first applied hosts
      // halts the canary, even while many applied hosts have not yet been seen to fail.
      {"all_fail_three_failures_still_waiting",
       counts(33, 3, 0, 20),
       {},
       Verdict::Waiting,
       {"waiting: 20 s of 300 s bake", "3 of 33 applied hosts failed"}},
      {"all_fail_four_failures_halt",
       counts(34, 4, 0, 20),
       {},
       Verdict::Fail,
       {"fail: SPRT llr", ">= 6.86", "4 of 34 applied hosts failed", "baseline 0.51%",
        "50 of 9900 control hosts"}},
      {"all_fail_every_applied_host_failed",
       counts(4, 4, 0, 18),
       {},
       Verdict::Fail,
       {"fail: SPRT llr", "4 of 4 applied hosts failed"}},
      {"all_fail_zero_control_hosts",
       counts(5, 5, 0, 18, 0, 0),
       {},
       Verdict::Fail,
       {"fail: SPRT llr", "baseline 1.00% from 0 of 0 control hosts"}},

      // Absolute floor: with a noisy control cohort the SPRT is slow, the floor is not.
      {"floor_trips_above_max_rate",
       counts(10, 3, 7, 60, 100, 20),
       {},
       Verdict::Fail,
       {"fail: failure rate 30.0% > max 20.0%", "3 of 10 applied hosts failed", "min_hosts 10"}},
      {"floor_is_strictly_greater",
       counts(10, 2, 8, 60, 100, 20),
       {},
       Verdict::Waiting,
       {"waiting:"}},
      {"floor_needs_min_hosts_applied",
       counts(9, 2, 7, 60, 100, 20),
       {},
       Verdict::Waiting,
       {"waiting:", "2 of 9 applied hosts failed"}},

      // Waiting for bake time, then for healthy hosts.
      {"waiting_for_bake",
       counts(50, 0, 40, 240),
       {},
       Verdict::Waiting,
       {"waiting: 240 s of 300 s bake", "40 healthy hosts of 10 needed"}},
      {"waiting_for_min_hosts_healthy",
       counts(12, 0, 7, 400),
       {},
       Verdict::Waiting,
       {"waiting: 400 s of 300 s bake", "7 healthy hosts of 10 needed"}},
      {"applied_is_not_healthy",
       counts(500, 0, 0, 900),
       {},
       Verdict::Waiting,
       {"0 healthy hosts of 10 needed"}},

      // Pass: bake done, min_hosts healthy, test not failed.
      {"pass_exactly_at_thresholds",
       counts(10, 0, 10, 300),
       {},
       Verdict::Pass,
       {"pass: 300 s of 300 s bake", "10 healthy hosts of 10 needed", "llr"}},
      {"pass_with_one_background_failure",
       counts(100, 1, 95, 320),
       {},
       Verdict::Pass,
       {"pass:", "1 of 100 applied hosts failed"}},
      {"pass_zero_bake", counts(10, 0, 10, 0), with_bake(0), Verdict::Pass, {"pass:"}},

      // Background noise: failures at (or a little above) the control rate never halt.
      {"noise_first_host_fails",
       counts(1, 1, 0, 10),
       {},
       Verdict::Waiting,
       {"1 of 1 applied hosts failed"}},
      {"noise_two_early_failures", counts(20, 2, 0, 30), {}, Verdict::Waiting, {"waiting:"}},
      {"noise_canary_at_background", counts(100, 1, 90, 600), {}, Verdict::Pass, {"pass:"}},
      {"noise_early_ring_at_background", counts(900, 5, 850, 600), {}, Verdict::Pass, {"pass:"}},
      {"noise_broad_ring_slightly_high",
       counts(4000, 26, 3900, 2000),
       {},
       Verdict::Pass,
       {"26 of 4000 applied hosts failed"}},

      // A doubling of a tiny background rate is caught once enough hosts have reported.
      {"doubling_small_sample_not_caught", counts(100, 1, 90, 200), {}, Verdict::Waiting, {}},
      {"doubling_caught_with_enough_hosts",
       counts(5000, 50, 4900, 2000, 5000, 25),
       {},
       Verdict::Fail,
       {"fail: SPRT llr", "50 of 5000 applied hosts failed", "baseline 0.51%"}},

      // Zero control hosts: the prior (1%) is the baseline; a small failure count is not enough.
      {"zero_control_prior_is_baseline",
       counts(50, 1, 40, 400, 0, 0),
       {},
       Verdict::Pass,
       {"baseline 1.00% from 0 of 0 control hosts"}},
      {"zero_control_two_failures_wait", counts(20, 2, 10, 100, 0, 0), {}, Verdict::Waiting, {}},
      // A small spotless control cohort is pulled towards the prior, not taken at face value.
      {"small_spotless_control",
       counts(5, 1, 0, 60, 20, 0),
       {},
       Verdict::Waiting,
       {"baseline 0.83% from 0 of 20 control hosts"}},
      // A control cohort with many failures raises the baseline (a fleet-wide problem, not ours).
      {"noisy_control_raises_baseline",
       counts(200, 10, 180, 400, 5000, 250),
       {},
       Verdict::Pass,
       {"baseline 4.92% from 250 of 5000 control hosts"}},

      // Inconsistent counts are sanitised, not trusted.
      {"failed_more_than_applied",
       counts(0, 6, 0, 30),
       {},
       Verdict::Fail,
       {"6 of 6 applied hosts failed"}},
      {"negative_counts_read_as_zero",
       counts(-5, -1, -3, -10, -7, -2),
       {},
       Verdict::Waiting,
       {"waiting: 0 s of 300 s bake", "0 healthy hosts", "0 of 0 applied", "0 of 0 control"}},
      {"healthy_capped_by_failures", counts(12, 3, 12, 400, 100, 20), {}, Verdict::Fail, {}},
  };
  return rows;
}

// Readable test names in failure output instead of a byte dump.
void PrintTo(const Row& row, std::ostream* os) { *os << row.name; }

class GateTable : public testing::TestWithParam<Row> {};

TEST_P(GateTable, Verdict) {
  const Row& row = GetParam();
  ASSERT_EQ(check_params(row.params), "");
  const GateDecision d = evaluate(row.params, row.counts);
  EXPECT_EQ(to_string(d.verdict), std::string(to_string(row.verdict))) << d.reason;
  for (const std::string& part : row.reason_has) {
    EXPECT_NE(d.reason.find(part), std::string::npos)
        << "missing \"" << part << "\" in: " << d.reason;
  }
  EXPECT_EQ(d.reason.find('\n'), std::string::npos);
  EXPECT_DOUBLE_EQ(d.upper, std::log(0.95 / 0.001));
  EXPECT_DOUBLE_EQ(d.lower, std::log(0.05 / 0.999));
  EXPECT_GE(d.baseline, row.params.baseline_floor);
}

INSTANTIATE_TEST_SUITE_P(Health, GateTable, testing::ValuesIn(table()),
                         [](const testing::TestParamInfo<Row>& row) { return row.param.name; });

TEST(Gate, AllFailHaltsAfterAHandfulWhateverTheBaseline) {
  // Hosts apply one after another and every one of them fails: the gate must halt after a
  // handful of failures for any plausible control cohort, including none at all.
  const std::vector<std::pair<std::int64_t, std::int64_t>> controls = {
      {9900, 50}, {9900, 0}, {1000, 30}, {20, 0}, {0, 0}};
  for (const auto& [hosts, failed] : controls) {
    std::int64_t halted_at = -1;
    for (std::int64_t n = 1; n <= 50 && halted_at < 0; ++n) {
      if (evaluate({}, counts(n, n, 0, 15, hosts, failed)).verdict == Verdict::Fail) halted_at = n;
    }
    EXPECT_GE(halted_at, 2) << "control " << hosts << "/" << failed;
    EXPECT_LE(halted_at, 6) << "control " << hosts << "/" << failed;
  }
}

TEST(Gate, BaselineFloorApplies) {
  GateParams p;
  p.prior_hosts = 0;
  const GateDecision d = evaluate(p, counts(10, 0, 0, 10, 10000, 0));
  EXPECT_DOUBLE_EQ(d.baseline, 0.002);
  // No prior weight and no control hosts: 0/0 falls back to the prior rate.
  EXPECT_DOUBLE_EQ(evaluate(p, counts(10, 0, 0, 10, 0, 0)).baseline, 0.01);
}

TEST(Gate, FailureRateAndStatisticAreReported) {
  const GateDecision d = evaluate({}, counts(40, 2, 30, 100));
  EXPECT_DOUBLE_EQ(d.failure_rate, 0.05);
  EXPECT_NEAR(d.baseline, 51.0 / 10000.0, 1e-12);
  EXPECT_GT(d.statistic, 0);
  EXPECT_LT(d.statistic, d.upper);
  EXPECT_DOUBLE_EQ(evaluate({}, counts(0, 0, 0, 0)).failure_rate, 0.0);
}

TEST(Gate, StatisticGrowsWithFailuresAndShrinksWithSuccesses) {
  double previous = -1e9;
  for (std::int64_t f = 0; f <= 5; ++f) {
    const double s = evaluate({}, counts(100, f, 0, 10)).statistic;
    EXPECT_GT(s, previous);
    previous = s;
  }
  EXPECT_GT(evaluate({}, counts(100, 3, 0, 10)).statistic,
            evaluate({}, counts(1000, 3, 0, 10)).statistic);
}

TEST(Gate, SingleRatioWhenBaselineIsHigh) {
  // p0 * min_ratio above 0.5: the alternative is capped at 0.5 and the test still runs.
  const GateDecision d = evaluate({}, counts(10, 10, 0, 10, 100, 80));
  EXPECT_EQ(d.verdict, Verdict::Fail);
  EXPECT_GT(d.statistic, 0);
  // A control cohort at 90 % cannot excuse 5 of 5 failing: p0 stops at baseline_ceiling.
  const GateDecision high = evaluate({}, counts(5, 5, 0, 10, 10000, 9000));
  EXPECT_DOUBLE_EQ(high.baseline, 0.05);
  EXPECT_TRUE(high.baseline_capped);
  EXPECT_EQ(high.verdict, Verdict::Fail);
  // With the ceiling at its highest, p0 just under 0.5 leaves one alternative capped at 0.5.
  GateParams open;
  open.baseline_ceiling = 0.49;
  const GateDecision loose = evaluate(open, counts(5, 5, 0, 10, 10000, 9000));
  EXPECT_DOUBLE_EQ(loose.baseline, 0.49);
  EXPECT_LT(loose.statistic, loose.upper);
  EXPECT_EQ(loose.verdict, Verdict::Waiting);
}

// The poisoned baseline (issue 13): hosts that never take the release report crashes and raise
// the control cohort to 42 %. Without a ceiling a release crashing 10 % of 500 hosts passes as
// "better than the control"; with it, the release is compared with 5 % and halted.
TEST(Gate, AControlCohortFullOfCrashersCannotExcuseARelease) {
  const StageCounts poisoned = counts(500, 50, 450, 600, 714, 300);  // control 42 % failing
  GateParams off;
  off.baseline_ceiling = 0.49;
  EXPECT_NE(evaluate(off, poisoned).verdict, Verdict::Fail);
  const GateDecision d = evaluate({}, poisoned);
  EXPECT_EQ(d.verdict, Verdict::Fail) << d.reason;
  EXPECT_NE(d.reason.find("capped at baseline_ceiling"), std::string::npos) << d.reason;
  // An honest control below the ceiling is used as it is.
  const GateDecision honest = evaluate({}, counts(500, 2, 450, 600, 10000, 50));
  EXPECT_FALSE(honest.baseline_capped);
  EXPECT_NEAR(honest.baseline, 51.0 / 10100.0, 1e-12);
  EXPECT_EQ(honest.verdict, Verdict::Pass);
}

TEST(Gate, BaselineCeilingIsChecked) {
  GateParams p;
  for (double bad : {0.0, -0.1, 0.5, std::nan("")}) {
    p.baseline_ceiling = bad;
    EXPECT_NE(check_params(p).find("baseline_ceiling"), std::string::npos) << bad;
  }
  p.baseline_ceiling = 0.2;
  EXPECT_EQ(check_params(p), "");
  // A floor above the ceiling wins: the baseline is the floor whatever the control says.
  p.baseline_ceiling = 0.05;
  p.baseline_floor = 0.3;
  EXPECT_EQ(check_params(p), "");
  EXPECT_DOUBLE_EQ(evaluate(p, counts(10, 0, 10, 600, 100, 90)).baseline, 0.3);
  EXPECT_DOUBLE_EQ(evaluate(p, counts(10, 0, 10, 600, 100, 0)).baseline, 0.3);
}

// Ville's bound: under H0 with a known baseline, the chance that a good release EVER crosses the
// upper boundary during a stage is at most alpha / (1 - beta), however often we evaluate.
TEST(Gate, FalseHaltRateWithinAlphaWhenEvaluatedAfterEveryHost) {
  GateParams p;
  p.alpha = 0.05;  // large alpha so that a modest number of runs measures it
  p.prior_hosts = 0;
  std::mt19937_64 rng(12345);  // raw output only: deterministic on every standard library
  const auto uniform = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  const int runs = 2000;
  int halted = 0;
  for (int r = 0; r < runs; ++r) {
    std::int64_t failed = 0;
    for (std::int64_t n = 1; n <= 1000; ++n) {
      if (uniform() < 0.01) ++failed;
      if (evaluate(p, counts(n, failed, 0, 0, 100000, 1000)).verdict == Verdict::Fail) {
        ++halted;
        break;
      }
    }
  }
  const double bound = p.alpha / (1 - p.beta);
  // Three binomial standard deviations above the bound.
  EXPECT_LE(halted, runs * bound + 3 * std::sqrt(runs * bound));
}

TEST(Gate, ToString) {
  EXPECT_STREQ(to_string(Verdict::Waiting), "waiting");
  EXPECT_STREQ(to_string(Verdict::Pass), "pass");
  EXPECT_STREQ(to_string(Verdict::Fail), "fail");
  EXPECT_STREQ(to_string(static_cast<Verdict>(42)), "unknown");
}

struct BadParams {
  const char* name;
  GateParams params;
  const char* field;
};

GateParams tweak(void (*f)(GateParams&)) {
  GateParams p;
  f(p);
  return p;
}

TEST(CheckParams, DefaultsAreValid) { EXPECT_EQ(check_params({}), ""); }

TEST(CheckParams, RejectsInvalid) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  static double nan_value = kNaN;  // non-constant so the lambdas below stay captureless
  static double inf_value = kInf;
  const std::vector<BadParams> rows = {
      {"alpha zero", tweak([](GateParams& p) { p.alpha = 0; }), "alpha"},
      {"alpha half", tweak([](GateParams& p) { p.alpha = 0.5; }), "alpha"},
      {"alpha nan", tweak([](GateParams& p) { p.alpha = nan_value; }), "alpha"},
      {"beta negative", tweak([](GateParams& p) { p.beta = -0.1; }), "beta"},
      {"beta too big", tweak([](GateParams& p) { p.beta = 0.7; }), "beta"},
      {"ratio one", tweak([](GateParams& p) { p.min_ratio = 1; }), "min_ratio"},
      {"ratio inf", tweak([](GateParams& p) { p.min_ratio = inf_value; }), "min_ratio"},
      {"ratio nan", tweak([](GateParams& p) { p.min_ratio = nan_value; }), "min_ratio"},
      {"floor zero", tweak([](GateParams& p) { p.baseline_floor = 0; }), "baseline_floor"},
      {"floor too big", tweak([](GateParams& p) { p.baseline_floor = 0.6; }), "baseline_floor"},
      {"prior zero", tweak([](GateParams& p) { p.prior_rate = 0; }), "prior_rate"},
      {"prior hosts negative", tweak([](GateParams& p) { p.prior_hosts = -1; }), "prior_hosts"},
      {"prior hosts inf", tweak([](GateParams& p) { p.prior_hosts = inf_value; }), "prior_hosts"},
      {"max rate zero", tweak([](GateParams& p) { p.max_failure_rate = 0; }), "max_failure_rate"},
      {"max rate above one", tweak([](GateParams& p) { p.max_failure_rate = 1.5; }),
       "max_failure_rate"},
      {"min hosts zero", tweak([](GateParams& p) { p.min_hosts = 0; }), "min_hosts"},
      {"bake negative", tweak([](GateParams& p) { p.bake_s = -1; }), "bake_s"},
  };
  for (const BadParams& row : rows) {
    const std::string problem = check_params(row.params);
    EXPECT_EQ(problem.rfind(row.field, 0), 0u) << row.name << ": " << problem;
    // evaluate() refuses to judge with invalid params and fails safe.
    const GateDecision d = evaluate(row.params, counts(100, 0, 100, 1000));
    EXPECT_EQ(d.verdict, Verdict::Fail) << row.name;
    EXPECT_EQ(d.reason, "fail: invalid gate parameters: " + problem) << row.name;
  }
  // Boundary values that are valid.
  GateParams edge;
  edge.max_failure_rate = 1;
  edge.bake_s = 0;
  edge.min_hosts = 1;
  edge.prior_hosts = 0;
  EXPECT_EQ(check_params(edge), "");
}

}  // namespace
}  // namespace ringfence::server::health
