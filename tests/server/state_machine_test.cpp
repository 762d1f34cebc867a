// Every (state, event) pair of the rollout state machine against a table written here,
// independently of server/rollout/state_machine.cpp.
#include <gtest/gtest.h>

#include <map>
#include <utility>

#include "server/rollout/state_machine.hpp"

namespace ringfence::server::rollout {
namespace {

enum class K { Move, Noop, Conflict };
struct Expect {
  K kind;
  State to;
};

std::map<std::pair<State, Event>, Expect> expected() {
  using S = State;
  using E = Event;
  std::map<std::pair<State, Event>, Expect> t;
  auto move = [&](S s, E e, S to) { t[{s, e}] = {K::Move, to}; };
  auto noop = [&](S s, E e) { t[{s, e}] = {K::Noop, s}; };
  move(S::Pending, E::Start, S::Baking);
  move(S::Pending, E::StartGated, S::AwaitingApproval);
  move(S::Pending, E::Abort, S::Aborted);
  noop(S::Pending, E::EmergencyHold);
  for (auto e : {E::Start, E::StartGated, E::Resume, E::Approve, E::EmergencyHold}) noop(S::Baking, e);
  move(S::Baking, E::Pause, S::Paused);
  move(S::Baking, E::Skip, S::Baking);
  move(S::Baking, E::Abort, S::Aborted);
  move(S::Baking, E::NeedApproval, S::AwaitingApproval);
  move(S::Baking, E::Advance, S::Baking);
  move(S::Baking, E::AdvanceToApproval, S::AwaitingApproval);
  move(S::Baking, E::Finish, S::Completed);
  move(S::Baking, E::GateFail, S::Halted);
  for (auto e : {E::Start, E::StartGated, E::Resume, E::NeedApproval, E::EmergencyHold}) {
    noop(S::AwaitingApproval, e);
  }
  move(S::AwaitingApproval, E::Pause, S::Paused);
  move(S::AwaitingApproval, E::Approve, S::Baking);
  move(S::AwaitingApproval, E::Skip, S::AwaitingApproval);
  move(S::AwaitingApproval, E::Abort, S::Aborted);
  move(S::AwaitingApproval, E::GateFail, S::Halted);
  noop(S::Paused, E::Pause);
  noop(S::Paused, E::EmergencyHold);
  move(S::Paused, E::Resume, S::Baking);
  move(S::Paused, E::Skip, S::Paused);
  move(S::Paused, E::Abort, S::Aborted);
  move(S::Paused, E::GateFail, S::Halted);
  noop(S::Halted, E::Abort);
  noop(S::Halted, E::GateFail);
  move(S::Halted, E::RollbackDone, S::RolledBack);
  for (auto e : {E::Abort, E::GateFail, E::RollbackDone}) noop(S::RolledBack, e);
  for (auto e : {E::Abort, E::GateFail}) noop(S::Aborted, e);
  noop(S::Completed, E::Finish);
  return t;
}

TEST(StateMachine, EveryStateEventPairMatchesTheTable) {
  auto table = expected();
  int moves = 0, noops = 0, conflicts = 0;
  for (int si = 0; si < kStateCount; ++si) {
    for (int ei = 0; ei < kEventCount; ++ei) {
      auto s = static_cast<State>(si);
      auto e = static_cast<Event>(ei);
      auto it = table.find({s, e});
      Expect want = it == table.end() ? Expect{K::Conflict, s} : it->second;
      auto got = apply(s, e);
      SCOPED_TRACE(std::string(to_string(s)) + " x " + std::string(to_string(e)));
      if (want.kind == K::Conflict) {
        ASSERT_FALSE(got.has_value());
        EXPECT_EQ(got.error().errc, Errc::Conflict);
        // The message names the current state, as API.md asks of every 409.
        EXPECT_NE(got.error().message.find(std::string(public_state(s))), std::string::npos)
            << got.error().message;
        ++conflicts;
      } else {
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(got->next, want.to);
        EXPECT_EQ(got->changed, want.kind == K::Move);
        (want.kind == K::Move ? moves : noops)++;
      }
    }
  }
  EXPECT_EQ(moves + noops + conflicts, kStateCount * kEventCount);
  EXPECT_GT(conflicts, 40);  // most pairs are illegal: terminal states accept almost nothing
}

TEST(StateMachine, TerminalAndActiveStates) {
  for (auto s : {State::RolledBack, State::Completed, State::Aborted}) {
    EXPECT_TRUE(is_terminal(s));
    EXPECT_FALSE(is_active(s));
  }
  for (auto s : {State::Pending, State::Baking, State::AwaitingApproval, State::Paused, State::Halted}) {
    EXPECT_FALSE(is_terminal(s));
  }
  EXPECT_EQ(public_state(State::Baking), "running");
  EXPECT_EQ(public_state(State::AwaitingApproval), "running");
  for (int i = 0; i < kStateCount; ++i) {
    auto s = static_cast<State>(i);
    EXPECT_EQ(state_from(to_string(s)), s);
  }
  EXPECT_FALSE(state_from("nonsense").has_value());
}

}  // namespace
}  // namespace ringfence::server::rollout
