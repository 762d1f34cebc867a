// The agent's core against a fake server, fake clock and fake consumer: the happy path,
// every verification refusal, resumable downloads, swaps killed half-way, the report spool,
// backoff, the crash-loop guard and known-bad handling.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "agent/content/verify.hpp"
#include "agent/runtime/backoff.hpp"
#include "proto/ids.hpp"
#include "tests/agent/fakes.hpp"

namespace ringfence::agent::testing {
namespace {
using proto::ReportKind;
using state::State;

std::string detail_field(const proto::Report& r, const char* key) {
  auto j = nlohmann::json::parse(r.detail_json);
  return j.contains(key) ? (j[key].is_string() ? j[key].get<std::string>() : j[key].dump()) : "";
}

TEST(Agent, EnrollsOnceWithAFreshUuidAndKeepsTheCredentialPrivate) {
  Harness h;
  h.cfg.labels = {{"os", "linux"}};
  h.boot_enrolled();
  auto id = h.agent->identity();
  ASSERT_TRUE(id);
  EXPECT_TRUE(proto::is_uuid(id->host_id));
  EXPECT_EQ(id->host_id[14], '4') << "UUID v4";
  EXPECT_EQ(id->credential, "cred-1");
  struct stat st {};
  ASSERT_EQ(::stat((h.cfg.state_dir + "/identity.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(h.agent->machine_state(), State::Idle);
  ASSERT_EQ(h.api.desireds.size(), 1u);
  EXPECT_EQ(h.api.desireds[0].credential, "cred-1");
  EXPECT_EQ(h.api.desireds[0].wait_s, 30);
  h.restart();
  EXPECT_TRUE(h.api.enrolls.empty()) << "enrolled once";
  EXPECT_EQ(h.agent->identity()->host_id, id->host_id);
}

TEST(Agent, EnrollFailureBacksOffAndRetries) {
  Harness h;
  h.boot();
  auto cb = h.api.enrolls[0].cb;
  h.api.enrolls.clear();
  cb(tl::unexpected(failure(503, 5000)));
  EXPECT_EQ(h.agent->machine_state(), State::Unenrolled);
  h.clock.advance(4999);
  EXPECT_TRUE(h.api.enrolls.empty()) << "Retry-After is a floor";
  h.clock.advance(501);  // ... with the first backoff's jitter (up to 500 ms) on top
  EXPECT_EQ(h.api.enrolls.size(), 1u);
}

TEST(Agent, AppliesVerifiedContentAndReportsIt) {
  Harness h(true);
  h.boot_enrolled();
  auto v1 = h.release("rules", 1, "alpha");
  h.apply(v1, {}, false);
  EXPECT_EQ(h.current("rules"), "alpha");
  EXPECT_EQ(h.agent->machine_state(), State::Idle);
  EXPECT_EQ(h.consumer.file_of("rules"), h.cfg.content_dir + "/rules/versions/v1");
  auto applied = h.spooled(ReportKind::Applied);
  ASSERT_EQ(applied.size(), 1u);
  EXPECT_EQ(applied[0].version, 1);
  EXPECT_EQ(applied[0].boot_id, h.sys.boot);
  // Heartbeat names the version (sent as soon as the one in flight is answered); the next
  // long poll carries the etag.
  h.api.ack_beats();
  h.clock.advance(0);
  ASSERT_FALSE(h.api.beats.empty());
  EXPECT_EQ(h.api.beats.back().hb.channels.at("rules").version, 1);
  h.clock.advance(0);
  ASSERT_FALSE(h.api.desireds.empty());
  EXPECT_EQ(h.api.desireds.back().etag, "e1");
  // Upgrade keeps v1 as last-known-good.
  auto v2 = h.release("rules", 2, "beta");
  h.apply(v2);
  EXPECT_EQ(h.current("rules"), "beta");
  EXPECT_EQ(h.agent->persisted().channels.at("rules").lkg, 1);
}

TEST(Agent, HeartbeatFollowsTheServersCadence) {
  Harness h;
  h.cfg.consumers = {{"sensor", "7.11"}};  // --consumer-version sensor=7.11
  h.boot_enrolled();
  h.api.ack_beats();
  EXPECT_EQ(h.clock.next_delay(), 60'000);
  h.deliver(h.desired({}, {}, 5));  // exposed to a rolling release: beat faster
  EXPECT_EQ(h.agent->heartbeat_interval_s(), 5);
  h.clock.advance(5000);
  EXPECT_EQ(h.api.beats.size(), 1u);
  h.api.ack_beats();
  h.clock.advance(4999);
  EXPECT_TRUE(h.api.beats.empty());
  h.clock.advance(1);
  EXPECT_EQ(h.api.beats.size(), 1u);
  EXPECT_EQ(h.api.beats[0].hb.boot_id, h.sys.boot);
  EXPECT_EQ(h.api.beats[0].hb.uptime_s, h.sys.uptime);
  EXPECT_EQ(h.api.beats[0].hb.consumers, (std::map<std::string, std::string>{{"sensor", "7.11"}}));
}

// ---- verification refusals: each an apply_failed report, content untouched ----

struct Refusal {
  const char* name;
  const char* check;
  std::function<void(Harness&, proto::DesiredChannel&, std::vector<proto::KnownBad>&)> spoil;
};

class Refuses : public ::testing::TestWithParam<Refusal> {};

TEST_P(Refuses, WithAnApplyFailedReport) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 5, "good five"));
  auto entry = h.release("rules", 6, "six");
  std::vector<proto::KnownBad> bad;
  GetParam().spoil(h, entry, bad);
  h.deliver(h.desired({entry}, bad));
  if (!h.api.downloads.empty()) h.api.serve_download();
  EXPECT_EQ(h.agent->machine_state(), State::Idle);
  EXPECT_EQ(h.current("rules"), "good five");
  auto failed = h.spooled(ReportKind::ApplyFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(detail_field(failed[0], "check"), GetParam().check);
  EXPECT_FALSE(detail_field(failed[0], "reason").empty());
  // Not retried on the next identical answer.
  h.clock.advance(0);
  h.deliver(h.desired({entry}, bad));
  EXPECT_TRUE(h.api.downloads.empty());
  EXPECT_EQ(h.spooled(ReportKind::ApplyFailed).size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Verify, Refuses,
    ::testing::Values(
        Refusal{"tampered_blob", "sha256",
                [](Harness& h, proto::DesiredChannel& e, auto&) { h.api.blobs[e.url] = "sjx"; }},
        Refusal{"truncated_blob", "size",
                [](Harness& h, proto::DesiredChannel& e, auto&) { h.api.blobs[e.url] = "si"; }},
        Refusal{"wrong_key", "signature",
                [](Harness&, proto::DesiredChannel& e, auto&) {
                  auto other = proto::generate_keypair();
                  e.signature = proto::sign(other.secret_key, proto::canonical_bytes(e.manifest));
                }},
        Refusal{"expired_manifest", "signature",  // re-signed below with expiry in the past
                [](Harness& h, proto::DesiredChannel& e, auto&) {
                  e.manifest.expires = h.clock.wall_ms() / 1000 - 1;
                }},
        Refusal{"expired_but_signed", "expired",
                [](Harness& h, proto::DesiredChannel& e, auto&) {
                  e.manifest.expires = h.clock.wall_ms() / 1000 - 1;
                  e.signature = proto::sign(h.keys.secret_key, proto::canonical_bytes(e.manifest));
                }},
        Refusal{"manifest_mismatch", "manifest",
                [](Harness&, proto::DesiredChannel& e, auto&) { e.version = 7; }},
        Refusal{"known_bad", "known_bad",
                [](Harness&, proto::DesiredChannel&, std::vector<proto::KnownBad>& bad) {
                  bad.push_back({"rules", 6});
                }},
        Refusal{
            "downgrade", "downgrade",
            [](Harness& h, proto::DesiredChannel& e, auto&) { e = h.release("rules", 4, "4"); }}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(Verify, AnExpiredManifestReSignedByTheServerIsTriedAgain) {
  Harness h;
  h.boot_enrolled();
  auto stale = h.release("rules", 1, "content", -10);
  h.deliver(h.desired({stale}));
  ASSERT_EQ(h.spooled(ReportKind::ApplyFailed).size(), 1u);
  h.clock.advance(0);
  h.deliver(h.desired({h.release("rules", 1, "content", 3600)}));
  ASSERT_EQ(h.api.downloads.size(), 1u);
  h.api.serve_download();
  EXPECT_EQ(h.current("rules"), "content");
}

TEST(Verify, TooLargeIsRefusedBeforeDownload) {
  Harness h;
  h.cfg.max_content_bytes = 3;
  h.boot_enrolled();
  h.deliver(h.desired({h.release("rules", 1, "four")}));
  EXPECT_TRUE(h.api.downloads.empty());
  ASSERT_EQ(h.spooled(ReportKind::ApplyFailed).size(), 1u);
  EXPECT_EQ(detail_field(h.spooled(ReportKind::ApplyFailed)[0], "check"), "too_large");
}

TEST(Verify, OnlyASignedRollbackAllowsADowngrade) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "one"));
  h.apply(h.release("rules", 2, "two"));
  // The unsigned hint alone (what a man in the middle can add to a replayed answer) is refused.
  auto hinted = h.release("rules", 1, "one");
  hinted.rollback = true;
  h.deliver(h.desired({hinted}));
  EXPECT_EQ(h.current("rules"), "two");
  ASSERT_EQ(h.spooled(ReportKind::ApplyFailed).size(), 1u);
  EXPECT_EQ(detail_field(h.spooled(ReportKind::ApplyFailed)[0], "check"), "downgrade");
  // The server's signed authorisation (rollback_from covers v2) is accepted.
  auto back = h.release("rules", 1, "one");
  back.rollback = true;
  back.manifest.rollback_from = 2;
  back.signature = proto::sign(h.keys.secret_key, proto::canonical_bytes(back.manifest));
  h.clock.advance(0);
  h.apply(back);
  EXPECT_EQ(h.current("rules"), "one");
  EXPECT_EQ(h.spooled(ReportKind::ApplyFailed).size(), 1u);
}

TEST(Verify, ConsumerCheckRefusalIsReported) {
  Harness h(true);
  h.boot_enrolled();
  h.deliver(h.desired({h.release("rules", 1, "x")}));
  h.api.serve_download();
  h.consumer.answer_check(fail(Errc::Unprocessable, "check exited with status 3"));
  EXPECT_FALSE(h.agent->persisted().channels.count("rules") &&
               h.agent->persisted().channels.at("rules").active != 0);
  auto failed = h.spooled(ReportKind::ApplyFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(detail_field(failed[0], "check"), "consumer_check");
}

TEST(Verify, PureChecks) {
  auto keys = proto::generate_keypair();
  proto::DesiredChannel e;
  e.channel = "c";
  e.version = 3;
  e.sha256 = std::string(64, 'a');
  e.size = 10;
  e.manifest = {"c", 3, e.sha256, 10, 100, 200};
  e.signature = proto::sign(keys.secret_key, proto::canonical_bytes(e.manifest));
  content::VerifyContext ctx;
  auto trusted = proto::implicit_key_set(keys.public_key);
  ctx.keys = &trusted;
  ctx.now_s = 150;
  EXPECT_TRUE(content::verify_entry(e, ctx));
  ctx.now_s = 200;
  EXPECT_EQ(content::verify_entry(e, ctx).error().code, "expired");
  ctx.now_s = 150;
  content::VersionSet q = {{"c", 3}};
  ctx.quarantined = &q;
  EXPECT_EQ(content::verify_entry(e, ctx).error().code, "quarantined");
  ctx.quarantined = nullptr;
  ctx.active_version = 4;
  EXPECT_EQ(content::verify_entry(e, ctx).error().code, "downgrade");
  e.rollback = true;  // unsigned: authorises nothing
  EXPECT_EQ(content::verify_entry(e, ctx).error().code, "downgrade");
  e.manifest.rollback_from = 4;  // now covered, but the signature no longer matches
  EXPECT_EQ(content::verify_entry(e, ctx).error().code, "signature");
  e.signature = proto::sign(keys.secret_key, proto::canonical_bytes(e.manifest));
  EXPECT_TRUE(content::verify_entry(e, ctx));
  ctx.active_version = 5;  // a replayed authorisation cannot take a newer host down
  EXPECT_EQ(content::verify_entry(e, ctx).error().code, "downgrade");
}

TEST(Download, ALocalFailureIsRetriedAfterABackoffNotInALoop) {
  Harness h;
  h.boot_enrolled();
  h.fs.fail_install = true;
  h.deliver(h.desired({h.release("rules", 1, "content")}));
  h.api.serve_download();
  EXPECT_EQ(h.agent->machine_state(), State::Idle);
  EXPECT_TRUE(h.api.downloads.empty()) << "no immediate second download";
  ASSERT_EQ(h.spooled(ReportKind::ApplyFailed).size(), 1u);
  h.fs.fail_install = false;
  h.clock.advance(60'000);
  ASSERT_EQ(h.api.downloads.size(), 1u) << "the version was not given up";
  h.api.serve_download();
  EXPECT_EQ(h.current("rules"), "content");
}

// ---- downloads and swaps interrupted by kill -9 ----

TEST(Download, ResumesWithRangeAfterAKill) {
  Harness h;
  h.boot_enrolled();
  std::string big(100'000, 'x');
  big[99'999] = 'y';
  auto v1 = h.release("rules", 1, big);
  h.restart("download_progress");
  h.deliver(h.desired({v1}));
  EXPECT_THROW(h.api.serve_download(40'000), Killed);
  h.restart();
  EXPECT_EQ(h.agent->machine_state(), State::Downloading);
  ASSERT_EQ(h.api.downloads.size(), 1u);
  EXPECT_EQ(h.api.downloads[0].offset, 40'000);
  h.api.serve_download();
  EXPECT_EQ(h.current("rules"), big);
}

TEST(Download, TransientFailureBacksOffThenResumes) {
  Harness h;
  h.boot_enrolled();
  auto v1 = h.release("rules", 1, "content");
  h.deliver(h.desired({v1}));
  auto d = h.api.downloads.back();
  h.api.downloads.clear();
  d.cb(tl::unexpected(failure(0)));
  EXPECT_EQ(h.agent->machine_state(), State::Downloading);
  EXPECT_TRUE(h.api.downloads.empty());
  h.clock.advance(60'000);
  ASSERT_EQ(h.api.downloads.size(), 1u);
  h.api.serve_download();
  EXPECT_EQ(h.current("rules"), "content");
}

TEST(Download, ANewerDesiredStateReplacesTheJob) {
  Harness h;
  h.boot_enrolled();
  auto v1 = h.release("rules", 1, "one");
  auto v2 = h.release("rules", 2, "two");
  h.deliver(h.desired({v1}));
  h.clock.advance(0);
  h.deliver(h.desired({v2}));
  ASSERT_EQ(h.api.downloads.size(), 2u);
  h.api.serve_download();  // v2's
  EXPECT_EQ(h.current("rules"), "two");
}

TEST(Download, ARollbackWhileDownloadingDropsTheJob) {
  Harness h;
  h.boot_enrolled();
  auto v1 = h.release("rules", 1, "one");
  h.apply(v1);
  h.deliver(h.desired({h.release("rules", 2, "two")}));
  ASSERT_EQ(h.agent->machine_state(), State::Downloading);
  h.clock.advance(0);
  h.deliver(h.desired({v1}, {{"rules", 2}}));  // the server halted v2: back to v1
  EXPECT_EQ(h.agent->machine_state(), State::Idle);
  ASSERT_EQ(h.api.downloads.size(), 1u);
  h.api.serve_download();  // the stale download completes: ignored
  EXPECT_EQ(h.current("rules"), "one");
  EXPECT_EQ(h.agent->machine_state(), State::Idle);
  EXPECT_TRUE(h.spooled(ReportKind::ApplyFailed).empty());
}

class SwapKilledAt : public ::testing::TestWithParam<const char*> {};

TEST_P(SwapKilledAt, LeavesOldOrNewContentNeverTorn) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "old content"));
  h.restart(GetParam());
  h.deliver(h.desired({h.release("rules", 2, "new content!")}));
  EXPECT_THROW(h.api.serve_download(), Killed);
  auto seen = h.current("rules");
  EXPECT_TRUE(seen == "old content" || seen == "new content!") << seen;
  h.restart();
  EXPECT_EQ(h.agent->machine_state(), State::Idle);
  EXPECT_EQ(h.current("rules"), "new content!");
  EXPECT_EQ(h.agent->persisted().channels.at("rules").active, 2);
  EXPECT_EQ(h.agent->persisted().channels.at("rules").lkg, 1);
}

INSTANTIATE_TEST_SUITE_P(Swap, SwapKilledAt,
                         ::testing::Values("swap_after_install", "swap_after_flip"));

// ---- the report spool ----

TEST(Spool, DeduplicatesAndSurvivesRestarts) {
  ringfence::testing::TempDir dir;
  RealFs fs;
  telemetry::Spool spool(fs, dir.path() + "/spool.json");
  ASSERT_TRUE(spool.load());
  proto::Report r;
  r.kind = ReportKind::Crash;
  r.time = 1000;
  r.boot_id = "b";
  r.channel = "rules";
  r.version = 3;
  EXPECT_TRUE(*spool.add(r));
  EXPECT_FALSE(*spool.add(r)) << "same key is a duplicate";
  auto other = r;
  other.version = 4;  // a different crash in the same millisecond keeps its own time
  EXPECT_TRUE(*spool.add(other));
  EXPECT_EQ(spool.size(), 2u);
  EXPECT_NE(spool.reports()[0].time, spool.reports()[1].time);
  telemetry::Spool again(fs, dir.path() + "/spool.json");
  ASSERT_TRUE(again.load());
  EXPECT_EQ(again.size(), 2u);
  EXPECT_FALSE(*again.add(r));
  ASSERT_TRUE(again.ack({r}));
  EXPECT_EQ(again.size(), 1u);
}

TEST(Spool, CorruptFileIsSetAside) {
  ringfence::testing::TempDir dir;
  RealFs fs;
  ASSERT_TRUE(fs.write_atomic(dir.path() + "/spool.json", "{not json", 0600));
  telemetry::Spool spool(fs, dir.path() + "/spool.json");
  EXPECT_FALSE(spool.load());
  EXPECT_EQ(spool.size(), 0u);
  EXPECT_TRUE(fs.exists(dir.path() + "/spool.json.corrupt"));
}

TEST(Spool, ReportsWaitForTheServerAndAreSentOnce) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "one"));
  ASSERT_FALSE(h.api.report_calls.empty());
  h.api.ack_reports(false);  // server down
  EXPECT_EQ(h.agent->spool().size(), 1u);
  h.restart();  // the agent dies too: the spool is on disk
  EXPECT_EQ(h.agent->spool().size(), 2u) << "applied + agent_restart";
  // The first flush after the restart fails again; the retry after backoff succeeds.
  h.api.ack_reports(false);
  h.clock.advance(60'000);
  ASSERT_FALSE(h.api.report_calls.empty());
  h.api.ack_reports(true);
  EXPECT_EQ(h.agent->spool().size(), 0u);
  EXPECT_EQ(h.api.acked.size(), 2u);
  h.restart();
  h.api.ack_reports(true);
  EXPECT_EQ(h.api.acked.size(), 3u) << "only the new agent_restart report";
}

// ---- backoff ----

TEST(Backoff, FullJitterWithinExponentialBoundsAndCap) {
  double r = 0.999999;
  Backoff b(500, 60'000, [&] { return r; });
  std::int64_t expect_ceiling = 500;
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(b.ceiling_ms(), expect_ceiling);
    auto d = b.next_delay_ms();
    EXPECT_LE(d, expect_ceiling);
    EXPECT_GE(d, expect_ceiling - 1);
    expect_ceiling = std::min<std::int64_t>(expect_ceiling * 2, 60'000);
  }
  r = 0.0;
  EXPECT_EQ(b.next_delay_ms(), 0) << "full jitter reaches zero";
  EXPECT_EQ(b.next_delay_ms(7000), 7000) << "Retry-After is a floor";
  r = 0.5;  // ... with the jitter on top of it, so clients told the same wait spread out
  auto ceiling = b.ceiling_ms();
  EXPECT_EQ(b.next_delay_ms(7000), 7000 + static_cast<std::int64_t>(0.5 * (ceiling + 1)));
  b.reset();
  EXPECT_EQ(b.ceiling_ms(), 500);
}

TEST(Backoff, RealJitterSpreadsClients) {
  Backoff b(1000, 1000);
  std::set<std::int64_t> seen;
  for (int i = 0; i < 50; ++i) {
    auto d = b.next_delay_ms();
    EXPECT_GE(d, 0);
    EXPECT_LE(d, 1000);
    seen.insert(d);
  }
  EXPECT_GT(seen.size(), 10u);
}

TEST(Agent, PollFailuresBackOffAndAnsweringAtOnceDoesNotStorm) {
  Harness h;
  h.boot_enrolled();
  h.api.answer_desired(tl::unexpected(failure(503, 2000)));
  EXPECT_TRUE(h.api.desireds.empty());
  h.clock.advance(1999);
  EXPECT_TRUE(h.api.desireds.empty()) << "Retry-After is a floor";
  h.clock.advance(501);  // ... with the first backoff's jitter (up to 500 ms) on top
  ASSERT_EQ(h.api.desireds.size(), 1u);
  // A server that answers 304 instantly: after two fast answers the agent waits poll_s.
  int polls = 0;
  for (int i = 0; i < 10; ++i) {
    if (h.api.desireds.empty()) break;
    h.api.answer_desired(net::DesiredAnswer{true, {}});
    ++polls;
    h.clock.advance(0);
  }
  EXPECT_LE(polls, 3);
  h.clock.advance(30'000);
  EXPECT_EQ(h.api.desireds.size(), 1u);
}

TEST(Agent, UnauthorizedReEnrollsWithTheSameHostId) {
  Harness h;
  h.boot_enrolled();
  auto host = h.agent->identity()->host_id;
  h.api.answer_desired(tl::unexpected(failure(401)));
  EXPECT_EQ(h.agent->machine_state(), State::Unenrolled);
  h.clock.advance(60'000);
  ASSERT_EQ(h.api.enrolls.size(), 1u);
  EXPECT_EQ(h.api.enrolls[0].req.host_id, host);
}

// ---- crash detection and the crash-loop guard ----

TEST(Crash, UncleanShutdownIsReportedOnceAndCleanStopIsNot) {
  Harness h;
  h.boot_enrolled();
  h.agent->stop();
  h.agent.reset();
  h.boot();
  EXPECT_TRUE(h.spooled(ReportKind::Crash).empty());
  h.restart();  // same boot: the agent process died, not the host
  EXPECT_TRUE(h.spooled(ReportKind::Crash).empty());
  auto restarts = h.spooled(ReportKind::AgentRestart);
  ASSERT_EQ(restarts.size(), 1u);
  EXPECT_EQ(detail_field(restarts[0], "kind"), "agent_restart");
  EXPECT_EQ(detail_field(restarts[0], "boot_id_changed"), "false");
  h.sys.boot = "99999999-2222-4333-8444-555555555555";
  h.restart();  // a new boot after an unclean shutdown: a crash
  auto crashes = h.spooled(ReportKind::Crash);
  ASSERT_EQ(crashes.size(), 1u);
  EXPECT_EQ(detail_field(crashes[0], "kind"), "unclean_shutdown");
  EXPECT_EQ(detail_field(crashes[0], "host_rebooted"), "true");
  EXPECT_EQ(crashes[0].boot_id, h.sys.boot);
}

// Issue 14: an agent killed again and again on the same boot while new content is on probation
// is not a crash loop of that content: no crash report, no failure counted, no revert. The
// restarts are reported (naming the content on probation) as their own kind.
TEST(Crash, AgentRestartsOnTheSameBootAreNotCrashesOfTheContent) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "good"));
  h.apply(h.release("rules", 2, "new, on probation"), {}, false);
  for (int k = 0; k < 3; ++k) {
    h.clock.advance(1000);  // distinct report times (the spool dedups by time)
    h.restart();
  }
  EXPECT_EQ(h.current("rules"), "new, on probation");
  EXPECT_TRUE(h.spooled(ReportKind::Crash).empty());
  EXPECT_TRUE(h.spooled(ReportKind::LocalRollback).empty());
  EXPECT_TRUE(h.agent->persisted().quarantine.empty());
  EXPECT_EQ(h.agent->persisted().guards.at("rules").failures, 0);
  auto restarts = h.spooled(ReportKind::AgentRestart);
  ASSERT_EQ(restarts.size(), 3u);
  EXPECT_EQ(restarts[0].channel, std::optional<std::string>("rules"));
  EXPECT_EQ(restarts[0].version, std::optional<std::int64_t>(2));
  // The host itself dying is still counted: two new boots revert (K = 2).
  h.sys.boot = "22222222-2222-4333-8444-555555555555";
  h.restart();
  h.sys.boot = "33333333-2222-4333-8444-555555555555";
  h.restart();
  EXPECT_EQ(h.current("rules"), "good");
  EXPECT_EQ(h.spooled(ReportKind::LocalRollback).size(), 1u);
}

TEST(Crash, ConsumerCrashLoopRevertsToLastKnownGoodWithoutTheServer) {
  Harness h(true);
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "good"));
  h.apply(h.release("rules", 2, "crashes the consumer"), {}, false);
  ASSERT_EQ(h.current("rules"), "crashes the consumer");
  h.api.ack_reports(false);  // the network is gone from here on
  h.consumer.crash("rules");
  EXPECT_EQ(h.current("rules"), "crashes the consumer") << "one crash is not a loop";
  h.clock.advance(2000);  // consumer restarted after backoff
  ASSERT_TRUE(h.consumer.running("rules"));
  h.consumer.crash("rules", 6);
  EXPECT_EQ(h.current("rules"), "good");
  EXPECT_EQ(h.consumer.file_of("rules"), h.cfg.content_dir + "/rules/versions/v1");
  const auto& st = h.agent->persisted();
  ASSERT_EQ(st.quarantine.size(), 1u);
  EXPECT_EQ(st.quarantine[0].version, 2);
  auto crashes = h.spooled(ReportKind::Crash);
  ASSERT_EQ(crashes.size(), 2u);
  EXPECT_EQ(detail_field(crashes[0], "kind"), "consumer_signal");
  EXPECT_EQ(detail_field(crashes[1], "signal"), "6");
  auto rb = h.spooled(ReportKind::LocalRollback);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(rb[0].version, 2);
  EXPECT_EQ(detail_field(rb[0], "to"), "1");
  // Quarantine survives a restart and refuses the version if the server offers it again.
  h.restart();
  h.deliver(h.desired({h.release("rules", 2, "crashes the consumer")}));
  EXPECT_EQ(h.current("rules"), "good");
  auto failed = h.spooled(ReportKind::ApplyFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(detail_field(failed[0], "check"), "quarantined");
  // When the network is back, everything queued is sent.
  h.clock.advance(120'000);
  h.api.ack_reports(true);
  h.clock.advance(120'000);
  h.api.ack_reports(true);
  EXPECT_EQ(h.agent->spool().size(), 0u);
}

TEST(Crash, CrashLoopWhileUnenrolledStillRevertsAndEnrollsAfterwards) {
  Harness h(true);
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "good"));
  h.apply(h.release("rules", 2, "bad"), {}, false);
  h.clock.advance(0);
  h.api.answer_desired(tl::unexpected(failure(401)));  // credential revoked
  ASSERT_EQ(h.agent->machine_state(), State::Unenrolled);
  h.consumer.crash("rules");
  h.clock.advance(1000);
  h.consumer.crash("rules");
  EXPECT_EQ(h.current("rules"), "good");
  EXPECT_EQ(h.agent->machine_state(), State::Unenrolled);
  h.clock.advance(60'000);
  EXPECT_EQ(h.agent->machine_state(), State::Enrolling);
  EXPECT_FALSE(h.api.enrolls.empty());
}

TEST(Crash, AgentRestartLoopRevertsOnStart) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "good"));
  h.apply(h.release("rules", 2, "kills the host"), {}, false);
  h.sys.boot = "22222222-2222-4333-8444-555555555555";
  h.restart();  // host died: failure 1
  EXPECT_EQ(h.current("rules"), "kills the host");
  h.sys.boot = "33333333-2222-4333-8444-555555555555";
  h.restart();  // failure 2: revert before anything else
  EXPECT_EQ(h.current("rules"), "good");
  auto crashes = h.spooled(ReportKind::Crash);
  ASSERT_EQ(crashes.size(), 2u);
  EXPECT_EQ(detail_field(crashes[1], "kind"), "boot_loop");
  EXPECT_EQ(h.spooled(ReportKind::LocalRollback).size(), 1u);
}

TEST(Crash, HealthyCheckpointDisarmsTheGuard) {
  Harness h(true);
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "good"));
  h.apply(h.release("rules", 2, "fine too"));  // settles past healthy_after_s
  EXPECT_TRUE(h.agent->persisted().guards.at("rules").healthy);
  h.consumer.crash("rules");
  h.clock.advance(2000);
  h.consumer.crash("rules");
  EXPECT_EQ(h.current("rules"), "fine too");
  EXPECT_TRUE(h.spooled(ReportKind::LocalRollback).empty());
}

TEST(Crash, CrashesOutsideTheWindowDoNotCount) {
  Harness h(true);
  h.cfg.crash_loop_window_s = 10;
  h.cfg.healthy_after_s = 100;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "good"));
  h.apply(h.release("rules", 2, "slow burner"), {}, false);
  h.clock.advance(11'000);
  h.consumer.crash("rules");
  h.clock.advance(2000);
  h.consumer.crash("rules");
  EXPECT_EQ(h.current("rules"), "slow burner");
}

TEST(KnownBad, ActiveKnownBadIsDroppedToLastKnownGood) {
  Harness h(true);
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "good"));
  h.apply(h.release("rules", 2, "bad"));
  h.deliver(h.desired({}, {{"rules", 2}}));
  EXPECT_EQ(h.current("rules"), "good");
  EXPECT_EQ(h.consumer.file_of("rules"), h.cfg.content_dir + "/rules/versions/v1");
  auto rb = h.spooled(ReportKind::LocalRollback);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(detail_field(rb[0], "reason"), "known_bad");
}

TEST(KnownBad, WithoutLastKnownGoodTheContentIsRemoved) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "bad"));
  h.deliver(h.desired({}, {{"rules", 1}}));
  EXPECT_FALSE(h.fs.exists(h.cfg.content_dir + "/rules/current"));
  EXPECT_EQ(h.agent->persisted().channels.at("rules").active, 0);
}

// ---- the signed desired state: nothing of a refused answer is acted on ----

constexpr const char* kOtherHost = "00000000-0000-4000-8000-000000000000";

// Re-signs a channel entry's manifest with kp (naming kp).
proto::DesiredChannel signed_by(proto::DesiredChannel c, const proto::KeyPair& kp) {
  c.signature = proto::sign(kp.secret_key, proto::canonical_bytes(c.manifest));
  c.key_id = proto::key_id(kp.public_key);
  return c;
}

// The root-signed key set v`version` listing `online` for both roles, revoking `revoked`.
std::string key_set(std::int64_t version, const proto::KeyPair& root,
                    std::vector<proto::KeyPair> online, std::vector<proto::KeyPair> revoked,
                    std::int64_t expires, const proto::KeyPair* signer = nullptr) {
  proto::KeySet s;
  s.version = version;
  s.expires = expires;
  s.root = root.public_key;
  for (const auto& k : online) {
    s.keys.push_back({proto::key_id(k.public_key), k.public_key, proto::KeyRole::Content, 0});
    s.keys.push_back({proto::key_id(k.public_key), k.public_key, proto::KeyRole::Desired, 0});
  }
  for (const auto& k : revoked) s.revoked.push_back(proto::key_id(k.public_key));
  return proto::encode(proto::sign_key_set(s, {(signer ? *signer : root).secret_key}));
}

TEST(DesiredState, AnotherHostsAnswerIsRefused) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "one"));
  auto ds = h.desired({h.release("rules", 2, "two")}, {{"rules", 1}});
  ds.host_id = kOtherHost;
  Harness::sign(ds, h.keys);  // a genuine answer, for another host
  h.clock.advance(0);
  h.deliver(ds);
  EXPECT_EQ(h.agent->refusals().at("wrong_host"), 1);
  EXPECT_TRUE(h.api.downloads.empty());
  EXPECT_EQ(h.current("rules"), "one") << "its known-bad list was not acted on either";
  EXPECT_TRUE(h.spooled(ReportKind::LocalRollback).empty());
  h.clock.advance(0);
  ASSERT_FALSE(h.api.desireds.empty());
  EXPECT_NE(h.api.desireds.back().etag, ds.etag) << "its etag is not adopted";
}

TEST(DesiredState, ALowerGenerationIsAReplayEvenAfterARestart) {
  Harness h(true);
  h.boot_enrolled();
  auto v1 = h.release("rules", 1, "one");
  auto v2 = h.release("rules", 2, "two, quarantined later");
  auto old_answer = h.desired({v2});  // signed first: the lower generation
  h.apply(v1);
  // The server quarantines v2: the fresh answer names it known-bad.
  h.clock.advance(0);
  h.deliver(h.desired({v1}, {{"rules", 2}}));
  auto acted = h.agent->persisted().generation;
  EXPECT_GT(acted, old_answer.generation);
  // A man in the middle replays the older, still valid answer: v2 without the known-bad entry.
  h.clock.advance(0);
  h.deliver(old_answer);
  EXPECT_EQ(h.agent->refusals().at("replayed_generation"), 1);
  EXPECT_TRUE(h.api.downloads.empty());
  h.restart();  // the generation acted on is persisted
  EXPECT_EQ(h.agent->persisted().generation, acted);
  h.api.enrolls.clear();
  h.clock.advance(0);
  h.deliver(old_answer);
  EXPECT_EQ(h.agent->refusals().at("replayed_generation"), 1);
  EXPECT_TRUE(h.api.downloads.empty());
  EXPECT_EQ(h.current("rules"), "one");
}

TEST(DesiredState, AnExpiredAnswerFreezesTheHostAndIsReported) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "one"));
  auto ds = h.desired({h.release("rules", 2, "two")}, {{"rules", 1}});
  ds.expires = h.clock.wall_ms() / 1000;  // expired (issued a long time ago)
  Harness::sign(ds, h.keys);
  h.clock.advance(0);
  h.deliver(ds);
  EXPECT_EQ(h.agent->refusals().at("stale_desired_state"), 1);
  EXPECT_TRUE(h.agent->stale());
  EXPECT_TRUE(h.api.downloads.empty());
  EXPECT_EQ(h.current("rules"), "one");
  auto stale = h.spooled(ReportKind::StaleDesiredState);
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_FALSE(stale[0].channel.has_value());
  // A fresh answer ends the freeze.
  h.clock.advance(0);
  h.deliver(h.desired({h.release("rules", 2, "two")}));
  EXPECT_FALSE(h.agent->stale());
  ASSERT_EQ(h.api.downloads.size(), 1u);
}

TEST(DesiredState, A304KeepsTheAnswerInForceOnlyUntilItExpires) {
  Harness h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "one"));  // settles 61 s of the answer's hour
  h.clock.advance(0);
  ASSERT_FALSE(h.api.desireds.empty());
  EXPECT_EQ(h.api.desireds.back().etag, "e1");
  // Every poll is answered 304 until one comes without the etag (past the answer's expiry).
  for (int n = 0; n < 2000; ++n) {
    if (!h.api.desireds.empty() && h.api.desireds.back().etag != "e1") break;
    if (!h.api.desireds.empty()) {
      EXPECT_FALSE(h.agent->stale()) << "in force until it expires";
      h.api.answer_desired(net::DesiredAnswer{true, {}});  // 304
    }
    h.api.ack_beats();
    h.clock.advance(10'000);
  }
  ASSERT_FALSE(h.api.desireds.empty());
  EXPECT_EQ(h.api.desireds.back().etag, "") << "past expiry the agent asks without If-None-Match";
  EXPECT_TRUE(h.agent->stale());
  EXPECT_EQ(h.spooled(ReportKind::StaleDesiredState).size(), 1u);
  EXPECT_EQ(h.current("rules"), "one") << "frozen, not emptied";
  h.deliver(h.desired({h.release("rules", 1, "one")}));
  EXPECT_FALSE(h.agent->stale());
}

TEST(DesiredState, AnUnsignedOrForgedAnswerIsRefused) {
  Harness h;
  h.boot_enrolled();
  auto ds = h.desired({h.release("rules", 1, "one")});
  ds.signature.clear();
  h.deliver(ds);
  auto forged = h.desired({h.release("rules", 1, "one")});
  Harness::sign(forged, proto::generate_keypair());
  h.clock.advance(0);
  h.deliver(forged);
  EXPECT_EQ(h.agent->refusals().at("desired_signature"), 1);
  EXPECT_EQ(h.agent->refusals().at("unknown_key"), 1);
  EXPECT_TRUE(h.api.downloads.empty());
}

// ---- key sets: learned through the desired state, root-signed only ----

struct Rooted : Harness {
  Rooted() {
    cfg.root_key = root.public_key;  // --root-key, and --public-key for the first set
  }
  proto::KeyPair root = proto::generate_keypair();
  proto::KeyPair k2 = proto::generate_keypair();
  std::int64_t later() { return clock.wall_ms() / 1000 + 30 * 86400; }
};

TEST(KeySets, ARotationIsLearnedKeptAndTheRevokedKeysContentRefused) {
  Rooted h;
  h.boot_enrolled();
  h.apply(h.release("rules", 1, "one"));
  // v1 adds k2; the server signs desired states with k2 from now on.
  auto v2 = h.release("rules", 2, "two");
  h.desired_keys = h.k2;
  auto ds = h.desired({v2});
  ds.key_set = key_set(1, h.root, {h.keys, h.k2}, {}, h.later());
  h.clock.advance(0);
  h.deliver(ds);
  EXPECT_EQ(h.agent->trust().keys.version, 1);
  ASSERT_EQ(h.api.downloads.size(), 1u) << "content signed by the old key is still good";
  h.api.serve_download();
  EXPECT_EQ(h.current("rules"), "two");
  // v2 revokes the first key: content signed only by it is refused; re-signed by k2 it is not.
  h.restart();  // the key set is kept in the state dir
  EXPECT_EQ(h.agent->trust().keys.version, 1);
  h.api.enrolls.clear();
  auto v3 = h.release("rules", 3, "three");
  auto ds3 = h.desired({v3});
  ds3.key_set = key_set(2, h.root, {h.k2}, {h.keys}, h.later());
  h.clock.advance(0);
  h.deliver(ds3);
  EXPECT_EQ(h.agent->trust().keys.version, 2);
  EXPECT_TRUE(h.api.downloads.empty());
  auto failed = h.spooled(ReportKind::ApplyFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(detail_field(failed[0], "check"), "revoked_key");
  auto ds4 = h.desired({signed_by(v3, h.k2)});
  h.clock.advance(0);
  h.deliver(ds4);
  ASSERT_EQ(h.api.downloads.size(), 1u);
  h.api.serve_download();
  EXPECT_EQ(h.current("rules"), "three");
  // A desired state signed by the revoked key is refused (answers came fast: the agent now
  // polls at poll_s).
  h.desired_keys = h.keys;
  h.clock.advance(31'000);
  h.deliver(h.desired({signed_by(v3, h.k2)}, {{"rules", 3}}));
  EXPECT_EQ(h.agent->refusals().at("revoked_key"), 1);
  EXPECT_EQ(h.current("rules"), "three");
}

TEST(KeySets, ASetNotSignedByTheRootIsRefused) {
  Rooted h;
  h.boot_enrolled();
  h.desired_keys = h.k2;
  auto ds = h.desired({h.release("rules", 1, "one")});
  // Signed by the trusted online key, not the root: an online key cannot add keys.
  ds.key_set = key_set(1, h.root, {h.keys, h.k2}, {}, h.later(), &h.keys);
  h.deliver(ds);
  EXPECT_EQ(h.agent->refusals().at("key_set_signature"), 1);
  EXPECT_EQ(h.agent->refusals().at("unknown_key"), 1) << "so k2's answer is not trusted";
  EXPECT_EQ(h.agent->trust().keys.version, 0);
  EXPECT_TRUE(h.api.downloads.empty());
}

TEST(KeySets, AnExpiredSetIsRefused) {
  Rooted h;
  h.boot_enrolled();
  h.desired_keys = h.k2;
  auto ds = h.desired({h.release("rules", 1, "one")});
  ds.key_set = key_set(1, h.root, {h.keys, h.k2}, {}, h.clock.wall_ms() / 1000 - 1);
  h.deliver(ds);
  EXPECT_EQ(h.agent->refusals().at("key_set_expired"), 1);
  EXPECT_EQ(h.agent->trust().keys.version, 0);
  EXPECT_TRUE(h.api.downloads.empty());
}

TEST(KeySets, ARootRotationSignedByBothRootsIsFollowed) {
  Rooted h;
  h.boot_enrolled();
  auto root2 = proto::generate_keypair();
  proto::KeySet s;
  s.version = 1;
  s.expires = h.later();
  s.root = root2.public_key;
  for (auto role : {proto::KeyRole::Content, proto::KeyRole::Desired}) {
    s.keys.push_back({proto::key_id(h.keys.public_key), h.keys.public_key, role, 0});
  }
  auto ds = h.desired({});
  ds.key_set = proto::encode(proto::sign_key_set(s, {h.root.secret_key}));  // old root only
  h.deliver(ds);
  EXPECT_EQ(h.agent->refusals().at("key_set_signature"), 1);
  EXPECT_EQ(*h.agent->trust().root, h.root.public_key);
  ds = h.desired({});
  ds.key_set = proto::encode(proto::sign_key_set(s, {h.root.secret_key, root2.secret_key}));
  h.clock.advance(0);
  h.deliver(ds);
  EXPECT_EQ(h.agent->trust().keys.version, 1);
  EXPECT_EQ(*h.agent->trust().root, root2.public_key);
  h.restart();  // the new root is kept
  EXPECT_EQ(*h.agent->trust().root, root2.public_key);
  // From now on a set signed by the old root alone is refused.
  s.version = 2;
  s.root = h.root.public_key;
  ds = h.desired({});
  ds.key_set = proto::encode(proto::sign_key_set(s, {h.root.secret_key}));
  h.deliver(ds);
  EXPECT_EQ(h.agent->refusals().at("key_set_signature"), 1);
  EXPECT_EQ(h.agent->trust().keys.version, 1);
}

TEST(KeySets, WithoutARootKeySetsAreNotTaken) {
  Harness h;  // --public-key only
  h.boot_enrolled();
  auto root = proto::generate_keypair(), k2 = proto::generate_keypair();
  h.desired_keys = k2;
  auto ds = h.desired({h.release("rules", 1, "one")});
  ds.key_set = key_set(1, root, {k2}, {h.keys}, h.clock.wall_ms() / 1000 + 86400);
  h.deliver(ds);
  EXPECT_EQ(h.agent->trust().keys.version, 0);
  EXPECT_EQ(h.agent->refusals().at("unknown_key"), 1);
  EXPECT_TRUE(h.api.downloads.empty());
}

}  // namespace
}  // namespace ringfence::agent::testing
