// The migrator and the SQLite store on real files in a temp dir.
#include "server/store/store.hpp"

#include <gtest/gtest.h>

#include "proto/try.hpp"
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

TEST(Store, EventsAreAppendOnlyAndReportsIdempotent) {
  auto s = open_sqlite(":memory:", embedded_migrations());
  ASSERT_TRUE(s);
  auto& st = **s;
  auto id1 = st.append_event({0, 1, "admin", "a", std::nullopt, "{}"});
  auto id2 = st.append_event({0, 2, "admin", "b", 7, "{}"});
  ASSERT_TRUE(id1 && id2);
  EXPECT_LT(*id1, *id2);
  auto only7 = st.list_events({7, 0, 10});
  ASSERT_TRUE(only7);
  ASSERT_EQ(only7->size(), 1u);
  EXPECT_EQ((*only7)[0].kind, "b");
  ReportRow r{"h", "boot", "crash", 5, std::nullopt, std::nullopt, "{}", 1};
  ASSERT_TRUE(st.insert_reports({r, r}));
  ASSERT_TRUE(st.insert_reports({r}));
  EXPECT_FALSE(st.put_token({"x", "viewer", "h1", 1}) && st.put_token({"x", "viewer", "h2", 1}));
}

TEST(Store, ExposuresUpsertByRolloutAndHostAndPruneInBatches) {
  auto s = open_sqlite(":memory:", embedded_migrations());
  ASSERT_TRUE(s);
  auto& st = **s;
  std::vector<ExposureRow> rows;
  for (int i = 0; i < 7; ++i)
    rows.push_back({1, "h" + std::to_string(i), 0, 0, false, false, false, 0});
  rows.push_back({2, "h0", 1, 5, true, false, false, 0});
  ASSERT_TRUE(st.upsert_exposures(rows));
  ASSERT_TRUE(st.upsert_exposures({{1, "h0", 0, 9, false, true, true, 2}}));  // replaces
  auto one = st.list_exposures(1);
  ASSERT_TRUE(one);
  ASSERT_EQ(one->size(), 7u);
  for (const auto& e : *one) {
    if (e.host_id != "h0") continue;
    EXPECT_EQ(e.applied_ms, 9);
    EXPECT_TRUE(e.failed && e.silent);
    EXPECT_EQ(e.short_boots, 2);
  }
  EXPECT_EQ(*st.prune_exposures(1, 5), 5);
  EXPECT_EQ(*st.prune_exposures(1, 5), 2);
  EXPECT_EQ(*st.prune_exposures(1, 5), 0);
  EXPECT_EQ(st.list_exposures(2)->size(), 1u);  // another rollout's are untouched
}

TEST(Store, AfterCommitRunsOnlyOnceTheOutermostTransactionCommitted) {
  auto s = open_sqlite(":memory:", embedded_migrations());
  ASSERT_TRUE(s);
  auto& st = **s;
  std::vector<std::string> ran;
  st.after_commit([&] { ran.push_back("now"); });  // no transaction: at once
  EXPECT_EQ(ran, std::vector<std::string>{"now"});
  ran.clear();
  auto failed = st.transaction([&]() -> Status {
    EXPECT_TRUE(st.append_event({0, 1, "admin", "lost", std::nullopt, "{}"}));
    st.after_commit([&] { ran.push_back("lost"); });
    return fail(Errc::Unavailable, "disk full");
  });
  EXPECT_FALSE(failed);
  EXPECT_TRUE(ran.empty()) << "a rolled-back transaction's effects ran";
  EXPECT_TRUE(st.list_events({std::nullopt, 0, 10})->empty());
  auto ok = st.transaction([&]() -> Status {
    RF_CHECK(st.transaction([&]() -> Status {
      st.after_commit([&] { ran.push_back("inner"); });
      return {};
    }));
    EXPECT_TRUE(ran.empty()) << "ran before the outer transaction committed";
    st.after_commit([&] { ran.push_back("outer"); });
    return {};
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(ran, (std::vector<std::string>{"inner", "outer"}));
}

TEST(Store, TouchHostsWritesOnlyLastSeen) {
  auto s = open_sqlite(":memory:", embedded_migrations());
  ASSERT_TRUE(s);
  auto& st = **s;
  HostRow h{"00000000-0000-4000-8000-000000000001",
            std::string(64, 'a'),
            R"({"os":"linux"})",
            "t1",
            true,
            "1.0",
            10,
            20,
            R"({"det":{"version":3,"state":"active"}})"};
  ASSERT_TRUE(st.upsert_hosts({h}));
  ASSERT_TRUE(st.touch_hosts({{h.host_id, 99}, {"00000000-0000-4000-8000-000000000002", 5}}));
  auto snap = st.load();
  ASSERT_TRUE(snap);
  ASSERT_EQ(snap->hosts.size(), 1u);  // an unknown id is not created
  const auto& got = snap->hosts[0];
  EXPECT_EQ(got.last_seen, 99);
  EXPECT_EQ(got.channels_json, h.channels_json);
  EXPECT_EQ(got.labels_json, h.labels_json);
  EXPECT_EQ(got.credential_hash, h.credential_hash);
  EXPECT_TRUE(got.pinned);
}

TEST(Store, TransactionRollsBackOnError) {
  auto s = open_sqlite(":memory:", embedded_migrations());
  ASSERT_TRUE(s);
  auto& st = **s;
  auto res = st.transaction([&]() -> Status {
    auto a = st.put_ring({"r1", 0, R"({"buckets":[0,1]})", ""});
    if (!a) return a;
    return fail(Errc::Conflict, "later step failed");
  });
  EXPECT_FALSE(res);
  auto snap = st.load();
  ASSERT_TRUE(snap);
  EXPECT_TRUE(snap->rings.empty());
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

}  // namespace
}  // namespace ringfence::server::store
