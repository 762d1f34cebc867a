#pragma once
// Human output: aligned tables and key/value blocks, plus the small formatters the commands
// share. Everything writes to a std::ostream so it can be checked without a terminal.

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace ringfence::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  void row(std::vector<std::string> cells);
  // Columns padded to their widest cell, two spaces apart; "(none)" for an empty table.
  void print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// A JSON value as a table cell: strings bare, null as "-", numbers compact, others as JSON.
std::string cell(const nlohmann::json& v);
// Unix seconds (or milliseconds when > 1e11) as "2026-11-22 10:15:03Z"; "-" for null/0.
std::string timestamp(const nlohmann::json& v);
// A ring selector as one short phrase: "buckets [0,100)", "labels os=windows", "3 hosts".
std::string selector_text(const nlohmann::json& selector);
// Prints an object's scalar fields as "key: value" lines (nested values as compact JSON).
void print_fields(std::ostream& out, const nlohmann::json& obj);

}  // namespace ringfence::cli
