// The real ringfence-server on PostgreSQL (--store postgres://..., RINGFENCE_STORE, the config
// file) against a PostgreSQL the test starts: state made over the API survives restarts, servers
// starting together on an empty database migrate it once, a newer schema and an unreachable or
// unknown store stop the server at start with a clear message, and the password in the URL never
// reaches the log.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "server/store/migrations.hpp"
#include "tests/api/client.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"

namespace ringfence::apitest {
namespace {
using nlohmann::json;
using ringfence::testing::read_file;
using namespace std::chrono_literals;

const std::string kAdmin = "store-test-admin-token-0123456789";
const std::string kHost = "0e3b7a2c-1111-4222-8333-444455556666";
const std::string kPassword = "s3cret-pw";

// A URL with a password (trust auth on loopback ignores it): it must never be logged.
std::string url_with_password(const testing::PostgresCluster& pg) {
  return "postgresql://postgres:" + kPassword + "@127.0.0.1:" + std::to_string(pg.port()) +
         "/ringfence";
}

// ringfence-server on 127.0.0.1:0 with its own data dir; stderr to <data>.log.
class Server {
 public:
  Server(const std::string& data_dir, const std::vector<std::string>& extra,
         std::map<std::string, std::string> env = {})
      : log_path_(data_dir + ".log") {
    std::vector<std::string> argv = {testing::built_program("server/ringfence-server"),
                                     "--data-dir",
                                     data_dir,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--no-web",
                                     "--no-access-log"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    env.emplace("RINGFENCE_ADMIN_TOKEN", kAdmin);
    proc_ = testing::Process::start(argv, env, log_path_);
  }
  // Waits for "listening on"; the port, or 0 when the server did not come up.
  int wait_listening(std::chrono::milliseconds deadline = 30s) {
    auto line = proc_.wait_for_line("listening on", deadline);
    if (!line) return 0;
    static const std::regex kLine(R"(listening on 127\.0\.0\.1:(\d+))");
    std::smatch m;
    if (std::regex_search(*line, m, kLine)) port_ = std::stoi(m[1]);
    return port_;
  }
  int port() const { return port_; }
  // SIGTERM, then the raw wait status (nullopt when it did not exit).
  std::optional<int> terminate() {
    proc_.signal(SIGTERM);
    return proc_.wait(10s);
  }
  std::optional<int> wait_exit(std::chrono::milliseconds deadline = 30s) {
    return proc_.wait(deadline);
  }
  std::string log() const { return read_file(log_path_); }

 private:
  std::string log_path_;
  testing::Process proc_;
  int port_ = 0;
};

json expect(const HttpResponse& r, int status, const std::string& what) {
  EXPECT_EQ(r.status, status) << what << ": " << r.body.substr(0, 400);
  return r.json();
}

bool exited_nonzero(const std::optional<int>& st) {
  return st && ((WIFEXITED(*st) && WEXITSTATUS(*st) != 0) || WIFSIGNALED(*st));
}

TEST(ServerOnPostgres, KeepsWhatTheApiMadeAcrossRestartsWhicheverWayTheStoreIsNamed) {
  testing::PostgresCluster pg;
  testing::TempDir dir;
  const std::string data = dir.path() + "/data";
  const std::string url = url_with_password(pg);
  std::string credential, sha;
  std::size_t events = 0;
  {
    Server s(data, {"--store", url});
    ASSERT_GT(s.wait_listening(), 0) << s.log();
    Client c(s.port());
    expect(c.post("/v1/rings", kAdmin,
                  {{"name", "canary"}, {"rank", 0}, {"selector", {{"hosts", {kHost}}}}}),
           201, "ring");
    expect(c.post("/v1/channels", kAdmin, {{"name", "det"}, {"schema", {{"type", "object"}}}}), 201,
           "channel");
    sha = expect(c.request("POST", "/v1/blobs", kAdmin, R"({"rules":[1,2,3]})",
                           "application/octet-stream"),
                 201, "blob")
              .value("sha256", "");
    expect(c.post("/v1/channels/det/releases", kAdmin, {{"sha256", sha}, {"notes", "first"}}), 201,
           "release");
    auto enroll_token =
        expect(c.post("/v1/enrollment-tokens", kAdmin, {{"name", "fleet"}}), 201, "enroll token")
            .value("token", "");
    credential = expect(c.post("/v1/agent/enroll", "",
                               {{"enrollment_token", enroll_token},
                                {"host_id", kHost},
                                {"labels", {{"site", "lab"}}},
                                {"agent_version", "test"}}),
                        200, "enroll")
                     .value("credential", "");
    ASSERT_FALSE(credential.empty());
    events = expect(c.get("/v1/events?limit=1000", kAdmin), 200, "events")["events"].size();
    EXPECT_GT(events, 0u);
    auto st = s.terminate();
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << s.log();
    EXPECT_NE(s.log().find("store: PostgreSQL at postgresql://postgres:***@127.0.0.1"),
              std::string::npos)
        << s.log();
    EXPECT_EQ(s.log().find(kPassword), std::string::npos) << "the password was logged";
  }
  EXPECT_FALSE(std::filesystem::exists(data + "/ringfence.db")) << "wrote SQLite instead";
  EXPECT_EQ(pg.psql("SELECT host_id FROM hosts"), kHost);

  // What a restarted server must still know, and still serve to the enrolled agent.
  auto still_there = [&](Server& s) {
    ASSERT_GT(s.wait_listening(), 0) << s.log();
    Client c(s.port());
    auto ring = expect(c.get("/v1/rings/canary", kAdmin), 200, "ring");
    EXPECT_EQ(ring["selector"]["hosts"], json::array({kHost}));
    expect(c.get("/v1/channels/det", kAdmin), 200, "channel");
    auto rel = expect(c.get("/v1/channels/det/releases/1", kAdmin), 200, "release");
    EXPECT_EQ(rel.value("sha256", ""), sha);
    EXPECT_EQ(rel.value("notes", ""), "first");
    auto host = expect(c.get("/v1/hosts/" + kHost, kAdmin), 200, "host");
    EXPECT_EQ(host["labels"]["site"], "lab");
    auto tokens = expect(c.get("/v1/enrollment-tokens", kAdmin), 200, "enroll tokens").dump();
    EXPECT_NE(tokens.find(R"("name":"fleet")"), std::string::npos) << tokens;
    EXPECT_GE(expect(c.get("/v1/events?limit=1000", kAdmin), 200, "events")["events"].size(),
              events);
    // The host's credential still authenticates it.
    expect(c.get("/v1/agent/desired", credential), 200, "agent desired state");
    EXPECT_EQ(c.get("/v1/blobs/" + sha, kAdmin).status, 200);
    auto st = s.terminate();
    EXPECT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << s.log();
    EXPECT_EQ(s.log().find(kPassword), std::string::npos) << "the password was logged";
  };
  {
    Server s(data, {}, {{"RINGFENCE_STORE", url}});  // the environment
    still_there(s);
  }
  {
    std::ofstream(dir.path() + "/ringfence.toml") << "store = \"" << url << "\"\n";
    Server s(data, {"--config", dir.path() + "/ringfence.toml"});  // the config file
    still_there(s);
  }
  EXPECT_FALSE(std::filesystem::exists(data + "/ringfence.db"));
}

TEST(ServerOnPostgres, ADatabaseOutageFailsWritesWith503AndTheServerGoesOnAfterIt) {
  testing::PostgresCluster pg;
  testing::TempDir dir;
  Server s(dir.path() + "/data", {"--store", pg.url()});
  ASSERT_GT(s.wait_listening(), 0) << s.log();
  Client c(s.port());
  auto ring = [&](const std::string& name) {
    return c.post("/v1/rings", kAdmin,
                  {{"name", name}, {"rank", 0}, {"selector", {{"buckets", {0, 100}}}}});
  };
  expect(ring("before"), 201, "ring before the outage");
  pg.stop("fast");
  auto during = ring("during");
  EXPECT_EQ(during.status, 503) << during.body;
  EXPECT_TRUE(during.is_error_shape()) << during.raw;
  EXPECT_EQ(c.get("/v1/rings/during", kAdmin).status, 404) << "memory ran ahead of the store";
  EXPECT_EQ(c.get("/v1/rings/before", kAdmin).status, 200) << "reads are served from memory";
  pg.start();
  // The store reconnects at the next write (at most one attempt every 0.5 s while it was down).
  EXPECT_TRUE(testing::eventually([&] { return ring("after").status == 201; }, 5s));
  EXPECT_EQ(pg.psql("SELECT string_agg(name, ',' ORDER BY name) FROM rings"), "after,before");
  auto st = s.terminate();
  EXPECT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << s.log();
}

TEST(ServerOnPostgres, ServersStartingTogetherOnAnEmptyDatabaseMigrateItOnce) {
  testing::PostgresCluster pg;
  testing::TempDir dir;
  const std::string url = pg.url();
  // Both processes are started before either is waited for.
  Server a(dir.path() + "/a", {"--store", url});
  Server b(dir.path() + "/b", {"--store", url});
  int pa = a.wait_listening(), pb = b.wait_listening();
  for (Server* s : {&a, &b}) {
    EXPECT_EQ(s->log().find("migration"), std::string::npos) << s->log();
    EXPECT_EQ(s->log().find("schema"), std::string::npos) << s->log();
  }
  // Each migration is recorded once, and the schema is whole.
  std::string want;
  for (const auto& m : ringfence::server::store::embedded_postgres_migrations()) {
    want += (want.empty() ? "" : "\n") + std::to_string(m.version);
  }
  EXPECT_EQ(pg.psql("SELECT version FROM schema_version ORDER BY version"), want);
  EXPECT_EQ(pg.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'hosts' "
                    "AND column_name IN ('boot_hash', 'consumers')"),
            "2");
  // Both serve; except that, outside the migrations, the first start of an empty database still
  // races on the admin token (core's bootstrap_admin: both insert "admin", one gets a conflict
  // and exits). Known and left to the replica work of issue 15; anything else fails here.
  EXPECT_TRUE(pa > 0 || pb > 0) << a.log() << "\n---\n" << b.log();
  for (auto [port, s] : {std::pair{pa, &a}, std::pair{pb, &b}}) {
    if (port > 0) continue;
    EXPECT_TRUE(exited_nonzero(s->wait_exit())) << s->log();
    EXPECT_NE(s->log().find("ringfence-server: already exists"), std::string::npos) << s->log();
  }
}

TEST(ServerOnPostgres, RefusesADatabaseWithANewerSchema) {
  testing::PostgresCluster pg;
  testing::TempDir dir;
  {
    Server s(dir.path() + "/data", {"--store", pg.url()});
    ASSERT_GT(s.wait_listening(), 0) << s.log();
    s.terminate();
  }
  pg.psql("INSERT INTO schema_version(version, name, applied) VALUES (9999, '9999_future', 0)");
  Server s(dir.path() + "/data", {"--store", pg.url()});
  auto st = s.wait_exit();
  EXPECT_TRUE(exited_nonzero(st)) << s.log();
  EXPECT_NE(s.log().find("database schema version 9999 is newer than this binary supports"),
            std::string::npos)
      << s.log();
  EXPECT_EQ(pg.psql("SELECT max(version) FROM schema_version"), "9999");  // untouched
}

TEST(ServerOnPostgres, AnUnreachableDatabaseStopsTheStartWithAClearMessage) {
  std::string url;
  {
    testing::PostgresCluster pg;  // stopped at the end of this block: nothing listens there
    url = url_with_password(pg);
  }
  testing::TempDir dir;
  Server s(dir.path() + "/data", {"--store", url});
  auto st = s.wait_exit();
  EXPECT_TRUE(exited_nonzero(st)) << s.log();
  EXPECT_NE(s.log().find("cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1"),
            std::string::npos)
      << s.log();
  EXPECT_EQ(s.log().find(kPassword), std::string::npos) << s.log();
}

TEST(ServerOnPostgres, AnUnknownStoreIsRefusedWithoutEchoingIt) {
  testing::TempDir dir;
  Server s(dir.path() + "/data", {"--store", "mysql://root:hunter2@db/rf"});
  auto st = s.wait_exit();
  EXPECT_TRUE(exited_nonzero(st)) << s.log();
  EXPECT_NE(s.log().find("--store must be \"sqlite\" or a postgres://"), std::string::npos)
      << s.log();
  EXPECT_EQ(s.log().find("hunter2"), std::string::npos) << s.log();
  // "sqlite" names the default explicitly.
  Server lite(dir.path() + "/lite", {"--store", "sqlite"});
  ASSERT_GT(lite.wait_listening(), 0) << lite.log();
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/lite/ringfence.db"));
  lite.terminate();
}

}  // namespace
}  // namespace ringfence::apitest
