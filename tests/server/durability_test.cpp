// Acknowledged = durable, and memory follows the store: a Service on a real SQLite file, killed
// (dropped without a flush, as SIGKILL would) and reopened; and a store whose writes the kernel
// refuses, as on a full disk (RLIMIT_FSIZE: every write past the first byte of any file fails),
// then accepts again.
#include <sys/resource.h>

#include <csignal>

#include "proto/messages.hpp"
#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;
using Durability = Harness;

// While alive, this process cannot write to any file past its first byte: SQLite's WAL and
// database writes fail in the kernel (EFBIG) the way they fail on a full disk. Reads work.
class DiskFull {
 public:
  DiskFull() {
    std::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails instead of killing us
    getrlimit(RLIMIT_FSIZE, &saved_);
    rlimit full = saved_;
    full.rlim_cur = 1;
    setrlimit(RLIMIT_FSIZE, &full);
  }
  ~DiskFull() { setrlimit(RLIMIT_FSIZE, &saved_); }
  DiskFull(const DiskFull&) = delete;
  DiskFull& operator=(const DiskFull&) = delete;

 private:
  rlimit saved_{};
};

bool has_event(const json& evs, const std::string& kind) {
  for (const auto& e : evs) {
    if (e["kind"] == kind) return true;
  }
  return false;
}

// The lethal release: the canary applies a release that makes hosts go silent, their
// `applied` reports are answered, and the server is killed before its batch flush. The restarted
// server must know they applied it, find them silent and halt.
TEST_F(Durability, AcknowledgedAppliedReportsSurviveAKillAndTheSilentCanaryIsHalted) {
  fleet(5, 5);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) {
    ASSERT_EQ(offered(h), version_);
    report(h, proto::ReportKind::Applied, version_);  // answered: acknowledged
  }
  open();  // killed right after answering: no tick, no flush; the hosts never talk again
  auto r = get(id);
  EXPECT_EQ(r["stages"][0]["exposed"], 5) << r.dump();
  EXPECT_EQ(r["stages"][0]["applied"], 5) << "acknowledged applied reports were lost";
  for (int i = 0; i < 60 && get(id)["state"] == "running"; ++i) advance_s(2);
  r = get(id);
  EXPECT_EQ(r["state"], "rolled_back") << r.dump();
  EXPECT_EQ(r["stages"][0]["silent"], 5);
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "quarantined");
}

// Offered, then the process was killed before the exposure was written: the host still applied
// what it was sent, and says so to the next process.
TEST_F(Durability, AHostThatAppliedWhatAKilledProcessOfferedCountsAsExposed) {
  fleet(5, 5);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) ASSERT_EQ(offered(h), version_);
  open();  // killed right after answering the polls
  for (int h = 0; h < 3; ++h) report(h, proto::ReportKind::Applied, version_);
  for (int h = 3; h < 5; ++h) heartbeat(h, version_);
  auto r = get(id);
  EXPECT_EQ(r["stages"][0]["applied"], 5) << r.dump();
  // And they go silent: the gate sees it.
  for (int i = 0; i < 60 && get(id)["state"] == "running"; ++i) advance_s(2);
  EXPECT_EQ(get(id)["state"], "rolled_back") << get(id).dump();
}

TEST_F(Durability, AStateChangingHeartbeatIsDurableWhenAnswered) {
  fleet(3, 0);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) {
    ASSERT_EQ(offered(h), version_);
    heartbeat(h, version_);  // now running the release: answered 204
  }
  open();  // killed: no flush
  auto r = get(id);
  EXPECT_EQ(r["stages"][0]["applied"], 3) << r.dump();
  auto host = *service_->get_host(test_uuid(0));
  EXPECT_EQ(host["channels"]["det"]["version"], version_) << host.dump();
}

TEST_F(Durability, ABootLoopIsStillCountedAcrossARestart) {
  fleet(5, 5);
  auto id = rollout(two_stages(600, 10));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  heartbeat(1, version_, "b-new", 3);  // one short boot since applying: a reboot
  EXPECT_EQ(get(id)["stages"][0]["failed"], 0);
  open();                                // killed
  heartbeat(1, version_, "b-newer", 4);  // the second: a boot loop, whichever process saw the first
  EXPECT_EQ(get(id)["stages"][0]["failed"], 1) << get(id).dump();
}

TEST_F(Durability, ReportsTheStoreCannotTakeAreNotAcknowledged) {
  fleet(3, 0);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  ASSERT_EQ(offered(0), version_);
  proto::Report applied{proto::ReportKind::Applied, clock_.now_ms(), "det", version_, "b2", "{}"};
  {
    DiskFull full;
    auto st = service_->reports(hosts_[0], {applied});
    ASSERT_FALSE(st) << "a report the store refused was acknowledged";
    EXPECT_EQ(st.error().errc, Errc::Unavailable);
  }
  // Readiness says the store is failing (what /readyz answers as "degraded").
  auto ready = service_->readiness();
  EXPECT_TRUE(ready.contains("store_failing_since")) << ready.dump();
  EXPECT_FALSE(ready.value("store_error", "").empty()) << ready.dump();
  EXPECT_GE(service_->metrics()["group_commit_failures_total"].get<int>(), 1);
  // Space is back: the agent resends (idempotent), and it is durable once answered.
  ASSERT_TRUE(service_->reports(hosts_[0], {applied}));
  EXPECT_FALSE(service_->readiness().contains("store_failing_since"));
  open();
  EXPECT_EQ(get(id)["stages"][0]["applied"], 1) << get(id).dump();
}

// The full disk: the completion of a rollout cannot be written. Memory must not say
// `completed` while the store says baking, and the completion must happen once space returns,
// without a restart.
TEST_F(Durability, ACompletionTheStoreRefusesLeavesMemoryAsItWasAndHappensWhenSpaceReturns) {
  fleet(3, 0);
  auto id = rollout(json::array({{{"ring", "canary"}, {"bake_s", 40}, {"min_hosts", 3}}}));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) heartbeat(h, offered(h));
  live_for(16, 0, 3, version_);  // applied and healthy; the bake has 24 s to go
  ASSERT_EQ(get(id)["stages"][0]["healthy"], 3) << get(id).dump();
  ASSERT_EQ(get(id)["state"], "running");
  {
    DiskFull full;
    live_for(40, 0, 3, version_);  // the bake is over: the gate passes, the completion fails
    auto r = get(id);
    EXPECT_EQ(r["state"], "running") << "memory ran ahead of the store: " << r.dump();
    EXPECT_EQ((*service_->get_release("det", version_))["state"], "rolling");
    EXPECT_TRUE((*service_->get_channel("det"))["stable_version"].is_null())
        << service_->get_channel("det")->dump();
    EXPECT_EQ(offered(0), version_);  // still offered as the rollout's release
    EXPECT_EQ(offered(0), version_);
  }
  advance_s(1);  // space is back: the next evaluation completes it
  EXPECT_EQ(get(id)["state"], "completed") << get(id).dump();
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "stable");
  EXPECT_TRUE(has_event(events(id), "rollout_finish"));
  open();  // and the store agrees
  EXPECT_EQ(get(id)["state"], "completed");
  EXPECT_EQ((*service_->get_channel("det"))["stable_version"], version_);
}

TEST_F(Durability, ExposuresAreStoredWhileARolloutRunsAndPrunedOnceItEnds) {
  fleet(3, 0);
  auto id = rollout(json::array({{{"ring", "canary"}, {"bake_s", 12}, {"min_hosts", 3}}}));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) heartbeat(h, offered(h));
  auto rows = store_->list_exposures(id);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 3u);
  for (const auto& e : *rows) EXPECT_GT(e.applied_ms, 0) << e.host_id;
  for (int i = 0; i < 20 && get(id)["state"] != "completed"; ++i) live_as_agents(4, 0, 3);
  ASSERT_EQ(get(id)["state"], "completed");
  advance_s(1);
  rows = store_->list_exposures(id);
  ASSERT_TRUE(rows);
  EXPECT_TRUE(rows->empty()) << rows->size() << " exposures of a finished rollout are kept";
}

TEST_F(Durability, AnOperatorActionTheStoreRefusesIsA503AndChangesNothing) {
  fleet(3, 0);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  auto before = event_count();
  {
    DiskFull full;
    auto p = act(id, "pause");
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().errc, Errc::Unavailable);
    EXPECT_EQ(get(id)["state"], "running");
    auto a = act(id, "abort", {{"reason", "bad"}});
    ASSERT_FALSE(a);
    EXPECT_EQ(get(id)["state"], "running");
    EXPECT_EQ((*service_->get_release("det", version_))["state"], "rolling");
  }
  EXPECT_EQ(event_count(), before);
  ASSERT_TRUE(act(id, "pause"));
  EXPECT_EQ(get(id)["state"], "paused");
  open();
  EXPECT_EQ(get(id)["state"], "paused");
}

TEST_F(Durability, AHaltTheStoreRefusesIsFinishedWhenSpaceReturns) {
  fleet(5, 5);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) heartbeat(h, offered(h));
  {
    DiskFull full;
    for (int h = 0; h < 4; ++h) {
      proto::Report crash{proto::ReportKind::Crash, clock_.now_ms(), "det", version_, "b2", "{}"};
      EXPECT_FALSE(service_->reports(hosts_[static_cast<size_t>(h)], {crash}));
    }
    // The gate failed on that evidence, but nothing of the halt is written: memory neither.
    EXPECT_EQ(get(id)["state"], "running") << get(id).dump();
    EXPECT_EQ((*service_->get_release("det", version_))["state"], "rolling");
  }
  advance_s(1);
  auto r = get(id);
  EXPECT_EQ(r["state"], "rolled_back") << r.dump();
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "quarantined");
  open();
  EXPECT_EQ(get(id)["state"], "rolled_back");
  EXPECT_EQ(get(id)["stages"][0]["failed"], 4) << get(id).dump();
  auto rows = store_->list_reports("det", 0, 100);  // the refused reports, written once it could
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->size(), 4u);
}

}  // namespace
}  // namespace ringfence::server::core
