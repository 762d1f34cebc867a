#pragma once
// The agent's content pipeline as one state machine: every legal (state, event) pair is in the
// single table in machine.cpp; anything else is a Conflict error. The current state is persisted
// (state.json) *before* the side effects of entering it, so a kill -9 at any point resumes or
// rolls back on restart (the Restart event) and never half-applies content.
//
// Pure and thread-compatible: no I/O, no clock.

#include <array>
#include <optional>
#include <string_view>

#include "proto/error.hpp"

namespace ringfence::agent::state {

enum class State {
  Unenrolled,   // no host credential yet (or the server rejected it)
  Enrolling,    // an enroll request is in flight
  Idle,         // in sync; long-polling the desired state
  Downloading,  // fetching a job's blob into the staging dir (resumable)
  Verifying,    // size, sha256, signature, expiry, known-bad, downgrade, consumer --check
  Activating,   // swapping the verified blob into the content dir (idempotent on restart)
  Reverting,    // dropping the active version: restoring last-known-good (idempotent on restart)
};

enum class Event {
  Restart,         // the process started with this state persisted
  Enroll,          // start enrolling
  EnrollOk,        // credential received and stored
  EnrollFailed,    // network or server refused; retry after backoff
  Unauthorized,    // the server does not know our credential (401): enroll again
  UpdateNeeded,    // the desired state names content we do not run
  DownloadOk,      // the staged blob is complete
  DownloadFailed,  // transient failure; resume after backoff
  Verified,        // every check passed
  Refused,         // a check failed for good: apply_failed report, back to Idle
  Activated,       // the swap is done and persisted
  RevertNeeded,    // crash loop (K crashes within T, no healthy checkpoint) or active known-bad
  Reverted,        // last-known-good restored, version quarantined locally
};

inline constexpr std::array kAllStates = {State::Unenrolled,  State::Enrolling, State::Idle,
                                          State::Downloading, State::Verifying, State::Activating,
                                          State::Reverting};
inline constexpr std::array kAllEvents = {
    Event::Restart,      Event::Enroll,       Event::EnrollOk,   Event::EnrollFailed,
    Event::Unauthorized, Event::UpdateNeeded, Event::DownloadOk, Event::DownloadFailed,
    Event::Verified,     Event::Refused,      Event::Activated,  Event::RevertNeeded,
    Event::Reverted};

std::string_view to_string(State s) noexcept;
std::string_view to_string(Event e) noexcept;
// Parses a persisted state name; nullopt for anything unknown.
std::optional<State> state_from(std::string_view s) noexcept;

// The next state for (from, event), or Conflict naming both when the table has no such row.
Expected<State> next(State from, Event event);

}  // namespace ringfence::agent::state
