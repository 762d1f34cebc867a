// The domain core through Service: a real SQLite store in a temp dir, a fake clock, no sockets.
// Drives hosts through enroll -> desired -> heartbeat/reports and checks the controller's
// decisions: pass, halt on crashes, halt on silence, approval, budget, emergency stop, long
// polls, and a restart that finds a half-done halt.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "proto/signing.hpp"
#include "server/core/service.hpp"
#include "tests/support/process.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;

std::string uuid(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

class Controller : public ::testing::Test {
 protected:
  void open(Options opt = {}) {
    service_.reset();
    store_.reset();
    auto s = store::open_sqlite(dir_.path() + "/r.db", store::embedded_migrations());
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    opt.data_dir = dir_.path();
    opt.exposed_heartbeat_s = 5;
    opt.healthy_after_s = 10;
    service_ = std::make_unique<Service>(*store_, clock_, key_, opt);
    auto st = service_->load();
    ASSERT_TRUE(st) << st.error().message;
  }

  void SetUp() override {
    key_ = proto::generate_keypair();
    open();
  }

  // Rings: canary = label ring=canary, rest = everyone else; a channel with release v1.
  void fleet(int canary, int rest, Options opt = {}) {
    if (opt.budget_per_hour) open(opt);
    ASSERT_TRUE(service_->put_ring(admin_, "canary", {{"rank", 0}, {"selector", {{"labels", "ring=canary"}}}}, true));
    ASSERT_TRUE(service_->put_ring(admin_, "rest", {{"rank", 1}, {"selector", {{"buckets", {0, 10000}}}}}, true));
    auto tok = service_->create_enrollment_token(admin_, {{"name", "fleet"}});
    ASSERT_TRUE(tok);
    for (int i = 0; i < canary + rest; ++i) {
      proto::EnrollRequest req{(*tok)["token"], uuid(i), {{"ring", i < canary ? "canary" : "rest"}}, "t"};
      auto r = service_->enroll(req);
      ASSERT_TRUE(r) << r.error().message;
      auto idx = service_->authenticate_host("Bearer " + r->credential);
      ASSERT_TRUE(idx);
      hosts_.push_back(*idx);
      creds_.push_back(r->credential);
    }
    ASSERT_TRUE(service_->put_channel(admin_, "det", {{"name", "det"}}, true));
    version_ = release("{\"rules\":[1]}");
  }

  std::int64_t release(const std::string& content) {
    auto path = dir_.path() + "/upload-" + std::to_string(++uploads_);
    std::ofstream(path) << content;
    auto blob = service_->adopt_blob(path);
    EXPECT_TRUE(blob);
    auto rel = service_->create_release(admin_, "det", {{"sha256", (*blob)["sha256"]}});
    EXPECT_TRUE(rel) << rel.error().message;
    return (*rel)["version"];
  }

  std::int64_t rollout(json stages) {
    auto r = service_->create_rollout(admin_, {{"channel", "det"}, {"version", version_}, {"stages", stages}});
    EXPECT_TRUE(r) << r.error().message;
    return (*r)["id"];
  }

  json get(std::int64_t id) { return *service_->get_rollout(id); }

  // One poll: the desired body as JSON (without parking).
  json poll(int h) {
    auto a = service_->desired(hosts_[static_cast<size_t>(h)], "", 0, nullptr);
    EXPECT_TRUE(a && *a);
    return json::parse((*a)->body);
  }
  std::int64_t offered(int h) {
    auto d = poll(h);  // a named value: the range below must not outlive a temporary
    for (const auto& c : d["channels"]) {
      if (c["channel"] == "det") return c["version"];
    }
    return 0;
  }
  void heartbeat(int h, std::int64_t version, const std::string& boot = "b1", std::int64_t up = 100) {
    proto::Heartbeat hb{boot, up, {{"det", {version, "active"}}}};
    ASSERT_TRUE(service_->heartbeat(hosts_[static_cast<size_t>(h)], hb));
  }
  void crash(int h, std::int64_t version) {
    proto::Report r{proto::ReportKind::Crash, clock_.now_ms(), "det", version, "b2", "{}"};
    ASSERT_TRUE(service_->reports(hosts_[static_cast<size_t>(h)], {r}));
  }
  // Lets s seconds pass in steps of 4 s while hosts [from, to) keep heartbeating on version v
  // (an exposed host that falls silent for 3 intervals counts as crashed).
  void live_for(int s, int from, int to, std::int64_t v) {
    for (int t = 0; t < s; t += 4) {
      advance_s(4);
      for (int h = from; h < to; ++h) heartbeat(h, v);
    }
  }
  void advance_s(int s) {
    clock_.advance_ms(s * 1000LL);
    service_->tick();
  }

  testing::TempDir dir_;
  FakeClock clock_;
  proto::KeyPair key_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Service> service_;
  Principal admin_{"admin", Role::Admin};
  std::vector<std::int64_t> hosts_;
  std::vector<std::string> creds_;
  std::int64_t version_ = 0;
  int uploads_ = 0;
};

json two_stages(std::int64_t bake = 60, int min_hosts = 3, const char* approval = "auto") {
  return json::array({{{"ring", "canary"}, {"bake_s", bake}, {"min_hosts", min_hosts}},
                      {{"ring", "rest"}, {"bake_s", bake}, {"min_hosts", min_hosts}, {"approval", approval}}});
}

TEST_F(Controller, ReleasesAreVersionedAndSigned) {
  fleet(1, 1);
  auto rel = service_->get_release("det", version_);
  ASSERT_TRUE(rel);
  proto::Manifest m{"det", version_, (*rel)["sha256"], (*rel)["size"], (*rel)["manifest"]["created"],
                    (*rel)["manifest"]["expires"]};
  EXPECT_TRUE(proto::verify(key_.public_key, proto::canonical_bytes(m), (*rel)["signature"].get<std::string>()));
  EXPECT_EQ(release("{\"rules\":[2]}"), version_ + 1);
  // Content that fails the channel schema is refused with findings.
  ASSERT_TRUE(service_->put_channel(admin_, "det", {{"schema", {{"type", "object"}, {"required", {"rules"}}}}}, false));
  auto path = dir_.path() + "/bad";
  std::ofstream(path) << "{\"other\":1}";
  auto blob = service_->adopt_blob(path);
  auto bad = service_->create_release(admin_, "det", {{"sha256", (*blob)["sha256"]}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errc, Errc::Unprocessable);
  EXPECT_NE(bad.error().details_json.find("rules"), std::string::npos);
}

TEST_F(Controller, ReEnrollRotatesTheCredential) {
  fleet(1, 0);
  auto tok = service_->create_enrollment_token(admin_, {{"name", "again"}});
  auto r = service_->enroll({(*tok)["token"], uuid(0), {}, "t"});
  ASSERT_TRUE(r);
  EXPECT_FALSE(service_->authenticate_host("Bearer " + creds_[0]));
  EXPECT_TRUE(service_->authenticate_host("Bearer " + r->credential));
  EXPECT_FALSE(service_->enroll({"wrong-token", uuid(9), {}, "t"}));
}

TEST_F(Controller, AHealthyReleasePassesEveryStageAndBecomesStable) {
  fleet(3, 3);
  auto id = rollout(two_stages());
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  for (int h = 0; h < 3; ++h) EXPECT_EQ(offered(h), version_);
  EXPECT_EQ(offered(3), 0);  // the rest ring waits for stage 1
  for (int h = 0; h < 3; ++h) heartbeat(h, version_);
  EXPECT_EQ(get(id)["stages"][0]["applied"], 3);
  live_for(12, 0, 3, version_);
  EXPECT_EQ(get(id)["stages"][0]["healthy"], 3);
  EXPECT_EQ(get(id)["stage"], 0);  // bake not over yet
  live_for(52, 0, 3, version_);
  EXPECT_EQ(get(id)["stage"], 1);
  for (int h = 3; h < 6; ++h) {
    EXPECT_EQ(offered(h), version_);
    heartbeat(h, version_);
  }
  live_for(64, 0, 6, version_);
  auto r = get(id);
  EXPECT_EQ(r["state"], "completed");
  EXPECT_EQ((*service_->get_channel("det"))["stable_version"], version_);
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "stable");
}

TEST_F(Controller, CrashesInTheCanaryHaltQuarantineAndSendEveryoneBack) {
  fleet(5, 20);
  auto id = rollout(two_stages());
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  // v1 is the channel's first release, so after the halt nobody is offered the channel at all.
  for (int h = 0; h < 5; ++h) {
    EXPECT_EQ(offered(h), version_);
    heartbeat(h, version_);
  }
  for (int h = 0; h < 4; ++h) crash(h, version_);
  auto r = get(id);
  EXPECT_EQ(r["state"], "rolled_back");
  EXPECT_EQ(r["stages"][0]["gate"]["verdict"], "fail");
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "quarantined");
  auto d = poll(0);
  EXPECT_TRUE(d["channels"].empty());
  ASSERT_EQ(d["known_bad"].size(), 1u);
  EXPECT_EQ(d["known_bad"][0]["version"], version_);
  // The halt is an event with its evidence.
  auto ev = service_->list_events(id, 0, 100);
  ASSERT_TRUE(ev);
  bool halted = false;
  for (const auto& e : (*ev)["events"]) {
    if (e["kind"] == "rollout_halt") {
      halted = true;
      EXPECT_EQ(e["actor"], "gate");
      EXPECT_GE(e["data"]["counts"]["failed"].get<int>(), 2);  // a handful, not the whole canary
      EXPECT_EQ(e["data"]["gate"]["verdict"], "fail");  // SPRT or the absolute floor, with its reason
      EXPECT_FALSE(e["data"]["reason"].get<std::string>().empty());
    }
  }
  EXPECT_TRUE(halted);
}

TEST_F(Controller, SilenceAfterApplyingIsAFailure) {
  fleet(5, 5);
  auto id = rollout(two_stages());
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  for (int h = 0; h < 5; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  // Nobody talks any more: 3 heartbeat intervals of 5 s later they count as crashed.
  for (int i = 0; i < 10; ++i) advance_s(2);
  auto r = get(id);
  EXPECT_EQ(r["stages"][0]["silent"], 5);
  EXPECT_EQ(r["state"], "rolled_back");
}

TEST_F(Controller, AManualStageWaitsForApproval) {
  fleet(3, 3);
  auto id = rollout(two_stages(10, 3, "manual"));
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  for (int h = 0; h < 3; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  live_for(16, 0, 3, version_);
  auto r = get(id);
  EXPECT_EQ(r["phase"], "awaiting_approval");
  EXPECT_EQ(r["stage"], 1);
  EXPECT_EQ(offered(3), 0);
  auto again = service_->rollout_action(admin_, id, "approve", json::object());
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)["phase"], "baking");
  EXPECT_EQ(offered(3), version_);
}

TEST_F(Controller, ActionsAreIdempotentAndIllegalOnesConflict) {
  fleet(3, 3);
  auto id = rollout(two_stages());
  auto events = [&] { return (*service_->list_events(id, 0, 1000))["events"].size(); };
  EXPECT_FALSE(service_->rollout_action(admin_, id, "approve", json::object()));
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  auto n = events();
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  ASSERT_TRUE(service_->rollout_action(admin_, id, "resume", json::object()));
  EXPECT_EQ(events(), n);  // repeats change nothing and record nothing
  ASSERT_TRUE(service_->rollout_action(admin_, id, "pause", json::object()));
  ASSERT_TRUE(service_->rollout_action(admin_, id, "pause", json::object()));
  EXPECT_EQ(events(), n + 1);
  auto skip = service_->rollout_action(admin_, id, "skip", {{"to", 1}, {"reason", "urgent"}});
  ASSERT_FALSE(skip);  // never past a canary that has not passed
  EXPECT_EQ(skip.error().code, "canary_not_passed");
  ASSERT_TRUE(service_->rollout_action(admin_, id, "abort", {{"reason", "test"}}));
  auto late = service_->rollout_action(admin_, id, "resume", json::object());
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().errc, Errc::Conflict);
  EXPECT_NE(late.error().message.find("aborted"), std::string::npos);
}

TEST_F(Controller, TheBlastRadiusBudgetCapsNewExposure) {
  Options opt;
  opt.budget_per_hour = 2;
  fleet(5, 0, opt);
  auto id = rollout(two_stages());
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  int got = 0;
  for (int h = 0; h < 5; ++h) got += offered(h) == version_ ? 1 : 0;
  EXPECT_EQ(got, 2);
  EXPECT_EQ(get(id)["stages"][0]["exposed"], 2);
  EXPECT_EQ(get(id)["budget"]["waiting_for_budget"], true);  // the wait is visible
  clock_.advance_ms(3601 * 1000LL);
  got = 0;
  for (int h = 0; h < 5; ++h) got += offered(h) == version_ ? 1 : 0;
  EXPECT_EQ(got, 4);  // the next hour's budget: two more
}

TEST_F(Controller, EmergencyStopFreezesExposure) {
  fleet(3, 0);
  auto id = rollout(two_stages());
  ASSERT_TRUE(service_->set_emergency_stop(admin_, true, "incident"));
  auto start = service_->rollout_action(admin_, id, "start", json::object());
  ASSERT_FALSE(start);
  EXPECT_EQ(start.error().errc, Errc::Conflict);
  ASSERT_TRUE(service_->set_emergency_stop(admin_, false, ""));
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  ASSERT_TRUE(service_->set_emergency_stop(admin_, true, "again"));
  EXPECT_EQ(offered(0), 0);  // no new exposure while stopped
}

TEST_F(Controller, ALongPollIsAnsweredTheMomentTheStateChanges) {
  fleet(1, 0);
  auto id = rollout(two_stages());
  auto first = service_->desired(hosts_[0], "", 0, nullptr);
  ASSERT_TRUE(first && *first);
  std::optional<DesiredAnswer> got;
  auto parked = service_->desired(hosts_[0], (*first)->etag, 30, [&](DesiredAnswer a) { got = a; });
  ASSERT_TRUE(parked);
  EXPECT_FALSE(*parked);  // parked
  EXPECT_FALSE(got);
  ASSERT_TRUE(service_->rollout_action(admin_, id, "start", json::object()));
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->not_modified);
  EXPECT_NE(got->etag, (*first)->etag);
  // An unchanged state is answered "not modified" at the deadline.
  std::optional<DesiredAnswer> later;
  ASSERT_TRUE(service_->desired(hosts_[0], got->etag, 5, [&](DesiredAnswer a) { later = a; }));
  advance_s(3);
  EXPECT_FALSE(later);
  advance_s(3);
  ASSERT_TRUE(later);
  EXPECT_TRUE(later->not_modified);
}

TEST_F(Controller, ARestartFinishesAHaltThatWasCutShort) {
  fleet(2, 0);
  auto id = rollout(two_stages());
  // A process killed right after persisting "halted": the row is there, the quarantine is not.
  auto snap = store_->load();
  ASSERT_TRUE(snap);
  auto row = snap->rollouts.at(0);
  row.state = "halted";
  ASSERT_TRUE(store_->put_rollout(row));
  open();
  auto r = get(id);
  EXPECT_EQ(r["state"], "rolled_back");
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "quarantined");
}

}  // namespace
}  // namespace ringfence::server::core
