#include "proto/json_schema.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <utility>

#include "proto/json_fields.hpp"
#include "proto/try.hpp"

namespace ringfence::proto {

using nlohmann::json;

namespace {

// Numbers are compared as long double: with a 64-bit (or wider) mantissa it holds every int64,
// every uint64 and every double exactly, so 9007199254740993 and 9007199254740992.0 differ.
static_assert(std::numeric_limits<long double>::digits >= 64,
              "exact number comparison needs a 64-bit long double mantissa");

constexpr int kMaxValueDepth = 256;

enum TypeBit : unsigned {
  kNull = 1u << 0,
  kBoolean = 1u << 1,
  kObject = 1u << 2,
  kArray = 1u << 3,
  kNumber = 1u << 4,
  kString = 1u << 5,
  kInteger = 1u << 6,
};

struct TypeName {
  std::string_view name;
  unsigned bit;
};
constexpr TypeName kTypeNames[] = {
    {"null", kNull},     {"boolean", kBoolean}, {"object", kObject},   {"array", kArray},
    {"number", kNumber}, {"string", kString},   {"integer", kInteger},
};

long double to_ld(const json& n) {
  if (n.is_number_unsigned()) return static_cast<long double>(n.get<std::uint64_t>());
  if (n.is_number_integer()) return static_cast<long double>(n.get<std::int64_t>());
  return static_cast<long double>(n.get<double>());
}

bool is_integral(const json& n) {
  if (n.is_number_integer()) return true;
  if (!n.is_number_float()) return false;
  double d = n.get<double>();
  return std::isfinite(d) && std::floor(d) == d;
}

// The type bits a value satisfies ("integer" values also satisfy "number").
unsigned type_bits(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return kNull;
    case json::value_t::boolean:
      return kBoolean;
    case json::value_t::object:
      return kObject;
    case json::value_t::array:
      return kArray;
    case json::value_t::string:
      return kString;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return is_integral(v) ? (kNumber | kInteger) : kNumber;
    default:
      return 0;  // binary / discarded: matches no type
  }
}

std::string_view type_name_of(const json& v) {
  unsigned b = type_bits(v);
  if (b & kInteger) return "integer";
  for (const auto& t : kTypeNames) {
    if (b == t.bit) return t.name;
  }
  return "unknown";
}

std::string types_text(unsigned mask) {
  std::string out;
  for (const auto& t : kTypeNames) {
    if (!(mask & t.bit)) continue;
    if (!out.empty()) out += " or ";
    out.append(t.name);
  }
  return out;
}

// Cuts s to at most max bytes without splitting a UTF-8 sequence.
std::string truncate_utf8(std::string s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  s.resize(cut);
  s += "...";
  return s;
}

std::string show(const json& v, std::size_t max = 80) {
  return truncate_utf8(v.dump(-1, ' ', false, json::error_handler_t::replace), max);
}

std::string show_number(long double v) {
  char buf[64];
  if (std::floor(v) == v && std::fabs(v) < 1e21L) {
    std::snprintf(buf, sizeof buf, "%.0Lf", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17Lg", v);
  }
  return buf;
}

void append_pointer_token(std::string& path, std::string_view token) {
  path += '/';
  for (char c : token) {
    if (c == '~') {
      path += "~0";
    } else if (c == '/') {
      path += "~1";
    } else {
      path += c;
    }
  }
}

std::size_t code_points(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

// Depth of a JSON value, stopping once it exceeds limit.
bool depth_within(const json& v, int limit) {
  if (limit < 0) return false;
  if (v.is_array() || v.is_object()) {
    for (const auto& e : v) {
      if (!depth_within(e, limit - 1)) return false;
    }
  }
  return true;
}

// JSON Schema equality: numbers by value (1 == 1.0), objects regardless of key order.
// Callers guarantee both values are within kMaxValueDepth (checked beforehand).
bool json_equal(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return to_ld(a) == to_ld(b);
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!json_equal(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !json_equal(*it, *other)) return false;
    }
    return true;
  }
  return a == b;
}

// A canonical text such that canonical(a) == canonical(b) exactly when json_equal(a, b).
void canonical(const json& v, std::string& out) {
  switch (v.type()) {
    case json::value_t::array:
      out += '[';
      for (const auto& e : v) {
        canonical(e, out);
        out += ',';
      }
      out += ']';
      return;
    case json::value_t::object:
      out += '{';
      for (auto it = v.begin(); it != v.end(); ++it) {  // keys are kept sorted
        out += json(it.key()).dump(-1, ' ', false, json::error_handler_t::replace);
        out += ':';
        canonical(*it, out);
        out += ',';
      }
      out += '}';
      return;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: {
      long double d = to_ld(v);
      char buf[512];
      if (std::floor(d) == d) {
        std::snprintf(buf, sizeof buf, "n%.0Lf", d);  // integral: exact decimal
      } else {
        std::snprintf(buf, sizeof buf, "n%La", d);  // fraction: exact hex float
      }
      out += buf;
      return;
    }
    default:
      out += v.dump(-1, ' ', false, json::error_handler_t::replace);
      return;
  }
}

}  // namespace

struct CompiledSchema::Node {
  bool reject_all = false;  // the `false` schema
  unsigned types = 0;       // 0: any type

  // object
  std::vector<std::pair<std::string, std::unique_ptr<Node>>> properties;  // sorted by name
  std::vector<std::string> required;
  std::unique_ptr<Node> additional_properties;  // null: anything goes
  std::optional<std::size_t> min_properties, max_properties;

  // array
  std::vector<std::unique_ptr<Node>> prefix_items;
  std::unique_ptr<Node> items;  // for every element after prefix_items; null: anything goes
  std::optional<std::size_t> min_items, max_items;
  bool unique_items = false;

  // any
  std::optional<std::vector<json>> enum_values;
  std::optional<json> const_value;

  // number
  std::optional<json> minimum, maximum, exclusive_minimum, exclusive_maximum;

  // string
  std::optional<std::size_t> min_length, max_length;

  const Node* property(std::string_view name) const {
    auto it = std::lower_bound(properties.begin(), properties.end(), name,
                               [](const auto& p, std::string_view n) { return p.first < n; });
    if (it == properties.end() || it->first != name) return nullptr;
    return it->second.get();
  }
};

namespace {
using Node = CompiledSchema::Node;

bool is_annotation(std::string_view k) {
  static constexpr std::string_view kAnnotations[] = {
      "title",   "description", "$schema",  "$id",       "$comment",    "$anchor", "examples",
      "default", "deprecated",  "readOnly", "writeOnly", "definitions", "$defs",
  };
  return std::find(std::begin(kAnnotations), std::end(kAnnotations), k) != std::end(kAnnotations);
}

tl::unexpected<Error> schema_error(const std::string& path, const std::string& what) {
  return fail(Errc::InvalidArgument,
              "schema " + (path.empty() ? std::string("root") : "at '" + path + "'") + ": " + what,
              "invalid_schema");
}

class Compiler {
 public:
  Expected<std::unique_ptr<Node>> compile(const json& s, std::string& path, int depth) {
    if (depth > kMaxSchemaDepth) {
      return schema_error(path, "nested deeper than " + std::to_string(kMaxSchemaDepth));
    }
    if (++nodes_ > kMaxSchemaNodes) {
      return schema_error(path, "more than " + std::to_string(kMaxSchemaNodes) + " sub-schemas");
    }
    auto node = std::make_unique<Node>();
    if (s.is_boolean()) {
      node->reject_all = !s.get<bool>();
      return node;
    }
    if (!s.is_object()) return schema_error(path, "a schema must be an object or a boolean");

    const bool items_is_array = s.contains("items") && s.at("items").is_array();
    if (items_is_array && s.contains("prefixItems")) {
      return schema_error(path, "'items' as an array cannot be combined with 'prefixItems'");
    }
    if (s.contains("additionalItems") && s.contains("prefixItems")) {
      return schema_error(path,
                          "'additionalItems' has no meaning next to 'prefixItems'; use 'items'");
    }

    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      const json& v = *it;
      std::size_t mark = path.size();
      append_pointer_token(path, k);
      auto st = keyword(*node, k, v, path, depth, items_is_array);
      if (!st) return tl::unexpected(std::move(st.error()));
      path.resize(mark);
    }
    return node;
  }

 private:
  Status keyword(Node& n, const std::string& k, const json& v, std::string& path, int depth,
                 bool items_is_array) {
    if (k == "type") return compile_type(n, v, path);
    if (k == "properties") {
      if (!v.is_object()) return schema_error(path, "must be an object of schemas");
      for (auto p = v.begin(); p != v.end(); ++p) {  // sorted by key already
        std::size_t mark = path.size();
        append_pointer_token(path, p.key());
        auto sub = compile(*p, path, depth + 1);
        if (!sub) return tl::unexpected(std::move(sub.error()));
        path.resize(mark);
        n.properties.emplace_back(p.key(), std::move(*sub));
      }
      return {};
    }
    if (k == "required") {
      if (!v.is_array()) return schema_error(path, "must be an array of property names");
      for (const auto& r : v) {
        if (!r.is_string()) return schema_error(path, "must contain only strings");
        const auto& name = r.get_ref<const std::string&>();
        if (std::find(n.required.begin(), n.required.end(), name) != n.required.end()) {
          return schema_error(path, "names '" + truncate_utf8(name, 64) + "' twice");
        }
        n.required.push_back(name);
      }
      return {};
    }
    if (k == "additionalProperties") return sub_schema(n.additional_properties, v, path, depth);
    if (k == "minProperties") return count(n.min_properties, v, path);
    if (k == "maxProperties") return count(n.max_properties, v, path);
    if (k == "prefixItems") {
      if (!v.is_array() || v.empty()) return schema_error(path, "must be a non-empty array");
      return schema_list(n.prefix_items, v, path, depth);
    }
    if (k == "items") {
      if (v.is_array()) return schema_list(n.prefix_items, v, path, depth);  // draft-7 tuple
      return sub_schema(n.items, v, path, depth);
    }
    if (k == "additionalItems") {
      // Draft 7: applies after an array-form `items`; ignored otherwise (still checked).
      std::unique_ptr<Node> sub;
      RF_CHECK(sub_schema(sub, v, path, depth));
      if (items_is_array) n.items = std::move(sub);
      return {};
    }
    if (k == "minItems") return count(n.min_items, v, path);
    if (k == "maxItems") return count(n.max_items, v, path);
    if (k == "uniqueItems") {
      if (!v.is_boolean()) return schema_error(path, "must be a boolean");
      n.unique_items = v.get<bool>();
      return {};
    }
    if (k == "enum") {
      if (!v.is_array()) return schema_error(path, "must be an array");
      if (!depth_within(v, kMaxValueDepth)) return schema_error(path, "values nest too deeply");
      n.enum_values.emplace(v.begin(), v.end());
      return {};
    }
    if (k == "const") {
      if (!depth_within(v, kMaxValueDepth)) return schema_error(path, "value nests too deeply");
      n.const_value = v;
      return {};
    }
    if (k == "minimum") return number(n.minimum, v, path);
    if (k == "maximum") return number(n.maximum, v, path);
    if (k == "exclusiveMinimum") return number(n.exclusive_minimum, v, path);
    if (k == "exclusiveMaximum") return number(n.exclusive_maximum, v, path);
    if (k == "minLength") return count(n.min_length, v, path);
    if (k == "maxLength") return count(n.max_length, v, path);
    if (is_annotation(k)) return {};
    return schema_error(path, "keyword '" + truncate_utf8(k, 64) +
                                  "' is not supported (the supported subset is listed in "
                                  "proto/json_schema.hpp)");
  }

  Status compile_type(Node& n, const json& v, const std::string& path) {
    auto one = [&](const json& t) -> Status {
      if (!t.is_string()) return schema_error(path, "type names must be strings");
      const auto& name = t.get_ref<const std::string&>();
      for (const auto& tn : kTypeNames) {
        if (name == tn.name) {
          if (n.types & tn.bit) return schema_error(path, "names '" + name + "' twice");
          n.types |= tn.bit;
          return {};
        }
      }
      return schema_error(path, "unknown type '" + truncate_utf8(name, 64) + "'");
    };
    if (v.is_array()) {
      if (v.empty()) return schema_error(path, "must not be an empty array");
      for (const auto& t : v) RF_CHECK(one(t));
      return {};
    }
    return one(v);
  }

  Status sub_schema(std::unique_ptr<Node>& out, const json& v, std::string& path, int depth) {
    auto sub = compile(v, path, depth + 1);
    if (!sub) return tl::unexpected(std::move(sub.error()));
    out = std::move(*sub);
    return {};
  }

  Status schema_list(std::vector<std::unique_ptr<Node>>& out, const json& v, std::string& path,
                     int depth) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      std::size_t mark = path.size();
      append_pointer_token(path, std::to_string(i));
      auto sub = compile(v[i], path, depth + 1);
      if (!sub) return tl::unexpected(std::move(sub.error()));
      path.resize(mark);
      out.push_back(std::move(*sub));
    }
    return {};
  }

  static Status count(std::optional<std::size_t>& out, const json& v, const std::string& path) {
    if (!v.is_number() || !is_integral(v) || to_ld(v) < 0 ||
        to_ld(v) > static_cast<long double>(std::numeric_limits<std::uint32_t>::max())) {
      return schema_error(path, "must be a non-negative integer");
    }
    out = static_cast<std::size_t>(to_ld(v));
    return {};
  }

  static Status number(std::optional<json>& out, const json& v, const std::string& path) {
    if (v.is_boolean()) {
      return schema_error(path, "must be a number (the draft-4 boolean form is not supported)");
    }
    if (!v.is_number()) return schema_error(path, "must be a number");
    out = v;
    return {};
  }

  std::size_t nodes_ = 0;
};

class Validator {
 public:
  explicit Validator(std::size_t max_findings) : max_(max_findings) {}

  void check(const Node& n, const json& v, std::string& path, int depth) {
    if (full()) return;
    if (depth > kMaxSchemaDepth + 1) {  // cannot happen for a compiled schema; belt and braces
      add(path, "document nests deeper than the schema allows");
      return;
    }
    if (n.reject_all) {
      add(path, "no value is allowed here");
      return;
    }
    if (n.types != 0 && (n.types & type_bits(v)) == 0) {
      add(path, "expected " + types_text(n.types) + ", got " + std::string(type_name_of(v)));
    }
    if (n.const_value || n.enum_values || (n.unique_items && v.is_array())) {
      if (!depth_within(v, kMaxValueDepth)) {
        add(path, "value nests too deeply to compare");
        return;
      }
    }
    if (n.const_value && !json_equal(*n.const_value, v)) {
      add(path, "value must be " + show(*n.const_value));
    }
    if (n.enum_values) check_enum(*n.enum_values, v, path);
    if (v.is_number()) check_number(n, v, path);
    if (v.is_string()) check_string(n, v.get_ref<const std::string&>(), path);
    if (v.is_array()) check_array(n, v, path, depth);
    if (v.is_object()) check_object(n, v, path, depth);
  }

  std::vector<Finding> take() { return std::move(out_); }

 private:
  bool full() const { return out_.size() >= max_; }
  void add(const std::string& path, std::string message) {
    if (!full()) out_.push_back(Finding{path, std::move(message)});
  }

  void check_enum(const std::vector<json>& values, const json& v, const std::string& path) {
    for (const auto& e : values) {
      if (json_equal(e, v)) return;
    }
    std::string allowed = show(json(values), 120);
    add(path, "value " + show(v, 40) + " is not one of the allowed values " + allowed);
  }

  void check_number(const Node& n, const json& v, const std::string& path) {
    long double x = to_ld(v);
    if (n.minimum && x < to_ld(*n.minimum)) {
      add(path, show_number(x) + " is less than the minimum " + show(*n.minimum));
    }
    if (n.exclusive_minimum && x <= to_ld(*n.exclusive_minimum)) {
      add(path,
          show_number(x) + " is not greater than exclusiveMinimum " + show(*n.exclusive_minimum));
    }
    if (n.maximum && x > to_ld(*n.maximum)) {
      add(path, show_number(x) + " is greater than the maximum " + show(*n.maximum));
    }
    if (n.exclusive_maximum && x >= to_ld(*n.exclusive_maximum)) {
      add(path,
          show_number(x) + " is not less than exclusiveMaximum " + show(*n.exclusive_maximum));
    }
  }

  void check_string(const Node& n, const std::string& s, const std::string& path) {
    if (!n.min_length && !n.max_length) return;
    std::size_t len = code_points(s);
    if (n.min_length && len < *n.min_length) {
      add(path, "string has " + std::to_string(len) + " characters, fewer than minLength " +
                    std::to_string(*n.min_length));
    }
    if (n.max_length && len > *n.max_length) {
      add(path, "string has " + std::to_string(len) + " characters, more than maxLength " +
                    std::to_string(*n.max_length));
    }
  }

  void check_array(const Node& n, const json& v, std::string& path, int depth) {
    const std::size_t size = v.size();
    if (n.min_items && size < *n.min_items) {
      add(path, "array has " + std::to_string(size) + " items, fewer than minItems " +
                    std::to_string(*n.min_items));
    }
    if (n.max_items && size > *n.max_items) {
      add(path, "array has " + std::to_string(size) + " items, more than maxItems " +
                    std::to_string(*n.max_items));
    }
    if (n.unique_items) check_unique(v, path);
    for (std::size_t i = 0; i < size && !full(); ++i) {
      const Node* sub = i < n.prefix_items.size() ? n.prefix_items[i].get() : n.items.get();
      if (sub == nullptr) {
        if (i >= n.prefix_items.size()) break;  // no `items`: the rest is unconstrained
        continue;
      }
      std::size_t mark = path.size();
      append_pointer_token(path, std::to_string(i));
      check(*sub, v[i], path, depth + 1);
      path.resize(mark);
    }
  }

  void check_unique(const json& v, const std::string& path) {
    std::unordered_map<std::string, std::size_t> seen;
    seen.reserve(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      std::string key;
      canonical(v[i], key);
      auto [it, inserted] = seen.emplace(std::move(key), i);
      if (!inserted) {
        add(path, "items " + std::to_string(it->second) + " and " + std::to_string(i) +
                      " are equal but uniqueItems is set");
        return;
      }
    }
  }

  void check_object(const Node& n, const json& v, std::string& path, int depth) {
    const std::size_t size = v.size();
    if (n.min_properties && size < *n.min_properties) {
      add(path, "object has " + std::to_string(size) + " properties, fewer than minProperties " +
                    std::to_string(*n.min_properties));
    }
    if (n.max_properties && size > *n.max_properties) {
      add(path, "object has " + std::to_string(size) + " properties, more than maxProperties " +
                    std::to_string(*n.max_properties));
    }
    for (const auto& r : n.required) {
      if (!v.contains(r)) add(path, "missing required property '" + truncate_utf8(r, 64) + "'");
    }
    for (auto it = v.begin(); it != v.end() && !full(); ++it) {
      const Node* sub = n.property(it.key());
      std::size_t mark = path.size();
      append_pointer_token(path, it.key());
      if (sub != nullptr) {
        check(*sub, *it, path, depth + 1);
      } else if (n.additional_properties) {
        if (n.additional_properties->reject_all) {
          add(path, "property '" + truncate_utf8(it.key(), 64) + "' is not allowed");
        } else {
          check(*n.additional_properties, *it, path, depth + 1);
        }
      }
      path.resize(mark);
    }
  }

  std::size_t max_;
  std::vector<Finding> out_;
};

}  // namespace

CompiledSchema::CompiledSchema() : root_(std::make_shared<const Node>()) {}
CompiledSchema::CompiledSchema(std::shared_ptr<const Node> root) : root_(std::move(root)) {}
CompiledSchema::~CompiledSchema() = default;
CompiledSchema::CompiledSchema(const CompiledSchema&) = default;
CompiledSchema& CompiledSchema::operator=(const CompiledSchema&) = default;
CompiledSchema::CompiledSchema(CompiledSchema&&) noexcept = default;
CompiledSchema& CompiledSchema::operator=(CompiledSchema&&) noexcept = default;

Expected<CompiledSchema> compile_schema(const json& schema) {
  Compiler c;
  std::string path;
  auto root = c.compile(schema, path, 0);
  if (!root) return tl::unexpected(std::move(root.error()));
  return CompiledSchema(std::shared_ptr<const Node>(std::move(*root)));
}

std::vector<Finding> validate(const CompiledSchema& schema, const json& doc,
                              std::size_t max_findings) {
  if (max_findings == 0 || !schema.root_) return {};
  Validator v(max_findings);
  std::string path;
  v.check(*schema.root_, doc, path, 0);
  return v.take();
}

std::vector<Finding> validate_content(const CompiledSchema& schema, std::string_view content,
                                      std::size_t max_bytes, std::size_t max_findings) {
  if (max_findings == 0) return {};
  if (max_bytes != 0 && content.size() > max_bytes) {
    return {Finding{"", "content is " + std::to_string(content.size()) +
                            " bytes, more than the channel's limit of " +
                            std::to_string(max_bytes)}};
  }
  auto doc = parse_json(content, kMaxContentDepth);
  if (!doc) return {Finding{"", "content is not valid JSON: " + doc.error().message}};
  return validate(schema, *doc, max_findings);
}

std::string findings_json(const std::vector<Finding>& findings) {
  json arr = json::array();
  for (const auto& f : findings) arr.push_back({{"path", f.path}, {"message", f.message}});
  return json{{"findings", std::move(arr)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace ringfence::proto
