// SQLite implementation of Store. The only file of the server that includes sqlite3.h.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <variant>

#include "proto/try.hpp"
#include "server/store/store.hpp"

namespace ringfence::server::store {
namespace {

using Value = std::variant<std::nullptr_t, std::int64_t, std::string>;

Value opt(const std::optional<std::int64_t>& v) { return v ? Value(*v) : Value(nullptr); }
Value opt(const std::optional<std::string>& v) { return v ? Value(*v) : Value(nullptr); }

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &st_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  void bind(std::initializer_list<Value> values) {
    int i = 1;
    for (const auto& v : values) {
      if (std::holds_alternative<std::nullptr_t>(v)) {
        sqlite3_bind_null(st_, i);
      } else if (auto* n = std::get_if<std::int64_t>(&v)) {
        sqlite3_bind_int64(st_, i, *n);
      } else {
        const auto& s = std::get<std::string>(v);
        sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
      }
      ++i;
    }
  }
  void reset() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(st_); }
  std::int64_t i64(int c) { return sqlite3_column_int64(st_, c); }
  bool null(int c) { return sqlite3_column_type(st_, c) == SQLITE_NULL; }
  std::string text(int c) {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(st_, c));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(st_, c))) : std::string();
  }
  std::optional<std::int64_t> opt_i64(int c) {
    return null(c) ? std::nullopt : std::optional<std::int64_t>(i64(c));
  }
  std::optional<std::string> opt_text(int c) {
    return null(c) ? std::nullopt : std::optional<std::string>(text(c));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
  int rc_;
};

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close_v2(db_); }

  Status exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "unknown error";
      sqlite3_free(err);
      return fail(Errc::Unavailable, "storage error: " + m, code());
    }
    return {};
  }

  Status run(const char* sql, std::initializer_list<Value> values) {
    Stmt st(db_, sql);
    if (!st.ok()) return error("prepare");
    st.bind(values);
    int rc = st.step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return {};
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
      return fail(Errc::Conflict, "already exists", "conflict");
    }
    return error("write");
  }

  tl::unexpected<Error> error(const char* what) {
    return fail(Errc::Unavailable,
                std::string("storage ") + what + " failed: " + sqlite3_errmsg(db_), code());
  }
  // A full disk (or a database at its size limit) is told apart: space has to come back first.
  std::string code() const {
    int e = sqlite3_extended_errcode(db_);
    return (e & 0xff) == SQLITE_FULL ? "storage_full" : "storage_unavailable";
  }

  Status migrate(const std::vector<Migration>& migrations) {
    Stmt v(db_, "PRAGMA user_version");
    if (!v.ok() || v.step() != SQLITE_ROW) return error("read user_version");
    std::int64_t current = v.i64(0);
    int newest = migrations.empty() ? 0 : migrations.back().version;
    if (current > newest) {
      return fail(Errc::Unavailable,
                  "database schema version " + std::to_string(current) +
                      " is newer than this binary supports (" + std::to_string(newest) +
                      "); upgrade ringfence-server",
                  "schema_too_new");
    }
    for (const auto& m : migrations) {
      if (m.version <= current) continue;
      RF_CHECK(exec("BEGIN IMMEDIATE"));
      auto st = exec(m.sql.c_str());
      if (st) st = exec(("PRAGMA user_version = " + std::to_string(m.version)).c_str());
      if (!st) {
        (void)exec("ROLLBACK");
        return fail(Errc::Unavailable, "migration " + m.name + " failed: " + st.error().message,
                    "migration_failed");
      }
      RF_CHECK(exec("COMMIT"));
    }
    return {};
  }

  Expected<Snapshot> load() override {
    Snapshot s;
    {
      Stmt st(db_, "SELECT name, role, hash, created FROM api_tokens");
      while (st.step() == SQLITE_ROW)
        s.tokens.push_back({st.text(0), st.text(1), st.text(2), st.i64(3)});
    }
    {
      Stmt st(db_,
              "SELECT name, hash, labels, expires, created, max_uses, uses, tenant, rate_per_min, "
              "revoked FROM enrollment_tokens");
      while (st.step() == SQLITE_ROW) {
        s.enroll_tokens.push_back({st.text(0), st.text(1), st.text(2), st.opt_i64(3), st.i64(4),
                                   st.opt_i64(5), st.i64(6), st.text(7), st.i64(8), st.opt_i64(9)});
      }
    }
    {
      Stmt st(db_, "SELECT host_id, since_ms, enroll_token FROM host_trust");
      while (st.step() == SQLITE_ROW) s.host_trust.push_back({st.text(0), st.i64(1), st.text(2)});
    }
    {
      Stmt st(db_,
              "SELECT host_id, credential_hash, labels, tenant, pinned, agent_version, enrolled, "
              "last_seen, channels, boot_hash, consumers FROM hosts");
      while (st.step() == SQLITE_ROW) {
        HostRow h;
        h.host_id = st.text(0);
        h.credential_hash = st.text(1);
        h.labels_json = st.text(2);
        h.tenant = st.text(3);
        h.pinned = st.i64(4) != 0;
        h.agent_version = st.text(5);
        h.enrolled = st.i64(6);
        h.last_seen = st.i64(7);
        h.channels_json = st.text(8);
        h.boot_hash = st.i64(9);
        h.consumers_json = st.text(10);
        s.hosts.push_back(std::move(h));
      }
    }
    {
      Stmt st(db_, "SELECT name, rank, selector, description FROM rings");
      while (st.step() == SQLITE_ROW)
        s.rings.push_back({st.text(0), st.i64(1), st.text(2), st.text(3)});
    }
    {
      Stmt st(db_,
              "SELECT name, schema, validator, max_bytes, stable_version, created, consumer "
              "FROM channels");
      while (st.step() == SQLITE_ROW) {
        s.channels.push_back({st.text(0), st.text(1), st.opt_text(2), st.i64(3), st.opt_i64(4),
                              st.i64(5), st.opt_text(6)});
      }
    }
    {
      Stmt st(db_,
              "SELECT channel, version, sha256, size, notes, state, manifest, signature, "
              "validation, created, updated FROM releases ORDER BY channel, version");
      while (st.step() == SQLITE_ROW) {
        s.releases.push_back({st.text(0), st.i64(1), st.text(2), st.i64(3), st.text(4), st.text(5),
                              st.text(6), st.text(7), st.text(8), st.i64(9), st.i64(10)});
      }
    }
    {
      Stmt st(db_, "SELECT name, stages FROM policies");
      while (st.step() == SQLITE_ROW) s.policies.push_back({st.text(0), st.text(1)});
    }
    {
      Stmt st(db_,
              "SELECT id, channel, version, state, stage, body, created, updated FROM rollouts "
              "ORDER BY id");
      while (st.step() == SQLITE_ROW) {
        s.rollouts.push_back({st.i64(0), st.text(1), st.i64(2), st.text(3), st.i64(4), st.text(5),
                              st.i64(6), st.i64(7)});
      }
    }
    {
      Stmt st(db_, "SELECT key, value FROM settings");
      while (st.step() == SQLITE_ROW) s.settings.emplace_back(st.text(0), st.text(1));
    }
    {
      Stmt st(db_, "SELECT scope, minute, hosts FROM budget_usage");
      while (st.step() == SQLITE_ROW) s.budget.push_back({st.text(0), st.i64(1), st.i64(2)});
    }
    {
      Stmt st(db_, "SELECT COALESCE(MAX(id), 0) FROM events");
      if (st.step() == SQLITE_ROW) s.last_event_id = st.i64(0);
    }
    return s;
  }

  Status transaction(const std::function<Status()>& fn) override {
    if (depth_ > 0) {
      ++depth_;
      auto st = fn();
      --depth_;
      return st;
    }
    RF_CHECK(exec("BEGIN IMMEDIATE"));
    ++depth_;
    auto st = fn();
    --depth_;
    if (!st) {
      (void)exec("ROLLBACK");
      after_commit_.clear();
      return st;
    }
    auto c = exec("COMMIT");
    if (!c) {
      (void)exec("ROLLBACK");
      after_commit_.clear();
      return c;
    }
    auto committed = std::move(after_commit_);
    after_commit_.clear();
    for (auto& f : committed) f();
    return {};
  }

  void after_commit(std::function<void()> fn) override {
    if (depth_ == 0) {
      fn();
    } else {
      after_commit_.push_back(std::move(fn));
    }
  }

  Status put_token(const TokenRow& r) override {
    return run("INSERT INTO api_tokens(name, role, hash, created) VALUES(?,?,?,?)",
               {r.name, r.role, r.hash, r.created});
  }
  Status delete_token(const std::string& name) override {
    return run("DELETE FROM api_tokens WHERE name = ?", {name});
  }
  Status put_enroll_token(const EnrollTokenRow& r) override {
    return run(
        "INSERT INTO enrollment_tokens(name, hash, labels, expires, created, max_uses, uses, "
        "tenant, rate_per_min, revoked) VALUES(?,?,?,?,?,?,?,?,?,?)",
        {r.name, r.hash, r.labels_json, opt(r.expires), r.created, opt(r.max_uses), r.uses,
         r.tenant, r.rate_per_min, opt(r.revoked)});
  }
  Status set_enroll_token_uses(const std::string& name, std::int64_t uses) override {
    return run("UPDATE enrollment_tokens SET uses = ? WHERE name = ?", {uses, name});
  }
  Status revoke_enroll_token(const std::string& name, std::int64_t when) override {
    return run("UPDATE enrollment_tokens SET revoked = ? WHERE name = ?", {when, name});
  }
  Status put_host_trust(const std::vector<HostTrustRow>& rows) override {
    return transaction([&]() -> Status {
      Stmt st(db_,
              "INSERT INTO host_trust(host_id, since_ms, enroll_token) VALUES(?,?,?) "
              "ON CONFLICT(host_id) DO UPDATE SET since_ms=excluded.since_ms, "
              "enroll_token=CASE WHEN excluded.enroll_token = '' THEN host_trust.enroll_token "
              "ELSE excluded.enroll_token END");
      if (!st.ok()) return error("prepare");
      for (const auto& h : rows) {
        st.bind({h.host_id, h.since_ms, h.enroll_token});
        if (st.step() != SQLITE_DONE) return error("host trust write");
        st.reset();
      }
      return {};
    });
  }
  Status upsert_hosts(const std::vector<HostRow>& rows) override {
    return transaction([&]() -> Status {
      Stmt st(db_,
              "INSERT INTO hosts(host_id, credential_hash, labels, tenant, pinned, agent_version, "
              "enrolled, last_seen, channels, boot_hash, consumers) VALUES(?,?,?,?,?,?,?,?,?,?,?) "
              "ON CONFLICT(host_id) DO UPDATE SET credential_hash=excluded.credential_hash, "
              "labels=excluded.labels, tenant=excluded.tenant, pinned=excluded.pinned, "
              "agent_version=excluded.agent_version, last_seen=excluded.last_seen, "
              "channels=excluded.channels, boot_hash=CASE excluded.boot_hash WHEN 0 THEN "
              "hosts.boot_hash ELSE excluded.boot_hash END, consumers=excluded.consumers");
      if (!st.ok()) return error("prepare");
      for (const auto& h : rows) {
        st.bind({h.host_id, h.credential_hash, h.labels_json, h.tenant,
                 std::int64_t{h.pinned ? 1 : 0}, h.agent_version, h.enrolled, h.last_seen,
                 h.channels_json, h.boot_hash, h.consumers_json});
        if (st.step() != SQLITE_DONE) return error("host write");
        st.reset();
      }
      return {};
    });
  }
  Status touch_hosts(const std::vector<HostSeenRow>& rows) override {
    return transaction([&]() -> Status {
      Stmt st(db_, "UPDATE hosts SET last_seen = ? WHERE host_id = ?");
      if (!st.ok()) return error("prepare");
      for (const auto& h : rows) {
        st.bind({h.last_seen, h.host_id});
        if (st.step() != SQLITE_DONE) return error("host write");
        st.reset();
      }
      return {};
    });
  }
  Status delete_host(const std::string& host_id) override {
    return transaction([&]() -> Status {
      RF_CHECK(run("DELETE FROM host_trust WHERE host_id = ?", {host_id}));
      return run("DELETE FROM hosts WHERE host_id = ?", {host_id});
    });
  }
  Status put_ring(const RingRow& r) override {
    return run(
        "INSERT INTO rings(name, rank, selector, description) VALUES(?,?,?,?) "
        "ON CONFLICT(name) DO UPDATE SET rank=excluded.rank, selector=excluded.selector, "
        "description=excluded.description",
        {r.name, r.rank, r.selector_json, r.description});
  }
  Status delete_ring(const std::string& name) override {
    return run("DELETE FROM rings WHERE name = ?", {name});
  }
  Status put_channel(const ChannelRow& r) override {
    return run(
        "INSERT INTO channels(name, schema, validator, max_bytes, stable_version, created, "
        "consumer) VALUES(?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET schema=excluded.schema, "
        "validator=excluded.validator, max_bytes=excluded.max_bytes, "
        "stable_version=excluded.stable_version, consumer=excluded.consumer",
        {r.name, r.schema_json, opt(r.validator_json), r.max_bytes, opt(r.stable_version),
         r.created, opt(r.consumer_json)});
  }
  Status put_release(const ReleaseRow& r) override {
    return run(
        "INSERT INTO releases(channel, version, sha256, size, notes, state, manifest, signature, "
        "validation, created, updated) VALUES(?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(channel, version) "
        "DO UPDATE SET state=excluded.state, manifest=excluded.manifest, "
        "signature=excluded.signature, notes=excluded.notes, updated=excluded.updated",
        {r.channel, r.version, r.sha256, r.size, r.notes, r.state, r.manifest_json, r.signature,
         r.validation_json, r.created, r.updated ? r.updated : r.created});
  }
  Status put_policy(const PolicyRow& r) override {
    return run(
        "INSERT INTO policies(name, stages) VALUES(?,?) ON CONFLICT(name) DO UPDATE SET "
        "stages=excluded.stages",
        {r.name, r.stages_json});
  }
  Status put_rollout(const RolloutRow& r) override {
    return run(
        "INSERT INTO rollouts(id, channel, version, state, stage, body, created, updated) "
        "VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
        "stage=excluded.stage, body=excluded.body, updated=excluded.updated",
        {r.id, r.channel, r.version, r.state, r.stage, r.body_json, r.created, r.updated});
  }
  Expected<std::int64_t> append_event(const EventRow& r) override {
    RF_CHECK(run("INSERT INTO events(time, actor, kind, rollout, data) VALUES(?,?,?,?,?)",
                 {r.time, r.actor, r.kind, opt(r.rollout), r.data_json}));
    return static_cast<std::int64_t>(sqlite3_last_insert_rowid(db_));
  }
  Expected<std::vector<EventRow>> list_events(const EventQuery& q) override {
    std::vector<EventRow> out;
    const char* sql =
        q.rollout ? "SELECT id, time, actor, kind, rollout, data FROM events WHERE id > ? AND "
                    "rollout = ? ORDER BY id LIMIT ?"
                  : "SELECT id, time, actor, kind, rollout, data FROM events WHERE id > ? AND "
                    "? IS NULL ORDER BY id LIMIT ?";
    Stmt st(db_, sql);
    if (!st.ok()) return error("prepare");
    st.bind({q.after, opt(q.rollout), q.limit});
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      out.push_back({st.i64(0), st.i64(1), st.text(2), st.text(3), st.opt_i64(4), st.text(5)});
    }
    if (rc != SQLITE_DONE) return error("read");
    return out;
  }
  Status insert_reports(const std::vector<ReportRow>& rows) override {
    return transaction([&]() -> Status {
      Stmt st(db_,
              "INSERT OR IGNORE INTO reports(host_id, boot_id, kind, time, channel, version, "
              "detail, received) VALUES(?,?,?,?,?,?,?,?)");
      if (!st.ok()) return error("prepare");
      for (const auto& r : rows) {
        st.bind({r.host_id, r.boot_id, r.kind, r.time, opt(r.channel), opt(r.version),
                 r.detail_json, r.received});
        if (st.step() != SQLITE_DONE) return error("report write");
        st.reset();
      }
      return {};
    });
  }
  Expected<std::vector<ReportRow>> list_reports(const std::string& channel,
                                                std::int64_t received_since,
                                                std::int64_t limit) override {
    std::vector<ReportRow> out;
    Stmt st(db_,
            "SELECT host_id, boot_id, kind, time, channel, version, detail, received FROM reports "
            "WHERE channel = ? AND received >= ? ORDER BY received, time LIMIT ?");
    if (!st.ok()) return error("prepare");
    st.bind({channel, received_since, limit});
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      out.push_back({st.text(0), st.text(1), st.text(2), st.i64(3), st.opt_text(4), st.opt_i64(5),
                     st.text(6), st.i64(7)});
    }
    if (rc != SQLITE_DONE) return error("read");
    return out;
  }
  Status put_setting(const std::string& key, const std::string& value) override {
    return run(
        "INSERT INTO settings(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET "
        "value=excluded.value",
        {key, value});
  }
  Status upsert_exposures(const std::vector<ExposureRow>& rows) override {
    return transaction([&]() -> Status {
      Stmt st(db_,
              "INSERT OR REPLACE INTO exposures(rollout, host_id, stage, applied_ms, healthy, "
              "failed, silent, short_boots) VALUES(?,?,?,?,?,?,?,?)");
      if (!st.ok()) return error("prepare");
      for (const auto& e : rows) {
        st.bind({e.rollout, e.host_id, e.stage, e.applied_ms, std::int64_t{e.healthy ? 1 : 0},
                 std::int64_t{e.failed ? 1 : 0}, std::int64_t{e.silent ? 1 : 0}, e.short_boots});
        if (st.step() != SQLITE_DONE) return error("exposure write");
        st.reset();
      }
      return {};
    });
  }
  Status put_budget(const std::vector<BudgetRow>& rows, std::int64_t drop_before) override {
    return transaction([&]() -> Status {
      Stmt st(db_, "INSERT OR REPLACE INTO budget_usage(scope, minute, hosts) VALUES(?,?,?)");
      if (!st.ok()) return error("prepare");
      for (const auto& b : rows) {
        st.bind({b.scope, b.minute, b.hosts});
        if (st.step() != SQLITE_DONE) return error("budget write");
        st.reset();
      }
      return run("DELETE FROM budget_usage WHERE minute < ?", {drop_before});
    });
  }
  Expected<std::int64_t> prune_exposures(std::int64_t rollout, std::int64_t limit) override {
    RF_CHECK(
        run("DELETE FROM exposures WHERE rollout = ? AND host_id IN (SELECT host_id FROM "
            "exposures WHERE rollout = ? LIMIT ?)",
            {rollout, rollout, limit}));
    return static_cast<std::int64_t>(sqlite3_changes(db_));
  }
  Expected<std::vector<ExposureRow>> list_exposures(std::int64_t rollout) override {
    std::vector<ExposureRow> out;
    Stmt st(db_,
            "SELECT host_id, stage, applied_ms, healthy, failed, silent, short_boots FROM "
            "exposures WHERE rollout = ?");
    if (!st.ok()) return error("prepare");
    st.bind({rollout});
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      out.push_back({rollout, st.text(0), st.i64(1), st.i64(2), st.i64(3) != 0, st.i64(4) != 0,
                     st.i64(5) != 0, st.i64(6)});
    }
    if (rc != SQLITE_DONE) return error("read");
    return out;
  }

 private:
  sqlite3* db_;
  int depth_ = 0;
  std::vector<std::function<void()>> after_commit_;  // see Store::after_commit
};

}  // namespace

namespace {
// The database holds token and credential hashes: owner only. SQLite creates the -wal and -shm
// files with the database file's mode, so the database is created 0600 before SQLite opens it,
// and files an older version left readable by others are tightened.
Status make_private(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return fail(Errc::Unavailable, "cannot open database " + path + ": " + std::strerror(errno),
                "storage_unavailable");
  }
  ::close(fd);
  for (const auto& p : {path, path + "-wal", path + "-shm"}) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) continue;
    if ((st.st_mode & 077) != 0 && ::chmod(p.c_str(), 0600) != 0) {
      return fail(Errc::Unavailable,
                  "cannot make " + p + " private (chmod 600): " + std::strerror(errno),
                  "storage_unavailable");
    }
  }
  return {};
}
}  // namespace

namespace {
Expected<std::unique_ptr<SqliteStore>> open_once(const std::string& path, bool exclusive) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return fail(Errc::Unavailable, "cannot open database " + path + ": " + m,
                "storage_unavailable");
  }
  auto store = std::make_unique<SqliteStore>(db);
  sqlite3_busy_timeout(db, 5000);
  if (exclusive) RF_CHECK(store->exec("PRAGMA locking_mode=EXCLUSIVE"));
  // WAL: readers never block the writer; synchronous=NORMAL is durable across process crashes
  // in WAL mode (a power loss may drop the last commits, never corrupt).
  if (path != ":memory:") RF_CHECK(store->exec("PRAGMA journal_mode=WAL"));
  return store;
}
}  // namespace

Expected<std::unique_ptr<Store>> open_sqlite(const std::string& path,
                                             const std::vector<Migration>& migrations) {
  if (path != ":memory:") RF_CHECK(make_private(path));
  auto store = open_once(path, false);
  if (!store && path != ":memory:") {
    // A first connection must size a fresh wal-index (-shm) before it can read, which a full
    // disk refuses. In exclusive locking mode the wal-index lives in this process's memory and
    // needs no file: the server comes up for reads and agents while writes cannot be made
    // (nothing else may open the database meanwhile, which nothing else does).
    store = open_once(path, true);
  }
  if (!store) return tl::unexpected(store.error());
  RF_CHECK((*store)->exec("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON"));
  RF_CHECK((*store)->migrate(migrations));
  return std::unique_ptr<Store>(std::move(*store));
}

Expected<std::string> sqlite_integrity_check(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close_v2(db);
    return fail(Errc::Unavailable, "cannot open database " + path);
  }
  std::string out;
  {
    Stmt st(db, "PRAGMA integrity_check");
    while (st.step() == SQLITE_ROW) out += (out.empty() ? "" : "\n") + st.text(0);
  }
  sqlite3_close_v2(db);
  return out;
}

Expected<int> sqlite_user_version(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close_v2(db);
    return fail(Errc::Unavailable, "cannot open database " + path);
  }
  Stmt st(db, "PRAGMA user_version");
  int v = st.step() == SQLITE_ROW ? static_cast<int>(st.i64(0)) : -1;
  sqlite3_close_v2(db);
  return v;
}

}  // namespace ringfence::server::store
