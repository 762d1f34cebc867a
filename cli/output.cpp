#include "cli/output.hpp"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

namespace ringfence::cli {
using nlohmann::json;

namespace {
// Display width of UTF-8 text (code points; good enough for labels and bar glyphs).
std::size_t width(const std::string& s) {
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}
}  // namespace

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::row(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

void Table::print(std::ostream& out) const {
  std::vector<std::size_t> w(headers_.size());
  for (std::size_t i = 0; i < headers_.size(); ++i) w[i] = width(headers_[i]);
  for (const auto& r : rows_) {
    for (std::size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], width(r[i]));
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      s += cells[i];
      if (i + 1 < cells.size()) s += std::string(w[i] - width(cells[i]) + 2, ' ');
    }
    out << s << '\n';
  };
  line(headers_);
  for (const auto& r : rows_) line(r);
  if (rows_.empty()) out << "(none)\n";
}

std::string cell(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v.get<double>());
    return buf;
  }
  return v.dump();
}

std::string timestamp(const json& v) {
  if (!v.is_number()) return "-";
  auto t = v.get<std::int64_t>();
  if (t <= 0) return "-";
  if (t > 100'000'000'000LL) t /= 1000;  // milliseconds
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string selector_text(const json& s) {
  if (!s.is_object()) return cell(s);
  if (auto b = s.find("buckets"); b != s.end() && b->is_array() && b->size() == 2) {
    return "buckets [" + cell((*b)[0]) + "," + cell((*b)[1]) + ")";
  }
  if (auto l = s.find("labels"); l != s.end()) return "labels " + cell(*l);
  if (auto h = s.find("hosts"); h != s.end() && h->is_array()) {
    return std::to_string(h->size()) + " listed host" + (h->size() == 1 ? "" : "s");
  }
  return s.dump();
}

void print_fields(std::ostream& out, const json& obj) {
  if (!obj.is_object()) {
    out << obj.dump(2) << '\n';
    return;
  }
  std::size_t w = 0;
  for (auto it = obj.begin(); it != obj.end(); ++it) w = std::max(w, it.key().size());
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    out << it.key() << ':' << std::string(w - it.key().size() + 1, ' ') << cell(*it) << '\n';
  }
}

}  // namespace ringfence::cli
