#pragma once
// Log lines for people and for machines. `--log-format text` (the default) prints
//   [2026-12-07 23:59:00.123] [ringfence] [info] GET /v1/rings 200 request_id=k3Zq.1a bytes=87
// and `--log-format json` one JSON object per line with the same content:
//   {"time":"2026-12-07T23:59:00.123Z","level":"info","message":"GET /v1/rings 200",
//    "request_id":"k3Zq.1a","bytes":87}
// Every spdlog call in the server goes through the formatter installed here; a plain
// spdlog::info("...") becomes {"time","level","message"}. Lines with fields are made with Fields.
//
// Threading: Fields is a value (one per line); the formatters are spdlog's (the logger's mutex).

#include <spdlog/common.h>
#include <spdlog/formatter.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "proto/error.hpp"

namespace ringfence::server::logging {

enum class Format { Text, Json };

// "text" or "json"; anything else is InvalidArgument naming the choices.
Expected<Format> parse_format(std::string_view s);

// The formatter for the server's logger (spdlog::set_formatter).
std::unique_ptr<spdlog::formatter> make_formatter(Format f);

// One log line's fields, rendered for both formats as they are added (no JSON parse at the end).
// Keys are short literal names ([a-z_]); values are escaped.
class Fields {
 public:
  Fields& add(std::string_view key, std::string_view value);
  Fields& add(std::string_view key, std::int64_t value);
  // Logs `message` with the fields at `level` through the default logger.
  void log(spdlog::level::level_enum level, std::string_view message) const;

 private:
  std::string json_;  // "k":"v","k2":2
  std::string text_;  // k=v k2=2
};

}  // namespace ringfence::server::logging
