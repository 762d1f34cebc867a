#pragma once
// Ring selectors: which hosts a ring holds.
//   {"hosts": ["<uuid>", ...]}                    explicit list (at most 10 000)
//   {"labels": "os=windows,site in (fra1,ams2)"}  all clauses must hold (AND); clause forms:
//       key=value   key!=value   key in (v1,v2)   key notin (v1,v2)   key (present)   !key (absent)
//     the label "tenant" is the host's tenant.
//   {"buckets": [lo, hi]}                         0 <= lo < hi <= 10000, host bucket in [lo, hi)
// Pure values; parse() validates strictly and never throws.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "proto/error.hpp"

namespace ringfence::server::fleet {

struct LabelClause {
  enum class Op { Eq, Ne, In, NotIn, Exists, Absent };
  std::string key;
  Op op = Op::Eq;
  std::vector<std::string> values;
};

struct Selector {
  enum class Kind { Hosts, Labels, Buckets };
  Kind kind = Kind::Buckets;
  std::set<std::string> hosts;
  std::vector<LabelClause> clauses;
  std::string expression;  // the label expression as given
  std::uint32_t lo = 0, hi = 10000;

  bool matches(std::string_view host_id, std::uint32_t bucket,
               const std::map<std::string, std::string>& labels) const;
};

Expected<std::vector<LabelClause>> parse_label_expression(std::string_view expr);
Expected<Selector> parse_selector(const nlohmann::json& j);
std::string selector_json(const Selector& s);

}  // namespace ringfence::server::fleet
