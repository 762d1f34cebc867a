// The SQLite migrator on real files in a temp dir, and the Store contract: the same assertions
// against both backends (StoreContract/sqlite on a real file, StoreContract/postgres on a real
// PostgreSQL started by the test). PostgreSQL's own migrator: postgres_store_test.cpp.
#include "server/store/store.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>

#include "proto/try.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"

namespace ringfence::server::store {
namespace {

TEST(Migrator, WalksAnEmptyDatabaseThroughEveryStep) {
  testing::TempDir dir;
  auto path = dir.path() + "/r.db";
  const auto& all = embedded_migrations();
  ASSERT_FALSE(all.empty());
  for (std::size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].version, all[i].version);
  {
    auto s = open_sqlite(path, all);
    ASSERT_TRUE(s) << s.error().message;
    auto snap = (*s)->load();
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->tokens.empty());
  }
  EXPECT_EQ(*sqlite_user_version(path), all.back().version);
  // Opening again applies nothing and keeps the version.
  ASSERT_TRUE(open_sqlite(path, all));
  EXPECT_EQ(*sqlite_user_version(path), all.back().version);
}

TEST(Migrator, RefusesADatabaseNewerThanTheBinary) {
  testing::TempDir dir;
  auto path = dir.path() + "/r.db";
  auto all = embedded_migrations();
  auto newer = all;
  newer.push_back({all.back().version + 1, "9999_future", "CREATE TABLE future(x INTEGER);"});
  ASSERT_TRUE(open_sqlite(path, newer));
  auto old = open_sqlite(path, all);
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error().code, "schema_too_new");
  EXPECT_NE(old.error().message.find("newer than this binary"), std::string::npos);
}

TEST(Migrator, AFailedStepLeavesNothingHalfApplied) {
  testing::TempDir dir;
  auto path = dir.path() + "/r.db";
  std::vector<Migration> steps = {
      {1, "0001_a", "CREATE TABLE a(x INTEGER);"},
      {2, "0002_b", "CREATE TABLE b(x INTEGER); INSERT INTO nowhere VALUES(1);"},
  };
  auto s = open_sqlite(path, steps);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, "migration_failed");
  EXPECT_EQ(*sqlite_user_version(path), 1);
  // Step 2's first statement was rolled back with it: applying a fixed step 2 succeeds.
  steps[1].sql = "CREATE TABLE b(x INTEGER);";
  ASSERT_TRUE(open_sqlite(path, steps));
  EXPECT_EQ(*sqlite_user_version(path), 2);
}

TEST(Migrator, StepByStepEveryVersionIsRecorded) {
  testing::TempDir dir;
  auto path = dir.path() + "/steps.db";
  const auto& all = embedded_migrations();
  for (std::size_t k = 1; k <= all.size(); ++k) {
    std::vector<Migration> prefix(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k));
    auto s = open_sqlite(path, prefix);
    ASSERT_TRUE(s) << all[k - 1].name << ": " << s.error().message;
    EXPECT_EQ(*sqlite_user_version(path), all[k - 1].version) << all[k - 1].name;
  }
  // The fully migrated database works as a store.
  auto s = open_sqlite(path, all);
  ASSERT_TRUE(s);
  ASSERT_TRUE((*s)->put_ring({"r1", 0, R"({"buckets":[0,1]})", ""}));
  auto snap = (*s)->load();
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->rings.size(), 1u);
}

TEST(Migrator, AFailedFirstStepLeavesAnEmptyDatabase) {
  testing::TempDir dir;
  auto path = dir.path() + "/r.db";
  std::vector<Migration> steps = {{1, "0001_bogus", "CREATE TABLE a(x INTEGER); THIS IS NOT SQL;"}};
  auto s = open_sqlite(path, steps);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, "migration_failed");
  EXPECT_NE(s.error().message.find("0001_bogus"), std::string::npos) << s.error().message;
  EXPECT_EQ(*sqlite_user_version(path), 0);
  // Table a was rolled back with the step: creating it again succeeds.
  steps[0].sql = "CREATE TABLE a(x INTEGER);";
  ASSERT_TRUE(open_sqlite(path, steps));
  EXPECT_EQ(*sqlite_user_version(path), 1);
}

TEST(Migrator, TheRefusalNamesBothVersions) {
  testing::TempDir dir;
  auto path = dir.path() + "/r.db";
  std::vector<Migration> newer = {{1, "0001_a", "CREATE TABLE a(x INTEGER);"},
                                  {7, "0007_b", "CREATE TABLE b(x INTEGER);"}};
  ASSERT_TRUE(open_sqlite(path, newer));
  auto old = open_sqlite(path, {newer[0]});
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error().errc, Errc::Unavailable);
  EXPECT_NE(old.error().message.find("7"), std::string::npos) << old.error().message;
  EXPECT_NE(old.error().message.find("1"), std::string::npos) << old.error().message;
  EXPECT_EQ(*sqlite_user_version(path), 7);  // untouched
}

// ------------------------------------------------------------------ the Store contract

class StoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgres") pg_ = std::make_unique<testing::PostgresCluster>();
    reopen();
  }
  Expected<std::unique_ptr<Store>> open() {
    if (GetParam() == "postgres") return open_postgres(pg_->url(), embedded_postgres_migrations());
    return open_sqlite(dir_.path() + "/r.db", embedded_migrations());
  }
  // Closes the store and opens it again: what comes back was durable.
  void reopen() {
    store_.reset();
    auto s = open();
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
  }
  Store& st() { return *store_; }
  Snapshot snap() {
    auto s = st().load();
    EXPECT_TRUE(s) << s.error().message;
    return s ? std::move(*s) : Snapshot{};
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::PostgresCluster> pg_;
  std::unique_ptr<Store> store_;
};

INSTANTIATE_TEST_SUITE_P(Backends, StoreContract, ::testing::Values("sqlite", "postgres"),
                         [](const auto& p) { return p.param; });

std::string host_id(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

// Text that breaks naive quoting: quotes, backslashes, newlines, non-ASCII, SQL.
const std::string kAwkward = "it's \"quoted\" \\ back\nslash; DROP TABLE hosts; -- \u00e9\u4e2d";

TEST_P(StoreContract, EventsAreAppendOnlyAndReportsIdempotent) {
  auto id1 = st().append_event({0, 1, "admin", "a", std::nullopt, "{}"});
  auto id2 = st().append_event({0, 2, "admin", "b", 7, "{}"});
  ASSERT_TRUE(id1 && id2);
  EXPECT_LT(*id1, *id2);
  auto only7 = st().list_events({7, 0, 10});
  ASSERT_TRUE(only7);
  ASSERT_EQ(only7->size(), 1u);
  EXPECT_EQ((*only7)[0].kind, "b");
  ReportRow r{"h", "boot", "crash", 5, std::nullopt, std::nullopt, "{}", 1};
  ASSERT_TRUE(st().insert_reports({r, r}));
  ASSERT_TRUE(st().insert_reports({r}));
  EXPECT_FALSE(st().put_token({"x", "viewer", "h1", 1}) &&
               st().put_token({"x", "viewer", "h2", 1}));
}

TEST_P(StoreContract, EventsComeBackInOrderAfterACursorAndUpToALimit) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto id = st().append_event({0, 100 + i, "op:" + kAwkward, "kind" + std::to_string(i),
                                 i % 2 ? std::optional<std::int64_t>(9) : std::nullopt,
                                 R"({"i":)" + std::to_string(i) + "}"});
    ASSERT_TRUE(id) << id.error().message;
    ids.push_back(*id);
  }
  auto all = st().list_events({std::nullopt, 0, 100});
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ((*all)[i].id, ids[i]);
    EXPECT_EQ((*all)[i].time, 100 + static_cast<std::int64_t>(i));
    EXPECT_EQ((*all)[i].actor, "op:" + kAwkward);
    EXPECT_EQ((*all)[i].rollout.has_value(), i % 2 == 1);
    EXPECT_EQ((*all)[i].data_json, R"({"i":)" + std::to_string(i) + "}");
  }
  auto page = st().list_events({std::nullopt, ids[1], 2});
  ASSERT_TRUE(page);
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].id, ids[2]);
  EXPECT_EQ((*page)[1].id, ids[3]);
  auto of9 = st().list_events({9, ids[1], 10});
  ASSERT_TRUE(of9);
  ASSERT_EQ(of9->size(), 1u);
  EXPECT_EQ((*of9)[0].id, ids[3]);
  EXPECT_EQ(snap().last_event_id, ids[4]);
  reopen();
  EXPECT_EQ(snap().last_event_id, ids[4]);
  auto next = st().append_event({0, 1, "a", "k", std::nullopt, "{}"});
  ASSERT_TRUE(next);
  EXPECT_GT(*next, ids[4]) << "an event id was reused";
}

TEST_P(StoreContract, ReportsAreListedByChannelOldestFirstFromATime) {
  std::vector<ReportRow> rows;
  // received 10..19 on "det", every other one a duplicate sent again; one on another channel and
  // one without a channel.
  for (int i = 9; i >= 0; --i) {
    rows.push_back({"h" + std::to_string(i), "boot-" + kAwkward, "crash", 1000 + i, "det", i,
                    R"({"signal":11})", 10 + i});
  }
  rows.push_back(rows[3]);
  rows.push_back({"x", "b", "applied", 1, "other", 1, "{}", 15});
  rows.push_back({"y", "b", "applied", 1, std::nullopt, std::nullopt, "{}", 15});
  ASSERT_TRUE(st().insert_reports(rows));
  ASSERT_TRUE(st().insert_reports({rows[0], rows[1]}));  // sent again later: ignored
  auto got = st().list_reports("det", 0, 100);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 10u);
  for (std::size_t i = 0; i < got->size(); ++i) {
    EXPECT_EQ((*got)[i].received, 10 + static_cast<std::int64_t>(i));
    EXPECT_EQ((*got)[i].host_id, "h" + std::to_string(i));
    EXPECT_EQ((*got)[i].boot_id, "boot-" + kAwkward);
    EXPECT_EQ((*got)[i].channel, std::optional<std::string>("det"));
    EXPECT_EQ((*got)[i].version, std::optional<std::int64_t>(static_cast<std::int64_t>(i)));
    EXPECT_EQ((*got)[i].detail_json, R"({"signal":11})");
  }
  auto recent = st().list_reports("det", 15, 3);
  ASSERT_TRUE(recent);
  ASSERT_EQ(recent->size(), 3u);
  EXPECT_EQ((*recent)[0].received, 15);
  EXPECT_EQ((*recent)[2].received, 17);
  EXPECT_TRUE(st().list_reports("nothing", 0, 10)->empty());
}

TEST_P(StoreContract, NamesAreUniqueAndAConflictIsReportedAsSuch) {
  ASSERT_TRUE(st().put_token({"ci", "release", "hash-1", 1}));
  auto again = st().put_token({"ci", "viewer", "hash-2", 2});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().errc, Errc::Conflict);
  auto same_hash = st().put_token({"other", "viewer", "hash-1", 2});
  ASSERT_FALSE(same_hash);
  EXPECT_EQ(same_hash.error().errc, Errc::Conflict);
  EnrollTokenRow e{"fleet", "ehash", R"({"site":"x"})", std::nullopt, 5};
  ASSERT_TRUE(st().put_enroll_token(e));
  auto e2 = st().put_enroll_token(e);
  ASSERT_FALSE(e2);
  EXPECT_EQ(e2.error().errc, Errc::Conflict);
  // Nothing of the refused rows was written; the store goes on working.
  auto s = snap();
  ASSERT_EQ(s.tokens.size(), 1u);
  EXPECT_EQ(s.tokens[0].role, "release");
  ASSERT_TRUE(st().delete_token("ci"));
  ASSERT_TRUE(st().delete_token("never-existed"));
  EXPECT_TRUE(snap().tokens.empty());
  ASSERT_TRUE(st().put_token({"ci", "viewer", "hash-3", 3}));
}

TEST_P(StoreContract, EnrollmentTokensRoundTripWithUsesAndRevocation) {
  EnrollTokenRow a{"a", "ha", R"({"env":"prod"})", 99, 5, 10, 0, "acme", 30, std::nullopt};
  EnrollTokenRow b{"b", "hb", "{}", std::nullopt, 6};
  ASSERT_TRUE(st().put_enroll_token(a));
  ASSERT_TRUE(st().put_enroll_token(b));
  ASSERT_TRUE(st().set_enroll_token_uses("a", 4));
  ASSERT_TRUE(st().revoke_enroll_token("b", 77));
  ASSERT_TRUE(st().set_enroll_token_uses("ghost", 1));  // unknown: ignored
  ASSERT_TRUE(st().revoke_enroll_token("ghost", 1));
  reopen();
  auto s = snap();
  ASSERT_EQ(s.enroll_tokens.size(), 2u);
  std::sort(s.enroll_tokens.begin(), s.enroll_tokens.end(),
            [](const auto& x, const auto& y) { return x.name < y.name; });
  const auto& ga = s.enroll_tokens[0];
  EXPECT_EQ(ga.hash, "ha");
  EXPECT_EQ(ga.labels_json, R"({"env":"prod"})");
  EXPECT_EQ(ga.expires, std::optional<std::int64_t>(99));
  EXPECT_EQ(ga.created, 5);
  EXPECT_EQ(ga.max_uses, std::optional<std::int64_t>(10));
  EXPECT_EQ(ga.uses, 4);
  EXPECT_EQ(ga.tenant, "acme");
  EXPECT_EQ(ga.rate_per_min, 30);
  EXPECT_FALSE(ga.revoked);
  const auto& gb = s.enroll_tokens[1];
  EXPECT_FALSE(gb.expires);
  EXPECT_FALSE(gb.max_uses);
  EXPECT_EQ(gb.revoked, std::optional<std::int64_t>(77));
}

TEST_P(StoreContract, HostsUpsertInBatchesAndKeepTheirBootHashOnZero) {
  std::vector<HostRow> hosts;
  for (int i = 0; i < 1000; ++i) {
    HostRow h;
    h.host_id = host_id(i);
    h.credential_hash = std::string(64, 'a' + i % 6);
    h.labels_json = R"({"i":")" + std::to_string(i) + R"("})";
    h.tenant = i % 2 ? "acme" : "";
    h.pinned = i % 3 == 0;
    h.agent_version = "1.0";
    h.enrolled = 10;
    h.last_seen = 20 + i;
    h.channels_json = R"({"det":{"version":1}})";
    // fnv1a64 values are 64-bit: half of them are negative as int64.
    h.boot_hash = i % 2 ? std::numeric_limits<std::int64_t>::min() + i : 1234567890123456789LL;
    h.consumers_json = R"({"sensor":"7.11"})";
    hosts.push_back(h);
  }
  ASSERT_TRUE(st().upsert_hosts(hosts));
  // A second write of the first host: new values, boot_hash 0 keeps the stored one.
  HostRow changed = hosts[1];
  changed.labels_json = kAwkward;
  changed.pinned = true;
  changed.agent_version = "2.0";
  changed.enrolled = 999;  // enrolled is written once
  changed.boot_hash = 0;
  changed.consumers_json = "{}";
  ASSERT_TRUE(st().upsert_hosts({changed}));
  reopen();
  auto s = snap();
  ASSERT_EQ(s.hosts.size(), 1000u);
  std::map<std::string, HostRow> by_id;
  for (auto& h : s.hosts) by_id[h.host_id] = h;
  for (int i : {0, 2, 3, 998, 999}) {
    const auto& want = hosts[static_cast<std::size_t>(i)];
    const auto& got = by_id[want.host_id];
    EXPECT_EQ(got.credential_hash, want.credential_hash);
    EXPECT_EQ(got.labels_json, want.labels_json);
    EXPECT_EQ(got.tenant, want.tenant);
    EXPECT_EQ(got.pinned, want.pinned);
    EXPECT_EQ(got.last_seen, want.last_seen);
    EXPECT_EQ(got.boot_hash, want.boot_hash);
    EXPECT_EQ(got.channels_json, want.channels_json);
    EXPECT_EQ(got.consumers_json, want.consumers_json);
  }
  const auto& got = by_id[host_id(1)];
  EXPECT_EQ(got.labels_json, kAwkward);
  EXPECT_TRUE(got.pinned);
  EXPECT_EQ(got.agent_version, "2.0");
  EXPECT_EQ(got.enrolled, 10);
  EXPECT_EQ(got.boot_hash, hosts[1].boot_hash);
  EXPECT_EQ(got.consumers_json, "{}");
}

TEST_P(StoreContract, TouchHostsWritesOnlyLastSeen) {
  HostRow h{"00000000-0000-4000-8000-000000000001",
            std::string(64, 'a'),
            R"({"os":"linux"})",
            "t1",
            true,
            "1.0",
            10,
            20,
            R"({"det":{"version":3,"state":"active"}})"};
  ASSERT_TRUE(st().upsert_hosts({h}));
  ASSERT_TRUE(st().touch_hosts({{h.host_id, 99}, {"00000000-0000-4000-8000-000000000002", 5}}));
  auto s = snap();
  ASSERT_EQ(s.hosts.size(), 1u);  // an unknown id is not created
  const auto& got = s.hosts[0];
  EXPECT_EQ(got.last_seen, 99);
  EXPECT_EQ(got.channels_json, h.channels_json);
  EXPECT_EQ(got.labels_json, h.labels_json);
  EXPECT_EQ(got.credential_hash, h.credential_hash);
  EXPECT_TRUE(got.pinned);
}

TEST_P(StoreContract, HostTrustKeepsItsTokenOnEmptyAndGoesWithTheHost) {
  HostRow h{host_id(1), "c", "{}", "", false, "1", 1, 1, "{}"};
  ASSERT_TRUE(st().upsert_hosts({h, HostRow{host_id(2), "c", "{}", "", false, "1", 1, 1, "{}"}}));
  ASSERT_TRUE(st().put_host_trust({{host_id(1), 1000, "fleet"}, {host_id(2), 5, "reset:alice"}}));
  ASSERT_TRUE(st().put_host_trust({{host_id(1), 2000, ""}}));
  auto s = snap();
  std::map<std::string, HostTrustRow> trust;
  for (auto& t : s.host_trust) trust[t.host_id] = t;
  ASSERT_EQ(trust.size(), 2u);
  EXPECT_EQ(trust[host_id(1)].since_ms, 2000);
  EXPECT_EQ(trust[host_id(1)].enroll_token, "fleet");
  EXPECT_EQ(trust[host_id(2)].enroll_token, "reset:alice");
  ASSERT_TRUE(st().delete_host(host_id(1)));
  ASSERT_TRUE(st().delete_host(host_id(77)));  // unknown: nothing to do
  reopen();
  s = snap();
  ASSERT_EQ(s.hosts.size(), 1u);
  EXPECT_EQ(s.hosts[0].host_id, host_id(2));
  ASSERT_EQ(s.host_trust.size(), 1u);
  EXPECT_EQ(s.host_trust[0].host_id, host_id(2));
}

TEST_P(StoreContract, RingsChannelsReleasesPoliciesRolloutsAndSettingsUpsert) {
  ASSERT_TRUE(st().put_ring({"canary", 0, R"({"hosts":["a"]})", "first"}));
  ASSERT_TRUE(st().put_ring({"gone", 3, "{}", ""}));
  ASSERT_TRUE(st().put_ring({"canary", 1, R"({"buckets":[0,10]})", kAwkward}));
  ASSERT_TRUE(st().delete_ring("gone"));
  ASSERT_TRUE(st().put_channel(
      {"det", R"({"type":"object"})", std::nullopt, 1024, std::nullopt, 7, std::nullopt}));
  ASSERT_TRUE(st().put_channel({"det", R"({"type":"array"})", R"({"argv":["/bin/true"]})", 2048, 3,
                                999, R"({"name":"sensor"})"}));
  ASSERT_TRUE(st().put_release(
      {"det", 1, "sha-1", 10, "n1", "candidate", "m1", "sig1", R"({"ok":true})", 100}));
  // An upsert of a release changes its state, manifest, signature and notes only.
  ASSERT_TRUE(
      st().put_release({"det", 1, "sha-X", 99, "n2", "quarantined", "m2", "sig2", "{}", 5}));
  ASSERT_TRUE(st().put_release({"det", 2, "sha-2", 20, "", "candidate", "m", "s", "{}", 200}));
  ASSERT_TRUE(st().put_policy({"std", R"([{"ring":"canary"}])"}));
  ASSERT_TRUE(st().put_policy({"std", R"([{"ring":"canary"},{"ring":"rest"}])"}));
  ASSERT_TRUE(st().put_rollout({4, "det", 1, "running", 0, R"({"a":1})", 50, 50}));
  // An upsert of a rollout changes its state, stage, body and updated time only.
  ASSERT_TRUE(st().put_rollout({4, "other", 9, "halted", 1, R"({"a":2})", 1, 60}));
  ASSERT_TRUE(st().put_rollout({2, "det", 2, "completed", 2, "{}", 40, 41}));
  ASSERT_TRUE(st().put_setting("installation_secret", kAwkward));
  ASSERT_TRUE(st().put_setting("emergency_stop", "off"));
  ASSERT_TRUE(st().put_setting("emergency_stop", "on"));
  reopen();
  auto s = snap();
  ASSERT_EQ(s.rings.size(), 1u);
  EXPECT_EQ(s.rings[0].rank, 1);
  EXPECT_EQ(s.rings[0].selector_json, R"({"buckets":[0,10]})");
  EXPECT_EQ(s.rings[0].description, kAwkward);
  ASSERT_EQ(s.channels.size(), 1u);
  EXPECT_EQ(s.channels[0].schema_json, R"({"type":"array"})");
  EXPECT_EQ(s.channels[0].validator_json, std::optional<std::string>(R"({"argv":["/bin/true"]})"));
  EXPECT_EQ(s.channels[0].max_bytes, 2048);
  EXPECT_EQ(s.channels[0].stable_version, std::optional<std::int64_t>(3));
  EXPECT_EQ(s.channels[0].created, 7);
  EXPECT_EQ(s.channels[0].consumer_json, std::optional<std::string>(R"({"name":"sensor"})"));
  ASSERT_EQ(s.releases.size(), 2u);  // ordered by channel, version
  const auto& r1 = s.releases[0];
  EXPECT_EQ(r1.version, 1);
  EXPECT_EQ(r1.sha256, "sha-1");
  EXPECT_EQ(r1.size, 10);
  EXPECT_EQ(r1.notes, "n2");
  EXPECT_EQ(r1.state, "quarantined");
  EXPECT_EQ(r1.manifest_json, "m2");
  EXPECT_EQ(r1.signature, "sig2");
  EXPECT_EQ(r1.validation_json, R"({"ok":true})");
  EXPECT_EQ(r1.created, 100);
  EXPECT_EQ(s.releases[1].version, 2);
  ASSERT_EQ(s.policies.size(), 1u);
  EXPECT_EQ(s.policies[0].stages_json, R"([{"ring":"canary"},{"ring":"rest"}])");
  ASSERT_EQ(s.rollouts.size(), 2u);  // ordered by id
  EXPECT_EQ(s.rollouts[0].id, 2);
  const auto& ro = s.rollouts[1];
  EXPECT_EQ(ro.id, 4);
  EXPECT_EQ(ro.channel, "det");
  EXPECT_EQ(ro.version, 1);
  EXPECT_EQ(ro.state, "halted");
  EXPECT_EQ(ro.stage, 1);
  EXPECT_EQ(ro.body_json, R"({"a":2})");
  EXPECT_EQ(ro.created, 50);
  EXPECT_EQ(ro.updated, 60);
  std::map<std::string, std::string> settings(s.settings.begin(), s.settings.end());
  EXPECT_EQ(settings["installation_secret"], kAwkward);
  EXPECT_EQ(settings["emergency_stop"], "on");
}

TEST_P(StoreContract, AReleaseOfAnUnknownChannelIsRefused) {
  auto r = st().put_release({"nowhere", 1, "sha", 1, "", "candidate", "m", "s", "{}", 1});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, Errc::Conflict);
  EXPECT_TRUE(snap().releases.empty());
}

TEST_P(StoreContract, ExposuresUpsertByRolloutAndHostAndPruneInBatches) {
  std::vector<ExposureRow> rows;
  for (int i = 0; i < 7; ++i)
    rows.push_back({1, "h" + std::to_string(i), 0, 0, false, false, false, 0});
  rows.push_back({2, "h0", 1, 5, true, false, false, 0});
  ASSERT_TRUE(st().upsert_exposures(rows));
  ASSERT_TRUE(st().upsert_exposures({{1, "h0", 0, 9, false, true, true, 2}}));  // replaces
  auto one = st().list_exposures(1);
  ASSERT_TRUE(one);
  ASSERT_EQ(one->size(), 7u);
  for (const auto& e : *one) {
    if (e.host_id != "h0") continue;
    EXPECT_EQ(e.applied_ms, 9);
    EXPECT_TRUE(e.failed && e.silent);
    EXPECT_FALSE(e.healthy);
    EXPECT_EQ(e.short_boots, 2);
  }
  auto two = st().list_exposures(2);
  ASSERT_TRUE(two);
  ASSERT_EQ(two->size(), 1u);
  EXPECT_TRUE((*two)[0].healthy);
  EXPECT_EQ((*two)[0].stage, 1);
  EXPECT_EQ(*st().prune_exposures(1, 5), 5);
  EXPECT_EQ(*st().prune_exposures(1, 5), 2);
  EXPECT_EQ(*st().prune_exposures(1, 5), 0);
  EXPECT_EQ(st().list_exposures(2)->size(), 1u);  // another rollout's are untouched
}

TEST_P(StoreContract, BudgetRowsAreSetAndOldMinutesDropped) {
  ASSERT_TRUE(st().put_budget({{"", 100, 5}, {"tenant:acme", 100, 2}, {"", 101, 1}}, 0));
  ASSERT_TRUE(st().put_budget({{"", 101, 7}, {"", 160, 1}}, 101));
  reopen();
  auto s = snap();
  std::map<std::pair<std::string, std::int64_t>, std::int64_t> got;
  for (const auto& b : s.budget) got[{b.scope, b.minute}] = b.hosts;
  std::map<std::pair<std::string, std::int64_t>, std::int64_t> want = {{{"", 101}, 7},
                                                                       {{"", 160}, 1}};
  EXPECT_EQ(got, want);
}

TEST_P(StoreContract, AfterCommitRunsOnlyOnceTheOutermostTransactionCommitted) {
  std::vector<std::string> ran;
  st().after_commit([&] { ran.push_back("now"); });  // no transaction: at once
  EXPECT_EQ(ran, std::vector<std::string>{"now"});
  ran.clear();
  auto failed = st().transaction([&]() -> Status {
    EXPECT_TRUE(st().append_event({0, 1, "admin", "lost", std::nullopt, "{}"}));
    st().after_commit([&] { ran.push_back("lost"); });
    return fail(Errc::Unavailable, "disk full");
  });
  EXPECT_FALSE(failed);
  EXPECT_TRUE(ran.empty()) << "a rolled-back transaction's effects ran";
  EXPECT_TRUE(st().list_events({std::nullopt, 0, 10})->empty());
  auto ok = st().transaction([&]() -> Status {
    RF_CHECK(st().transaction([&]() -> Status {
      st().after_commit([&] { ran.push_back("inner"); });
      return {};
    }));
    EXPECT_TRUE(ran.empty()) << "ran before the outer transaction committed";
    st().after_commit([&] { ran.push_back("outer"); });
    return {};
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(ran, (std::vector<std::string>{"inner", "outer"}));
}

TEST_P(StoreContract, TransactionRollsBackOnError) {
  auto res = st().transaction([&]() -> Status {
    auto a = st().put_ring({"r1", 0, R"({"buckets":[0,1]})", ""});
    if (!a) return a;
    return fail(Errc::Conflict, "later step failed");
  });
  EXPECT_FALSE(res);
  EXPECT_EQ(res.error().message, "later step failed");
  EXPECT_TRUE(snap().rings.empty());
}

TEST_P(StoreContract, BatchesJoinTheCallersTransactionAndRollBackWithIt) {
  std::vector<HostRow> hosts;
  std::vector<ReportRow> reports;
  for (int i = 0; i < 300; ++i) {
    hosts.push_back({host_id(i), "c", "{}", "", false, "1", 1, 1, "{}"});
    reports.push_back({host_id(i), "b", "crash", i, "det", 1, "{}", 1});
  }
  auto res = st().transaction([&]() -> Status {
    RF_CHECK(st().upsert_hosts(hosts));
    RF_CHECK(st().insert_reports(reports));
    RF_CHECK(st().upsert_exposures({{1, host_id(0), 0, 0, false, false, false, 0}}));
    RF_CHECK(st().put_budget({{"", 1, 1}}, 0));
    return fail(Errc::Unavailable, "the group commit failed later");
  });
  ASSERT_FALSE(res);
  reopen();
  auto s = snap();
  EXPECT_TRUE(s.hosts.empty());
  EXPECT_TRUE(s.budget.empty());
  EXPECT_TRUE(st().list_reports("det", 0, 1000)->empty());
  EXPECT_TRUE(st().list_exposures(1)->empty());
  // The same batches on their own are each one committed transaction.
  ASSERT_TRUE(st().upsert_hosts(hosts));
  ASSERT_TRUE(st().insert_reports(reports));
  reopen();
  EXPECT_EQ(snap().hosts.size(), 300u);
  EXPECT_EQ(st().list_reports("det", 0, 1000)->size(), 300u);
}

}  // namespace
}  // namespace ringfence::server::store
