#pragma once
// Schema migrations: migrations/NNNN_name.sql (SQLite) and migrations/postgres/NNNN_name.sql
// (PostgreSQL, the same numbers for the same change) embedded at build time, applied in order at
// start, each in one transaction together with its version bump (PRAGMA user_version, or a row of
// PostgreSQL's schema_version table).

#include <string>
#include <vector>

namespace ringfence::server::store {

struct Migration {
  int version;       // NNNN
  std::string name;  // file name without .sql
  std::string sql;
};

// All migrations compiled into this binary, ascending by version.
const std::vector<Migration>& embedded_migrations();
// The PostgreSQL twins, ascending by version.
const std::vector<Migration>& embedded_postgres_migrations();

}  // namespace ringfence::server::store
