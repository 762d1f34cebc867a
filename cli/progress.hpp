#pragma once
// What `ringfence rollouts watch` draws, as pure functions of the server's JSON so they can be
// tested without a server or a terminal: per-stage progress bars (exposed / applied / healthy /
// failed / silent), the gate's verdict and statistic, and one-line event summaries.

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "cli/api.hpp"

namespace ringfence::cli {

struct RenderOptions {
  bool color = false;  // ANSI colours (TTY only)
  int columns = 100;   // terminal width: lines are cut to fit
  int bar_width = 24;
};

// A stage's hosts as a bar of `width` cells: healthy, applied (not yet healthy), failed, and
// exposed but not applied yet, each its own glyph (and colour).
std::string stage_bar(const nlohmann::json& stage, int width, bool color);

// The whole rollout as lines for a TTY redraw (header, two lines per stage).
std::vector<std::string> render_rollout(const nlohmann::json& rollout, const RenderOptions& o);

// One plain line per stage ("stage 0 canary 1% baking exposed=3 applied=3 healthy=2 failed=0
// silent=0 gate=waiting statistic=0.41/6.86 rate=0.0%"), for logs and pipes.
std::vector<std::string> stage_lines(const nlohmann::json& rollout);
// The header as a plain line: "rollout 3 detections v7: running (baking), stage 1 of 3".
std::string summary_line(const nlohmann::json& rollout);

// Why the rollout's current stage cannot progress ("blocked (waiting_for_budget): 3 live hosts
// wait for ..."), or "" when it can. Part of summary_line and render_rollout.
std::string blocked_text(const nlohmann::json& rollout);
// The current stage's pacing ("wave 24/300 (8 confirmed)"), or "" when not paced / not current.
std::string pacing_text(const nlohmann::json& stage);

// One line for an event: "10:15:03 #42 rollout_advance by gate: baking -> baking, stage 1 ...".
std::string event_line(const nlohmann::json& event);

// Whether a rollout in `state` has ended, and the exit code `watch` reports for it.
bool rollout_ended(const std::string& state);
Exit exit_for_state(const std::string& state);

// Cuts a line (which may hold ANSI colour codes and UTF-8) to `columns` visible characters.
std::string fit(const std::string& line, int columns);

}  // namespace ringfence::cli
