// The rollout controller through Service with a fake clock: pass, halt on crashes, apply failures,
// boot loops and silence, rollback to stable, approval, skip rules, blast-radius budget,
// emergency stop, long polls, pinned hosts, and restarts that find a rollout half-way.
#include <gtest/gtest.h>

#include "proto/messages.hpp"
#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;
using Controller = Harness;

bool has_event(const json& evs, const std::string& kind, const std::string& actor = "") {
  for (const auto& e : evs) {
    if (e["kind"] == kind && (actor.empty() || e["actor"] == actor)) return true;
  }
  return false;
}
// A desired-state channel entry through the agent's own strict decoder.
proto::Manifest manifest_of(const json& entry) {
  json wrap = {{"etag", "e"},
               {"channels", json::array({entry})},
               {"known_bad", json::array()},
               {"heartbeat_s", 1},
               {"poll_s", 1}};
  auto d = proto::decode_desired_state(wrap.dump());
  EXPECT_TRUE(d) << d.error().message;
  return d ? d->channels.at(0).manifest : proto::Manifest{};
}
json find_event(const json& evs, const std::string& kind) {
  for (const auto& e : evs) {
    if (e["kind"] == kind) return e;
  }
  return json();
}

TEST_F(Controller, AHealthyReleasePassesEveryStageAndBecomesStable) {
  fleet(3, 3);
  auto id = rollout(two_stages());
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) EXPECT_EQ(offered(h), version_);
  EXPECT_EQ(offered(3), 0);  // the rest ring waits for stage 1
  for (int h = 0; h < 3; ++h) heartbeat(h, version_);
  EXPECT_EQ(get(id)["stages"][0]["applied"], 3);
  EXPECT_EQ(get(id)["stages"][0]["healthy"], 0);  // applied is not yet a success
  live_for(12, 0, 3, version_);
  EXPECT_EQ(get(id)["stages"][0]["healthy"], 3);
  EXPECT_EQ(get(id)["stage"], 0);  // bake not over yet
  live_for(52, 0, 3, version_);
  EXPECT_EQ(get(id)["stage"], 1);
  EXPECT_EQ(get(id)["stages"][0]["state"], "passed");
  for (int h = 3; h < 6; ++h) {
    EXPECT_EQ(offered(h), version_);
    heartbeat(h, version_);
  }
  live_for(64, 0, 6, version_);
  auto r = get(id);
  EXPECT_EQ(r["state"], "completed");
  EXPECT_EQ((*service_->get_channel("det"))["stable_version"], version_);
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "stable");
  auto evs = events(id);
  EXPECT_TRUE(has_event(evs, "rollout_advance", "gate"));
  auto fin = find_event(evs, "rollout_finish");
  ASSERT_FALSE(fin.is_null());
  EXPECT_EQ(fin["actor"], "gate");
  EXPECT_EQ(fin["data"]["gate"]["verdict"], "pass");  // the decision's figures are recorded
  EXPECT_EQ(fin["data"]["counts"]["healthy"], 3);
  // Nothing more happens to a completed rollout.
  auto n = evs.size();
  live_for(20, 0, 6, version_);
  EXPECT_EQ(events(id).size(), n);
}

TEST_F(Controller, ANewStableReleaseSupersedesTheOldOne) {
  fleet(2, 2);
  make_stable(version_, 4);
  auto v2 = release("{\"rules\":[2]}");
  make_stable(v2, 4);
  EXPECT_EQ((*service_->get_channel("det"))["stable_version"], v2);
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "superseded");
  EXPECT_EQ((*service_->get_release("det", v2))["state"], "stable");
  // An older release can never roll out over a newer stable one.
  auto old = service_->create_rollout(
      admin_, {{"channel", "det"}, {"version", version_}, {"stages", two_stages()}});
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error().errc, Errc::Conflict);
}

TEST_F(Controller, CrashesInTheCanaryHaltQuarantineAndSendEveryoneBack) {
  fleet(5, 20);
  auto id = rollout(two_stages());
  ASSERT_TRUE(act(id, "start"));
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
  EXPECT_EQ(offered(10), 0);  // the rest ring never sees it
  // The halt is an event with its evidence.
  auto halt = find_event(events(id), "rollout_halt");
  ASSERT_FALSE(halt.is_null());
  EXPECT_EQ(halt["actor"], "gate");
  EXPECT_GE(halt["data"]["counts"]["failed"].get<int>(), 2);  // a handful, not the whole canary
  EXPECT_EQ(halt["data"]["gate"]["verdict"], "fail");
  EXPECT_FALSE(halt["data"]["reason"].get<std::string>().empty());
  EXPECT_TRUE(has_event(events(id), "release_quarantined"));
  EXPECT_TRUE(has_event(events(id), "rollout_rollback_done", "controller"));
}

TEST_F(Controller, ARollbackSendsExposedHostsBackToStableWithTheRollbackFlag) {
  fleet(5, 5);
  auto v1 = version_;
  make_stable(v1, 10);
  auto v2 = release("{\"rules\":[2]}");
  auto id = rollout(two_stages(), v2);
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) {
    ASSERT_EQ(offered(h), v2);
    heartbeat(h, v2);
  }
  EXPECT_EQ(offered(7), v1);  // not exposed: stable
  // A long poll held by an exposed host hears the rollback at once.
  auto first = service_->desired(hosts_[0], "", 0, nullptr);
  std::optional<DesiredAnswer> pushed;
  ASSERT_TRUE(
      service_->desired(hosts_[0], (**first).etag, 30, [&](DesiredAnswer a) { pushed = a; }));
  for (int h = 0; h < 4; ++h) crash(h, v2);
  EXPECT_EQ(get(id)["state"], "rolled_back");
  ASSERT_TRUE(pushed);
  EXPECT_FALSE(pushed->not_modified);
  auto body = json::parse(pushed->body);
  ASSERT_EQ(body["channels"].size(), 1u);
  EXPECT_EQ(body["channels"][0]["version"], v1);
  EXPECT_EQ(body["channels"][0].value("rollback", false), true);
  // The way back is signed: the manifest authorises hosts running up to v2 to go down to v1.
  auto m = manifest_of(body["channels"][0]);
  EXPECT_EQ(m.version, v1);
  EXPECT_EQ(m.rollback_from, v2);
  EXPECT_TRUE(proto::verify(key_.public_key, proto::canonical_bytes(m),
                            body["channels"][0]["signature"].get<std::string>()));
  EXPECT_EQ(body["known_bad"], json::array({{{"channel", "det"}, {"version", v2}}}));
  for (int h : {1, 4, 8}) {
    auto c = offered_channel(h);
    EXPECT_EQ(c["version"], v1) << h;
    EXPECT_EQ(c.value("rollback", false), true) << h;
  }
  // The stable release keeps its state; the bad one can never be offered again.
  EXPECT_EQ((*service_->get_channel("det"))["stable_version"], v1);
  auto again = service_->create_rollout(
      admin_, {{"channel", "det"}, {"version", v2}, {"stages", two_stages()}});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().errc, Errc::Conflict);
}

TEST_F(Controller, SilenceAfterApplyingIsAFailure) {
  fleet(5, 5);
  auto id = rollout(two_stages());
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  // Nobody talks any more: 3 heartbeat intervals of 5 s later they count as crashed.
  for (int i = 0; i < 10; ++i) advance_s(2);
  auto r = get(id);
  EXPECT_EQ(r["stages"][0]["silent"], 5);
  EXPECT_EQ(r["state"], "rolled_back");
  EXPECT_TRUE(has_event(events(id), "rollout_halt", "gate"));
}

TEST_F(Controller, HostsThatKeepTalkingAreNotSilent) {
  fleet(5, 5);
  auto id = rollout(two_stages(600));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  live_for(120, 0, 5, version_);
  EXPECT_EQ(get(id)["stages"][0]["silent"], 0);
  EXPECT_EQ(get(id)["state"], "running");
}

TEST_F(Controller, ApplyFailuresAndBootLoopsCountAsFailures) {
  fleet(5, 5);
  auto id = rollout(two_stages(600, 10));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  report(0, proto::ReportKind::ApplyFailed, version_);
  EXPECT_EQ(get(id)["stages"][0]["failed"], 1);
  // One new boot id with a short uptime after applying is a reboot; a second one, a boot loop.
  heartbeat(1, version_, "b-new", 3);
  EXPECT_EQ(get(id)["stages"][0]["failed"], 1);
  EXPECT_FALSE(has_event(events(id), "boot_loop_suspected"));
  heartbeat(1, version_, "b-newer", 4);
  EXPECT_EQ(get(id)["stages"][0]["failed"], 2);
  EXPECT_TRUE(has_event(events(id), "boot_loop_suspected"));
  // The same host failing again is still one failed host.
  report(0, proto::ReportKind::Crash, version_);
  EXPECT_EQ(get(id)["stages"][0]["failed"], 2);
  report(2, proto::ReportKind::LocalRollback, version_);
  report(3, proto::ReportKind::Crash, version_);
  EXPECT_EQ(get(id)["state"], "rolled_back");
}

TEST_F(Controller, AManualStageWaitsForApproval) {
  fleet(3, 3);
  auto id = rollout(two_stages(10, 3, "manual"));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  live_for(16, 0, 3, version_);
  auto r = get(id);
  EXPECT_EQ(r["phase"], "awaiting_approval");
  EXPECT_EQ(r["stage"], 1);
  EXPECT_EQ(offered(3), 0);
  live_for(600, 0, 3, version_);  // it waits however long it takes
  EXPECT_EQ(get(id)["phase"], "awaiting_approval");
  EXPECT_EQ(offered(3), 0);
  auto approved =
      service_->rollout_action({"alice", Role::Release}, id, "approve", {{"reason", "looks good"}});
  ASSERT_TRUE(approved);
  EXPECT_EQ((*approved)["phase"], "baking");
  EXPECT_EQ(offered(3), version_);
  auto ev = find_event(events(id), "rollout_approve");
  ASSERT_FALSE(ev.is_null());
  EXPECT_EQ(ev["actor"], "alice");
  EXPECT_EQ(ev["data"]["reason"], "looks good");
}

TEST_F(Controller, AManualFirstStageStartsAwaitingApproval) {
  fleet(3, 0);
  auto id = rollout(json::array({{{"ring", "canary"}, {"approval", "manual"}, {"min_hosts", 1}}}));
  auto s = act(id, "start");
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["phase"], "awaiting_approval");
  EXPECT_EQ(offered(0), 0);
  ASSERT_TRUE(act(id, "approve"));
  EXPECT_EQ(offered(0), version_);
}

TEST_F(Controller, EveryActionTwiceIsTheSameResultAndOneEvent) {
  fleet(3, 3);
  auto id = rollout(two_stages(10, 3, "manual"));
  auto twice = [&](const std::string& a, json body = json::object()) {
    auto r1 = act(id, a, body);
    ASSERT_TRUE(r1) << a << ": " << r1.error().message;
    auto n = event_count();
    auto r2 = act(id, a, body);
    ASSERT_TRUE(r2) << a << " again: " << r2.error().message;
    EXPECT_EQ((*r2)["state"], (*r1)["state"]) << a;
    EXPECT_EQ((*r2)["phase"], (*r1)["phase"]) << a;
    EXPECT_EQ((*r2)["stage"], (*r1)["stage"]) << a;
    EXPECT_EQ(event_count(), n) << a << " twice recorded a second event";
  };
  twice("start");
  for (int h = 0; h < 3; ++h) {
    offered(h);
    heartbeat(h, version_);
  }
  twice("pause");
  twice("resume");
  live_for(16, 0, 3, version_);
  ASSERT_EQ(get(id)["phase"], "awaiting_approval");
  twice("approve");
  twice("abort", {{"reason", "done"}});
  EXPECT_EQ(get(id)["state"], "aborted");
}

TEST_F(Controller, IllegalActionsConflictNamingTheCurrentState) {
  fleet(3, 3);
  auto id = rollout(two_stages());
  for (const char* a : {"pause", "resume", "approve"}) {
    auto r = act(id, a);
    ASSERT_FALSE(r) << a;
    EXPECT_EQ(r.error().errc, Errc::Conflict);
    EXPECT_NE(r.error().message.find("pending"), std::string::npos) << r.error().message;
  }
  auto n = event_count();
  EXPECT_FALSE(act(id, "explode"));
  EXPECT_EQ(act(id, "explode").error().errc, Errc::NotFound);
  EXPECT_EQ(event_count(), n);
  ASSERT_TRUE(act(id, "start"));
  ASSERT_TRUE(act(id, "abort", {{"reason", "test"}}));
  for (const char* a : {"start", "pause", "resume", "approve"}) {
    auto r = act(id, a);
    ASSERT_FALSE(r) << a;
    EXPECT_EQ(r.error().errc, Errc::Conflict);
    EXPECT_NE(r.error().message.find("aborted"), std::string::npos) << r.error().message;
  }
  auto missing = service_->rollout_action(admin_, 999, "start", json::object());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().errc, Errc::NotFound);
}

TEST_F(Controller, AbortQuarantinesAndSendsExposedHostsBack) {
  fleet(3, 3);
  auto v1 = version_;
  make_stable(v1, 6);
  auto v2 = release("{\"rules\":[2]}");
  auto id = rollout(two_stages(), v2);
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) heartbeat(h, offered(h));
  EXPECT_EQ(offered(0), v2);
  auto r =
      service_->rollout_action({"bob", Role::Release}, id, "abort", {{"reason", "wrong file"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["state"], "aborted");
  EXPECT_EQ((*service_->get_release("det", v2))["state"], "quarantined");
  EXPECT_EQ(offered(0), v1);
  EXPECT_EQ(offered_channel(0).value("rollback", false), true);
  auto ev = find_event(events(id), "rollout_abort");
  ASSERT_FALSE(ev.is_null());
  EXPECT_EQ(ev["actor"], "bob");
  EXPECT_EQ(ev["data"]["reason"], "wrong file");
}

TEST_F(Controller, PauseStopsNewExposureButKeepsExposedHosts) {
  fleet(6, 0);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) {
    ASSERT_EQ(offered(h), version_);
    heartbeat(h, version_);
  }
  ASSERT_TRUE(act(id, "pause"));
  EXPECT_EQ(offered(0), version_);  // exposed hosts keep the release
  EXPECT_EQ(offered(4), 0);         // nobody new
  EXPECT_EQ(get(id)["stages"][0]["exposed"], 3);
  // A failing gate still halts a paused rollout.
  for (int h = 0; h < 3; ++h) crash(h, version_);
  EXPECT_EQ(get(id)["state"], "rolled_back");
}

TEST_F(Controller, SkipNeedsAReasonTheReleaseRoleAndNeverSkipsTheCanary) {
  ASSERT_TRUE(service_->put_ring(admin_, "mid",
                                 {{"rank", 0}, {"selector", {{"labels", "ring=mid"}}}}, true));
  fleet(2, 2);
  add_host(4, "mid");
  add_host(5, "mid");
  auto id = rollout(
      json::array({{{"ring", "canary"}, {"bake_s", 10}, {"min_hosts", 2}},
                   {{"ring", "mid"}, {"bake_s", 10}, {"min_hosts", 1}, {"approval", "manual"}},
                   {{"ring", "rest"}, {"bake_s", 10}, {"min_hosts", 1}}}));
  ASSERT_TRUE(act(id, "start"));
  auto n = event_count();
  auto early = act(id, "skip", {{"to", 2}, {"reason", "urgent"}});
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().errc, Errc::Conflict);
  EXPECT_EQ(early.error().code, "canary_not_passed");
  EXPECT_EQ(event_count(), n);
  for (int h = 0; h < 2; ++h) heartbeat(h, offered(h));
  live_for(16, 0, 2, version_);
  ASSERT_EQ(get(id)["phase"], "awaiting_approval");
  ASSERT_EQ(get(id)["stage"], 1);
  EXPECT_EQ(act(id, "skip", {{"to", 2}}).error().errc, Errc::InvalidArgument);  // no reason
  EXPECT_EQ(act(id, "skip", {{"to", 0}, {"reason", "x"}}).error().errc,
            Errc::Conflict);                                  // not forward
  auto here = act(id, "skip", {{"to", 1}, {"reason", "x"}});  // already there: the same answer
  ASSERT_TRUE(here) << here.error().message;
  EXPECT_EQ((*here)["stage"], 1);
  EXPECT_EQ(act(id, "skip", {{"to", 9}, {"reason", "x"}}).error().errc, Errc::InvalidArgument);
  EXPECT_EQ(act(id, "skip", {{"to", "2"}, {"reason", "x"}}).error().errc, Errc::InvalidArgument);
  auto op =
      service_->rollout_action({"op", Role::Operator}, id, "skip", {{"to", 2}, {"reason", "x"}});
  ASSERT_FALSE(op);
  EXPECT_EQ(op.error().errc, Errc::PermissionDenied);
  EXPECT_FALSE(has_event(events(id), "rollout_skip"));  // refused skips record nothing
  auto skipped = service_->rollout_action({"carol", Role::Release}, id, "skip",
                                          {{"to", 2}, {"reason", "urgent fix"}});
  ASSERT_TRUE(skipped) << skipped.error().message;
  EXPECT_EQ((*skipped)["stage"], 2);
  EXPECT_EQ((*skipped)["phase"], "baking");
  EXPECT_EQ((*skipped)["stages"][1]["state"], "skipped");
  EXPECT_EQ((*skipped)["stages"][0]["state"], "passed");
  EXPECT_EQ(offered(2), version_);
  auto ev = find_event(events(id), "rollout_skip");
  ASSERT_FALSE(ev.is_null());
  EXPECT_EQ(ev["actor"], "carol");
  EXPECT_EQ(ev["data"]["reason"], "urgent fix");
  EXPECT_EQ(ev["data"]["to_stage"], 2);
  // The same skip again is the same answer and records nothing more.
  auto n_skip = event_count();
  auto again = service_->rollout_action({"carol", Role::Release}, id, "skip",
                                        {{"to", 2}, {"reason", "urgent fix"}});
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ((*again)["stage"], 2);
  EXPECT_EQ(event_count(), n_skip);
}

TEST_F(Controller, TheBlastRadiusBudgetCapsNewExposure) {
  Options opt;
  opt.budget_per_hour = 2;
  fleet(5, 0, opt);
  auto id = rollout(two_stages());
  ASSERT_TRUE(act(id, "start"));
  int got = 0;
  for (int h = 0; h < 5; ++h) got += offered(h) == version_ ? 1 : 0;
  EXPECT_EQ(got, 2);
  EXPECT_EQ(get(id)["stages"][0]["exposed"], 2);
  EXPECT_EQ(get(id)["budget"]["used_last_hour"], 2);
  EXPECT_EQ(get(id)["budget"]["waiting_for_budget"], true);  // the wait is visible
  // Polling again does not spend more.
  for (int h = 0; h < 5; ++h) offered(h);
  EXPECT_EQ(get(id)["stages"][0]["exposed"], 2);
  clock_.advance_ms(3601 * 1000LL);
  got = 0;
  for (int h = 0; h < 5; ++h) got += offered(h) == version_ ? 1 : 0;
  EXPECT_EQ(got, 4);  // the next hour's budget: two more
}

TEST_F(Controller, ATenantBudgetCapsEachTenant) {
  Options opt;
  opt.tenant_budget_per_hour = 1;
  fleet(6, 0, opt);
  for (int h = 0; h < 6; ++h) {
    ASSERT_TRUE(
        service_->patch_host(admin_, test_uuid(h), {{"tenant", h < 3 ? "acme" : "globex"}}));
  }
  auto id = rollout(two_stages());
  ASSERT_TRUE(act(id, "start"));
  int acme = 0, globex = 0;
  for (int h = 0; h < 6; ++h) (h < 3 ? acme : globex) += offered(h) == version_ ? 1 : 0;
  EXPECT_EQ(acme, 1);
  EXPECT_EQ(globex, 1);
  EXPECT_EQ(get(id)["stages"][0]["exposed"], 2);
}

TEST_F(Controller, EmergencyStopFreezesExposureAndAdvancement) {
  fleet(3, 3);
  auto id = rollout(two_stages(10, 1));
  auto no_reason = service_->set_emergency_stop(admin_, true, "");
  ASSERT_FALSE(no_reason);
  EXPECT_EQ(no_reason.error().errc, Errc::InvalidArgument);
  ASSERT_TRUE(service_->set_emergency_stop(admin_, true, "incident"));
  auto start = act(id, "start");
  ASSERT_FALSE(start);
  EXPECT_EQ(start.error().errc, Errc::Conflict);
  EXPECT_EQ(get(id)["state"], "pending");
  ASSERT_TRUE(service_->set_emergency_stop(admin_, false, ""));
  ASSERT_TRUE(act(id, "start"));
  EXPECT_EQ(offered(0), version_);
  heartbeat(0, version_);
  ASSERT_TRUE(service_->set_emergency_stop(admin_, true, "again"));
  EXPECT_EQ((*service_->get_rollout(id)).value("frozen_by_emergency_stop", false), true);
  EXPECT_EQ(offered(0), version_);  // exposed hosts keep what they have
  EXPECT_EQ(offered(1), 0);         // no new exposure while stopped
  live_for(40, 0, 1, version_);
  EXPECT_EQ(get(id)["stage"], 0);  // and no stage advances
  ASSERT_TRUE(service_->set_emergency_stop(admin_, false, ""));
  EXPECT_EQ(offered(1), version_);
  auto evs = events();
  EXPECT_TRUE(has_event(evs, "emergency_stop", "admin"));
  EXPECT_TRUE(has_event(evs, "emergency_stop_lifted", "admin"));
  EXPECT_EQ(find_event(evs, "emergency_stop")["data"]["reason"], "incident");
}

TEST_F(Controller, ALongPollIsAnsweredTheMomentTheStateChanges) {
  fleet(1, 0);
  auto id = rollout(two_stages());
  auto first = service_->desired(hosts_[0], "", 0, nullptr);
  ASSERT_TRUE(first && *first);
  // The same etag without wait: not modified at once.
  auto nm = service_->desired(hosts_[0], (*first)->etag, 0, nullptr);
  ASSERT_TRUE(nm && *nm);
  EXPECT_TRUE((*nm)->not_modified);
  std::optional<DesiredAnswer> got;
  auto parked = service_->desired(hosts_[0], (*first)->etag, 30, [&](DesiredAnswer a) { got = a; });
  ASSERT_TRUE(parked);
  EXPECT_FALSE(*parked);  // parked
  EXPECT_FALSE(got);
  EXPECT_EQ(service_->long_polls(), 1u);
  ASSERT_TRUE(act(id, "start"));
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->not_modified);
  EXPECT_NE(got->etag, (*first)->etag);
  EXPECT_EQ(json::parse(got->body)["channels"][0]["version"], version_);
  EXPECT_EQ(service_->long_polls(), 0u);
  // An unchanged state is answered "not modified" at the deadline.
  std::optional<DesiredAnswer> later;
  ASSERT_TRUE(service_->desired(hosts_[0], got->etag, 5, [&](DesiredAnswer a) { later = a; }));
  advance_s(3);
  EXPECT_FALSE(later);
  advance_s(3);
  ASSERT_TRUE(later);
  EXPECT_TRUE(later->not_modified);
  // A wait longer than the server's maximum is cut to it.
  std::optional<DesiredAnswer> capped;
  ASSERT_TRUE(
      service_->desired(hosts_[0], got->etag, 100000, [&](DesiredAnswer a) { capped = a; }));
  advance_s(static_cast<int>(options_.max_long_poll_s) + 1);
  ASSERT_TRUE(capped);
  // A stale etag is answered at once with the body.
  auto stale = service_->desired(hosts_[0], "0000000000000000", 30, nullptr);
  ASSERT_TRUE(stale && *stale);
  EXPECT_FALSE((*stale)->not_modified);
  // At shutdown every parked poll is answered.
  std::optional<DesiredAnswer> at_exit;
  ASSERT_TRUE(service_->desired(hosts_[0], got->etag, 30, [&](DesiredAnswer a) { at_exit = a; }));
  service_->release_long_polls();
  ASSERT_TRUE(at_exit);
  EXPECT_TRUE(at_exit->not_modified);
}

TEST_F(Controller, ReEnrollingAHostAnswersItsParkedPoll) {
  fleet(1, 0);
  auto first = service_->desired(hosts_[0], "", 0, nullptr);
  ASSERT_TRUE(first && *first);
  bool answered = false;
  ASSERT_TRUE(
      service_->desired(hosts_[0], (*first)->etag, 30, [&](DesiredAnswer) { answered = true; }));
  // The same host id enrolls again (with its credential): its old credential is gone.
  auto again = service_->enroll({enroll_token_, test_uuid(0), {{"ring", "canary"}}, "t"},
                                "Bearer " + creds_[0]);
  ASSERT_TRUE(again) << again.error().message;
  // The parked request must still get an answer (now, or at the latest at its deadline); a reply
  // dropped without being called leaves the agent's connection hanging.
  advance_s(31);
  EXPECT_TRUE(answered) << "a re-enrolled host's parked long poll was dropped without a reply";
}

TEST_F(Controller, PinnedHostsStayOnStable) {
  fleet(3, 1);
  auto v1 = version_;
  make_stable(v1, 4);
  auto v2 = release("{\"rules\":[2]}");
  ASSERT_TRUE(service_->patch_host(admin_, test_uuid(0), {{"pinned", true}}));
  auto id = rollout(two_stages(), v2);
  ASSERT_TRUE(act(id, "start"));
  EXPECT_EQ(offered(0), v1);
  EXPECT_EQ(offered(1), v2);
  EXPECT_EQ(offered(2), v2);
  EXPECT_EQ(get(id)["stages"][0]["exposed"], 2);
}

TEST_F(Controller, APinnedHostIsHeldOnNMinusOneAfterTheRolloutCompletes) {
  fleet(2, 2);
  auto v1 = version_;
  make_stable(v1, 4);
  auto v2 = release("{\"rules\":[2]}");
  make_stable(v2, 4);  // host 0 ran v2 like everyone else
  ASSERT_EQ(offered(0), v2);
  ASSERT_TRUE(service_->patch_host(admin_, test_uuid(0), {{"pinned", true}}));
  // Pinned: the previous stable release, with a fresh, signed authorisation to go down to it.
  auto c = offered_channel(0);
  EXPECT_EQ(c["version"], v1);
  auto m = manifest_of(c);
  EXPECT_EQ(m.rollback_from, v2);
  EXPECT_GT(m.expires, clock_.now_ms() / 1000);
  EXPECT_TRUE(
      proto::verify(key_.public_key, proto::canonical_bytes(m), c["signature"].get<std::string>()));
  EXPECT_EQ(offered(1), v2);  // the others stay on stable, with the plain manifest
  EXPECT_FALSE(offered_channel(1)["manifest"].contains("rollback_from"));
  // A third release becomes stable: the pinned host moves to N-1 = v2, never to the newest.
  auto v3 = release("{\"rules\":[3]}");
  make_stable(v3, 4);
  EXPECT_EQ(offered(0), v2);
  EXPECT_EQ(offered(1), v3);
  ASSERT_TRUE(service_->patch_host(admin_, test_uuid(0), {{"pinned", false}}));
  EXPECT_EQ(offered(0), v3);
}

TEST_F(Controller, AStageWhoseOwnHostsFailHaltsEvenWhenTheCumulativeFiguresLookFine) {
  fleet(20, 6);
  auto id = rollout(json::array({{{"ring", "canary"}, {"bake_s", 12}, {"min_hosts", 3}},
                                 {{"ring", "rest"}, {"bake_s", 600}, {"min_hosts", 3}}}));
  ASSERT_TRUE(act(id, "start"));
  for (int i = 0; i < 40 && get(id)["stage"] == 0; ++i) live_as_agents(4, 0, 26);
  ASSERT_EQ(get(id)["stage"], 1) << get(id).dump();
  for (int h = 20; h < 26; ++h) heartbeat(h, offered(h));
  // 2 of the rest's 6 hosts crash (33 % > max_failure_rate 20 %); of all 26, that is 8 %.
  crash(20, version_);
  crash(21, version_);
  auto r = get(id);
  EXPECT_EQ(r["state"], "rolled_back") << r.dump();
  auto halt = find_event(events(id), "rollout_halt");
  EXPECT_NE(halt["data"]["reason"].get<std::string>().find("stage 1 alone"), std::string::npos)
      << halt.dump();
  EXPECT_EQ(halt["data"]["stage_counts"]["failed"], 2);
  EXPECT_EQ(halt["data"]["params"]["max_failure_rate"], 0.2);
}

class Restart : public Harness {
 protected:
  // A two-host rollout running, then a process killed right after persisting `state` for it:
  // the row says so, its side effects (quarantine, rollback) never happened. Reopens the service.
  std::int64_t killed_after_persisting(const char* state) {
    fleet(2, 0);
    auto id = rollout(two_stages());
    EXPECT_TRUE(act(id, "start"));
    for (int h = 0; h < 2; ++h) heartbeat(h, offered(h));
    service_->flush();
    auto snap = store_->load();
    EXPECT_TRUE(snap);
    auto row = snap->rollouts.at(0);
    row.state = state;
    EXPECT_TRUE(store_->put_rollout(row));
    open();
    return id;
  }
};

TEST_F(Restart, ARestartFinishesAHaltThatWasCutShort) {
  auto id = killed_after_persisting("halted");
  auto r = get(id);
  EXPECT_EQ(r["state"], "rolled_back");
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "quarantined");
  auto d = poll(0);
  EXPECT_TRUE(d["channels"].empty());
  ASSERT_EQ(d["known_bad"].size(), 1u);
  EXPECT_TRUE(has_event(events(id), "rollout_rollback_done"));
  // Loading again changes nothing more.
  auto n = event_count();
  open();
  EXPECT_EQ(get(id)["state"], "rolled_back");
  EXPECT_EQ(event_count(), n);
}

TEST_F(Restart, ARestartFinishesAnAbortThatWasCutShort) {
  auto id = killed_after_persisting("aborted");
  EXPECT_EQ(get(id)["state"], "aborted");
  EXPECT_EQ((*service_->get_release("det", version_))["state"], "quarantined");
  EXPECT_EQ(poll(0)["known_bad"].size(), 1u);
}

TEST_F(Controller, ARestartAfterDowntimeDoesNotCountTheDowntimeAsSilence) {
  fleet(3, 3);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) heartbeat(h, offered(h));
  live_for(8, 0, 3, version_);
  service_->flush();
  clock_.advance_ms(300'000);  // the server was down for five minutes
  open();
  advance_s(1);
  EXPECT_EQ(get(id)["state"], "running") << get(id).dump();
  EXPECT_EQ(get(id)["stages"][0]["silent"], 0);
  // The agents come back (after their backoff) and heartbeat: nobody is silent.
  live_for(40, 0, 3, version_);
  EXPECT_EQ(get(id)["stages"][0]["silent"], 0);
  EXPECT_EQ(get(id)["state"], "running");
  // A host that never comes back is found silent once the grace is over.
  for (int i = 0; i < 20; ++i) {
    advance_s(4);
    heartbeat(0, version_);
    heartbeat(1, version_);
  }
  EXPECT_EQ(get(id)["stages"][0]["silent"], 1) << get(id).dump();
}

TEST_F(Controller, AControlHostLeavesTheBaselineWhenItIsExposed) {
  fleet(3, 60);
  auto v1 = version_;
  make_stable(v1, 63);
  version_ = release("{\"rules\":[2]}");
  auto id = rollout(
      json::array({{{"ring", "canary"}, {"bake_s", 12}, {"min_hosts", 1}},
                   {{"ring", "rest"}, {"percent", 50}, {"bake_s", 600}, {"min_hosts", 1}}}));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) heartbeat(h, offered(h));
  // Ten hosts of the rest ring crash on what they run now (the stable v1): the control cohort's
  // failures, counted for the rest ring from the start, though the rollout reaches it only at
  // stage 1.
  for (int h = 3; h < 13; ++h) crash(h, v1);
  auto g = get(id)["stages"][0]["gate"];
  EXPECT_EQ(g["control_failed"], 10) << g.dump();
  EXPECT_EQ(g["control_hosts"], 60);
  for (int i = 0; i < 20 && get(id)["stage"] == 0; ++i) live_as_agents(4, 0, 3);
  ASSERT_EQ(get(id)["stage"], 1);
  // Half of the rest ring is exposed: the crashes of those hosts from before are not the baseline
  // of the hosts NOT on the release any more.
  int exposed = 3, crashed_unexposed = 0;
  for (int h = 3; h < 63; ++h) {
    bool on = offered(h) == version_;
    exposed += on;
    if (on) heartbeat(h, version_);
    if (!on && h < 13) ++crashed_unexposed;
  }
  ASSERT_GT(exposed, 3);
  ASSERT_LT(exposed, 63 - 20);
  g = get(id)["stages"][1]["gate"];
  EXPECT_EQ(g["control_hosts"], 63 - exposed) << g.dump();
  EXPECT_EQ(g["control_failed"], crashed_unexposed) << g.dump();
}

TEST_F(Controller, WithNoControlCohortLeftTheBaselineIsTheFleetsOwnRate) {
  fleet(3, 30);
  auto v1 = version_;
  make_stable(v1, 33);
  version_ = release("{\"rules\":[2]}");
  auto stages = two_stages(12, 1);
  for (auto& st : stages) st["pacing"] = {{"initial", 1000}};  // one wave: everyone at once
  auto id = rollout(stages);
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) heartbeat(h, offered(h));
  for (int h = 3; h < 8; ++h) crash(h, v1);
  for (int i = 0; i < 20 && get(id)["stage"] == 0; ++i) live_as_agents(4, 0, 3);
  ASSERT_EQ(get(id)["stage"], 1);
  for (int h = 3; h < 33; ++h) heartbeat(h, offered(h));  // everyone is on the release
  // Not the bare 1 % prior: the 5 of 33 hosts that crashed before they were exposed.
  auto g = get(id)["stages"][1]["gate"];
  EXPECT_EQ(g["control_hosts"], 33) << g.dump();
  EXPECT_EQ(g["control_failed"], 5) << g.dump();
}

TEST_F(Controller, ARestartKeepsTheGatesEvidence) {
  fleet(6, 0);
  auto id = rollout(two_stages(600, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 6; ++h) heartbeat(h, offered(h));
  crash(0, version_);  // 1 of 6: below the 20 % floor, too few for the test
  heartbeat(0, 0);     // ... and the host went back to nothing (a local rollback)
  ASSERT_EQ(get(id)["stages"][0]["failed"], 1);
  service_->flush();
  open();
  auto r = get(id);
  EXPECT_EQ(r["state"], "running");
  EXPECT_EQ(r["stages"][0]["exposed"], 6) << r.dump();
  EXPECT_EQ(r["stages"][0]["applied"], 6);
  EXPECT_EQ(r["stages"][0]["failed"], 1) << "the crash before the restart was forgotten";
  crash(1, version_);  // 2 of 6 is over the floor: the evidence from before the restart counts
  EXPECT_EQ(get(id)["state"], "rolled_back") << get(id).dump();
}

TEST_F(Controller, ARestartResumesARunningRollout) {
  fleet(3, 3);
  auto id = rollout(two_stages(20, 3));
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 3; ++h) heartbeat(h, offered(h));
  live_for(8, 0, 3, version_);
  service_->flush();
  open();  // a new process on the same database
  auto r = get(id);
  EXPECT_EQ(r["state"], "running");
  EXPECT_EQ(r["stage"], 0);
  EXPECT_EQ(r["stages"][0]["applied"], 3);  // exposure re-attached from the hosts' reports
  EXPECT_EQ(offered(0), version_);
  for (int i = 0; i < 30 && get(id)["state"] != "completed"; ++i) live_as_agents(4, 0, 6);
  EXPECT_EQ(get(id)["state"], "completed");
}

TEST_F(Controller, QuarantiningTheStableReleaseFallsBackOnlyToAReleaseThatWasStable) {
  fleet(2, 2);
  auto v1 = version_;
  make_stable(v1, 4);
  auto v2 = release("{\"rules\":[2]}");  // never rolled out
  auto v3 = release("{\"rules\":[3]}");
  make_stable(v3, 4);
  ASSERT_EQ((*service_->get_release("det", v1))["state"], "superseded");
  ASSERT_EQ((*service_->get_release("det", v2))["state"], "validated");
  auto q = service_->quarantine_release(admin_, "det", v3, "bad after all");
  ASSERT_TRUE(q);
  // Every host goes back to v1, the last release that passed a rollout; v2 never passed a single
  // stage and must not reach the whole fleet through the back door.
  auto stable = (*service_->get_channel("det"))["stable_version"];
  EXPECT_EQ(stable, v1) << "fell back to a release that never rolled out";
  EXPECT_EQ(offered(3), v1);
  EXPECT_EQ((*service_->get_release("det", v2))["state"], "validated");
}

}  // namespace
}  // namespace ringfence::server::core
