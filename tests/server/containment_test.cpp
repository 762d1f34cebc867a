// Containment without gaps (issue 14), through Service with a fake clock: no host gets a release
// outside a gate and the budget (the implicit final stage), the budget and the restart grace
// across a restart, pacing inside a stage (slow start, sticky waves), and a stage that cannot
// progress says why.
#include <gtest/gtest.h>

#include <set>

#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;
using Containment = Harness;

bool has_event(const json& evs, const std::string& kind) {
  for (const auto& e : evs) {
    if (e["kind"] == kind) return true;
  }
  return false;
}

// The plan: one small stage and a budget. Completion used to hand the release to every
// host at once (stable), outside any gate and the budget.
TEST_F(Containment, APlanOfOneSmallStageNeverOffersTheReleaseOutsideAGateOrTheBudget) {
  Options opt;
  opt.budget_per_hour = 10;
  const int n = 40;
  fleet(0, n, opt);
  auto id =
      rollout(json::array({{{"ring", "rest"}, {"percent", 10}, {"bake_s", 12}, {"min_hosts", 1}}}));
  auto r = get(id);
  ASSERT_EQ(r["stages"].size(), 2u) << "an implicit final stage over the whole fleet";
  EXPECT_EQ(r["stages"][1]["ring"], "*");
  EXPECT_EQ(r["stages"][1]["percent"], 100);
  EXPECT_EQ(r["stages"][1]["implicit"], true);
  ASSERT_TRUE(act(id, "start"));
  std::vector<bool> on(n, false);
  std::int64_t max_per_hour = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> firsts;  // (ms first offered, host)
  for (int step = 0; step < 6 * 900 && get(id)["state"] != "completed"; ++step) {
    advance_s(4);
    bool all = step % 15 == 0;  // every host polls each minute; hosts on the release heartbeat
    for (int h = 0; h < n; ++h) {
      if (!all && !on[h]) continue;
      auto v = offered(h);
      if (v == version_ && !on[h]) {
        on[h] = true;
        firsts.emplace_back(clock_.now_ms(), h);
      }
      heartbeat(h, v);
    }
    if (all) {
      auto now = get(id);
      int offered_now = static_cast<int>(std::count(on.begin(), on.end(), true));
      if (now["state"] != "completed") {
        // Every host on the release is an exposure of a gated stage.
        EXPECT_LE(offered_now, now["exposed"].get<int>()) << now.dump();
      }
    }
  }
  ASSERT_EQ(get(id)["state"], "completed") << get(id).dump();
  EXPECT_EQ(std::count(on.begin(), on.end(), true), n);
  EXPECT_EQ(get(id)["exposed"], n) << "every host came in through a stage";
  // No hour saw more than the budget of first offers.
  for (std::size_t a = 0; a < firsts.size(); ++a) {
    std::int64_t in_hour = 0;
    for (std::size_t b = a; b < firsts.size() && firsts[b].first < firsts[a].first + 3600'000; ++b)
      ++in_hour;
    max_per_hour = std::max(max_per_hour, in_hour);
  }
  EXPECT_LE(max_per_hour, 10);
}

// Found by crash.sigkill_consistency: the implicit final stage started for a host that was live
// and not yet offered the release; that host went away, and the stage then waited forever
// ("no live host ... is covered by this stage") - the rollout never completed.
TEST_F(Containment, AnImplicitStageWhoseHostsWentAwayCompletes) {
  fleet(0, 10);
  auto id =
      rollout(json::array({{{"ring", "rest"}, {"percent", 50}, {"bake_s", 8}, {"min_hosts", 1}}}));
  ASSERT_TRUE(act(id, "start"));
  // Every host polls and heartbeats until the first stage passes; the hosts it did not cover
  // then go quiet (powered off) before the final stage has offered them anything.
  std::vector<std::int64_t> on(10, 0);
  for (int step = 0; step < 100 && get(id)["state"] == "running"; ++step) {
    advance_s(4);
    if (get(id)["stage"] != 0) break;  // the final stage started: nobody polls it
    for (int h = 0; h < 10 && get(id)["stage"] == 0; ++h) {
      on[static_cast<std::size_t>(h)] = offered(h);
      heartbeat(h, on[static_cast<std::size_t>(h)]);
    }
  }
  ASSERT_EQ(get(id)["stage"], 1) << get(id).dump();
  std::vector<int> rest;  // the hosts on the release stay; the others are never heard from again
  for (int h = 0; h < 10; ++h) {
    if (on[static_cast<std::size_t>(h)] == version_) rest.push_back(h);
  }
  ASSERT_LT(rest.size(), 10u) << get(id).dump();
  for (int step = 0; step < 60 && get(id)["state"] == "running"; ++step) {
    advance_s(4);
    for (int h : rest) heartbeat(h, version_);
  }
  EXPECT_EQ(get(id)["state"], "completed") << get(id).dump();
  EXPECT_EQ(get(id)["stages"][1]["exposed"], 0) << get(id).dump();
}

// Found by crash.sigkill_consistency: after a restart the implicit stage was read back as an
// ordinary stage (its flag was stored, never read), kept min_hosts 3 with nobody new to sample,
// and the rollout waited forever.
TEST_F(Containment, TheImplicitStageIsStillImplicitAfterARestart) {
  fleet(0, 10);
  auto id =
      rollout(json::array({{{"ring", "rest"}, {"percent", 50}, {"bake_s", 8}, {"min_hosts", 1}}}));
  ASSERT_EQ(get(id)["stages"][1]["implicit"], true);
  ASSERT_TRUE(act(id, "start"));
  open();
  EXPECT_EQ(get(id)["stages"][1]["implicit"], true) << get(id).dump();
  EXPECT_EQ(get(id)["stages"][0]["implicit"], false);
}

// An agent restart is shown, never counted; and what one host says cannot flood the audit trail:
// every agent_restart report used to write an event per rollout (600 a minute per host at the
// report rate limit, and again for every resend).
TEST_F(Containment, AgentRestartsAreShownNotCountedAndBoundedPerExposure) {
  fleet(3, 3);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  ASSERT_EQ(offered(0), version_);
  heartbeat(0, version_);
  auto restarted = [&] {
    int n = 0;
    for (const auto& e : events(id)) n += e["kind"] == "agent_restarted";
    return n;
  };
  for (int k = 0; k < 50; ++k) {
    proto::Report r{
        proto::ReportKind::AgentRestart, clock_.now_ms() + k, "det", version_, "b1", "{}"};
    ASSERT_TRUE(service_->reports(hosts_[0], {r}));
  }
  EXPECT_GE(restarted(), 1);
  EXPECT_LE(restarted(), 3) << "one host's reports flooded the events";
  EXPECT_EQ(get(id)["stages"][0]["failed"], 0);
  EXPECT_EQ(get(id)["state"], "running");
}

TEST_F(Containment, APlanThatCoversEveryRingGetsNoImplicitStage) {
  fleet(3, 3);
  auto stages_of = [&](json stages) {
    auto p = service_->preview({{"channel", "det"}, {"stages", stages}});
    EXPECT_TRUE(p) << p.error().message;
    return p ? (*p)["stages"].size() : 0u;
  };
  EXPECT_EQ(stages_of(two_stages()), 2u);
  EXPECT_EQ(stages_of(json::array({{{"ring", "canary"}, {"percent", 50}},
                                   {{"ring", "*"}, {"percent", 100}, {"bake_s", 60}}})),
            2u);
  EXPECT_EQ(stages_of(json::array({{{"ring", "canary"}}, {{"ring", "rest"}, {"percent", 50}}})),
            3u);
}

TEST_F(Containment, PacingParametersAreChecked) {
  fleet(3, 3);
  for (json bad : {json{{"initial", 0}}, json{{"growth", 0.5}}, json{{"speed", 1}}, json(3)}) {
    auto r = service_->create_rollout(
        admin_, {{"channel", "det"},
                 {"version", version_},
                 {"stages", json::array({{{"ring", "*"}, {"pacing", bad}}})}});
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().errc, Errc::InvalidArgument);
  }
  auto id = rollout(json::array({{{"ring", "*"}, {"pacing", {{"initial", 3}, {"growth", 4}}}}}));
  EXPECT_EQ(get(id)["stages"][0]["pacing"]["initial"], 3);
  EXPECT_EQ(get(id)["stages"][0]["pacing"]["growth"], 4);
}

TEST_F(Containment, TheBudgetSurvivesARestart) {
  Options opt;
  opt.budget_per_hour = 2;
  fleet(5, 0, opt);
  auto id = rollout(two_stages());
  ASSERT_TRUE(act(id, "start"));
  int got = 0;
  for (int h = 0; h < 5; ++h) got += offered(h) == version_ ? 1 : 0;
  ASSERT_EQ(got, 2);
  service_->flush();
  open(opt);  // a restart within the hour
  EXPECT_EQ(get(id)["budget"]["used_last_hour"], 2) << get(id).dump();
  got = 0;
  for (int h = 0; h < 5; ++h) got += offered(h) == version_ ? 1 : 0;
  EXPECT_EQ(got, 2) << "a restart handed out a fresh hour of budget";
  clock_.advance_ms(3601 * 1000LL);
  got = 0;
  for (int h = 0; h < 5; ++h) got += offered(h) == version_ ? 1 : 0;
  EXPECT_EQ(got, 4);
}

// A silent killer running when the server restarts: once the fleet is back, silence counts again
// at once (not after the full restart grace of 60 s).
TEST_F(Containment, ASilentKillerIsHaltedWithinThreeIntervalsOfTheFleetsReturnAfterARestart) {
  const int canary = 3, rest = 97;
  fleet(canary, rest);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < canary + rest; ++h) heartbeat(h, offered(h));  // the canary applies ...
  advance_s(2);                                                      // ... and dies without a word
  for (int h = canary; h < canary + rest; ++h) heartbeat(h, 0);
  service_->flush();
  clock_.advance_ms(10'000);  // the server is down for 10 s
  open();
  ASSERT_EQ(get(id)["state"], "running");
  advance_s(3);  // the agents' backoff; then the living hosts are back
  auto back_ms = clock_.now_ms();
  for (int h = canary; h < canary + rest; ++h) heartbeat(h, 0);
  EXPECT_TRUE(has_event(events(), "restart_grace_over"));
  int waited = 0;
  for (; waited < 90 && get(id)["state"] == "running"; ++waited) {
    advance_s(1);
    if (waited % 5 == 4)
      for (int h = canary; h < canary + rest; ++h) heartbeat(h, 0);
  }
  auto r = get(id);
  ASSERT_EQ(r["state"], "rolled_back") << r.dump();
  auto halted_after_s = (r["halted"].get<std::int64_t>() - back_ms) / 1000.0;
  EXPECT_LE(halted_after_s, 3 * options_.exposed_heartbeat_s + 1) << r.dump();
}

// Pacing: a release that kills every host it reaches is halted having reached the first wave only,
// however large the stage.
class Pacing : public Harness {
 protected:
  // 300 hosts in one stage; every host polls and heartbeats every 4 s; a host that takes the
  // release dies at once (silent) or crash-reports it (crashing). Returns how many applied it.
  int lethal(bool crashing, std::int64_t* id_out = nullptr) {
    const int n = 300;
    fleet(0, n);
    for (int h = 0; h < n; ++h) heartbeat(h, 0);
    auto id = rollout(json::array({{{"ring", "rest"}, {"bake_s", 600}, {"min_hosts", 10}}}));
    if (id_out) *id_out = id;
    EXPECT_TRUE(act(id, "start"));
    std::vector<bool> dead(n, false);
    int applied = 0;
    for (int step = 0; step < 60 && get(id)["state"] == "running"; ++step) {
      for (int h = 0; h < n; ++h) {
        if (dead[h]) continue;
        if (offered(h) == version_) {
          heartbeat(h, version_);
          ++applied;
          dead[h] = true;
          if (crashing) crash(h, version_);
        } else {
          heartbeat(h, 0);
        }
      }
      advance_s(4);
    }
    EXPECT_EQ(get(id)["state"], "rolled_back") << get(id).dump();
    return applied;
  }
};

TEST_F(Pacing, ALethalSilentReleaseIsHaltedWithinTheFirstWave) {
  int applied = lethal(false);
  EXPECT_LE(applied, 25);
  EXPECT_LE(applied, 8) << "the default first wave";
}

TEST_F(Pacing, ALethalCrashingReleaseIsHaltedWithinTheFirstWave) { EXPECT_LE(lethal(true), 8); }

TEST_F(Pacing, WavesGrowWithConfirmedHostsAreStickyAndTheStageWaitsForAllOfThem) {
  const int n = 120;
  fleet(0, n);
  for (int h = 0; h < n; ++h) heartbeat(h, 0);
  auto stage = json::array({{{"ring", "rest"}, {"bake_s", 12}, {"min_hosts", 1}}});
  auto id = rollout(stage);
  ASSERT_TRUE(act(id, "start"));
  std::set<int> first;
  for (int h = n - 1; h >= 0; --h) {  // polled in reverse order
    if (offered(h) == version_) first.insert(h);
  }
  ASSERT_EQ(first.size(), 8u) << get(id).dump();
  EXPECT_EQ(get(id)["stages"][0]["pacing"]["window"], 8);
  // Another release, polled in order: the same hosts come first.
  ASSERT_TRUE(act(id, "abort", {{"reason", "test"}}));
  version_ = release("{\"rules\":[2]}");
  auto again = rollout(stage);
  ASSERT_TRUE(act(again, "start"));
  std::set<int> second;
  for (int h = 0; h < n; ++h) {
    if (offered(h) == version_) second.insert(h);
  }
  EXPECT_EQ(first, second);
  // Healthy hosts confirm a heartbeat interval after applying: each lets two more in.
  std::vector<int> exposed_by_step;
  for (int step = 0; step < 40 && get(again)["state"] == "running"; ++step) {
    for (int h = 0; h < n; ++h) heartbeat(h, offered(h));
    exposed_by_step.push_back(get(again)["stages"][0]["exposed"].get<int>());
    advance_s(4);
  }
  ASSERT_GE(exposed_by_step.size(), 3u);
  EXPECT_EQ(exposed_by_step[0], 8);
  EXPECT_GT(exposed_by_step[2], 8);
  EXPECT_EQ(get(again)["state"], "completed") << get(again).dump();
  // It passed only once every live host had been offered it (bake 12 s was over long before).
  EXPECT_EQ(exposed_by_step.back(), n);
}

TEST_F(Containment, AStageWithNoLiveHostSaysWhy) {
  fleet(2, 5);
  auto id = rollout(two_stages(12, 1));
  ASSERT_TRUE(act(id, "start"));
  clock_.advance_ms(600'000);  // the canary's hosts went away long ago
  for (int h = 2; h < 7; ++h) heartbeat(h, 0);
  advance_s(2);
  auto r = get(id);
  ASSERT_FALSE(r["blocked"].is_null()) << r.dump();
  EXPECT_EQ(r["blocked"]["code"], "no_live_hosts");
  EXPECT_NE(r["blocked"]["message"].get<std::string>().find("ring 'canary'"), std::string::npos);
  EXPECT_EQ(r["stages"][0]["blocked"]["code"], "no_live_hosts");
  EXPECT_TRUE(has_event(events(id), "stage_blocked"));
  // They come back: unblocked.
  for (int i = 0; i < 2; ++i) heartbeat(i, offered(i));
  advance_s(2);
  EXPECT_TRUE(get(id)["blocked"].is_null()) << get(id).dump();
  EXPECT_TRUE(has_event(events(id), "stage_unblocked"));
}

TEST_F(Containment, AStageWaitingForTheBudgetSaysWhy) {
  Options opt;
  opt.budget_per_hour = 2;
  fleet(5, 0, opt);
  auto id = rollout(two_stages(12, 1));
  ASSERT_TRUE(act(id, "start"));
  for (int step = 0; step < 10; ++step) {
    for (int h = 0; h < 5; ++h) heartbeat(h, offered(h));
    advance_s(4);
  }
  auto r = get(id);
  EXPECT_EQ(r["state"], "running") << "passed while hosts waited for the budget: " << r.dump();
  ASSERT_FALSE(r["blocked"].is_null()) << r.dump();
  EXPECT_EQ(r["blocked"]["code"], "waiting_for_budget");
  EXPECT_EQ(r["not_offered_live_hosts"], 3);
}

// Noticed last session: a host that heartbeats but never asks for its desired state (a broken
// agent, or a hostile enrolled one) is live and can never be offered the release, so the stage,
// which passes only once every live host it covers was offered it, waited for it forever. Now a
// live host not heard polling for the poll bound (silence_intervals x the longest poll interval)
// is reported as not taking updates and no longer waited for; before the bound it is.
TEST_F(Containment, AHostThatHeartbeatsButNeverPollsIsReportedAndDoesNotHoldTheStageOpen) {
  fleet(3, 3);
  auto id = rollout(two_stages(12, 1));
  ASSERT_TRUE(act(id, "start"));
  // Host 0 heartbeats on the old version and never polls; the others poll and run what they get.
  auto step = [&] {
    advance_s(4);
    heartbeat(0, 0);
    for (int h = 1; h < 6; ++h) heartbeat(h, offered(h));
  };
  for (int t = 0; t < 60; t += 4) step();  // past the 12 s bake, within one poll interval
  auto r = get(id);
  ASSERT_EQ(r["stage"], 0) << "a host may be between two polls: the stage waits for it";
  EXPECT_EQ(r["not_offered_live_hosts"], 1) << r.dump();
  EXPECT_FALSE(has_event(events(id), "hosts_not_taking_updates"));
  for (int t = 0; t < 400 && get(id)["stage"] == 0; t += 4) step();
  r = get(id);
  EXPECT_EQ(r["stages"][0]["state"], "passed") << r.dump();
  EXPECT_EQ(r["stages"][0]["exposed"], 2) << "host 0 was never offered it";
  json ev;
  for (const auto& e : events(id)) {
    if (e["kind"] == "hosts_not_taking_updates" && e["data"]["stage"] == 0) ev = e;
  }
  ASSERT_FALSE(ev.is_null()) << events(id).dump();
  EXPECT_EQ(ev["data"]["stage"], 0);
  EXPECT_EQ(ev["data"]["hosts"], 1);
  EXPECT_EQ(ev["data"]["host_ids"], json::array({test_uuid(0)})) << ev.dump();
  // It is never handed the release by its stage; it gets what it is offered when it polls.
  for (int t = 0; t < 200 && get(id)["state"] != "completed"; t += 4) step();
  EXPECT_EQ(get(id)["state"], "completed") << get(id).dump();
}

// The same host ranked first by pacing: a wave of one whose only place is taken by a host that
// never polls would never be offered to anybody, no host would ever confirm, and the wave would
// never grow. A host not taking updates gives its place in the pacing order up.
TEST_F(Containment, AHostThatNeverPollsDoesNotTakeAPlaceInTheFirstWave) {
  fleet(4, 2);
  json stages = json::array({{{"ring", "canary"},
                              {"bake_s", 12},
                              {"min_hosts", 1},
                              {"pacing", {{"initial", 1}, {"growth", 1}}}},
                             {{"ring", "rest"}, {"bake_s", 12}, {"min_hosts", 1}}});
  // Which canary host the sticky order puts first: the one a first rollout offers its wave to.
  auto probe = rollout(stages);
  ASSERT_TRUE(act(probe, "start"));
  int first = -1;
  for (int h = 0; h < 4; ++h) {
    if (offered(h) == version_) first = h;
  }
  ASSERT_GE(first, 0);
  ASSERT_TRUE(act(probe, "abort", {{"reason", "probe"}}));
  version_ = release("{\"rules\":[2]}");
  // That host stops polling (it still heartbeats) for longer than the poll bound.
  auto step = [&] {
    advance_s(4);
    for (int h = 0; h < 6; ++h) {
      if (h == first) {
        heartbeat(h, 1);
      } else {
        heartbeat(h, offered(h) == version_ ? version_ : 1);
      }
    }
  };
  for (int t = 0; t < 200; t += 4) step();
  auto id = rollout(stages);
  ASSERT_TRUE(act(id, "start"));
  for (int t = 0; t < 300 && get(id)["stage"] == 0; t += 4) step();
  auto r = get(id);
  EXPECT_EQ(r["stages"][0]["state"], "passed") << r.dump();
  EXPECT_EQ(r["stages"][0]["exposed"], 3) << r.dump();
}

TEST_F(Containment, AStageWithTooFewLiveHostsForItsSampleSaysWhy) {
  fleet(2, 3);
  auto id = rollout(two_stages(12, 3));  // min_hosts 3, the canary has 2
  ASSERT_TRUE(act(id, "start"));
  for (int step = 0; step < 5; ++step) {
    for (int h = 0; h < 5; ++h) heartbeat(h, offered(h));
    advance_s(4);
  }
  auto r = get(id);
  ASSERT_FALSE(r["blocked"].is_null()) << r.dump();
  EXPECT_EQ(r["blocked"]["code"], "not_enough_hosts");
}

}  // namespace
}  // namespace ringfence::server::core

namespace ringfence::server::core {
namespace {
using Containment2 = Harness;

// The implicit final stage covers hosts earlier stages exposed too: its first wave is hosts new
// to it, not places taken by those.
TEST_F(Containment2, TheImplicitStagesFirstWaveIsNewHosts) {
  const int n = 100;
  fleet(0, n);
  auto id = rollout(nlohmann::json::array(
      {{{"ring", "rest"}, {"percent", 50}, {"bake_s", 12}, {"min_hosts", 1}}}));
  ASSERT_TRUE(act(id, "start"));
  for (int i = 0; i < 60 && get(id)["stage"] == 0; ++i) live_as_agents(4, 0, n);
  ASSERT_EQ(get(id)["stage"], 1) << get(id).dump();
  for (int h = 0; h < n; ++h) offered(h);
  EXPECT_EQ(get(id)["stages"][1]["exposed"], 8) << get(id).dump();
}

}  // namespace
}  // namespace ringfence::server::core
