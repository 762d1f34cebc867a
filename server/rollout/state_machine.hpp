#pragma once
// The rollout state machine: every legal (state, event) pair in ONE table (state_machine.cpp).
// A pair missing from the table is illegal: apply() returns Conflict naming the current state.
// A pair marked Noop is legal and changes nothing (that is what makes actions idempotent).

#include <optional>
#include <string_view>

#include "proto/error.hpp"

namespace ringfence::server::rollout {

enum class State {
  Pending,           // created, not started
  Baking,            // running: current stage exposed, its gate being evaluated
  AwaitingApproval,  // running: current stage waits for an operator's approve
  Paused,            // operator: no new exposure; exposed hosts keep the release
  Halted,            // a gate failed: release quarantined, everyone being sent back to stable
  RolledBack,        // halt finished
  Completed,         // every stage passed; the release is stable
  Aborted,           // operator rollback
};
inline constexpr int kStateCount = 8;

enum class Event {
  Start,              // operator: begin stage 0 (auto approval)
  StartGated,         // operator: begin, stage 0 needs approval
  Pause,              // operator
  Resume,             // operator
  Approve,            // operator: the waiting stage may start
  Skip,               // operator: jump to a later stage (never past the canary's sample)
  Abort,              // operator: quarantine + send everyone back to stable
  NeedApproval,       // controller: the stage about to bake needs approval
  Advance,            // controller: gate passed, next stage starts
  AdvanceToApproval,  // controller: gate passed, next stage needs approval
  Finish,             // controller: gate passed on the last stage
  GateFail,           // controller: a gate failed
  RollbackDone,       // controller: halt's side effects are complete
  EmergencyHold,      // controller: emergency stop in force (a Noop where legal, no transition)
};
inline constexpr int kEventCount = 14;

std::string_view to_string(State s) noexcept;
std::string_view to_string(Event e) noexcept;
std::optional<State> state_from(std::string_view s) noexcept;

// The public name of a state in the API: Baking and AwaitingApproval are both "running".
std::string_view public_state(State s) noexcept;
bool is_terminal(State s) noexcept;
// States in which the rollout holds its channel (at most one per channel).
bool is_active(State s) noexcept;

struct Outcome {
  State next;
  bool changed;  // false for a Noop
};

// The transition for (from, event): the next state, or Conflict
// ("cannot <event> a rollout that is <state>").
Expected<Outcome> apply(State from, Event event);

}  // namespace ringfence::server::rollout
