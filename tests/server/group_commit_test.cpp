// The group commit behind "acknowledged = durable": parked answers wait for the commit that holds
// what they acknowledge; requests that arrive before the commit job runs share it; a plain repeat
// heartbeat is answered at once; a failed commit answers 503 and keeps everything for the next.
#include <sys/resource.h>

#include <csignal>
#include <deque>
#include <optional>

#include "proto/messages.hpp"
#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;

class GroupCommit : public Harness {
 protected:
  void SetUp() override {
    Harness::SetUp();
    // Jobs run only when the test says so: like an io_context that has not come round yet.
    service_->set_commit_scheduler([this](std::function<void()> job) { jobs_.push_back(job); });
  }
  void run_jobs() {
    while (!jobs_.empty()) {
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      job();
    }
  }
  std::size_t stored_reports() {
    auto rows = store_->list_reports("det", 0, 1000);
    EXPECT_TRUE(rows);
    return rows ? rows->size() : 0;
  }
  std::deque<std::function<void()>> jobs_;
};

TEST_F(GroupCommit, ReportsAreAnsweredOnlyOnceTheirBatchCommittedAndShareOneCommit) {
  fleet(3, 0);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  auto before = (*service_->metrics().find("group_commits_total")).get<std::int64_t>();
  std::vector<std::optional<Status>> answers(3);
  for (int h = 0; h < 3; ++h) {
    ASSERT_EQ(offered(h), version_);
    proto::Report r{proto::ReportKind::Applied, clock_.now_ms(), "det", version_, "b", "{}"};
    service_->reports(hosts_[static_cast<size_t>(h)], {r},
                      [&answers, h](Status st) { answers[static_cast<size_t>(h)] = st; });
  }
  for (const auto& a : answers) EXPECT_FALSE(a.has_value()) << "answered before it was durable";
  EXPECT_EQ(stored_reports(), 0u);
  EXPECT_EQ(get(id)["stages"][0]["applied"], 3);  // the gate sees the evidence at once
  ASSERT_EQ(jobs_.size(), 1u) << "one commit job for the whole batch";
  run_jobs();
  for (const auto& a : answers) {
    ASSERT_TRUE(a.has_value());
    EXPECT_TRUE(*a);
  }
  EXPECT_EQ(stored_reports(), 3u);
  EXPECT_EQ((*service_->metrics().find("group_commits_total")).get<std::int64_t>(), before + 1);
}

TEST_F(GroupCommit, APlainRepeatHeartbeatIsAnsweredAtOnceAChangedOneAfterItsCommit) {
  fleet(1, 0);
  std::optional<Status> first, repeat;
  proto::Heartbeat hb{"boot-1", 100, {}};
  service_->heartbeat(hosts_[0], hb, [&](Status st) { first = st; });
  EXPECT_FALSE(first.has_value()) << "a new boot id is state: it waits for the commit";
  run_jobs();
  ASSERT_TRUE(first && *first);
  service_->heartbeat(hosts_[0], hb, [&](Status st) { repeat = st; });
  ASSERT_TRUE(repeat.has_value()) << "a repeat heartbeat waited for a commit";
  EXPECT_TRUE(*repeat);
  EXPECT_TRUE(jobs_.empty());
}

TEST_F(GroupCommit, AFailedCommitAnswers503AndARepeatWaitsUntilTheStoreHasIt) {
  fleet(1, 0);
  std::optional<Status> first, again;
  proto::Heartbeat hb{"boot-1", 100, {}};
  // A state the host may report (a known channel, no content yet): versions never sent to it
  // are dropped before they reach its record (server.Trust.*).
  hb.channels["det"] = {0, "staged"};
  service_->heartbeat(hosts_[0], hb, [&](Status st) { first = st; });
  {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit saved{};
    getrlimit(RLIMIT_FSIZE, &saved);
    rlimit full = saved;
    full.rlim_cur = 1;  // every write past the first byte of a file fails, as on a full disk
    setrlimit(RLIMIT_FSIZE, &full);
    run_jobs();
    setrlimit(RLIMIT_FSIZE, &saved);
  }
  ASSERT_TRUE(first.has_value());
  ASSERT_FALSE(*first);
  EXPECT_EQ(first->error().errc, Errc::Unavailable);
  // The agent resends the same heartbeat: memory already has it, the store does not.
  service_->heartbeat(hosts_[0], hb, [&](Status st) { again = st; });
  EXPECT_FALSE(again.has_value()) << "answered 2xx while the store still lacks the change";
  run_jobs();
  ASSERT_TRUE(again && *again);
  open();  // killed: the change is there
  auto host = *service_->get_host(test_uuid(0));
  EXPECT_EQ(host["channels"]["det"]["version"], 0) << host.dump();
}

}  // namespace
}  // namespace ringfence::server::core
