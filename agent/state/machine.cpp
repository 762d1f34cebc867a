#include "agent/state/machine.hpp"

#include <string>

namespace ringfence::agent::state {
namespace {

struct Transition {
  State from;
  Event event;
  State to;
};

using S = State;
using E = Event;

// clang-format off
// The whole agent state machine. Restart rows say where a persisted state resumes after kill -9.
constexpr Transition kTable[] = {
  // from          event             to
  {S::Unenrolled,  E::Restart,         S::Unenrolled},
  {S::Unenrolled,  E::Enroll,          S::Enrolling},
  {S::Unenrolled,  E::RevertNeeded,    S::Reverting},
  {S::Enrolling,   E::Restart,         S::Unenrolled},   // the answer was lost: enroll again
  {S::Enrolling,   E::EnrollOk,        S::Idle},
  {S::Enrolling,   E::EnrollFailed,    S::Unenrolled},
  {S::Enrolling,   E::Unauthorized,    S::Unenrolled},
  {S::Enrolling,   E::RevertNeeded,    S::Reverting},
  {S::Idle,        E::Restart,         S::Idle},
  {S::Idle,        E::UpdateNeeded,    S::Downloading},
  {S::Idle,        E::Unauthorized,    S::Unenrolled},
  {S::Idle,        E::RevertNeeded,    S::Reverting},
  {S::Downloading, E::Restart,         S::Downloading},  // resume with Range
  {S::Downloading, E::UpdateNeeded,    S::Downloading},  // a newer desired state replaces the job
  {S::Downloading, E::DownloadOk,      S::Verifying},
  {S::Downloading, E::DownloadFailed,  S::Downloading},
  {S::Downloading, E::Refused,         S::Idle},
  {S::Downloading, E::Unauthorized,    S::Unenrolled},
  {S::Downloading, E::RevertNeeded,    S::Reverting},
  {S::Verifying,   E::Restart,         S::Verifying},    // verify the staged file again
  {S::Verifying,   E::Verified,        S::Activating},
  {S::Verifying,   E::Refused,         S::Idle},
  {S::Verifying,   E::RevertNeeded,    S::Reverting},
  {S::Activating,  E::Restart,         S::Activating},   // finish the idempotent swap
  {S::Activating,  E::Activated,       S::Idle},
  {S::Activating,  E::Refused,         S::Idle},
  {S::Reverting,   E::Restart,         S::Reverting},    // finish the idempotent revert
  {S::Reverting,   E::Reverted,        S::Idle},
};
// clang-format on

}  // namespace

std::string_view to_string(State s) noexcept {
  switch (s) {
    case S::Unenrolled:
      return "unenrolled";
    case S::Enrolling:
      return "enrolling";
    case S::Idle:
      return "idle";
    case S::Downloading:
      return "downloading";
    case S::Verifying:
      return "verifying";
    case S::Activating:
      return "activating";
    case S::Reverting:
      return "reverting";
  }
  return "unknown";
}

std::string_view to_string(Event e) noexcept {
  switch (e) {
    case E::Restart:
      return "restart";
    case E::Enroll:
      return "enroll";
    case E::EnrollOk:
      return "enroll_ok";
    case E::EnrollFailed:
      return "enroll_failed";
    case E::Unauthorized:
      return "unauthorized";
    case E::UpdateNeeded:
      return "update_needed";
    case E::DownloadOk:
      return "download_ok";
    case E::DownloadFailed:
      return "download_failed";
    case E::Verified:
      return "verified";
    case E::Refused:
      return "refused";
    case E::Activated:
      return "activated";
    case E::RevertNeeded:
      return "revert_needed";
    case E::Reverted:
      return "reverted";
  }
  return "unknown";
}

std::optional<State> state_from(std::string_view s) noexcept {
  for (State st : kAllStates) {
    if (to_string(st) == s) return st;
  }
  return std::nullopt;
}

Expected<State> next(State from, Event event) {
  for (const auto& t : kTable) {
    if (t.from == from && t.event == event) return t.to;
  }
  return fail(Errc::Conflict, "no transition from state '" + std::string(to_string(from)) +
                                  "' on event '" + std::string(to_string(event)) + "'");
}

}  // namespace ringfence::agent::state
