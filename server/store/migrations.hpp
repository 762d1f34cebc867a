#pragma once
// Schema migrations: migrations/NNNN_name.sql embedded at build time, applied in order at start,
// each in one transaction together with its PRAGMA user_version bump.

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

}  // namespace ringfence::server::store
