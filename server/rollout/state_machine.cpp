#include "server/rollout/state_machine.hpp"

#include <array>
#include <string>

namespace ringfence::server::rollout {
namespace {

enum class Kind { Move, Noop };
struct Row {
  State from;
  Event event;
  Kind kind;
  State to;
};

using S = State;
using E = Event;
constexpr Kind M = Kind::Move;
constexpr Kind N = Kind::Noop;

// Every legal transition. Anything not listed is a Conflict.
constexpr std::array kTable = {
    //  from                  event                 kind  to
    Row{S::Pending,           E::Start,             M,    S::Baking},
    Row{S::Pending,           E::StartGated,        M,    S::AwaitingApproval},
    Row{S::Pending,           E::Abort,             M,    S::Aborted},
    Row{S::Pending,           E::EmergencyHold,     N,    S::Pending},

    Row{S::Baking,            E::Start,             N,    S::Baking},
    Row{S::Baking,            E::StartGated,        N,    S::Baking},
    Row{S::Baking,            E::Pause,             M,    S::Paused},
    Row{S::Baking,            E::Resume,            N,    S::Baking},
    Row{S::Baking,            E::Approve,           N,    S::Baking},
    Row{S::Baking,            E::Skip,              M,    S::Baking},
    Row{S::Baking,            E::Abort,             M,    S::Aborted},
    Row{S::Baking,            E::NeedApproval,      M,    S::AwaitingApproval},
    Row{S::Baking,            E::Advance,           M,    S::Baking},
    Row{S::Baking,            E::AdvanceToApproval, M,    S::AwaitingApproval},
    Row{S::Baking,            E::Finish,            M,    S::Completed},
    Row{S::Baking,            E::GateFail,          M,    S::Halted},
    Row{S::Baking,            E::EmergencyHold,     N,    S::Baking},

    Row{S::AwaitingApproval,  E::Start,             N,    S::AwaitingApproval},
    Row{S::AwaitingApproval,  E::StartGated,        N,    S::AwaitingApproval},
    Row{S::AwaitingApproval,  E::Pause,             M,    S::Paused},
    Row{S::AwaitingApproval,  E::Resume,            N,    S::AwaitingApproval},
    Row{S::AwaitingApproval,  E::Approve,           M,    S::Baking},
    Row{S::AwaitingApproval,  E::Skip,              M,    S::AwaitingApproval},
    Row{S::AwaitingApproval,  E::Abort,             M,    S::Aborted},
    Row{S::AwaitingApproval,  E::NeedApproval,      N,    S::AwaitingApproval},
    Row{S::AwaitingApproval,  E::GateFail,          M,    S::Halted},
    Row{S::AwaitingApproval,  E::EmergencyHold,     N,    S::AwaitingApproval},

    Row{S::Paused,            E::Pause,             N,    S::Paused},
    Row{S::Paused,            E::Resume,            M,    S::Baking},
    Row{S::Paused,            E::Skip,              M,    S::Paused},
    Row{S::Paused,            E::Abort,             M,    S::Aborted},
    Row{S::Paused,            E::GateFail,          M,    S::Halted},
    Row{S::Paused,            E::EmergencyHold,     N,    S::Paused},

    Row{S::Halted,            E::Abort,             N,    S::Halted},
    Row{S::Halted,            E::GateFail,          N,    S::Halted},
    Row{S::Halted,            E::RollbackDone,      M,    S::RolledBack},

    Row{S::RolledBack,        E::Abort,             N,    S::RolledBack},
    Row{S::RolledBack,        E::GateFail,          N,    S::RolledBack},
    Row{S::RolledBack,        E::RollbackDone,      N,    S::RolledBack},

    Row{S::Aborted,           E::Abort,             N,    S::Aborted},
    Row{S::Aborted,           E::GateFail,          N,    S::Aborted},

    Row{S::Completed,         E::Finish,            N,    S::Completed},
};

}  // namespace

std::string_view to_string(State s) noexcept {
  switch (s) {
    case S::Pending: return "pending";
    case S::Baking: return "baking";
    case S::AwaitingApproval: return "awaiting_approval";
    case S::Paused: return "paused";
    case S::Halted: return "halted";
    case S::RolledBack: return "rolled_back";
    case S::Completed: return "completed";
    case S::Aborted: return "aborted";
  }
  return "pending";
}

std::string_view to_string(Event e) noexcept {
  switch (e) {
    case E::Start: return "start";
    case E::StartGated: return "start";
    case E::Pause: return "pause";
    case E::Resume: return "resume";
    case E::Approve: return "approve";
    case E::Skip: return "skip";
    case E::Abort: return "abort";
    case E::NeedApproval: return "need_approval";
    case E::Advance: return "advance";
    case E::AdvanceToApproval: return "advance";
    case E::Finish: return "finish";
    case E::GateFail: return "halt";
    case E::RollbackDone: return "rollback_done";
    case E::EmergencyHold: return "emergency_hold";
  }
  return "unknown";
}

std::optional<State> state_from(std::string_view s) noexcept {
  for (int i = 0; i < kStateCount; ++i) {
    auto st = static_cast<State>(i);
    if (to_string(st) == s) return st;
  }
  return std::nullopt;
}

std::string_view public_state(State s) noexcept {
  if (s == S::Baking || s == S::AwaitingApproval) return "running";
  return to_string(s);
}

bool is_terminal(State s) noexcept {
  return s == S::RolledBack || s == S::Completed || s == S::Aborted;
}

bool is_active(State s) noexcept { return !is_terminal(s); }

Expected<Outcome> apply(State from, Event event) {
  for (const auto& r : kTable) {
    if (r.from == from && r.event == event) return Outcome{r.to, r.kind == Kind::Move};
  }
  return fail(Errc::Conflict,
              "cannot " + std::string(to_string(event)) + " a rollout that is " +
                  std::string(public_state(from)) +
                  (from == S::Baking || from == S::AwaitingApproval
                       ? " (" + std::string(to_string(from)) + ")"
                       : std::string()),
              "invalid_state");
}

}  // namespace ringfence::server::rollout
