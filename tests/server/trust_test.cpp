// Enrollment trust and evidence trust through Service with a fake clock: fake hosts that enroll
// moments before a rollout can neither halt a healthy release nor hide a bad one; re-enrollment
// needs the host's credential or an operator's reset; enrollment tokens have uses, a rate, a
// tenant and revocation; reports and heartbeats about what the server never sent are dropped;
// report batches are limited per host; the bucket key is the installation's own.
//
// Each attack runs twice where it helps: with the track-record rule off (the wave-1 behaviour,
// where the attack must succeed: the test would notice if the scenario stopped being an attack)
// and with it on (where it must fail).
#include <gtest/gtest.h>

#include "proto/bucket.hpp"
#include "proto/messages.hpp"
#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;

class Trust : public Harness {
 protected:
  static constexpr std::int64_t kMinAge = 600;

  void use_min_age(std::int64_t s) {
    evidence_min_age_s_ = s;
    open();
  }
  int bucket(int h) {
    auto j = service_->get_host(ids_[static_cast<size_t>(h)]);
    return j ? (*j)["bucket"].get<int>() : -1;
  }
  // Enrolls host number `id` (test_uuid(id)); returns its index in hosts_.
  int enroll(int id, const std::string& ring_label = "") {
    proto::Labels labels;
    if (!ring_label.empty()) labels["ring"] = ring_label;
    if (enroll_token_.empty()) {
      auto tok = service_->create_enrollment_token(admin_, {{"name", "fleet"}});
      EXPECT_TRUE(tok);
      enroll_token_ = (*tok)["token"];
    }
    auto r = service_->enroll({enroll_token_, test_uuid(id), labels, "t"});
    EXPECT_TRUE(r) << r.error().message;
    if (!r) return -1;
    hosts_.push_back(*service_->authenticate_host("Bearer " + r->credential));
    creds_.push_back(r->credential);
    ids_.push_back(test_uuid(id));
    return static_cast<int>(hosts_.size()) - 1;
  }
  // Every host in `hs` polls (as agents do) and heartbeats, every 4 s for s seconds.
  void warm_up(const std::vector<int>& hs, int s) {
    for (int t = 0; t < s; t += 4) {
      advance_s(4);
      for (int h : hs) heartbeat(h, offered(h));
    }
  }
  std::string state(std::int64_t id) { return get(id)["state"]; }
  json refused() { return service_->metrics()["refused"]; }

  // The release train stopped by a few fake hosts. 20 honest canary hosts (a bucket ring,
  // [0,1000)) have a track record; after the rollout starts, 300 fresh hostile enrollees poll,
  // and every one the canary reaches crash-reports the release and heartbeats with a new boot id
  // each time. Returns the rollout id after the run.
  std::int64_t fake_canary_crashes() {
    EXPECT_TRUE(service_->put_ring(admin_, "canary",
                                   {{"rank", 0}, {"selector", {{"buckets", {0, 1000}}}}}, true));
    EXPECT_TRUE(service_->put_ring(admin_, "rest",
                                   {{"rank", 1}, {"selector", {{"buckets", {0, 10000}}}}}, true));
    EXPECT_TRUE(service_->put_channel(admin_, "det", {{"name", "det"}}, true));
    version_ = release("{\"rules\":[1]}");
    std::vector<int> honest, canary;
    for (int id = 0; canary.size() < 20 && id < 2000; ++id) {
      int h = enroll(id);
      honest.push_back(h);
      if (bucket(h) < 1000) canary.push_back(h);
    }
    warm_up(honest, static_cast<int>(kMinAge) + 60);
    // Pacing off (one wave): the attack is fresh enrollees in the first wave; a paced stage ranks
    // only the hosts live at its start, which keeps these out of it (Pacing tests).
    json no_pacing = {{"initial", 100000}};
    auto id = rollout(json::array(
        {{{"ring", "canary"}, {"bake_s", 60}, {"min_hosts", 10}, {"pacing", no_pacing}},
         {{"ring", "rest"}, {"bake_s", 60}, {"min_hosts", 10}, {"pacing", no_pacing}}}));
    EXPECT_TRUE(act(id, "start"));
    std::vector<int> hostile_in_canary;
    for (int k = 0; k < 300; ++k) {
      int h = enroll(100000 + k);
      if (offered(h) == version_) {
        hostile_in_canary.push_back(h);
        crash(h, version_);
      }
    }
    // (Without the rule the first two or three halt the rollout: later ones are not offered it.)
    hostile_in_canary_ = static_cast<int>(hostile_in_canary.size());
    EXPECT_GE(hostile_in_canary_, 2) << "too few hostile hosts landed in the canary";
    for (int round = 0; round < 40 && state(id) == "running"; ++round) {
      advance_s(4);
      for (int h : honest) heartbeat(h, offered(h));
      for (int h : hostile_in_canary) {
        heartbeat(h, version_, "boot-" + std::to_string(round), 5);  // a "boot loop"
        crash(h, version_);
      }
    }
    return id;
  }

  // The baseline poisoned: 20 honest canary hosts and 200 honest rest hosts with a track record;
  // v2 crashes 10 % of the hosts that take it. 300 fresh hostile hosts in the rest ring report
  // crashes of the stable v1 (the control cohort's version) and, once offered v2, heartbeat it
  // healthily. Returns the v2 rollout's id after the run.
  // `honest_rest` honest hosts in the rest ring; `hostile_take_v2`: the hostile hosts apply v2
  // when offered and report it healthy (diluting the stage as well as poisoning the control).
  std::int64_t poisoned_baseline(const json& gate = json::object(), int honest_rest = 200,
                                 bool hostile_take_v2 = true) {
    EXPECT_TRUE(service_->put_ring(admin_, "canary",
                                   {{"rank", 0}, {"selector", {{"labels", "ring=canary"}}}}, true));
    EXPECT_TRUE(service_->put_ring(admin_, "rest",
                                   {{"rank", 1}, {"selector", {{"buckets", {0, 10000}}}}}, true));
    EXPECT_TRUE(service_->put_channel(admin_, "det", {{"name", "det"}}, true));
    std::vector<int> honest;
    for (int id = 0; id < 20 + honest_rest; ++id) {
      honest.push_back(enroll(id, id < 20 ? "canary" : "rest"));
    }
    warm_up(honest, static_cast<int>(kMinAge) + 60);
    auto v1 = release("{\"rules\":[1]}");
    make_stable(v1, 20 + honest_rest);
    auto v2 = release("{\"rules\":[2]}");
    auto id = rollout(
        json::array({{{"ring", "canary"}, {"bake_s", 60}, {"min_hosts", 10}, {"gate", gate},
                      {"pacing", {{"initial", 100000}}}},
                     {{"ring", "rest"}, {"bake_s", 60}, {"min_hosts", 10}, {"gate", gate},
                      {"pacing", {{"initial", 100000}}}}}),
        v2);
    EXPECT_TRUE(act(id, "start"));
    std::vector<int> hostile;
    for (int k = 0; k < 300; ++k) {
      int h = enroll(100000 + k, "rest");
      hostile.push_back(h);
      EXPECT_EQ(offered(h), v1);
      crash(h, v1);
    }
    for (int round = 0; round < 60 && state(id) == "running"; ++round) {
      advance_s(4);
      for (int h : honest) {
        auto v = offered(h);
        heartbeat(h, v);
        if (v == v2 && h % 10 == 0) crash(h, v2);  // 10 % of the hosts on v2 crash
      }
      for (int h : hostile) {
        auto v = offered(h);  // they poll as agents do ...
        if (!hostile_take_v2) v = v1;  // ... and may keep running v1 whatever they are offered
        heartbeat(h, v);
        if (v == v1) crash(h, v1);
      }
    }
    return id;
  }

  std::vector<std::string> ids_;
  int hostile_in_canary_ = 0;
};

TEST_F(Trust, WithoutATrackRecordRuleFakeHostsHaltAHealthyCanary) {
  auto id = fake_canary_crashes();  // evidence_min_age_s 0: the wave-1 behaviour
  EXPECT_EQ(state(id), "rolled_back") << "the attack no longer works: the test proves nothing";
}

TEST_F(Trust, FreshHostileEnrolleesCannotHaltAHealthyCanary) {
  use_min_age(kMinAge);
  auto id = fake_canary_crashes();
  auto r = get(id);
  EXPECT_EQ(r["stages"][0]["state"], "passed") << r.dump();
  EXPECT_NE(r["state"], "rolled_back") << r.dump();
  EXPECT_EQ(r["stages"][0]["failed"], 0);
  EXPECT_GE(hostile_in_canary_, 10);  // ~30 of 300 land in a 10 % canary
  // The fakes were offered the release all the same (trust decides what counts, not who gets
  // content), and what they said is counted as ignored.
  EXPECT_GT(r["stages"][0]["exposed"].get<int>(), 20);
  EXPECT_GT(refused()["signals_without_track_record"].get<int>(), 0);
}

// Both defences off (no track record rule, no baseline ceiling): the wave-1 behaviour.
TEST_F(Trust, WithoutATrackRecordRuleOrCeilingFakeCrashesHideABadRelease) {
  auto id = poisoned_baseline({{"baseline_ceiling", 0.49}});
  EXPECT_EQ(state(id), "completed") << "the attack no longer works: the test proves nothing";
}

// The poisoning by hosts that HAVE a track record (established hostile hosts; here the rule is
// off so that every hostile host counts): 300 control hosts crash-report v1 every round and never
// take v2, so the control cohort reads ~100 % failing, but the baseline cannot be raised past the
// ceiling (5 %), and the release crashing 10 % of the 600 rest hosts is caught. (Hostile hosts
// that also take the release and lie "healthy" dilute the stage instead: no estimator survives a
// stage whose majority lies; the track record rule is what keeps fresh ones out.)
TEST_F(Trust, WithoutTheCeilingEstablishedHostsPoisonTheBaseline) {
  auto id = poisoned_baseline({{"baseline_ceiling", 0.49}}, 600, false);
  EXPECT_EQ(state(id), "completed") << "the attack no longer works: the test proves nothing "
                                    << get(id).dump();
}

TEST_F(Trust, EstablishedHostsCrashingOldVersionsCannotPoisonTheBaseline) {
  auto id = poisoned_baseline(json::object(), 600, false);
  auto r = get(id);
  EXPECT_EQ(r["state"], "rolled_back") << r.dump();
  EXPECT_EQ((*service_->get_release("det", r["version"].get<std::int64_t>()))["state"],
            "quarantined");
}

TEST_F(Trust, FreshHostsCrashingOldVersionsCannotPoisonTheBaseline) {
  use_min_age(kMinAge);
  auto id = poisoned_baseline();
  auto r = get(id);
  EXPECT_EQ(r["state"], "rolled_back") << r.dump();
  EXPECT_EQ((*service_->get_release("det", r["version"].get<std::int64_t>()))["state"],
            "quarantined");
}

TEST_F(Trust, AHostsEvidenceCountsOnce) {
  fleet(5, 20);
  make_stable(version_, 25);
  auto v2 = release("{\"rules\":[2]}");
  auto id = rollout(two_stages(600, 3), v2);
  ASSERT_TRUE(act(id, "start"));
  for (int h = 0; h < 5; ++h) heartbeat(h, offered(h));
  // One host crashing over and over, rebooting, failing to apply: one failed host.
  for (int k = 0; k < 30; ++k) {
    report(0, proto::ReportKind::Crash, v2);
    report(0, proto::ReportKind::ApplyFailed, v2);
    heartbeat(0, v2, "boot" + std::to_string(k), 3);
  }
  EXPECT_EQ(get(id)["stages"][0]["failed"], 1);
  EXPECT_EQ(get(id)["state"], "running");
  // A control host crashing 30 times is one control failure.
  for (int k = 0; k < 30; ++k) {
    proto::Report r{proto::ReportKind::Crash, clock_.now_ms() + k, "det", version_, "c", "{}"};
    ASSERT_TRUE(service_->reports(hosts_[10], {r}));
  }
  EXPECT_EQ(get(id)["stages"][0]["gate"]["control_failed"], 1);
}

TEST_F(Trust, ReportsAndHeartbeatsAboutWhatWasNeverSentAreDropped) {
  fleet(2, 3);
  make_stable(version_, 5);
  auto v2 = release("{\"rules\":[2]}");  // validated, never offered to anyone
  auto before = refused();
  auto rows = [&] { return store_->list_reports("det", 0, 1000)->size(); };
  auto stored = rows();
  // A crash of a version this host was never sent, of a made-up version, of a made-up channel.
  proto::Report never{proto::ReportKind::Crash, clock_.now_ms(), "det", v2, "b9", "{}"};
  proto::Report madeup{proto::ReportKind::Crash, clock_.now_ms() + 1, "det", 777, "b9", "{}"};
  proto::Report other{proto::ReportKind::Crash, clock_.now_ms() + 2, "x-made-up", 1, "b9", "{}"};
  proto::Report real{proto::ReportKind::Crash, clock_.now_ms() + 3, "det", version_, "b9", "{}"};
  ASSERT_TRUE(service_->reports(hosts_[3], {never, madeup, other, real}));
  service_->flush();
  EXPECT_EQ(rows(), stored + 1);  // only the report about what it runs
  auto after = refused();
  EXPECT_EQ(after["reports"]["version_not_sent"].get<int>() -
                before["reports"]["version_not_sent"].get<int>(),
            2);
  EXPECT_EQ(after["reports"]["unknown_channel"].get<int>() -
                before["reports"]["unknown_channel"].get<int>(),
            1);
  // Heartbeats naming made-up channels and versions change no record and create no series.
  for (int k = 0; k < 50; ++k) {
    proto::Heartbeat hb{"b1", 100, {}};
    hb.channels["det"] = {version_, "active"};
    hb.channels["made-up-" + std::to_string(k)] = {1, "active"};
    ASSERT_TRUE(service_->heartbeat(hosts_[4], hb));
  }
  proto::Heartbeat hb{"b1", 100, {}};
  hb.channels["det"] = {v2, "active"};  // never sent to it
  ASSERT_TRUE(service_->heartbeat(hosts_[4], hb));
  auto host = *service_->get_host(test_uuid(4));
  EXPECT_EQ(host["channels"].size(), 0u) << host.dump();
  auto m = service_->metrics();
  for (const auto& v : m["host_versions"]) {
    EXPECT_EQ(v["channel"], "det");
    EXPECT_EQ(v["version"], std::to_string(version_));
  }
  EXPECT_EQ(m["refused"]["heartbeat_channels"]["unknown_channel"], 50);
  EXPECT_EQ(m["refused"]["heartbeat_channels"]["version_not_sent"], 1);
}

TEST_F(Trust, ReEnrollmentNeedsTheCurrentCredentialOrAnOperatorsReset) {
  auto site = service_->create_enrollment_token(admin_, {{"name", "site"}, {"tenant", "acme"}});
  auto other = service_->create_enrollment_token(admin_, {{"name", "other"}, {"tenant", "evil"}});
  ASSERT_TRUE(site && other);
  auto real = service_->enroll({(*site)["token"], test_uuid(1), {{"os", "linux"}}, "1"});
  ASSERT_TRUE(real);
  // The agent has used its credential (its first poll).
  auto holder = service_->authenticate_host("Bearer " + real->credential);
  ASSERT_TRUE(holder);
  ASSERT_TRUE(service_->desired(*holder, "", 0, nullptr));
  // Any other token (or the same one) cannot take the id over without its credential.
  for (const auto& tok : {(*other)["token"], (*site)["token"]}) {
    auto take = service_->enroll({tok, test_uuid(1), {{"os", "evil"}}, "x"});
    ASSERT_FALSE(take);
    EXPECT_EQ(take.error().errc, Errc::Conflict);
    EXPECT_EQ(take.error().code, "host_enrolled");
    auto wrong = service_->enroll({tok, test_uuid(1), {}, "x"}, "Bearer " + test_uuid(1) + ".00");
    ASSERT_FALSE(wrong);
    EXPECT_EQ(wrong.error().errc, Errc::Unauthenticated);
  }
  auto h = *service_->get_host(test_uuid(1));
  EXPECT_EQ(h["labels"]["os"], "linux");
  EXPECT_EQ(h["tenant"], "acme");
  EXPECT_TRUE(service_->authenticate_host("Bearer " + real->credential));
  // The holder itself rotates its credential.
  auto again = service_->enroll({(*site)["token"], test_uuid(1), {{"os", "linux"}}, "2"},
                                "Bearer " + real->credential);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_FALSE(service_->authenticate_host("Bearer " + real->credential));
  // An operator's reset: the credential dies at once; the next enrollment needs none.
  EXPECT_EQ(service_->reset_host(admin_, test_uuid(1), json::object()).error().errc,
            Errc::InvalidArgument);  // a reason is required
  EXPECT_EQ(service_->reset_host(admin_, test_uuid(9), {{"reason", "x"}}).error().errc,
            Errc::NotFound);
  EXPECT_EQ(service_->metrics()["refused"]["enroll"]["host_enrolled"], 4);
  ASSERT_TRUE(service_->reset_host(admin_, test_uuid(1), {{"reason", "re-imaged"}}));
  EXPECT_FALSE(service_->authenticate_host("Bearer " + again->credential));
  open();  // the reset is durable
  EXPECT_FALSE(service_->authenticate_host("Bearer " + again->credential));
  auto fresh = service_->enroll({(*other)["token"], test_uuid(1), {{"os", "win"}}, "3"});
  ASSERT_TRUE(fresh) << fresh.error().message;
  EXPECT_EQ((*service_->get_host(test_uuid(1)))["tenant"], "evil");
  // Audit: every enrollment names its token; the reset names its operator and reason.
  std::vector<std::string> by;
  for (const auto& e : events()) {
    if (e["kind"] == "host_enrolled") by.push_back(e["data"]["token"]);
    if (e["kind"] == "host_reset") {
      EXPECT_EQ(e["actor"], "admin");
      EXPECT_EQ(e["data"]["reason"], "re-imaged");
    }
  }
  EXPECT_EQ(by, (std::vector<std::string>{"site", "site", "other"}));
}

// The answer to an enrollment is lost (connection reset, agent killed before it stored the
// credential): the agent, with nothing to prove itself, enrolls again with the same token. Until
// the credential has been used, that token may enroll the id again (a new credential, no second
// use of the token); another token may not, and once used only the credential or a reset can.
TEST_F(Trust, AnEnrollmentWhoseAnswerWasLostCanBeRetriedWithTheSameToken) {
  auto site = service_->create_enrollment_token(admin_, {{"name", "site"}, {"max_uses", 1}});
  auto other = service_->create_enrollment_token(admin_, {{"name", "other"}});
  ASSERT_TRUE(site && other);
  auto lost = service_->enroll({(*site)["token"], test_uuid(7), {{"os", "linux"}}, "1"});
  ASSERT_TRUE(lost);  // ... and never reaches the agent
  auto taken = service_->enroll({(*other)["token"], test_uuid(7), {}, "1"});
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, "host_enrolled");
  open();  // the retry may come after a server restart too
  auto retry = service_->enroll({(*site)["token"], test_uuid(7), {{"os", "linux"}}, "1"});
  ASSERT_TRUE(retry) << retry.error().message;
  EXPECT_NE(retry->credential, lost->credential);
  EXPECT_FALSE(service_->authenticate_host("Bearer " + lost->credential));
  auto host = service_->authenticate_host("Bearer " + retry->credential);
  ASSERT_TRUE(host);
  auto toks = service_->list_enrollment_tokens();
  for (const auto& t : toks["enrollment_tokens"]) {
    if (t["name"] == "site") {
      EXPECT_EQ(t["uses"], 1) << t.dump();  // one host, one use
    }
  }
  bool lost_event = false;
  for (const auto& e : events())
    lost_event |= e["kind"] == "host_enrolled" && e["data"].value("answer_lost", false);
  EXPECT_TRUE(lost_event);
  // Once the credential is used, the same token is a takeover again.
  ASSERT_TRUE(service_->desired(*host, "", 0, nullptr));
  auto late = service_->enroll({(*site)["token"], test_uuid(7), {}, "1"});
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, "host_enrolled");
  EXPECT_TRUE(service_->authenticate_host("Bearer " + retry->credential));
}

TEST_F(Trust, EnrollmentTokensHaveUsesARateATenantAndCanBeRevoked) {
  auto tok = service_->create_enrollment_token(
      admin_, {{"name", "batch"}, {"max_uses", 3}, {"rate_per_min", 60}, {"tenant", "acme"}});
  ASSERT_TRUE(tok) << tok.error().message;
  std::string t = (*tok)["token"];
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(service_->enroll({t, test_uuid(i), {}, "1"}));
  auto used = service_->enroll({t, test_uuid(3), {}, "1"});
  ASSERT_FALSE(used);
  EXPECT_EQ(used.error().errc, Errc::PermissionDenied);
  EXPECT_EQ(used.error().code, "token_used_up");
  EXPECT_EQ((*service_->get_host(test_uuid(0)))["tenant"], "acme");
  // Rate: a minute's worth at once, then one per second at 60 a minute.
  auto fast = service_->create_enrollment_token(admin_, {{"name", "fast"}, {"rate_per_min", 5}});
  std::string f = (*fast)["token"];
  for (int i = 10; i < 15; ++i) ASSERT_TRUE(service_->enroll({f, test_uuid(i), {}, "1"}));
  auto limited = service_->enroll({f, test_uuid(15), {}, "1"});
  ASSERT_FALSE(limited);
  EXPECT_EQ(limited.error().errc, Errc::TooManyRequests);
  EXPECT_EQ(limited.error().code, "rate_limited");
  auto details = json::parse(limited.error().details_json);
  EXPECT_GE(details["retry_after_s"].get<int>(), 1);
  EXPECT_LE(details["retry_after_s"].get<int>(), 12);
  clock_.advance_ms(12'000);
  EXPECT_TRUE(service_->enroll({f, test_uuid(15), {}, "1"}));
  // The list: names, uses, limits, never a secret or its hash.
  auto list = service_->list_enrollment_tokens();
  ASSERT_EQ(list["enrollment_tokens"].size(), 2u);
  auto b = list["enrollment_tokens"][0];
  EXPECT_EQ(b["name"], "batch");
  EXPECT_EQ(b["uses"], 3);
  EXPECT_EQ(b["max_uses"], 3);
  EXPECT_EQ(b["state"], "used_up");
  EXPECT_EQ(b["tenant"], "acme");
  EXPECT_EQ(list.dump().find(t), std::string::npos);
  EXPECT_EQ(list.dump().find(proto::sha256_hex(t)), std::string::npos);
  EXPECT_FALSE(b.contains("token"));
  EXPECT_FALSE(b.contains("hash"));
  // Revocation: nobody enrolls with it again; hosts it enrolled keep working; idempotent; durable.
  ASSERT_TRUE(service_->revoke_enrollment_token(admin_, "fast"));
  ASSERT_TRUE(service_->revoke_enrollment_token(admin_, "fast"));
  EXPECT_EQ(service_->revoke_enrollment_token(admin_, "nope").error().errc, Errc::NotFound);
  open();
  auto revoked = service_->enroll({f, test_uuid(20), {}, "1"});
  ASSERT_FALSE(revoked);
  EXPECT_EQ(revoked.error().errc, Errc::Unauthenticated);
  EXPECT_EQ(service_->list_enrollment_tokens()["enrollment_tokens"][1]["state"], "revoked");
  EXPECT_EQ(service_->list_enrollment_tokens()["enrollment_tokens"][0]["uses"], 3);  // stored
  EXPECT_FALSE(service_->get_host(test_uuid(20)));
  // Bad input.
  for (const json& bad :
       {json{{"name", "x1"}, {"max_uses", 0}}, json{{"name", "x2"}, {"max_uses", "3"}},
        json{{"name", "x3"}, {"tenant", "a b"}}, json{{"name", "x4"}, {"rate_per_min", -1}},
        json{{"name", "x5"}, {"secret", "s"}}}) {
    auto r = service_->create_enrollment_token(admin_, bad);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().errc, Errc::InvalidArgument) << bad.dump();
  }
}

TEST_F(Trust, ReportBatchesAreLimitedPerHostPerMinute) {
  Options opt;
  opt.reports_per_min = 300;
  open(opt);
  fleet(1, 1);
  auto batch = [&](int n, std::int64_t t0) {
    std::vector<proto::Report> rs;
    for (int k = 0; k < n; ++k)
      rs.push_back({proto::ReportKind::Crash, t0 + k, std::nullopt, std::nullopt, "b", "{}"});
    return service_->reports(hosts_[0], rs);
  };
  clock_.advance_ms(60'000 - clock_.now_ms() % 60'000);  // the start of a minute
  ASSERT_TRUE(batch(256, 1));
  auto over = batch(100, 1000);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().errc, Errc::TooManyRequests);
  EXPECT_EQ(json::parse(over.error().details_json)["retry_after_s"], 60);
  EXPECT_TRUE(batch(44, 2000));                   // up to the limit
  EXPECT_TRUE(service_->reports(hosts_[1], {}));  // another host has its own budget
  EXPECT_TRUE(batch(0, 0));
  clock_.advance_ms(60'000);
  EXPECT_TRUE(batch(256, 3000));
  EXPECT_EQ(service_->metrics()["refused"]["reports"]["rate_limited"], 1);
}

TEST_F(Trust, TheBucketKeyIsTheInstallationsOwnAndSticky) {
  fleet(0, 50);
  std::vector<int> first;
  for (int i = 0; i < 50; ++i) first.push_back((*service_->get_host(test_uuid(i)))["bucket"]);
  auto snap = store_->load();
  std::string key;
  for (const auto& [k, v] : snap->settings) {
    if (k == "bucket_key") key = v;
  }
  ASSERT_EQ(key.size(), 64u);
  EXPECT_NE(key, std::string(64, '0'));
  open();  // a restart keeps it
  for (int i = 0; i < 50; ++i) EXPECT_EQ((*service_->get_host(test_uuid(i)))["bucket"], first[i]);
  // Never served: not in any operator answer.
  EXPECT_EQ(service_->get_host(test_uuid(0))->dump().find(key), std::string::npos);
  EXPECT_EQ(service_->metrics().dump().find(key), std::string::npos);
  // Another installation puts the same ids elsewhere.
  testing::TempDir other;
  auto s = store::open_sqlite(other.path() + "/r.db", store::embedded_migrations());
  ASSERT_TRUE(s);
  Service svc(**s, clock_, key_, options_);
  ASSERT_TRUE(svc.load());
  auto tok = svc.create_enrollment_token(admin_, {{"name", "t"}});
  int same = 0;
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(svc.enroll({(*tok)["token"], test_uuid(i), {}, "1"}));
    same += (*svc.get_host(test_uuid(i)))["bucket"] == first[i];
  }
  EXPECT_LT(same, 3);
}

}  // namespace
}  // namespace ringfence::server::core
