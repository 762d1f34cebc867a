#include "proto/ids.hpp"

namespace ringfence::proto {
namespace {
bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool is_lower_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'); }
}  // namespace

bool is_uuid(std::string_view s) noexcept {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!is_hex_lower(s[i])) {
      return false;
    }
  }
  return true;
}

bool is_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > 63 || !is_lower_alnum(s[0])) return false;
  for (char c : s) {
    if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return s.find("..") == std::string_view::npos;
}

bool is_sha256_hex(std::string_view s) noexcept {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!is_hex_lower(c)) return false;
  }
  return true;
}

bool is_label_key(std::string_view s) noexcept {
  if (s.empty() || s.size() > 32 || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  for (char c : s) {
    if (!is_lower_alnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

bool is_label_value(std::string_view s) noexcept {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    if (c <= ' ' || c > '~') return false;
    if (c == ',' || c == '(' || c == ')' || c == '=' || c == '!') return false;
  }
  return true;
}

bool parse_u64(std::string_view s, std::uint64_t& out) noexcept {
  if (s.empty() || s.size() > 18) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  out = v;
  return true;
}

}  // namespace ringfence::proto
