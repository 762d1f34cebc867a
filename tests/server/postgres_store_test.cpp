// The PostgreSQL store's own behaviour on a real PostgreSQL started by the test: its migrator
// (every step once, under the advisory lock when replicas open together, a newer schema refused),
// durability of what it acknowledged across a crash of the database, connection loss, and the
// conninfo never showing its password. The Store contract itself: store_test.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "proto/try.hpp"
#include "server/store/store.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"

namespace ringfence::server::store {
namespace {

const std::vector<Migration>& pg_all() { return embedded_postgres_migrations(); }

std::string host_id(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

TEST(PostgresMigrations, AreTheTwinsOfTheSqliteOnes) {
  const auto& pg = pg_all();
  const auto& lite = embedded_migrations();
  ASSERT_EQ(pg.size(), lite.size()) << "every migrations/NNNN needs its migrations/postgres/NNNN";
  for (std::size_t i = 0; i < pg.size(); ++i) {
    EXPECT_EQ(pg[i].version, lite[i].version);
    EXPECT_EQ(pg[i].name, lite[i].name);
    if (i > 0) {
      EXPECT_LT(pg[i - 1].version, pg[i].version);
    }
  }
}

TEST(PostgresMigrator, WalksAnEmptyDatabaseThroughEveryStepOnce) {
  testing::PostgresCluster pg;
  {
    auto s = open_postgres(pg.url(), pg_all());
    ASSERT_TRUE(s) << s.error().message;
    auto snap = (*s)->load();
    ASSERT_TRUE(snap) << snap.error().message;
    EXPECT_TRUE(snap->hosts.empty());
  }
  std::string want;
  for (const auto& m : pg_all()) want += std::to_string(m.version) + "|" + m.name + "\n";
  want.pop_back();
  EXPECT_EQ(pg.psql("SELECT version, name FROM schema_version ORDER BY version"), want);
  // Opening again applies nothing.
  ASSERT_TRUE(open_postgres(pg.url(), pg_all()));
  EXPECT_EQ(pg.psql("SELECT count(*) FROM schema_version"), std::to_string(pg_all().size()));
  // Step by step: each prefix opens and records its newest version.
  auto url = pg.create_database("steps");
  for (std::size_t k = 1; k <= pg_all().size(); ++k) {
    std::vector<Migration> prefix(pg_all().begin(),
                                  pg_all().begin() + static_cast<std::ptrdiff_t>(k));
    auto s = open_postgres(url, prefix);
    ASSERT_TRUE(s) << prefix.back().name << ": " << s.error().message;
    EXPECT_EQ(pg.psql("SELECT max(version) FROM schema_version", "steps"),
              std::to_string(prefix.back().version));
  }
}

TEST(PostgresMigrator, RefusesADatabaseNewerThanTheBinary) {
  testing::PostgresCluster pg;
  auto newer = pg_all();
  newer.push_back({newer.back().version + 1, "9999_future", "CREATE TABLE future(x BIGINT);"});
  ASSERT_TRUE(open_postgres(pg.url(), newer));
  auto old = open_postgres(pg.url(), pg_all());
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error().errc, Errc::Unavailable);
  EXPECT_EQ(old.error().code, "schema_too_new");
  EXPECT_NE(old.error().message.find("newer than this binary"), std::string::npos);
  EXPECT_NE(old.error().message.find(std::to_string(newer.back().version)), std::string::npos);
  EXPECT_EQ(pg.psql("SELECT max(version) FROM schema_version"),
            std::to_string(newer.back().version));
}

TEST(PostgresMigrator, AFailedStepLeavesNothingHalfApplied) {
  testing::PostgresCluster pg;
  std::vector<Migration> steps = {
      {1, "0001_a", "CREATE TABLE a(x BIGINT);"},
      {2, "0002_b", "CREATE TABLE b(x BIGINT); INSERT INTO nowhere VALUES(1);"},
  };
  auto s = open_postgres(pg.url(), steps);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, "migration_failed");
  EXPECT_NE(s.error().message.find("0002_b"), std::string::npos) << s.error().message;
  EXPECT_EQ(pg.psql("SELECT max(version) FROM schema_version"), "1");
  EXPECT_EQ(pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'b'"), "0");
  steps[1].sql = "CREATE TABLE b(x BIGINT);";
  ASSERT_TRUE(open_postgres(pg.url(), steps));
  EXPECT_EQ(pg.psql("SELECT max(version) FROM schema_version"), "2");
  // A twin with nothing to do on PostgreSQL (comments only) is applied and recorded.
  steps.push_back({3, "0003_sqlite_only", "-- nothing to do on PostgreSQL\n"});
  auto s3 = open_postgres(pg.url(), steps);
  ASSERT_TRUE(s3) << s3.error().message;
  EXPECT_EQ(pg.psql("SELECT max(version) FROM schema_version"), "3");
}

TEST(PostgresMigrator, ReplicasOpeningTogetherOnAnEmptyDatabaseMigrateOnce) {
  testing::PostgresCluster pg;
  constexpr int kReplicas = 4;
  std::atomic<int> ready{0};
  std::vector<std::string> errors(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kReplicas) std::this_thread::yield();
      auto s = open_postgres(pg.url(), pg_all());
      if (!s) errors[static_cast<std::size_t>(i)] = s.error().message;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kReplicas; ++i) {
    EXPECT_EQ(errors[static_cast<std::size_t>(i)], "") << "replica " << i;
  }
  EXPECT_EQ(pg.psql("SELECT count(*) FROM schema_version"), std::to_string(pg_all().size()));
}

// Acknowledged = durable: what the store said it committed is there after PostgreSQL crashes
// (pg_ctl stop -m immediate: no shutdown checkpoint, WAL buffers in shared memory are lost) and
// comes back. The cluster is configured the way that would lose it (asynchronous commit, the WAL
// writer sleeping 10 s): the store has to ask for synchronous commits itself.
TEST(PostgresStore, WhatItAcknowledgedSurvivesACrashOfTheDatabase) {
  testing::PostgresCluster pg;
  pg.psql("ALTER SYSTEM SET synchronous_commit = off");
  pg.psql("ALTER SYSTEM SET wal_writer_delay = '10s'");
  pg.psql("SELECT pg_reload_conf()");
  ASSERT_EQ(pg.psql("SHOW synchronous_commit"), "off");
  auto s = open_postgres(pg.url(), pg_all());
  ASSERT_TRUE(s) << s.error().message;
  auto& st = **s;
  std::vector<HostRow> hosts;
  for (int i = 0; i < 500; ++i)
    hosts.push_back({host_id(i), "c", "{}", "", false, "1", 1, 1, "{}"});
  ASSERT_TRUE(st.upsert_hosts(hosts));
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = st.append_event({0, i, "admin", "acknowledged", std::nullopt, "{}"});
    ASSERT_TRUE(id);
    ids.push_back(*id);
  }
  ASSERT_TRUE(st.transaction([&]() -> Status {
    RF_CHECK(st.put_rollout({1, "det", 1, "halted", 0, "{}", 1, 2}));
    RF_CHECK(st.insert_reports({{host_id(1), "b", "crash", 1, "det", 1, "{}", 1}}));
    return st.touch_hosts({{host_id(7), 4242}});
  }));
  ASSERT_TRUE(st.put_setting("emergency_stop", "on"));  // the very last acknowledged write
  pg.stop("immediate");
  pg.start();
  auto again = open_postgres(pg.url(), pg_all());
  ASSERT_TRUE(again) << again.error().message;
  auto snap = (*again)->load();
  ASSERT_TRUE(snap) << snap.error().message;
  EXPECT_EQ(snap->hosts.size(), 500u);
  EXPECT_EQ(snap->last_event_id, ids.back());
  ASSERT_EQ(snap->rollouts.size(), 1u);
  EXPECT_EQ(snap->rollouts[0].state, "halted");
  EXPECT_EQ((*again)->list_reports("det", 0, 10)->size(), 1u);
  bool touched = false;
  for (const auto& h : snap->hosts) touched |= h.host_id == host_id(7) && h.last_seen == 4242;
  EXPECT_TRUE(touched);
  ASSERT_EQ(snap->settings.size(), 1u);
  EXPECT_EQ(snap->settings[0].second, "on");
}

TEST(PostgresStore, ALostConnectionFailsTheOperationAndTheNextOneReconnects) {
  testing::PostgresCluster pg;
  auto s = open_postgres(pg.url(), pg_all());
  ASSERT_TRUE(s) << s.error().message;
  auto& st = **s;
  ASSERT_TRUE(st.put_setting("a", "1"));
  // Every other session is ended by the server (what a restart or a failover does to it).
  pg.psql(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
      "AND datname = 'ringfence'");
  auto lost = st.put_setting("b", "2");
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().errc, Errc::Unavailable);
  ASSERT_TRUE(st.put_setting("b", "3")) << "did not reconnect";
  // While the database is down: Unavailable, fast; once it is back, the store works again.
  pg.stop("fast");
  auto down = st.transaction([&]() -> Status { return st.put_setting("c", "4"); });
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().errc, Errc::Unavailable);
  EXPECT_FALSE(st.load());
  // Down, reconnecting is not retried more than twice a second: the calls in between fail fast.
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(st.put_setting("d", "x"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  pg.start();
  // Back: within the retry interval the store works again.
  EXPECT_TRUE(testing::eventually(
      [&] { return bool(st.transaction([&]() -> Status { return st.put_setting("c", "5"); })); },
      std::chrono::seconds(3)));
  auto snap = st.load();
  ASSERT_TRUE(snap);
  std::map<std::string, std::string> settings(snap->settings.begin(), snap->settings.end());
  EXPECT_EQ(settings, (std::map<std::string, std::string>{{"a", "1"}, {"b", "3"}, {"c", "5"}}));
}

TEST(PostgresStore, AFailedStatementFailsItsTransactionEvenWhenTheCallerGoesOn) {
  testing::PostgresCluster pg;
  auto s = open_postgres(pg.url(), pg_all());
  ASSERT_TRUE(s) << s.error().message;
  auto& st = **s;
  ASSERT_TRUE(st.put_token({"ci", "viewer", "h1", 1}));
  bool ran = false;
  auto res = st.transaction([&]() -> Status {
    RF_CHECK(st.put_ring({"r", 0, "{}", ""}));
    auto dup = st.put_token({"ci", "viewer", "h2", 1});
    EXPECT_FALSE(dup);
    st.after_commit([&] { ran = true; });
    return {};  // swallowed: PostgreSQL has aborted the transaction all the same
  });
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().errc, Errc::Conflict);
  EXPECT_FALSE(ran);
  auto snap = st.load();
  ASSERT_TRUE(snap);
  EXPECT_TRUE(snap->rings.empty());
  ASSERT_TRUE(st.put_ring({"r", 0, "{}", ""}));  // and the store goes on working
}

TEST(PostgresStore, AnUnreachableServerIsUnavailableAndTheMessageHidesThePassword) {
  // A port nothing listens on (a cluster that was stopped).
  std::string url;
  {
    testing::PostgresCluster pg;
    url = "postgresql://ringfence:s3cret-pw@127.0.0.1:" + std::to_string(pg.port()) + "/x";
  }
  auto s = open_postgres(url, pg_all());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errc, Errc::Unavailable);
  EXPECT_NE(s.error().message.find("cannot connect to PostgreSQL"), std::string::npos)
      << s.error().message;
  EXPECT_NE(s.error().message.find("ringfence:***@127.0.0.1"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(s.error().message.find("s3cret"), std::string::npos) << s.error().message;
}

TEST(RedactConninfo, HidesThePasswordInEveryForm) {
  EXPECT_EQ(redact_conninfo("postgres://u:pw@db.example:5432/rf"),
            "postgres://u:***@db.example:5432/rf");
  EXPECT_EQ(redact_conninfo("postgresql://u:p%40ss:w@h/rf?sslmode=require"),
            "postgresql://u:***@h/rf?sslmode=require");
  EXPECT_EQ(redact_conninfo("postgresql://u@h/rf"), "postgresql://u@h/rf");
  EXPECT_EQ(redact_conninfo("postgresql://h:5432/rf"), "postgresql://h:5432/rf");
  EXPECT_EQ(redact_conninfo("postgresql://h/rf?user=u&password=pw&sslmode=verify-full"),
            "postgresql://h/rf?user=u&password=***&sslmode=verify-full");
  EXPECT_EQ(redact_conninfo("host=h user=u password=pw dbname=rf"),
            "host=h user=u password=*** dbname=rf");
  EXPECT_EQ(redact_conninfo("host=h password = 'p w\\'x' dbname=rf"),
            "host=h password = *** dbname=rf");
  EXPECT_TRUE(is_postgres_url("postgres://h/rf"));
  EXPECT_TRUE(is_postgres_url("postgresql://h/rf"));
  EXPECT_FALSE(is_postgres_url("sqlite"));
  EXPECT_FALSE(is_postgres_url("mysql://h/rf"));
}

}  // namespace
}  // namespace ringfence::server::store
