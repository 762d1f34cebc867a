#include "server/health/gate.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace ringfence::server::health {
namespace {

// The mixture's grid (documented in gate.hpp): ratios grow by kRatioStep from min_ratio, and no
// alternative rate above kMaxAltRate is tested (past one host in two, the absolute floor rules).
constexpr double kRatioStep = 4.0;
constexpr double kMaxAltRate = 0.5;
constexpr std::size_t kMaxComponents = 16;  // min_ratio > 1, step 4: 16 covers any p0 >= 1e-9

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  std::array<char, 512> buf;
  va_list args;
  va_start(args, fmt);
  const int n = std::vsnprintf(buf.data(), buf.size(), fmt, args);
  va_end(args);
  if (n < 0) return {};
  return std::string(buf.data(),
                     std::min<std::size_t>(static_cast<std::size_t>(n), buf.size() - 1));
}

bool in_open(double x, double lo, double hi) { return x > lo && x < hi; }  // false for NaN

struct Sanitized {
  std::int64_t n;        // applied (>= failed)
  std::int64_t f;        // failed
  std::int64_t healthy;  // <= n - f
  std::int64_t control_hosts;
  std::int64_t control_failed;
  double elapsed_s;
};

Sanitized sanitize(const StageCounts& c) {
  Sanitized s;
  s.f = std::max<std::int64_t>(c.failed, 0);
  s.n = std::max(std::max<std::int64_t>(c.applied, 0), s.f);
  s.healthy = std::clamp<std::int64_t>(c.healthy, 0, s.n - s.f);
  s.control_hosts = std::max<std::int64_t>(c.control_hosts, 0);
  s.control_failed = std::clamp<std::int64_t>(c.control_failed, 0, s.control_hosts);
  s.elapsed_s = std::isfinite(c.elapsed_s) ? std::max(c.elapsed_s, 0.0) : 0.0;
  return s;
}

// Log of the equally weighted mixture of likelihood ratios over the ratio grid; 0 when the
// baseline is too high to test a rise against.
double mixture_llr(double p0, double min_ratio, std::int64_t n, std::int64_t f) {
  if (!(p0 < kMaxAltRate)) return 0.0;
  std::array<double, kMaxComponents> llr;
  std::size_t k = 0;
  const double fails = static_cast<double>(f);
  const double oks = static_cast<double>(n - f);
  for (double ratio = min_ratio; k < kMaxComponents; ratio *= kRatioStep) {
    const double p1 = std::min(p0 * ratio, kMaxAltRate);
    llr[k++] = fails * std::log(p1 / p0) + oks * std::log1p(-p1) - oks * std::log1p(-p0);
    if (p1 >= kMaxAltRate || p0 * ratio * kRatioStep > kMaxAltRate) break;
  }
  const double top = *std::max_element(llr.begin(), llr.begin() + static_cast<std::ptrdiff_t>(k));
  double sum = 0;
  for (std::size_t i = 0; i < k; ++i) sum += std::exp(llr[i] - top);
  return top + std::log(sum) - std::log(static_cast<double>(k));
}

}  // namespace

const char* to_string(Verdict v) noexcept {
  switch (v) {
    case Verdict::Waiting:
      return "waiting";
    case Verdict::Pass:
      return "pass";
    case Verdict::Fail:
      return "fail";
  }
  return "unknown";
}

std::string check_params(const GateParams& p) {
  if (!in_open(p.alpha, 0, 0.5)) return format("alpha must be in (0, 0.5), got %g", p.alpha);
  if (!in_open(p.beta, 0, 0.5)) return format("beta must be in (0, 0.5), got %g", p.beta);
  if (!(p.min_ratio > 1) || !std::isfinite(p.min_ratio)) {
    return format("min_ratio must be a finite number > 1, got %g", p.min_ratio);
  }
  if (!in_open(p.baseline_floor, 0, 0.5)) {
    return format("baseline_floor must be in (0, 0.5), got %g", p.baseline_floor);
  }
  if (!in_open(p.prior_rate, 0, 0.5)) {
    return format("prior_rate must be in (0, 0.5), got %g", p.prior_rate);
  }
  if (!in_open(p.baseline_ceiling, 0, 0.5)) {
    return format("baseline_ceiling must be in (0, 0.5), got %g", p.baseline_ceiling);
  }
  if (!(p.prior_hosts >= 0) || !std::isfinite(p.prior_hosts)) {
    return format("prior_hosts must be a finite number >= 0, got %g", p.prior_hosts);
  }
  if (!(p.max_failure_rate > 0 && p.max_failure_rate <= 1)) {
    return format("max_failure_rate must be in (0, 1], got %g", p.max_failure_rate);
  }
  if (p.min_hosts < 1) {
    return format("min_hosts must be >= 1, got %lld", static_cast<long long>(p.min_hosts));
  }
  if (p.bake_s < 0)
    return format("bake_s must be >= 0, got %lld", static_cast<long long>(p.bake_s));
  return {};
}

GateDecision evaluate(const GateParams& p, const StageCounts& counts) {
  GateDecision d;
  if (std::string problem = check_params(p); !problem.empty()) {
    d.verdict = Verdict::Fail;
    d.reason = "fail: invalid gate parameters: " + problem;
    return d;
  }
  const Sanitized c = sanitize(counts);

  d.upper = std::log((1 - p.beta) / p.alpha);
  d.lower = std::log(p.beta / (1 - p.alpha));
  const double control_estimate =
      (static_cast<double>(c.control_failed) + p.prior_hosts * p.prior_rate) /
      (static_cast<double>(c.control_hosts) + p.prior_hosts);
  // prior_hosts == 0 with no control hosts gives 0/0: fall back to the prior itself.
  const double estimate = std::isfinite(control_estimate) ? control_estimate : p.prior_rate;
  // A floor above the ceiling wins (a policy that raises the floor means it).
  const double ceiling = std::max(p.baseline_floor, p.baseline_ceiling);
  d.baseline_capped = estimate > ceiling;
  d.baseline = std::clamp(estimate, p.baseline_floor, ceiling);
  d.failure_rate = c.n > 0 ? static_cast<double>(c.f) / static_cast<double>(c.n) : 0.0;
  d.statistic = mixture_llr(d.baseline, p.min_ratio, c.n, c.f);

  const auto evidence = [&] {
    return format(
               "%lld of %lld applied hosts failed vs baseline %.2f%% from %lld of %lld control "
               "hosts",
               static_cast<long long>(c.f), static_cast<long long>(c.n), d.baseline * 100,
               static_cast<long long>(c.control_failed), static_cast<long long>(c.control_hosts)) +
           (d.baseline_capped ? std::string(", capped at baseline_ceiling") : std::string());
  };

  if (d.statistic >= d.upper) {
    d.verdict = Verdict::Fail;
    d.reason = format("fail: SPRT llr %.2f >= %.2f (", d.statistic, d.upper) + evidence() + ")";
    return d;
  }
  if (c.n >= p.min_hosts && d.failure_rate > p.max_failure_rate) {
    d.verdict = Verdict::Fail;
    d.reason = format(
        "fail: failure rate %.1f%% > max %.1f%% (%lld of %lld applied hosts failed, "
        "min_hosts %lld)",
        d.failure_rate * 100, p.max_failure_rate * 100, static_cast<long long>(c.f),
        static_cast<long long>(c.n), static_cast<long long>(p.min_hosts));
    return d;
  }
  const bool baked = c.elapsed_s >= static_cast<double>(p.bake_s);
  const bool enough = c.healthy >= p.min_hosts;
  const std::string progress =
      format("%.0f s of %lld s bake, %lld healthy hosts of %lld needed; llr %.2f < %.2f (",
             c.elapsed_s, static_cast<long long>(p.bake_s), static_cast<long long>(c.healthy),
             static_cast<long long>(p.min_hosts), d.statistic, d.upper) +
      evidence() + ")";
  d.verdict = baked && enough ? Verdict::Pass : Verdict::Waiting;
  d.reason = (baked && enough ? "pass: " : "waiting: ") + progress;
  return d;
}

}  // namespace ringfence::server::health
