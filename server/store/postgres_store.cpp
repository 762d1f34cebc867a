// PostgreSQL implementation of Store. The only file of the server that includes libpq-fe.h.
//
// One connection per store (a Store is used by one thread at a time). Connection handling lives
// in PgConnection alone: connecting with defaults the URL may override, the per-session settings
// durability needs, prepared statements by SQL text, pipelined batches, and reconnecting a lost
// connection at the next operation that is not inside a transaction.
#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <regex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "proto/try.hpp"
#include "server/store/store.hpp"

namespace ringfence::server::store {
namespace {

using Value = std::variant<std::nullptr_t, std::int64_t, std::string, bool>;

Value opt(const std::optional<std::int64_t>& v) { return v ? Value(*v) : Value(nullptr); }
Value opt(const std::optional<std::string>& v) { return v ? Value(*v) : Value(nullptr); }

// Session-level advisory lock key that serialises migrations across replicas ("RINGFENC").
constexpr std::int64_t kMigrationLock = 0x52494e4746454e43;
// Statements sent per pipelined round trip: small enough that neither side's socket buffer fills
// while the other is still writing (libpq's blocking pipeline mode could deadlock otherwise).
constexpr std::size_t kPipelineChunk = 256;

struct ResultFree {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultFree>;

// Typed reads of a text-format result.
class Rows {
 public:
  explicit Rows(Result r) : r_(std::move(r)) {}
  int size() const { return PQntuples(r_.get()); }
  bool null(int row, int c) const { return PQgetisnull(r_.get(), row, c) != 0; }
  std::string text(int row, int c) const {
    return std::string(PQgetvalue(r_.get(), row, c),
                       static_cast<std::size_t>(PQgetlength(r_.get(), row, c)));
  }
  std::int64_t i64(int row, int c) const {
    const char* p = PQgetvalue(r_.get(), row, c);
    std::int64_t v = 0;
    std::from_chars(p, p + PQgetlength(r_.get(), row, c), v);
    return v;
  }
  bool boolean(int row, int c) const { return PQgetvalue(r_.get(), row, c)[0] == 't'; }
  std::optional<std::int64_t> opt_i64(int row, int c) const {
    return null(row, c) ? std::nullopt : std::optional<std::int64_t>(i64(row, c));
  }
  std::optional<std::string> opt_text(int row, int c) const {
    return null(row, c) ? std::nullopt : std::optional<std::string>(text(row, c));
  }
  // Rows a DELETE/UPDATE touched.
  std::int64_t affected() const {
    const char* p = PQcmdTuples(r_.get());
    std::int64_t v = 0;
    std::from_chars(p, p + std::strlen(p), v);
    return v;
  }
  std::string_view command() const { return PQcmdStatus(r_.get()); }

 private:
  Result r_;
};

// Parameters in libpq's text format. Pointers are taken after every value is stored.
class Params {
 public:
  template <typename Range>
  explicit Params(const Range& values) {
    storage_.reserve(values.size());
    std::vector<bool> is_null;
    for (const auto& v : values) {
      is_null.push_back(std::holds_alternative<std::nullptr_t>(v));
      if (auto* n = std::get_if<std::int64_t>(&v)) {
        storage_.push_back(std::to_string(*n));
      } else if (auto* s = std::get_if<std::string>(&v)) {
        storage_.push_back(*s);
      } else if (auto* b = std::get_if<bool>(&v)) {
        storage_.push_back(*b ? "true" : "false");
      } else {
        storage_.emplace_back();
      }
    }
    for (std::size_t i = 0; i < storage_.size(); ++i) {
      values_.push_back(is_null[i] ? nullptr : storage_[i].c_str());
    }
  }
  int count() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<const char*> values_;
};

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The one place that talks to libpq.
class PgConnection {
 public:
  PgConnection(PGconn* c, std::string redacted) : c_(c), redacted_(std::move(redacted)) {}
  ~PgConnection() { PQfinish(c_); }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Connects with the defaults below, which the conninfo may override; then sets up the session.
  static Expected<std::unique_ptr<PgConnection>> open(const std::string& conninfo) {
    // Earlier keywords are overridden by what the expanded conninfo ("dbname") sets.
    // A database that vanishes without closing the connection (a dead host, a partition) is
    // noticed in bounded time: keepalives when idle, tcp_user_timeout (ms) when data is unacked.
    const char* keys[] = {
        "connect_timeout",  "application_name", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "dbname",          nullptr};
    const char* vals[] = {"10",    "ringfence-server", "30",   "10", "3",
                          "30000", conninfo.c_str(),   nullptr};
    PGconn* c = PQconnectdbParams(keys, vals, 1);
    auto conn = std::make_unique<PgConnection>(c, redact_conninfo(conninfo));
    if (c == nullptr || PQstatus(c) != CONNECTION_OK) {
      return fail(Errc::Unavailable,
                  "cannot connect to PostgreSQL at " + conn->redacted_ + ": " +
                      (c ? trimmed(PQerrorMessage(c)) : std::string("out of memory")),
                  "storage_unavailable");
    }
    RF_CHECK(conn->setup_session());
    return conn;
  }

  bool connected() const { return !broken_ && PQstatus(c_) == CONNECTION_OK; }

  // Reconnects a lost connection (outside any transaction: the caller knows). Prepared statements
  // belong to the old session and are forgotten.
  Status ensure() {
    if (connected()) {
      if (PQtransactionStatus(c_) == PQTRANS_IDLE) return {};
      // A transaction left open by a failure half way (never by a caller at depth 0).
      PQclear(PQexec(c_, "ROLLBACK"));
      if (PQtransactionStatus(c_) == PQTRANS_IDLE) return {};
    }
    // Reconnecting blocks (up to connect_timeout) whoever called: while the database stays away,
    // at most one attempt per kReconnectEvery, the calls in between fail at once.
    auto now = std::chrono::steady_clock::now();
    if (now < next_reconnect_) {
      return fail(Errc::Unavailable,
                  "PostgreSQL at " + redacted_ + " is unreachable: " + last_reconnect_error_,
                  "storage_unavailable");
    }
    prepared_.clear();
    broken_ = false;
    PQreset(c_);
    if (PQstatus(c_) != CONNECTION_OK) {
      next_reconnect_ = std::chrono::steady_clock::now() + kReconnectEvery;
      last_reconnect_error_ = trimmed(PQerrorMessage(c_));
      return fail(Errc::Unavailable,
                  "lost the connection to PostgreSQL at " + redacted_ +
                      " and cannot reconnect: " + last_reconnect_error_,
                  "storage_unavailable");
    }
    next_reconnect_ = {};
    return setup_session();
  }

  // One parameterised statement, prepared once per session. Returns its rows.
  template <typename Range>
  Expected<Rows> exec(const std::string& sql, const Range& values) {
    RF_TRY(name, prepare(sql));
    Params p(values);
    Result r(PQexecPrepared(c_, name.c_str(), p.count(), p.values(), nullptr, nullptr, 0));
    return check(std::move(r), "statement");
  }
  Expected<Rows> exec(const std::string& sql, std::initializer_list<Value> values) {
    return exec<std::initializer_list<Value>>(sql, values);
  }

  // Statements without parameters (transaction control, migrations; several may be given).
  Expected<Rows> script(const std::string& sql) {
    return check(Result(PQexec(c_, sql.c_str())), "statement");
  }

  // One statement for each row of parameters, pipelined: one round trip per kPipelineChunk rows.
  // Stops at the first failing row (the rest are skipped by the server) and returns its error.
  Status batch(const std::string& sql, const std::vector<std::vector<Value>>& rows) {
    if (rows.empty()) return {};
    RF_TRY(name, prepare(sql));
    for (std::size_t at = 0; at < rows.size(); at += kPipelineChunk) {
      std::size_t end = std::min(rows.size(), at + kPipelineChunk);
      if (PQenterPipelineMode(c_) != 1) return connection_error("batch");
      std::size_t sent = 0;
      for (std::size_t i = at; i < end; ++i, ++sent) {
        Params p(rows[i]);
        if (PQsendQueryPrepared(c_, name.c_str(), p.count(), p.values(), nullptr, nullptr, 0) !=
            1) {
          break;
        }
      }
      if (sent != end - at || PQpipelineSync(c_) != 1) {
        broken_ = true;  // half a pipeline on the wire: the session is not reusable
        return connection_error("batch");
      }
      std::optional<Error> first;
      // Each statement's result is followed by a null; then comes the sync's result.
      std::size_t nulls = 0;
      while (true) {
        PGresult* raw = PQgetResult(c_);
        if (raw == nullptr) {
          if (++nulls > sent + 1 || PQstatus(c_) != CONNECTION_OK) {
            broken_ = true;
            if (!first) first = connection_error("batch").value();
            break;
          }
          continue;
        }
        Result r(raw);
        auto status = PQresultStatus(raw);
        if (status == PGRES_PIPELINE_SYNC) break;
        if (status == PGRES_FATAL_ERROR && !first) first = error_of(raw, "batch").value();
      }
      if (!broken_ && PQexitPipelineMode(c_) != 1) {
        broken_ = true;
        if (!first) first = connection_error("batch").value();
      }
      if (first) return tl::unexpected(std::move(*first));
    }
    return {};
  }

  const std::string& redacted() const { return redacted_; }

 private:
  Status setup_session() {
    // Acknowledged = durable: a cluster configured with synchronous_commit=off would acknowledge
    // commits it can still lose, so this session turns it back on. (Stronger settings such as
    // remote_apply are kept.)
    RF_TRY(sync, script("SELECT current_setting('synchronous_commit')"));
    if (sync.size() == 1 && sync.text(0, 0) == "off") {
      RF_CHECK(script("SET synchronous_commit = on"));
    }
    RF_CHECK(script("SET client_encoding = 'UTF8'"));
    // NOTICEs (CREATE TABLE IF NOT EXISTS ...) would go to stderr through libpq's default handler.
    RF_CHECK(script("SET client_min_messages = warning"));
    return {};
  }

  Expected<std::string> prepare(const std::string& sql) {
    auto it = prepared_.find(sql);
    if (it != prepared_.end()) return it->second;
    std::string name = "rf" + std::to_string(prepared_.size());
    RF_CHECK(check(Result(PQprepare(c_, name.c_str(), sql.c_str(), 0, nullptr)), "prepare"));
    prepared_.emplace(sql, name);
    return name;
  }

  Expected<Rows> check(Result r, const char* what) {
    auto s = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    // EMPTY_QUERY: a script of comments only (a migration twin with nothing to do here).
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_EMPTY_QUERY) {
      return Rows(std::move(r));
    }
    if (!r) return connection_error(what);
    return error_of(r.get(), what);
  }

  tl::unexpected<Error> error_of(const PGresult* r, const char* what) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    std::string_view sqlstate = state ? state : "";
    std::string msg = trimmed(PQresultErrorMessage(r));
    if (msg.empty()) msg = trimmed(PQerrorMessage(c_));
    // Class 23, integrity constraint violation: what SQLite reports as SQLITE_CONSTRAINT.
    if (sqlstate == "23505") return fail(Errc::Conflict, "already exists", "conflict");
    if (sqlstate.substr(0, 2) == "23") return fail(Errc::Conflict, msg, "conflict");
    // Class 53: insufficient resources (53100 disk full); space has to come back first.
    std::string code = sqlstate == "53100" ? "storage_full" : "storage_unavailable";
    return fail(Errc::Unavailable, std::string("storage ") + what + " failed: " + msg, code);
  }

  tl::unexpected<Error> connection_error(const char* what) {
    return fail(Errc::Unavailable,
                std::string("storage ") + what + " failed (PostgreSQL at " + redacted_ +
                    "): " + trimmed(PQerrorMessage(c_)),
                "storage_unavailable");
  }

  static constexpr auto kReconnectEvery = std::chrono::milliseconds(500);

  PGconn* c_;
  std::string redacted_;
  bool broken_ = false;
  std::chrono::steady_clock::time_point next_reconnect_{};  // no attempt before this
  std::string last_reconnect_error_;
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
};

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(std::unique_ptr<PgConnection> conn) : conn_(std::move(conn)) {}

  // Whether the connection is up (the next operation outside a transaction reconnects if not).
  bool connected() const { return conn_->connected(); }

  Status migrate(const std::vector<Migration>& migrations) {
    // Session lock: replicas starting together wait here and find the work done. A connection
    // that dies releases it.
    RF_CHECK(conn_->exec("SELECT pg_advisory_lock($1)", {kMigrationLock}));
    auto st = migrate_locked(migrations);
    auto unlocked = conn_->exec("SELECT pg_advisory_unlock($1)", {kMigrationLock});
    if (!st) return st;
    if (!unlocked) return tl::unexpected(unlocked.error());
    return {};
  }

  // One consistent snapshot: at depth 0 the reads share a read-only REPEATABLE READ transaction
  // (another writer's commit lands wholly before or after it).
  Expected<Snapshot> load() override {
    if (depth_ > 0) return load_rows();
    RF_CHECK(conn_->ensure());
    RF_CHECK(conn_->script("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"));
    auto s = load_rows();
    auto end = conn_->script(s ? "COMMIT" : "ROLLBACK");
    if (s && !end) return tl::unexpected(end.error());
    return s;
  }

 private:
  Expected<Snapshot> load_rows() {
    Snapshot s;
    {
      RF_TRY(r, conn_->exec("SELECT name, role, hash, created FROM api_tokens", {}));
      for (int i = 0; i < r.size(); ++i)
        s.tokens.push_back({r.text(i, 0), r.text(i, 1), r.text(i, 2), r.i64(i, 3)});
    }
    {
      RF_TRY(r, conn_->exec("SELECT name, hash, labels, expires, created, max_uses, uses, tenant, "
                            "rate_per_min, revoked FROM enrollment_tokens",
                            {}));
      for (int i = 0; i < r.size(); ++i) {
        s.enroll_tokens.push_back({r.text(i, 0), r.text(i, 1), r.text(i, 2), r.opt_i64(i, 3),
                                   r.i64(i, 4), r.opt_i64(i, 5), r.i64(i, 6), r.text(i, 7),
                                   r.i64(i, 8), r.opt_i64(i, 9)});
      }
    }
    {
      RF_TRY(r, conn_->exec("SELECT host_id, since_ms, enroll_token FROM host_trust", {}));
      for (int i = 0; i < r.size(); ++i)
        s.host_trust.push_back({r.text(i, 0), r.i64(i, 1), r.text(i, 2)});
    }
    {
      RF_TRY(r, conn_->exec("SELECT host_id, credential_hash, labels, tenant, pinned, "
                            "agent_version, enrolled, last_seen, channels, boot_hash, consumers "
                            "FROM hosts",
                            {}));
      s.hosts.reserve(static_cast<std::size_t>(r.size()));
      for (int i = 0; i < r.size(); ++i) {
        HostRow h;
        h.host_id = r.text(i, 0);
        h.credential_hash = r.text(i, 1);
        h.labels_json = r.text(i, 2);
        h.tenant = r.text(i, 3);
        h.pinned = r.boolean(i, 4);
        h.agent_version = r.text(i, 5);
        h.enrolled = r.i64(i, 6);
        h.last_seen = r.i64(i, 7);
        h.channels_json = r.text(i, 8);
        h.boot_hash = r.i64(i, 9);
        h.consumers_json = r.text(i, 10);
        s.hosts.push_back(std::move(h));
      }
    }
    {
      RF_TRY(r, conn_->exec("SELECT name, rank, selector, description FROM rings", {}));
      for (int i = 0; i < r.size(); ++i)
        s.rings.push_back({r.text(i, 0), r.i64(i, 1), r.text(i, 2), r.text(i, 3)});
    }
    {
      RF_TRY(r, conn_->exec("SELECT name, schema, validator, max_bytes, stable_version, created, "
                            "consumer FROM channels",
                            {}));
      for (int i = 0; i < r.size(); ++i) {
        s.channels.push_back({r.text(i, 0), r.text(i, 1), r.opt_text(i, 2), r.i64(i, 3),
                              r.opt_i64(i, 4), r.i64(i, 5), r.opt_text(i, 6)});
      }
    }
    {
      RF_TRY(r, conn_->exec("SELECT channel, version, sha256, size, notes, state, manifest, "
                            "signature, validation, created, updated FROM releases ORDER BY "
                            "channel, version",
                            {}));
      for (int i = 0; i < r.size(); ++i) {
        s.releases.push_back({r.text(i, 0), r.i64(i, 1), r.text(i, 2), r.i64(i, 3), r.text(i, 4),
                              r.text(i, 5), r.text(i, 6), r.text(i, 7), r.text(i, 8), r.i64(i, 9),
                              r.i64(i, 10)});
      }
    }
    {
      RF_TRY(r, conn_->exec("SELECT name, stages FROM policies", {}));
      for (int i = 0; i < r.size(); ++i) s.policies.push_back({r.text(i, 0), r.text(i, 1)});
    }
    {
      RF_TRY(r, conn_->exec("SELECT id, channel, version, state, stage, body, created, updated "
                            "FROM rollouts ORDER BY id",
                            {}));
      for (int i = 0; i < r.size(); ++i) {
        s.rollouts.push_back({r.i64(i, 0), r.text(i, 1), r.i64(i, 2), r.text(i, 3), r.i64(i, 4),
                              r.text(i, 5), r.i64(i, 6), r.i64(i, 7)});
      }
    }
    {
      RF_TRY(r, conn_->exec("SELECT key, value FROM settings", {}));
      for (int i = 0; i < r.size(); ++i) s.settings.emplace_back(r.text(i, 0), r.text(i, 1));
    }
    {
      RF_TRY(r, conn_->exec("SELECT scope, minute, hosts FROM budget_usage", {}));
      for (int i = 0; i < r.size(); ++i)
        s.budget.push_back({r.text(i, 0), r.i64(i, 1), r.i64(i, 2)});
    }
    {
      RF_TRY(r, conn_->exec("SELECT COALESCE(MAX(id), 0) FROM events", {}));
      if (r.size() == 1) s.last_event_id = r.i64(0, 0);
    }
    return s;
  }

 public:
  Status transaction(const std::function<Status()>& fn) override {
    if (depth_ > 0) {
      ++depth_;
      auto st = fn();
      --depth_;
      return st;
    }
    RF_CHECK(conn_->ensure());
    RF_CHECK(conn_->script("BEGIN"));
    tx_error_.reset();
    ++depth_;
    auto st = fn();
    --depth_;
    // PostgreSQL aborts a transaction at its first failed statement (SQLite keeps it going): a fn
    // that swallowed such an error must not be told its transaction committed.
    if (st && tx_error_) st = tl::unexpected(std::move(*tx_error_));
    tx_error_.reset();
    if (!st) {
      (void)conn_->script("ROLLBACK");
      after_commit_.clear();
      return st;
    }
    auto c = conn_->script("COMMIT");
    if (c && c->command() != "COMMIT") {
      c = fail(Errc::Unavailable, "storage commit failed: the transaction was rolled back",
               "storage_unavailable");
    }
    if (!c) {
      (void)conn_->script("ROLLBACK");
      after_commit_.clear();
      return tl::unexpected(c.error());
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
    return run("INSERT INTO api_tokens(name, role, hash, created) VALUES($1, $2, $3, $4)",
               {r.name, r.role, r.hash, r.created});
  }
  Status delete_token(const std::string& name) override {
    return run("DELETE FROM api_tokens WHERE name = $1", {name});
  }
  Status put_enroll_token(const EnrollTokenRow& r) override {
    return run(
        "INSERT INTO enrollment_tokens(name, hash, labels, expires, created, max_uses, uses, "
        "tenant, rate_per_min, revoked) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        {r.name, r.hash, r.labels_json, opt(r.expires), r.created, opt(r.max_uses), r.uses,
         r.tenant, r.rate_per_min, opt(r.revoked)});
  }
  Status set_enroll_token_uses(const std::string& name, std::int64_t uses) override {
    return run("UPDATE enrollment_tokens SET uses = $1 WHERE name = $2", {uses, name});
  }
  Status revoke_enroll_token(const std::string& name, std::int64_t when) override {
    return run("UPDATE enrollment_tokens SET revoked = $1 WHERE name = $2", {when, name});
  }
  Status put_host_trust(const std::vector<HostTrustRow>& rows) override {
    std::vector<std::vector<Value>> params;
    params.reserve(rows.size());
    for (const auto& h : rows) params.push_back({h.host_id, h.since_ms, h.enroll_token});
    return run_batch(
        "INSERT INTO host_trust(host_id, since_ms, enroll_token) VALUES($1, $2, $3) "
        "ON CONFLICT(host_id) DO UPDATE SET since_ms = excluded.since_ms, "
        "enroll_token = CASE WHEN excluded.enroll_token = '' THEN host_trust.enroll_token "
        "ELSE excluded.enroll_token END",
        params);
  }
  Status upsert_hosts(const std::vector<HostRow>& rows) override {
    std::vector<std::vector<Value>> params;
    params.reserve(rows.size());
    for (const auto& h : rows) {
      params.push_back({h.host_id, h.credential_hash, h.labels_json, h.tenant, h.pinned,
                        h.agent_version, h.enrolled, h.last_seen, h.channels_json, h.boot_hash,
                        h.consumers_json});
    }
    return run_batch(
        "INSERT INTO hosts(host_id, credential_hash, labels, tenant, pinned, agent_version, "
        "enrolled, last_seen, channels, boot_hash, consumers) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
        "ON CONFLICT(host_id) DO UPDATE SET credential_hash = excluded.credential_hash, "
        "labels = excluded.labels, tenant = excluded.tenant, pinned = excluded.pinned, "
        "agent_version = excluded.agent_version, last_seen = excluded.last_seen, "
        "channels = excluded.channels, boot_hash = CASE excluded.boot_hash WHEN 0 THEN "
        "hosts.boot_hash ELSE excluded.boot_hash END, consumers = excluded.consumers",
        params);
  }
  Status touch_hosts(const std::vector<HostSeenRow>& rows) override {
    std::vector<std::vector<Value>> params;
    params.reserve(rows.size());
    for (const auto& h : rows) params.push_back({h.last_seen, h.host_id});
    return run_batch("UPDATE hosts SET last_seen = $1 WHERE host_id = $2", params);
  }
  Status delete_host(const std::string& host_id) override {
    return transaction([&]() -> Status {
      RF_CHECK(run("DELETE FROM host_trust WHERE host_id = $1", {host_id}));
      return run("DELETE FROM hosts WHERE host_id = $1", {host_id});
    });
  }
  Status put_ring(const RingRow& r) override {
    return run(
        "INSERT INTO rings(name, rank, selector, description) VALUES($1, $2, $3, $4) "
        "ON CONFLICT(name) DO UPDATE SET rank = excluded.rank, selector = excluded.selector, "
        "description = excluded.description",
        {r.name, r.rank, r.selector_json, r.description});
  }
  Status delete_ring(const std::string& name) override {
    return run("DELETE FROM rings WHERE name = $1", {name});
  }
  Status put_channel(const ChannelRow& r) override {
    return run(
        "INSERT INTO channels(name, schema, validator, max_bytes, stable_version, created, "
        "consumer) VALUES($1, $2, $3, $4, $5, $6, $7) ON CONFLICT(name) DO UPDATE SET "
        "schema = excluded.schema, validator = excluded.validator, "
        "max_bytes = excluded.max_bytes, stable_version = excluded.stable_version, "
        "consumer = excluded.consumer",
        {r.name, r.schema_json, opt(r.validator_json), r.max_bytes, opt(r.stable_version),
         r.created, opt(r.consumer_json)});
  }
  Status put_release(const ReleaseRow& r) override {
    return run(
        "INSERT INTO releases(channel, version, sha256, size, notes, state, manifest, signature, "
        "validation, created, updated) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
        "ON CONFLICT(channel, version) DO UPDATE SET state = excluded.state, "
        "manifest = excluded.manifest, signature = excluded.signature, notes = excluded.notes, "
        "updated = excluded.updated",
        {r.channel, r.version, r.sha256, r.size, r.notes, r.state, r.manifest_json, r.signature,
         r.validation_json, r.created, r.updated ? r.updated : r.created});
  }
  Status put_policy(const PolicyRow& r) override {
    return run(
        "INSERT INTO policies(name, stages) VALUES($1, $2) ON CONFLICT(name) DO UPDATE SET "
        "stages = excluded.stages",
        {r.name, r.stages_json});
  }
  Status put_rollout(const RolloutRow& r) override {
    return run(
        "INSERT INTO rollouts(id, channel, version, state, stage, body, created, updated) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT(id) DO UPDATE SET "
        "state = excluded.state, stage = excluded.stage, body = excluded.body, "
        "updated = excluded.updated",
        {r.id, r.channel, r.version, r.state, r.stage, r.body_json, r.created, r.updated});
  }
  Expected<std::int64_t> append_event(const EventRow& r) override {
    RF_TRY(rows, query("INSERT INTO events(time, actor, kind, rollout, data) "
                       "VALUES($1, $2, $3, $4, $5) RETURNING id",
                       {r.time, r.actor, r.kind, opt(r.rollout), r.data_json}));
    return rows.i64(0, 0);
  }
  Expected<std::vector<EventRow>> list_events(const EventQuery& q) override {
    auto rows = q.rollout ? query(
                                "SELECT id, time, actor, kind, rollout, data FROM events "
                                "WHERE id > $1 AND rollout = $2 ORDER BY id LIMIT $3",
                                {q.after, *q.rollout, q.limit})
                          : query(
                                "SELECT id, time, actor, kind, rollout, data FROM events "
                                "WHERE id > $1 ORDER BY id LIMIT $2",
                                {q.after, q.limit});
    if (!rows) return tl::unexpected(rows.error());
    std::vector<EventRow> out;
    out.reserve(static_cast<std::size_t>(rows->size()));
    for (int i = 0; i < rows->size(); ++i) {
      out.push_back({rows->i64(i, 0), rows->i64(i, 1), rows->text(i, 2), rows->text(i, 3),
                     rows->opt_i64(i, 4), rows->text(i, 5)});
    }
    return out;
  }
  Status insert_reports(const std::vector<ReportRow>& rows) override {
    std::vector<std::vector<Value>> params;
    params.reserve(rows.size());
    for (const auto& r : rows) {
      params.push_back({r.host_id, r.boot_id, r.kind, r.time, opt(r.channel), opt(r.version),
                        r.detail_json, r.received});
    }
    return run_batch(
        "INSERT INTO reports(host_id, boot_id, kind, time, channel, version, detail, received) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        params);
  }
  Expected<std::vector<ReportRow>> list_reports(const std::string& channel,
                                                std::int64_t received_since,
                                                std::int64_t limit) override {
    RF_TRY(rows, query("SELECT host_id, boot_id, kind, time, channel, version, detail, received "
                       "FROM reports WHERE channel = $1 AND received >= $2 "
                       "ORDER BY received, time LIMIT $3",
                       {channel, received_since, limit}));
    std::vector<ReportRow> out;
    out.reserve(static_cast<std::size_t>(rows.size()));
    for (int i = 0; i < rows.size(); ++i) {
      out.push_back({rows.text(i, 0), rows.text(i, 1), rows.text(i, 2), rows.i64(i, 3),
                     rows.opt_text(i, 4), rows.opt_i64(i, 5), rows.text(i, 6), rows.i64(i, 7)});
    }
    return out;
  }
  Status put_setting(const std::string& key, const std::string& value) override {
    return run(
        "INSERT INTO settings(key, value) VALUES($1, $2) ON CONFLICT(key) DO UPDATE SET "
        "value = excluded.value",
        {key, value});
  }
  Status upsert_exposures(const std::vector<ExposureRow>& rows) override {
    std::vector<std::vector<Value>> params;
    params.reserve(rows.size());
    for (const auto& e : rows) {
      params.push_back({e.rollout, e.host_id, e.stage, e.applied_ms, e.healthy, e.failed, e.silent,
                        e.short_boots});
    }
    return run_batch(
        "INSERT INTO exposures(rollout, host_id, stage, applied_ms, healthy, failed, silent, "
        "short_boots) VALUES($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT(rollout, host_id) DO "
        "UPDATE SET stage = excluded.stage, applied_ms = excluded.applied_ms, "
        "healthy = excluded.healthy, failed = excluded.failed, silent = excluded.silent, "
        "short_boots = excluded.short_boots",
        params);
  }
  Status put_budget(const std::vector<BudgetRow>& rows, std::int64_t drop_before) override {
    return transaction([&]() -> Status {
      std::vector<std::vector<Value>> params;
      params.reserve(rows.size());
      for (const auto& b : rows) params.push_back({b.scope, b.minute, b.hosts});
      RF_CHECK(
          run_batch("INSERT INTO budget_usage(scope, minute, hosts) VALUES($1, $2, $3) "
                    "ON CONFLICT(scope, minute) DO UPDATE SET hosts = excluded.hosts",
                    params));
      return run("DELETE FROM budget_usage WHERE minute < $1", {drop_before});
    });
  }
  Expected<std::int64_t> prune_exposures(std::int64_t rollout, std::int64_t limit) override {
    RF_TRY(rows, query("DELETE FROM exposures WHERE rollout = $1 AND host_id IN (SELECT host_id "
                       "FROM exposures WHERE rollout = $1 LIMIT $2)",
                       {rollout, limit}));
    return rows.affected();
  }
  Expected<std::vector<ExposureRow>> list_exposures(std::int64_t rollout) override {
    RF_TRY(rows, query("SELECT host_id, stage, applied_ms, healthy, failed, silent, short_boots "
                       "FROM exposures WHERE rollout = $1",
                       {rollout}));
    std::vector<ExposureRow> out;
    out.reserve(static_cast<std::size_t>(rows.size()));
    for (int i = 0; i < rows.size(); ++i) {
      out.push_back({rollout, rows.text(i, 0), rows.i64(i, 1), rows.i64(i, 2), rows.boolean(i, 3),
                     rows.boolean(i, 4), rows.boolean(i, 5), rows.i64(i, 6)});
    }
    return out;
  }

 private:
  Status migrate_locked(const std::vector<Migration>& migrations) {
    RF_CHECK(
        conn_->script("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, "
                      "name TEXT NOT NULL, applied BIGINT NOT NULL)"));
    RF_TRY(v, conn_->script("SELECT COALESCE(MAX(version), 0) FROM schema_version"));
    std::int64_t current = v.i64(0, 0);
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
      RF_CHECK(conn_->script("BEGIN"));
      auto st = conn_->script(m.sql);
      if (st) {
        st = conn_->exec(
            "INSERT INTO schema_version(version, name, applied) "
            "VALUES($1, $2, EXTRACT(EPOCH FROM now())::BIGINT)",
            {std::int64_t{m.version}, m.name});
      }
      if (st) st = conn_->script("COMMIT");
      if (!st) {
        (void)conn_->script("ROLLBACK");
        return fail(Errc::Unavailable, "migration " + m.name + " failed: " + st.error().message,
                    "migration_failed");
      }
    }
    return {};
  }

  // Before an operation: outside a transaction, a lost connection is reconnected first.
  Status enter() { return depth_ == 0 ? conn_->ensure() : Status{}; }

  // Records the first failure inside a transaction (see transaction()).
  template <typename T>
  T noted(T result) {
    if (!result && depth_ > 0 && !tx_error_) tx_error_ = result.error();
    return result;
  }

  Expected<Rows> query(const std::string& sql, std::initializer_list<Value> values) {
    RF_CHECK(enter());
    return noted(conn_->exec(sql, values));
  }
  Status run(const std::string& sql, std::initializer_list<Value> values) {
    RF_CHECK(query(sql, values));
    return {};
  }
  // A batch is one transaction of its own (or part of the caller's).
  Status run_batch(const std::string& sql, const std::vector<std::vector<Value>>& params) {
    if (params.empty()) return {};
    return transaction([&]() -> Status { return noted(conn_->batch(sql, params)); });
  }

  std::unique_ptr<PgConnection> conn_;
  int depth_ = 0;
  std::optional<Error> tx_error_;                    // first failed statement of the transaction
  std::vector<std::function<void()>> after_commit_;  // see Store::after_commit
};

}  // namespace

std::string redact_conninfo(const std::string& conninfo) {
  std::string out = conninfo;
  // URL form: scheme://user:password@host... (the userinfo ends at the last '@' before the path)
  auto scheme = out.find("://");
  if (scheme != std::string::npos) {
    auto start = scheme + 3;
    auto end = out.find_first_of("/?", start);
    if (end == std::string::npos) end = out.size();
    auto at = out.rfind('@', end);
    if (at != std::string::npos && at >= start) {
      auto colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // password=... as a URL query parameter or a key=value pair (quoted or not).
  static const std::regex kPassword(R"((password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*))",
                                    std::regex::icase);
  return std::regex_replace(out, kPassword, "$1***");
}

Expected<std::unique_ptr<Store>> open_postgres(const std::string& conninfo,
                                               const std::vector<Migration>& migrations) {
  RF_TRY(conn, PgConnection::open(conninfo));
  auto store = std::make_unique<PostgresStore>(std::move(conn));
  RF_CHECK(store->migrate(migrations));
  return std::unique_ptr<Store>(std::move(store));
}

bool is_postgres_url(const std::string& s) {
  return s.rfind("postgres://", 0) == 0 || s.rfind("postgresql://", 0) == 0;
}

}  // namespace ringfence::server::store
