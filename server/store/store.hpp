#pragma once
// The storage interface: rows in, rows out. The server keeps its hot state in memory and writes
// through this interface; only store/ knows SQL. SqliteStore is the embedded default; PostgresStore
// (--store postgres://...) is the shared one.
//
// Threading: a Store is used by one thread at a time (the server serialises access under its
// state mutex). Every mutating call is durable (committed) when it returns success; errors are
// Errc::Unavailable (storage failed) or Errc::Conflict (a uniqueness rule).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proto/error.hpp"
#include "server/store/migrations.hpp"

namespace ringfence::server::store {

struct TokenRow {
  std::string name, role, hash;
  std::int64_t created = 0;
};
struct EnrollTokenRow {
  std::string name, hash, labels_json = "{}";
  std::optional<std::int64_t> expires;
  std::int64_t created = 0;
  // (Default member initializers everywhere: rows built with the five fields above still compile
  // warning-free.)
  std::optional<std::int64_t> max_uses = {};  // nullopt = unlimited
  std::int64_t uses = 0;                      // hosts enrolled with it (re-enrollments excluded)
  std::string tenant = {};                    // "" = none
  std::int64_t rate_per_min = 0;              // enrollments per minute; 0 = the server's default
  std::optional<std::int64_t> revoked = {};   // unix s; a revoked token enrolls nobody
};
// A host's track record: since when its current credential holder has been in contact.
struct HostTrustRow {
  std::string host_id;
  std::int64_t since_ms = 0;  // first agent request after (re-)enrollment or reset; 0 = none
  std::string enroll_token;   // the enrollment token name, or "reset:<actor>"
};
struct HostRow {
  std::string host_id, credential_hash, labels_json = "{}", tenant;
  bool pinned = false;
  std::string agent_version;
  std::int64_t enrolled = 0, last_seen = 0;
  std::string channels_json = "{}";
  // proto::fnv1a64 of the boot id it last reported; 0 = none (an upsert with 0 keeps the stored
  // one)
  std::int64_t boot_hash = 0;
  std::string consumers_json = "{}";  // consumer name -> version it last reported
};
// A heartbeat that changed nothing but the time it was seen: only last_seen is written.
struct HostSeenRow {
  std::string host_id;
  std::int64_t last_seen = 0;
};
struct RingRow {
  std::string name;
  std::int64_t rank = 0;
  std::string selector_json, description;
};
struct ChannelRow {
  std::string name, schema_json = "{}";
  std::optional<std::string> validator_json;
  std::int64_t max_bytes = 0;
  std::optional<std::int64_t> stable_version;
  std::int64_t created = 0;
  std::optional<std::string> consumer_json;  // {"name","min_hosts","versions"}; none = no check
};
struct ReleaseRow {
  std::string channel;
  std::int64_t version = 0;
  std::string sha256;
  std::int64_t size = 0;
  std::string notes, state, manifest_json, signature, validation_json = "{}";
  std::int64_t created = 0;
  std::int64_t updated = 0;  // unix s of the last change (0: as created)
};
struct PolicyRow {
  std::string name, stages_json;
};
struct RolloutRow {
  std::int64_t id = 0;
  std::string channel;
  std::int64_t version = 0;
  std::string state;
  std::int64_t stage = 0;
  std::string body_json;
  std::int64_t created = 0, updated = 0;
};
struct EventRow {
  std::int64_t id = 0;  // assigned by append_event
  std::int64_t time = 0;
  std::string actor, kind;
  std::optional<std::int64_t> rollout;
  std::string data_json = "{}";
};
struct ReportRow {
  std::string host_id, boot_id, kind;
  std::int64_t time = 0;
  std::optional<std::string> channel;
  std::optional<std::int64_t> version;
  std::string detail_json = "{}";
  std::int64_t received = 0;
};

// One host's exposure to one rollout (the gates' evidence a restart rebuilds from).
struct ExposureRow {
  std::int64_t rollout = 0;
  std::string host_id;
  std::int64_t stage = 0;
  std::int64_t applied_ms = 0;  // 0 = not applied
  bool healthy = false, failed = false, silent = false;
  std::int64_t short_boots = 0;
};

// Hosts newly exposed in one minute (the blast-radius budget): scope "" = every rollout,
// "tenant:NAME" = one tenant's hosts.
struct BudgetRow {
  std::string scope;
  std::int64_t minute = 0;  // unix s / 60
  std::int64_t hosts = 0;
};

// Everything the server loads into memory at start.
struct Snapshot {
  std::vector<TokenRow> tokens;
  std::vector<EnrollTokenRow> enroll_tokens;
  std::vector<HostRow> hosts;
  std::vector<RingRow> rings;
  std::vector<ChannelRow> channels;
  std::vector<ReleaseRow> releases;
  std::vector<PolicyRow> policies;
  std::vector<RolloutRow> rollouts;
  std::vector<std::pair<std::string, std::string>> settings;
  std::vector<HostTrustRow> host_trust;
  std::vector<BudgetRow> budget;  // every stored minute (the caller keeps the last hour)
  std::int64_t last_event_id = 0;
};

struct EventQuery {
  std::optional<std::int64_t> rollout;
  std::int64_t after = 0;
  std::int64_t limit = 100;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Expected<Snapshot> load() = 0;

  // Runs fn inside one transaction: committed when fn succeeds, rolled back otherwise.
  // Nested calls join the outer transaction.
  virtual Status transaction(const std::function<Status()>& fn) = 0;
  // Runs fn once the outermost transaction in progress has committed, or at once when none is
  // open; drops it when that transaction rolls back. For effects that must never get ahead of
  // the data they announce (events pushed to live subscribers). Same thread as transaction().
  virtual void after_commit(std::function<void()> fn) = 0;

  virtual Status put_token(const TokenRow& r) = 0;  // insert; Conflict when the name exists
  virtual Status delete_token(const std::string& name) = 0;
  virtual Status put_enroll_token(const EnrollTokenRow& r) = 0;  // insert; Conflict when it exists
  // Sets the use count of an enrollment token (unknown names are ignored).
  virtual Status set_enroll_token_uses(const std::string& name, std::int64_t uses) = 0;
  // Marks an enrollment token revoked at `when` (unix s); unknown names are ignored.
  virtual Status revoke_enroll_token(const std::string& name, std::int64_t when) = 0;
  // Upserts hosts' track records (batch, one transaction); an empty enroll_token keeps the stored
  // one. delete_host() removes a host's row.
  virtual Status put_host_trust(const std::vector<HostTrustRow>& rows) = 0;
  virtual Status upsert_hosts(const std::vector<HostRow>& rows) = 0;  // batch, one transaction
  // Sets last_seen of existing hosts (batch, one transaction); unknown ids are ignored.
  virtual Status touch_hosts(const std::vector<HostSeenRow>& rows) = 0;
  virtual Status delete_host(const std::string& host_id) = 0;
  virtual Status put_ring(const RingRow& r) = 0;  // upsert
  virtual Status delete_ring(const std::string& name) = 0;
  virtual Status put_channel(const ChannelRow& r) = 0;                 // upsert
  virtual Status put_release(const ReleaseRow& r) = 0;                 // upsert
  virtual Status put_policy(const PolicyRow& r) = 0;                   // upsert
  virtual Status put_rollout(const RolloutRow& r) = 0;                 // upsert by id
  virtual Expected<std::int64_t> append_event(const EventRow& r) = 0;  // returns the new id
  virtual Expected<std::vector<EventRow>> list_events(const EventQuery& q) = 0;
  // Inserts reports, ignoring duplicates by (host_id, boot_id, kind, time).
  virtual Status insert_reports(const std::vector<ReportRow>& rows) = 0;
  // Reports of `channel` received at or after `received_since` (unix s), oldest first, at most
  // `limit` of them.
  virtual Expected<std::vector<ReportRow>> list_reports(const std::string& channel,
                                                        std::int64_t received_since,
                                                        std::int64_t limit) = 0;
  virtual Status put_setting(const std::string& key, const std::string& value) = 0;
  // Inserts or replaces exposures by (rollout, host_id) (batch, one transaction).
  virtual Status upsert_exposures(const std::vector<ExposureRow>& rows) = 0;
  // The exposures of one rollout, in no particular order.
  virtual Expected<std::vector<ExposureRow>> list_exposures(std::int64_t rollout) = 0;
  // Deletes up to `limit` exposures of a finished rollout (nothing rebuilds from them any more);
  // returns how many it deleted (fewer than limit: none are left).
  virtual Expected<std::int64_t> prune_exposures(std::int64_t rollout, std::int64_t limit) = 0;
  // Sets the budget counts of (scope, minute) rows (batch, one transaction) and deletes rows with a
  // minute below `drop_before` (no budget window reaches them any more).
  virtual Status put_budget(const std::vector<BudgetRow>& rows, std::int64_t drop_before) = 0;
};

// Opens (creating if needed) the SQLite database at path (":memory:" for tests), in WAL mode,
// and applies the given migrations. A database whose user_version is newer than the newest
// migration is refused with a clear message (Errc::Unavailable).
Expected<std::unique_ptr<Store>> open_sqlite(const std::string& path,
                                             const std::vector<Migration>& migrations);

// Connects to PostgreSQL (conninfo: a postgres:// or postgresql:// URL, or libpq key=value pairs)
// and applies the given migrations (migrations/postgres/, embedded_postgres_migrations()), each in
// one transaction with its row in schema_version, under a session advisory lock so that replicas
// starting together migrate once (the others wait, then find nothing to do). A database whose
// schema_version is newer than the newest migration is refused (Errc::Unavailable,
// "schema_too_new"); an unreachable server is Errc::Unavailable with libpq's message and the
// conninfo without its password.
// Differences from SQLite, within the Store contract: the first statement that fails inside a
// transaction fails the whole transaction (PostgreSQL aborts it) even if fn goes on and succeeds;
// integrity violations are Errc::Conflict (code "conflict"). A lost connection makes operations
// fail with Errc::Unavailable; the next operation outside a transaction reconnects (while the
// database stays away, at most one blocking attempt every 0.5 s; the calls between fail at once).
// load() reads one consistent snapshot (a read-only REPEATABLE READ transaction).
Expected<std::unique_ptr<Store>> open_postgres(const std::string& conninfo,
                                               const std::vector<Migration>& migrations);

// True for "postgres://..." and "postgresql://..." (what --store accepts besides "sqlite").
bool is_postgres_url(const std::string& s);

// conninfo with its password (URL userinfo, ?password=, password=...) replaced by "***": for logs
// and messages.
std::string redact_conninfo(const std::string& conninfo);

// The user_version of an open SQLite file (for tests and diagnostics).
Expected<int> sqlite_user_version(const std::string& path);

// Result of PRAGMA integrity_check on a closed SQLite file: "ok" or the problems it lists.
Expected<std::string> sqlite_integrity_check(const std::string& path);

}  // namespace ringfence::server::store
