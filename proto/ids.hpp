#pragma once
// Strict patterns for every identifier that arrives from outside. Nothing that fails these is
// ever used to build a path, a query or a log line without escaping.

#include <cstdint>
#include <string_view>

namespace ringfence::proto {

// A canonical lower-case UUID: 8-4-4-4-12 hex digits.
bool is_uuid(std::string_view s) noexcept;

// Names of rings, channels, policies, tokens: [a-z0-9][a-z0-9._-]{0,62}, no "..".
bool is_name(std::string_view s) noexcept;

// 64 lower-case hex digits.
bool is_sha256_hex(std::string_view s) noexcept;

// Label keys [a-z][a-z0-9_.-]{0,31}; label values: 1..128 printable ASCII, none of ",()=!".
bool is_label_key(std::string_view s) noexcept;
bool is_label_value(std::string_view s) noexcept;

// Parses a non-negative decimal integer of at most 18 digits; false on anything else.
bool parse_u64(std::string_view s, std::uint64_t& out) noexcept;

}  // namespace ringfence::proto
