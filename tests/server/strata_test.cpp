// Stratified canary coverage (issue 14), through Service with a fake clock: a stage with strata
// offers its release first to hosts of every qualifying stratum (sticky inside each), passes only
// once each has enough healthy hosts on it, says which strata are missing, and refuses bad strata.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;

const std::string kRare = "win11-24h2";

class Strata : public Harness {
 protected:
  // A new world (fresh store, so a fresh bucket key): ring "rest" holds every host; n hosts with
  // ids from `first_id`, every 50th (2 %) on os=win11-24h2, the others on os=linux-6; channel
  // "det" with release 1; every host heard from.
  void world(int n, int first_id, int rare_every = 50) {
    service_.reset();
    store_.reset();
    for (const char* f : {"/r.db", "/r.db-wal", "/r.db-shm"})
      std::filesystem::remove(dir_.path() + f);
    hosts_.clear();
    creds_.clear();
    rare_.clear();
    enroll_token_.clear();
    open();
    ASSERT_TRUE(service_->put_ring(admin_, "rest",
                                   {{"rank", 0}, {"selector", {{"buckets", {0, 10000}}}}}, true));
    auto tok = service_->create_enrollment_token(admin_, {{"name", "fleet"}});
    ASSERT_TRUE(tok) << tok.error().message;
    enroll_token_ = (*tok)["token"];
    for (int i = 0; i < n; ++i) {
      bool rare = i % rare_every == rare_every / 2;
      proto::EnrollRequest req{
          enroll_token_, test_uuid(first_id + i), {{"os", rare ? kRare : "linux-6"}}, "t"};
      auto r = service_->enroll(req);
      ASSERT_TRUE(r) << r.error().message;
      auto idx = service_->authenticate_host("Bearer " + r->credential);
      ASSERT_TRUE(idx);
      hosts_.push_back(*idx);
      creds_.push_back(r->credential);
      rare_.push_back(rare);
    }
    ASSERT_TRUE(service_->put_channel(admin_, "det", {{"name", "det"}}, true));
    version_ = release("{\"rules\":[1]}");
    for (int h = 0; h < n; ++h) heartbeat(h, 0);
  }

  static json canary(bool strata, int per_stratum = 3, int min_size = 10) {
    json st = {{"ring", "*"}, {"percent", 1}, {"bake_s", 40}, {"min_hosts", 3}};
    if (strata) {
      st["strata"] = {{"keys", json::array({"os"})},
                      {"min_hosts_per_stratum", per_stratum},
                      {"min_stratum_size", min_size}};
    }
    return json::array({st, {{"ring", "*"}, {"percent", 100}, {"bake_s", 40}, {"min_hosts", 3}}});
  }

  // Runs the canary of a release that kills every os=win11-24h2 host that takes it (a crash
  // report, then silence) while every other host is healthy. Every host polls each 12 s; hosts
  // on the release heartbeat every 4 s. Returns "halted" (the canary caught it), "passed" (the
  // canary passed), or the state it was left in; *rare_exposed = win11 hosts that took it.
  std::string lethal_to_rare(json stages, int* rare_exposed) {
    const int n = static_cast<int>(hosts_.size());
    auto id = rollout(stages);
    EXPECT_TRUE(act(id, "start"));
    std::vector<bool> dead(n, false), on(n, false);
    *rare_exposed = 0;
    for (int step = 0; step < 60; ++step) {
      auto r = get(id);
      if (r["state"] == "rolled_back") return r["stage"] == 0 ? "halted" : "halted_later";
      if (r["state"] != "running") return r["state"];
      if (r["stage"] != 0) return "passed";
      // Every host hears and applies first; then the win11 hosts that took it die.
      std::vector<int> dying;
      for (int h = 0; h < n; ++h) {
        if (dead[h]) continue;
        if (step % 3 == 0 && !on[h]) on[h] = offered(h) == version_;
        if (on[h] || step % 3 == 0) heartbeat(h, on[h] ? version_ : 0);
        if (on[h] && rare_[h]) dying.push_back(h);
      }
      for (int h : dying) {
        crash(h, version_);
        dead[h] = true;
        ++*rare_exposed;
      }
      advance_s(4);
    }
    return "timed_out";
  }

  std::vector<bool> rare_;
};

// The scenario: a release that kills only os=win11-24h2 hosts (2 % of the fleet). A
// random 1 % canary misses them in some runs (that is the attack); with strata on "os" the
// canary always includes them, and the release is halted in the canary in every run.
TEST_F(Strata, AReleaseKillingOneOsIsHaltedInTheCanaryInEveryRunWithStrata) {
  const int n = 1000, runs = 20;
  int halted = 0;
  for (int seed = 0; seed < runs; ++seed) {
    world(n, seed * 10000);
    int rare = 0;
    auto outcome = lethal_to_rare(canary(true), &rare);
    EXPECT_EQ(outcome, "halted") << "run " << seed << ": " << get(1).dump();
    EXPECT_GE(rare, 1) << "run " << seed;
    EXPECT_LE(rare, 3) << "run " << seed << ": the first wave takes 3 hosts of the stratum";
    if (outcome == "halted") ++halted;
  }
  EXPECT_EQ(halted, runs);
}

TEST_F(Strata, WithoutStrataARandomCanaryOfTheSameSizeMissesTheStratumInSomeRuns) {
  const int n = 1000, runs = 20;
  int missed = 0, caught = 0;
  for (int seed = 0; seed < runs && missed == 0; ++seed) {
    world(n, seed * 10000);
    int rare = 0;
    auto outcome = lethal_to_rare(canary(false), &rare);
    // Passed: the canary drew no win11 host, or one whose death alone is not enough evidence.
    if (outcome == "passed") {
      ++missed;
    } else if (outcome == "halted") {
      ++caught;
    }
  }
  // With ~10 canary hosts drawn from 1000, none of 20 win11 hosts is drawn in ~80 % of runs
  // (and one drawn host's death is not enough for the gate).
  EXPECT_GE(missed, 1) << "caught in every run (" << caught << "): the scenario proves nothing";
}

// A stage large enough to dilute the stratum's failures: two dead win11 hosts among ~20 applied
// do not fail the stage's gate, but the stratum judged alone does (and the halt names it).
TEST_F(Strata, AStratumIsJudgedAloneSoALargerStageDoesNotDiluteIt) {
  const int n = 1000, runs = 5;
  for (int seed = 0; seed < runs; ++seed) {
    world(n, 100000 + seed * 10000);
    auto stages = canary(true, 2, 10);
    stages[0]["percent"] = 2;
    stages[0]["pacing"] = {{"initial", 60}};
    stages[0]["min_hosts"] = 10;
    int rare = 0;
    auto outcome = lethal_to_rare(stages, &rare);
    auto r = get(1);
    ASSERT_EQ(outcome, "halted") << "run " << seed << ": " << r.dump();
    EXPECT_NE(r["halt_reason"].get<std::string>().find("stratum os=" + kRare + " alone"),
              std::string::npos)
        << r["halt_reason"];
    EXPECT_GE(r["stages"][0]["applied"].get<int>(), 10) << r.dump();
  }
}

// A qualifying stratum whose hosts never become healthy on the release (they take it and keep
// reporting the old version: an apply that never completes) holds the stage, and it says which.
TEST_F(Strata, AStageWhoseStratumCannotBeCoveredWaitsAndNamesIt) {
  const int n = 200;
  world(n, 0, 10);  // 10 % win11: 20 hosts
  auto stages = canary(true, 2, 10);
  stages[0]["percent"] = 5;
  stages[0]["bake_s"] = 20;
  auto id = rollout(stages);
  ASSERT_TRUE(act(id, "start"));
  for (int step = 0; step < 40; ++step) {
    for (int h = 0; h < n; ++h) {
      auto v = offered(h);
      heartbeat(h, rare_[h] ? 0 : v);
    }
    advance_s(4);
  }
  auto r = get(id);
  ASSERT_EQ(r["state"], "running") << r.dump();
  ASSERT_EQ(r["stage"], 0) << "passed without covering os=" << kRare << ": " << r.dump();
  ASSERT_TRUE(r["waiting"].is_string()) << r.dump();
  EXPECT_NE(r["waiting"].get<std::string>().find("os=" + kRare + " (0 of 2 healthy"),
            std::string::npos)
      << r["waiting"];
  ASSERT_FALSE(r["blocked"].is_null()) << r.dump();
  EXPECT_EQ(r["blocked"]["code"], "strata_not_covered");
  EXPECT_NE(r["blocked"]["message"].get<std::string>().find("os=" + kRare), std::string::npos);
  EXPECT_EQ(r["blocked"]["message"].get<std::string>().find("linux"), std::string::npos)
      << "the covered stratum is not named";
  auto cov = r["stages"][0]["strata"];
  EXPECT_EQ(cov["strata"], 2) << cov.dump();
  EXPECT_EQ(cov["qualifying"], 2);
  EXPECT_EQ(cov["covered"], 1);
  // Per stratum, whether it is covered, the missing ones first (the dashboard shows the list,
  // which is cut at 20: a missing stratum must not be cut off behind covered ones).
  ASSERT_EQ(cov["coverage"].size(), 2u) << cov.dump();
  EXPECT_EQ(cov["coverage"][0]["stratum"], "os=" + kRare) << cov.dump();
  EXPECT_EQ(cov["coverage"][0]["covered"], false) << cov.dump();
  EXPECT_EQ(cov["coverage"][0]["live_hosts"], 20) << cov.dump();
  EXPECT_EQ(cov["coverage"][1]["stratum"], "os=linux-6") << cov.dump();
  EXPECT_EQ(cov["coverage"][1]["covered"], true) << cov.dump();
  bool event = false;
  for (const auto& e : events(id)) {
    if (e["kind"] == "stage_blocked" && e["data"]["code"] == "strata_not_covered") event = true;
  }
  EXPECT_TRUE(event);
  // Once the stratum's hosts apply and stay healthy, the stage passes.
  for (int step = 0; step < 30 && get(id)["stage"] == 0; ++step) live_as_agents(4, 0, n);
  EXPECT_NE(get(id)["stage"], 0) << get(id).dump();
}

// A pick that fails once (a background crash) is replaced by the next host of its stratum, so a
// good release is not held forever by one unlucky host.
TEST_F(Strata, AFailedPickIsReplacedAndAGoodReleasePasses) {
  const int n = 200;
  world(n, 0, 10);  // 20 win11 hosts
  auto stages = canary(true, 2, 10);
  stages[0]["percent"] = 5;
  stages[0]["bake_s"] = 20;
  auto id = rollout(stages);
  ASSERT_TRUE(act(id, "start"));
  int victim = -1;
  for (int h = 0; h < n; ++h) {
    auto v = offered(h);
    heartbeat(h, v);
    if (victim < 0 && rare_[h] && v == version_) victim = h;
  }
  ASSERT_GE(victim, 0) << "no win11 host in the first wave: " << get(id).dump();
  crash(victim, version_);
  for (int step = 0; step < 40 && get(id)["stage"] == 0; ++step) {
    advance_s(4);
    for (int h = 0; h < n; ++h) heartbeat(h, offered(h));
  }
  auto r = get(id);
  EXPECT_EQ(r["state"], "running") << r.dump();
  EXPECT_NE(r["stage"], 0) << "held by the failed pick: " << r.dump();
}

TEST_F(Strata, BadStrataAreRefusedNamingTheField) {
  world(20, 0);
  struct Case {
    json strata;
    std::string names;
  };
  std::vector<Case> cases = {
      {json(3), "'strata'"},
      {json::object(), "strata.keys"},
      {{{"keys", json::array()}}, "strata.keys"},
      {{{"keys", json::array({"a", "b", "c", "d", "e"})}}, "strata.keys"},
      {{{"keys", json::array({"OS"})}}, "strata.keys"},
      {{{"keys", json::array({"os", "os"})}}, "strata.keys"},
      {{{"keys", json::array({1})}}, "strata.keys"},
      {{{"keys", json::array({"os"})}, {"min_hosts_per_stratum", 0}}, "min_hosts_per_stratum"},
      {{{"keys", json::array({"os"})}, {"min_hosts_per_stratum", 1001}}, "min_hosts_per_stratum"},
      {{{"keys", json::array({"os"})}, {"min_stratum_size", 0}}, "min_stratum_size"},
      {{{"keys", json::array({"os"})}, {"min_stratum_size", "20"}}, "min_stratum_size"},
      {{{"keys", json::array({"os"})}, {"min_hosts_per_stratum", 5}, {"min_stratum_size", 4}},
       "min_hosts_per_stratum"},
      {{{"keys", json::array({"os"})}, {"per_stratum", 1}}, "per_stratum"},
  };
  for (const auto& c : cases) {
    auto stages = json::array({{{"ring", "*"}, {"strata", c.strata}}});
    auto r = service_->create_rollout(
        admin_, {{"channel", "det"}, {"version", version_}, {"stages", stages}});
    ASSERT_FALSE(r) << c.strata.dump();
    EXPECT_EQ(r.error().errc, Errc::InvalidArgument) << c.strata.dump();
    EXPECT_NE(r.error().message.find(c.names), std::string::npos)
        << c.strata.dump() << ": " << r.error().message;
    auto p = service_->put_policy(admin_, "p", {{"stages", stages}}, false);
    ASSERT_FALSE(p) << c.strata.dump();
    EXPECT_EQ(p.error().errc, Errc::InvalidArgument);
  }
  // A good one is kept as given, in the policy and in a rollout across a restart.
  json good = {
      {"keys", json::array({"os", "hw"})}, {"min_hosts_per_stratum", 2}, {"min_stratum_size", 30}};
  auto stages = json::array({{{"ring", "*"}, {"strata", good}}});
  auto p = service_->put_policy(admin_, "p", {{"stages", stages}}, false);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ((*service_->get_policy("p"))["stages"][0]["strata"], good);
  auto id = rollout(stages);
  service_->flush();
  open();
  auto st = get(id)["stages"][0]["strata"];
  EXPECT_EQ(st["keys"], good["keys"]) << st.dump();
  EXPECT_EQ(st["min_hosts_per_stratum"], 2);
  EXPECT_EQ(st["min_stratum_size"], 30);
}

// The hosts picked for each stratum are the same in two previews and in two rollouts (sticky),
// and the preview shows the coverage.
TEST_F(Strata, PicksAreStickyAndThePreviewShowsTheCoverage) {
  const int n = 300;
  world(n, 500);
  auto stages = canary(true, 2, 5);
  auto pv = [&] {
    auto p = service_->preview({{"channel", "det"}, {"stages", stages}});
    EXPECT_TRUE(p) << p.error().message;
    return p ? *p : json::object();
  };
  auto a = pv(), b = pv();
  auto strata = a["stages"][0]["strata"];
  ASSERT_TRUE(strata.is_object()) << a.dump();
  EXPECT_EQ(strata["strata"], 2);
  EXPECT_EQ(strata["qualifying"], 2);
  std::set<std::string> rare_picked;
  for (const auto& s : strata["coverage"]) {
    EXPECT_EQ(s["qualifying"], true);
    EXPECT_EQ(s["picked_hosts"].size(), 2u) << s.dump();
    if (s["stratum"] == "os=" + kRare) {
      EXPECT_EQ(s["live_hosts"], n / 50);
      for (const auto& h : s["picked_hosts"]) rare_picked.insert(h.get<std::string>());
    }
  }
  ASSERT_EQ(rare_picked.size(), 2u) << strata.dump();
  EXPECT_EQ(a["stages"][0]["strata"], b["stages"][0]["strata"]);
  EXPECT_EQ(a["stages"][0]["sample_hosts"], b["stages"][0]["sample_hosts"]);

  // Two rollouts: the first wave is the same hosts, and includes the previewed win11 picks.
  auto first_wave = [&](std::int64_t id) {
    std::set<std::string> got;
    for (int h = n - 1; h >= 0; --h) {
      if (offered(h) == version_) got.insert(test_uuid(500 + h));
    }
    EXPECT_TRUE(act(id, "abort", {{"reason", "test"}}));
    return got;
  };
  auto id1 = rollout(stages);
  ASSERT_TRUE(act(id1, "start"));
  auto w1 = first_wave(id1);
  version_ = release("{\"rules\":[2]}");
  auto id2 = rollout(stages);
  ASSERT_TRUE(act(id2, "start"));
  auto w2 = first_wave(id2);
  EXPECT_EQ(w1, w2);
  // The default first wave (8), or the whole stage when it is smaller: what the preview counts.
  auto stage_hosts = a["stages"][0]["new_hosts"].get<std::size_t>();
  EXPECT_EQ(w1.size(), std::min<std::size_t>(8, stage_hosts)) << a.dump();
  for (const auto& h : rare_picked) EXPECT_TRUE(w1.count(h)) << h << " not in the first wave";
}

}  // namespace
}  // namespace ringfence::server::core
