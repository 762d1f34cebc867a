#pragma once
// Strict readers for JSON objects that arrive from outside: a wrong type, a missing required
// field, an out-of-range number or an over-long string is an InvalidArgument error naming the
// field — never a silent default.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "proto/error.hpp"

namespace ringfence::proto {

// Parses text as JSON; errors are InvalidArgument with code "invalid_json". Nesting deeper than
// max_depth is refused (hostile input).
Expected<nlohmann::json> parse_json(std::string_view text, int max_depth = 32);

// The body must be a JSON object.
Status require_object(const nlohmann::json& j, std::string_view what);

// Refuses keys outside `allowed` ("unknown field 'x'").
Status only_keys(const nlohmann::json& obj, std::initializer_list<std::string_view> allowed);

// Required string field, 1..max_len bytes.
Expected<std::string> get_string(const nlohmann::json& obj, std::string_view key,
                                 std::size_t max_len = 256);
// Optional string field (absent or null → nullopt), up to max_len bytes (may be empty).
Expected<std::optional<std::string>> get_opt_string(const nlohmann::json& obj,
                                                    std::string_view key,
                                                    std::size_t max_len = 256);
// Required integer in [lo, hi]. Floats, strings, booleans are refused.
Expected<std::int64_t> get_int(const nlohmann::json& obj, std::string_view key, std::int64_t lo,
                               std::int64_t hi);
Expected<std::optional<std::int64_t>> get_opt_int(const nlohmann::json& obj, std::string_view key,
                                                  std::int64_t lo, std::int64_t hi);
// Required number (integer or float) in [lo, hi].
Expected<double> get_number(const nlohmann::json& obj, std::string_view key, double lo,
                            double hi);
Expected<std::optional<double>> get_opt_number(const nlohmann::json& obj, std::string_view key,
                                               double lo, double hi);
Expected<std::optional<bool>> get_opt_bool(const nlohmann::json& obj, std::string_view key);

// The same checks on a value already found (nullptr = absent), for streaming decoders; `key`
// names the field in the error.
Expected<std::string> string_field(const nlohmann::json* v, std::string_view key,
                                   std::size_t max_len = 256);
Expected<std::optional<std::string>> opt_string_field(const nlohmann::json* v,
                                                      std::string_view key,
                                                      std::size_t max_len = 256);
Expected<std::int64_t> int_field(const nlohmann::json* v, std::string_view key, std::int64_t lo,
                                 std::int64_t hi);
Expected<std::optional<std::int64_t>> opt_int_field(const nlohmann::json* v,
                                                    std::string_view key, std::int64_t lo,
                                                    std::int64_t hi);

// Writes {"error":{"code":..,"message":..[,"details":..]}}.
std::string error_body(const Error& e);

}  // namespace ringfence::proto
