#include "proto/json_fields.hpp"

#include <nlohmann/json.hpp>

namespace ringfence::proto {
namespace {
using nlohmann::json;

std::string field_error(std::string_view key, std::string_view what) {
  std::string m = "field '";
  m.append(key);
  m += "' ";
  m.append(what);
  return m;
}
}  // namespace

Expected<json> parse_json(std::string_view text, int max_depth) {
  int depth = 0;
  bool too_deep = false;
  json::parser_callback_t cb = [&](int d, json::parse_event_t ev, json&) {
    if (ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) {
      depth = d + 1;
      if (depth > max_depth) too_deep = true;
    }
    return !too_deep;
  };
  json j = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
  if (too_deep) {
    return fail(Errc::InvalidArgument, "JSON nested deeper than " + std::to_string(max_depth),
                "invalid_json");
  }
  if (j.is_discarded()) {
    return fail(Errc::InvalidArgument, "body is not valid JSON", "invalid_json");
  }
  return j;
}

Status require_object(const json& j, std::string_view what) {
  if (!j.is_object()) {
    return fail(Errc::InvalidArgument, std::string(what) + " must be a JSON object");
  }
  return {};
}

Status only_keys(const json& obj, std::initializer_list<std::string_view> allowed) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool ok = false;
    for (auto a : allowed) {
      if (it.key() == a) ok = true;
    }
    if (!ok) {
      std::string k = it.key().substr(0, 64);
      return fail(Errc::InvalidArgument, "unknown field '" + k + "'", "unknown_field");
    }
  }
  return {};
}

namespace {
const json* find_field(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}
}  // namespace

Expected<std::string> get_string(const json& obj, std::string_view key, std::size_t max_len) {
  return string_field(find_field(obj, key), key, max_len);
}

Expected<std::string> string_field(const json* it, std::string_view key, std::size_t max_len) {
  if (it == nullptr || it->is_null()) {
    return fail(Errc::InvalidArgument, field_error(key, "is required"));
  }
  if (!it->is_string()) return fail(Errc::InvalidArgument, field_error(key, "must be a string"));
  const auto& s = it->get_ref<const std::string&>();
  if (s.empty()) return fail(Errc::InvalidArgument, field_error(key, "must not be empty"));
  if (s.size() > max_len) {
    return fail(Errc::InvalidArgument,
                field_error(key, "is longer than " + std::to_string(max_len) + " bytes"));
  }
  return s;
}

Expected<std::optional<std::string>> get_opt_string(const json& obj, std::string_view key,
                                                    std::size_t max_len) {
  return opt_string_field(find_field(obj, key), key, max_len);
}

Expected<std::optional<std::string>> opt_string_field(const json* it, std::string_view key,
                                                      std::size_t max_len) {
  if (it == nullptr || it->is_null()) return std::optional<std::string>{};
  if (!it->is_string()) return fail(Errc::InvalidArgument, field_error(key, "must be a string"));
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_len) {
    return fail(Errc::InvalidArgument,
                field_error(key, "is longer than " + std::to_string(max_len) + " bytes"));
  }
  return std::optional<std::string>(s);
}

Expected<std::int64_t> get_int(const json& obj, std::string_view key, std::int64_t lo,
                               std::int64_t hi) {
  return int_field(find_field(obj, key), key, lo, hi);
}

Expected<std::int64_t> int_field(const json* it, std::string_view key, std::int64_t lo,
                                 std::int64_t hi) {
  auto v = opt_int_field(it, key, lo, hi);
  if (!v) return tl::unexpected(v.error());
  if (!*v) return fail(Errc::InvalidArgument, field_error(key, "is required"));
  return **v;
}

Expected<std::optional<std::int64_t>> get_opt_int(const json& obj, std::string_view key,
                                                  std::int64_t lo, std::int64_t hi) {
  return opt_int_field(find_field(obj, key), key, lo, hi);
}

Expected<std::optional<std::int64_t>> opt_int_field(const json* it, std::string_view key,
                                                    std::int64_t lo, std::int64_t hi) {
  if (it == nullptr || it->is_null()) return std::optional<std::int64_t>{};
  std::int64_t v = 0;
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() &&
        it->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
      return fail(Errc::InvalidArgument, field_error(key, "is out of range"));
    }
    v = it->get<std::int64_t>();
  } else if (it->is_number_float()) {
    double d = it->get<double>();
    // Range first: converting a double outside int64's range (1e308) is undefined behaviour.
    if (!(d >= -9e18 && d <= 9e18) || d != static_cast<double>(static_cast<std::int64_t>(d))) {
      return fail(Errc::InvalidArgument, field_error(key, "must be an integer"));
    }
    v = static_cast<std::int64_t>(d);
  } else {
    return fail(Errc::InvalidArgument, field_error(key, "must be an integer"));
  }
  if (v < lo || v > hi) {
    return fail(Errc::InvalidArgument, field_error(key, "must be between " + std::to_string(lo) +
                                                            " and " + std::to_string(hi)));
  }
  return std::optional<std::int64_t>(v);
}

Expected<double> get_number(const json& obj, std::string_view key, double lo, double hi) {
  auto v = get_opt_number(obj, key, lo, hi);
  if (!v) return tl::unexpected(v.error());
  if (!*v) return fail(Errc::InvalidArgument, field_error(key, "is required"));
  return **v;
}

Expected<std::optional<double>> get_opt_number(const json& obj, std::string_view key, double lo,
                                               double hi) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<double>{};
  if (!it->is_number()) return fail(Errc::InvalidArgument, field_error(key, "must be a number"));
  double v = it->get<double>();
  if (!(v >= lo && v <= hi)) {
    return fail(Errc::InvalidArgument, field_error(key, "must be between " + std::to_string(lo) +
                                                            " and " + std::to_string(hi)));
  }
  return std::optional<double>(v);
}

Expected<std::optional<bool>> get_opt_bool(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<bool>{};
  if (!it->is_boolean()) return fail(Errc::InvalidArgument, field_error(key, "must be a boolean"));
  return std::optional<bool>(it->get<bool>());
}

std::string error_body(const Error& e) {
  json err = {{"code", e.code_or_default()}, {"message", e.message}};
  if (!e.details_json.empty()) {
    json d = json::parse(e.details_json, nullptr, false);
    if (!d.is_discarded()) err["details"] = std::move(d);
  }
  return json{{"error", std::move(err)}}.dump();
}

}  // namespace ringfence::proto
