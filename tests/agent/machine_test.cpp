// The agent state machine: every (state, event) pair against an independently written
// expectation, and a restart of a real Agent from every persisted state.
#include "agent/state/machine.hpp"

#include <gtest/gtest.h>

#include <map>
#include <ostream>
#include <set>

#include "tests/agent/fakes.hpp"

namespace ringfence::agent::state {
// Names, not bytes, in test listings ("GetParam() = (idle, enroll)").
void PrintTo(State s, std::ostream* os) { *os << to_string(s); }
void PrintTo(Event e, std::ostream* os) { *os << to_string(e); }
}  // namespace ringfence::agent::state

namespace ringfence::agent::testing {
namespace {
using state::Event;
using state::State;

const std::map<std::pair<State, Event>, State>& expected() {
  using S = State;
  using E = Event;
  static const std::map<std::pair<State, Event>, State> m = {
      {{S::Unenrolled, E::Restart}, S::Unenrolled},
      {{S::Unenrolled, E::Enroll}, S::Enrolling},
      {{S::Unenrolled, E::RevertNeeded}, S::Reverting},
      {{S::Enrolling, E::Restart}, S::Unenrolled},
      {{S::Enrolling, E::EnrollOk}, S::Idle},
      {{S::Enrolling, E::EnrollFailed}, S::Unenrolled},
      {{S::Enrolling, E::Unauthorized}, S::Unenrolled},
      {{S::Enrolling, E::RevertNeeded}, S::Reverting},
      {{S::Idle, E::Restart}, S::Idle},
      {{S::Idle, E::UpdateNeeded}, S::Downloading},
      {{S::Idle, E::Unauthorized}, S::Unenrolled},
      {{S::Idle, E::RevertNeeded}, S::Reverting},
      {{S::Downloading, E::Restart}, S::Downloading},
      {{S::Downloading, E::UpdateNeeded}, S::Downloading},
      {{S::Downloading, E::DownloadOk}, S::Verifying},
      {{S::Downloading, E::DownloadFailed}, S::Downloading},
      {{S::Downloading, E::Refused}, S::Idle},
      {{S::Downloading, E::Unauthorized}, S::Unenrolled},
      {{S::Downloading, E::RevertNeeded}, S::Reverting},
      {{S::Verifying, E::Restart}, S::Verifying},
      {{S::Verifying, E::Verified}, S::Activating},
      {{S::Verifying, E::Refused}, S::Idle},
      {{S::Verifying, E::RevertNeeded}, S::Reverting},
      {{S::Activating, E::Restart}, S::Activating},
      {{S::Activating, E::Activated}, S::Idle},
      {{S::Activating, E::Refused}, S::Idle},
      {{S::Reverting, E::Restart}, S::Reverting},
      {{S::Reverting, E::Reverted}, S::Idle},
  };
  return m;
}

class EveryPair : public ::testing::TestWithParam<std::pair<State, Event>> {};

TEST_P(EveryPair, MatchesTheTableOrIsAConflict) {
  auto [from, event] = GetParam();
  auto got = state::next(from, event);
  auto it = expected().find({from, event});
  if (it == expected().end()) {
    ASSERT_FALSE(got) << to_string(from) << " x " << to_string(event) << " should be illegal";
    EXPECT_EQ(got.error().errc, Errc::Conflict);
    EXPECT_NE(got.error().message.find(std::string(to_string(from))), std::string::npos);
    EXPECT_NE(got.error().message.find(std::string(to_string(event))), std::string::npos);
  } else {
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ(*got, it->second) << to_string(from) << " x " << to_string(event);
  }
}

std::vector<std::pair<State, Event>> all_pairs() {
  std::vector<std::pair<State, Event>> out;
  for (State s : state::kAllStates) {
    for (Event e : state::kAllEvents) out.emplace_back(s, e);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Machine, EveryPair, ::testing::ValuesIn(all_pairs()), [](const auto& p) {
  return std::string(to_string(p.param.first)) + "_" + std::string(to_string(p.param.second));
});

TEST(Machine, NamesRoundTripAndAreUnique) {
  std::set<std::string_view> names;
  for (State s : state::kAllStates) {
    EXPECT_EQ(state::state_from(to_string(s)), s);
    EXPECT_TRUE(names.insert(to_string(s)).second);
  }
  std::set<std::string_view> events;
  for (Event e : state::kAllEvents) EXPECT_TRUE(events.insert(to_string(e)).second);
  EXPECT_FALSE(state::state_from("bogus"));
}

TEST(Machine, EveryStateHasARestartRow) {
  for (State s : state::kAllStates) EXPECT_TRUE(state::next(s, Event::Restart)) << to_string(s);
}

// ---- restart of a real Agent from every persisted state (a kill -9 there) ----

class RestartIn : public ::testing::TestWithParam<State> {};

TEST_P(RestartIn, ResumesOrRollsBackAndNeverHalfApplies) {
  Harness h;
  State where = GetParam();
  auto v1 = h.release("rules", 1, "rules version one");
  auto v2 = h.release("rules", 2, "rules version two, longer");
  if (where == State::Unenrolled) {
    h.boot();
    h.restart();
    EXPECT_EQ(h.agent->machine_state(), State::Enrolling);
    ASSERT_EQ(h.api.enrolls.size(), 1u);
    return;
  }
  if (where == State::Enrolling) {
    h.boot();  // enroll request in flight, state Enrolling persisted
    auto host = h.api.enrolls[0].req.host_id;
    h.restart();
    EXPECT_EQ(h.agent->machine_state(), State::Enrolling);
    ASSERT_EQ(h.api.enrolls.size(), 1u);
    EXPECT_EQ(h.api.enrolls[0].req.host_id, host) << "re-enrolls with the same host id";
    return;
  }
  h.boot_enrolled();
  h.apply(v1);
  ASSERT_EQ(h.current("rules"), "rules version one");
  switch (where) {
    case State::Idle:
      h.restart();
      EXPECT_EQ(h.agent->machine_state(), State::Idle);
      EXPECT_EQ(h.api.desireds.size(), 1u);
      EXPECT_EQ(h.current("rules"), "rules version one");
      break;
    case State::Downloading: {
      h.deliver(h.desired({v2}));
      h.api.serve_download(5);  // partial write, the callback reports a short file
      h.restart();
      EXPECT_EQ(h.agent->machine_state(), State::Downloading);
      ASSERT_EQ(h.api.downloads.size(), 1u);
      EXPECT_GT(h.api.downloads[0].offset, 0) << "resumes, not restarts";
      h.api.serve_download();
      EXPECT_EQ(h.current("rules"), "rules version two, longer");
      break;
    }
    case State::Verifying: {
      Harness hc(true);
      hc.boot_enrolled();
      auto c1 = hc.release("rules", 1, "one");
      hc.deliver(hc.desired({c1}));
      hc.api.serve_download();
      ASSERT_EQ(hc.agent->machine_state(), State::Verifying);
      hc.restart();
      EXPECT_EQ(hc.agent->machine_state(), State::Verifying);
      ASSERT_EQ(hc.consumer.checks.size(), 1u) << "checks again after the restart";
      hc.consumer.answer_check({});
      EXPECT_EQ(hc.agent->machine_state(), State::Idle);
      EXPECT_EQ(hc.current("rules"), "one");
      break;
    }
    case State::Activating: {
      h.restart("swap_after_install");
      h.deliver(h.desired({v2}));
      EXPECT_THROW(h.api.serve_download(), Killed);
      EXPECT_EQ(h.current("rules"), "rules version one") << "old content until the flip";
      h.restart();
      EXPECT_EQ(h.agent->machine_state(), State::Idle);
      EXPECT_EQ(h.current("rules"), "rules version two, longer");
      EXPECT_EQ(h.agent->persisted().channels.at("rules").lkg, 1);
      EXPECT_EQ(h.spooled(proto::ReportKind::Applied).size(), 2u);
      break;
    }
    case State::Reverting: {
      h.restart("revert_after_flip");
      h.apply(v2);
      ASSERT_EQ(h.current("rules"), "rules version two, longer");
      // The server puts v2 on the known-bad list: the agent drops it, killed mid-revert.
      EXPECT_THROW(h.deliver(h.desired({}, {{"rules", 2}})), Killed);
      h.restart();
      EXPECT_EQ(h.agent->machine_state(), State::Idle);
      EXPECT_EQ(h.current("rules"), "rules version one");
      EXPECT_EQ(h.spooled(proto::ReportKind::LocalRollback).size(), 1u);
      break;
    }
    default:
      FAIL();
  }
}

INSTANTIATE_TEST_SUITE_P(Machine, RestartIn, ::testing::ValuesIn(state::kAllStates),
                         [](const auto& p) { return std::string(to_string(p.param)); });

}  // namespace
}  // namespace ringfence::agent::testing
