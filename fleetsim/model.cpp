#include "fleetsim/model.hpp"

#include <charconv>
#include <cstdio>

#include "proto/ids.hpp"

namespace ringfence::fleetsim {
namespace {
bool parse_double(std::string_view s, double& out) {
  if (s.empty() || s.size() > 32) return false;
  std::string copy(s);
  char* end = nullptr;
  out = std::strtod(copy.c_str(), &end);
  return end == copy.c_str() + copy.size() && out == out;  // rejects NaN
}
}  // namespace

Expected<std::pair<ModelKey, Model>> parse_model_spec(std::string_view spec) {
  auto bad = [&](const std::string& why) {
    return fail(
        Errc::InvalidArgument,
        "--model '" + std::string(spec.substr(0, 80)) + "': " + why +
            " (expected CHANNEL@VERSION=healthy|crash:P|silent:P|apply-fail:P|crash-rate:R)");
  };
  auto at = spec.find('@');
  auto eq = spec.find('=');
  if (at == std::string_view::npos || eq == std::string_view::npos || eq < at) {
    return bad("missing '@' or '='");
  }
  std::string channel(spec.substr(0, at));
  if (!proto::is_name(channel)) return bad("invalid channel name");
  std::uint64_t version = 0;
  if (!proto::parse_u64(spec.substr(at + 1, eq - at - 1), version) || version == 0) {
    return bad("the version must be a positive integer");
  }
  auto what = spec.substr(eq + 1);
  Model m;
  auto colon = what.find(':');
  auto kind = what.substr(0, colon);
  if (kind == "healthy") {
    if (colon != std::string_view::npos) return bad("healthy takes no value");
    m.kind = ModelKind::Healthy;
  } else {
    if (colon == std::string_view::npos) return bad("'" + std::string(kind) + "' needs a value");
    double v = 0;
    if (!parse_double(what.substr(colon + 1), v) || v < 0)
      return bad("the value must be a number >= 0");
    m.value = v;
    if (kind == "crash") {
      m.kind = ModelKind::Crash;
    } else if (kind == "silent") {
      m.kind = ModelKind::Silent;
    } else if (kind == "apply-fail") {
      m.kind = ModelKind::ApplyFail;
    } else if (kind == "crash-rate") {
      m.kind = ModelKind::CrashRate;
    } else {
      return bad("unknown model '" + std::string(kind) + "'");
    }
    if (m.kind != ModelKind::CrashRate && v > 1) return bad("a probability must be in [0, 1]");
  }
  return std::make_pair(ModelKey{channel, static_cast<std::int64_t>(version)}, m);
}

std::string to_string(const Model& m) {
  char buf[64];
  switch (m.kind) {
    case ModelKind::Healthy:
      return "healthy";
    case ModelKind::Crash:
      std::snprintf(buf, sizeof buf, "crash:%g", m.value);
      break;
    case ModelKind::Silent:
      std::snprintf(buf, sizeof buf, "silent:%g", m.value);
      break;
    case ModelKind::ApplyFail:
      std::snprintf(buf, sizeof buf, "apply-fail:%g", m.value);
      break;
    case ModelKind::CrashRate:
      std::snprintf(buf, sizeof buf, "crash-rate:%g", m.value);
      break;
  }
  return buf;
}

}  // namespace ringfence::fleetsim
