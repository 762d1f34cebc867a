#include "server/fleet/selector.hpp"

#include <nlohmann/json.hpp>

#include "proto/ids.hpp"
#include "proto/json_fields.hpp"
#include "proto/try.hpp"

namespace ringfence::server::fleet {
namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// Splits on commas that are not inside parentheses.
Expected<std::vector<std::string_view>> split_clauses(std::string_view expr) {
  std::vector<std::string_view> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= expr.size(); ++i) {
    char c = i < expr.size() ? expr[i] : ',';
    if (c == '(') {
      if (++depth > 1) return fail(Errc::InvalidArgument, "nested parentheses in label expression");
    } else if (c == ')') {
      if (--depth < 0) return fail(Errc::InvalidArgument, "unbalanced ')' in label expression");
    } else if (c == ',' && depth == 0) {
      out.push_back(trim(expr.substr(start, i - start)));
      start = i + 1;
    }
  }
  if (depth != 0) return fail(Errc::InvalidArgument, "unbalanced '(' in label expression");
  return out;
}

Expected<std::vector<std::string>> parse_set(std::string_view s) {
  s = trim(s);
  if (s.size() < 2 || s.front() != '(' || s.back() != ')') {
    return fail(Errc::InvalidArgument, "expected a value list like (a,b)");
  }
  s = s.substr(1, s.size() - 2);
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == ',') {
      auto v = trim(s.substr(start, i - start));
      if (!proto::is_label_value(v)) {
        return fail(Errc::InvalidArgument, "invalid label value '" + std::string(v.substr(0, 40)) + "'");
      }
      out.emplace_back(v);
      start = i + 1;
    }
  }
  if (out.size() > 256) return fail(Errc::InvalidArgument, "at most 256 values in a set");
  return out;
}
}  // namespace

Expected<std::vector<LabelClause>> parse_label_expression(std::string_view expr) {
  if (expr.size() > 2048) return fail(Errc::InvalidArgument, "label expression too long");
  RF_TRY(parts, split_clauses(expr));
  std::vector<LabelClause> out;
  for (auto part : parts) {
    if (part.empty()) return fail(Errc::InvalidArgument, "empty clause in label expression");
    LabelClause c;
    std::string_view key, rest;
    if (auto ne = part.find("!="); ne != std::string_view::npos) {
      key = trim(part.substr(0, ne));
      c.op = LabelClause::Op::Ne;
      rest = trim(part.substr(ne + 2));
    } else if (auto eq = part.find('='); eq != std::string_view::npos) {
      key = trim(part.substr(0, eq));
      c.op = LabelClause::Op::Eq;
      rest = trim(part.substr(eq + 1));
    } else if (auto notin = part.find(" notin "); notin != std::string_view::npos) {
      key = trim(part.substr(0, notin));
      c.op = LabelClause::Op::NotIn;
      rest = part.substr(notin + 7);
    } else if (auto in = part.find(" in "); in != std::string_view::npos) {
      key = trim(part.substr(0, in));
      c.op = LabelClause::Op::In;
      rest = part.substr(in + 4);
    } else if (part.front() == '!') {
      key = trim(part.substr(1));
      c.op = LabelClause::Op::Absent;
    } else {
      key = part;
      c.op = LabelClause::Op::Exists;
    }
    if (!proto::is_label_key(key)) {
      return fail(Errc::InvalidArgument, "invalid label key '" + std::string(key.substr(0, 40)) + "'");
    }
    c.key = std::string(key);
    if (c.op == LabelClause::Op::Eq || c.op == LabelClause::Op::Ne) {
      if (!proto::is_label_value(rest)) {
        return fail(Errc::InvalidArgument,
                    "invalid label value '" + std::string(rest.substr(0, 40)) + "'");
      }
      c.values.emplace_back(rest);
    } else if (c.op == LabelClause::Op::In || c.op == LabelClause::Op::NotIn) {
      RF_TRY(vals, parse_set(rest));
      c.values = std::move(vals);
    }
    out.push_back(std::move(c));
  }
  if (out.size() > 32) return fail(Errc::InvalidArgument, "at most 32 clauses");
  return out;
}

bool Selector::matches(std::string_view host_id, std::uint32_t bucket,
                       const std::map<std::string, std::string>& labels) const {
  switch (kind) {
    case Kind::Hosts: return hosts.count(std::string(host_id)) > 0;
    case Kind::Buckets: return bucket >= lo && bucket < hi;
    case Kind::Labels:
      for (const auto& c : clauses) {
        auto it = labels.find(c.key);
        bool has = it != labels.end();
        auto in_values = [&] {
          if (!has) return false;
          for (const auto& v : c.values) {
            if (v == it->second) return true;
          }
          return false;
        };
        bool ok = true;
        switch (c.op) {
          case LabelClause::Op::Eq:
          case LabelClause::Op::In: ok = in_values(); break;
          case LabelClause::Op::Ne:
          case LabelClause::Op::NotIn: ok = !in_values(); break;
          case LabelClause::Op::Exists: ok = has; break;
          case LabelClause::Op::Absent: ok = !has; break;
        }
        if (!ok) return false;
      }
      return true;
  }
  return false;
}

Expected<Selector> parse_selector(const nlohmann::json& j) {
  if (!j.is_object() || j.size() != 1) {
    return fail(Errc::InvalidArgument,
                "selector must be an object with exactly one of 'hosts', 'labels', 'buckets'");
  }
  Selector s;
  const auto hosts_it = j.find("hosts"), labels_it = j.find("labels"), buckets_it = j.find("buckets");
  if (hosts_it != j.end()) {
    const auto& it = hosts_it;
    if (!it->is_array() || it->size() > 10000) {
      return fail(Errc::InvalidArgument, "selector 'hosts' must be an array of at most 10000 ids");
    }
    s.kind = Selector::Kind::Hosts;
    for (const auto& h : *it) {
      if (!h.is_string() || !proto::is_uuid(h.get_ref<const std::string&>())) {
        return fail(Errc::InvalidArgument, "selector 'hosts' must hold lower-case UUIDs");
      }
      s.hosts.insert(h.get<std::string>());
    }
  } else if (labels_it != j.end()) {
    const auto& it = labels_it;
    if (!it->is_string()) return fail(Errc::InvalidArgument, "selector 'labels' must be a string");
    s.kind = Selector::Kind::Labels;
    s.expression = it->get<std::string>();
    RF_TRY(clauses, parse_label_expression(s.expression));
    s.clauses = std::move(clauses);
  } else if (buckets_it != j.end()) {
    const auto& it = buckets_it;
    if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() ||
        !(*it)[1].is_number_integer()) {
      return fail(Errc::InvalidArgument, "selector 'buckets' must be [lo, hi] integers");
    }
    auto lo = (*it)[0].get<std::int64_t>(), hi = (*it)[1].get<std::int64_t>();
    if (lo < 0 || hi > 10000 || lo >= hi) {
      return fail(Errc::InvalidArgument, "selector 'buckets' needs 0 <= lo < hi <= 10000");
    }
    s.kind = Selector::Kind::Buckets;
    s.lo = static_cast<std::uint32_t>(lo);
    s.hi = static_cast<std::uint32_t>(hi);
  } else {
    return fail(Errc::InvalidArgument,
                "selector must be an object with exactly one of 'hosts', 'labels', 'buckets'");
  }
  return s;
}

std::string selector_json(const Selector& s) {
  switch (s.kind) {
    case Selector::Kind::Hosts: return nlohmann::json{{"hosts", s.hosts}}.dump();
    case Selector::Kind::Labels: return nlohmann::json{{"labels", s.expression}}.dump();
    case Selector::Kind::Buckets: return nlohmann::json{{"buckets", {s.lo, s.hi}}}.dump();
  }
  return "{}";
}

}  // namespace ringfence::server::fleet
