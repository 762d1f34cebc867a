#pragma once
// Crash models: how a simulated host reacts to a content version (API.md, fleetsim --model).
//
//   CHANNEL@VERSION=healthy          applies and keeps running
//   CHANNEL@VERSION=crash:P          with probability P crashes shortly after applying: reboots
//                                    (new boot id) and sends a crash report
//   CHANNEL@VERSION=silent:P         with probability P boot-loops silently after acknowledging
//                                    the apply: stops talking for good (the incident)
//   CHANNEL@VERSION=apply-fail:P     with probability P reports apply_failed, stays on the old
//                                    version
//   CHANNEL@VERSION=crash-rate:R     (extension) crashes R times per host per hour while running
//                                    this version, on top of --background-crash-rate
//
// Pure functions; thread-safe.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "proto/error.hpp"

namespace ringfence::fleetsim {

enum class ModelKind { Healthy, Crash, Silent, ApplyFail, CrashRate };

struct Model {
  ModelKind kind = ModelKind::Healthy;
  double value = 0;  // a probability in [0, 1], or for CrashRate crashes per host per hour
};

using ModelKey = std::pair<std::string, std::int64_t>;  // channel, version
using ModelTable = std::map<ModelKey, Model>;

// Parses one --model argument. InvalidArgument with a sentence naming the problem.
Expected<std::pair<ModelKey, Model>> parse_model_spec(std::string_view spec);

// "healthy", "crash:0.5", ...
std::string to_string(const Model& m);

}  // namespace ringfence::fleetsim
