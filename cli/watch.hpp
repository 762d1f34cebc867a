#pragma once
// `ringfence rollouts watch ID`: live per-stage progress from the event stream plus the rollout
// document, until the rollout ends. Redraws in place on a TTY, prints plain lines otherwise.

#include <chrono>
#include <cstdint>
#include <ostream>

#include "cli/api.hpp"

namespace ringfence::cli {

struct WatchOptions {
  bool tty = false;             // redraw in place (ANSI cursor movement) instead of appending lines
  bool color = false;           // ANSI colours
  int columns = 100;            // lines are cut to this width on a TTY
  std::size_t event_lines = 8;  // recent events shown under the stages on a TTY
  std::chrono::milliseconds poll{1000};  // re-read the rollout at least this often
  // Give up (exit 3) when the server has been unreachable this long.
  std::chrono::milliseconds unreachable_after{30000};
};

// Watches rollout `id` until it ends. Returns Exit::Ok for completed, Exit::RolloutFailed for
// halted / rolled_back / aborted; errors (unknown rollout, lost server) as CliError.
Result<Exit> watch_rollout(Api& api, std::int64_t id, const WatchOptions& o, std::ostream& out);

// `ringfence events list --follow`: prints events from the stream as they come (one JSON
// document per line when `as_json`), reconnecting with Last-Event-ID. Returns only on error.
Result<Exit> follow_events(Api& api, std::int64_t after, std::int64_t rollout, bool as_json,
                           std::ostream& out);

}  // namespace ringfence::cli
