#include "server/http/router.hpp"

namespace ringfence::server::http {
namespace {
std::vector<std::string> split(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    auto j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}
}  // namespace

namespace {
bool matches(const std::vector<std::string>& pattern, const std::vector<std::string>& segs) {
  if (pattern.size() != segs.size()) return false;
  for (size_t i = 0; i < segs.size(); ++i) {
    const auto& p = pattern[i];
    bool param = p.size() >= 2 && p.front() == '{' && p.back() == '}';
    if (!param && p != segs[i]) return false;
    if (param && segs[i].empty()) return false;
  }
  return true;
}
}  // namespace

const Router::Route* Router::find(Method method, std::string_view path) const {
  auto segs = split(path);
  for (const auto& r : routes_) {
    bool head_as_get = method == Method::Head && r.method == Method::Get;
    if ((r.method == method || head_as_get) && matches(r.segments, segs)) return &r;
  }
  return nullptr;
}

void Router::add(Method method, std::string_view pattern, Handler handler) {
  routes_.push_back(Route{method, std::string(pattern), split(pattern), std::move(handler)});
}

void Router::dispatch(Request& req, Reply reply) const {
  dispatch(req, [&reply](std::string_view) { return std::move(reply); });
}

void Router::dispatch(Request& req,
                      const std::function<Reply(std::string_view route)>& make_reply) const {
  auto segs = split(req.path);
  const Route* path_match = nullptr;
  std::string allow;
  for (const auto& r : routes_) {
    if (!matches(r.segments, segs)) continue;
    if (!path_match) path_match = &r;
    bool head_as_get = req.method == Method::Head && r.method == Method::Get;
    if (r.method != req.method && !head_as_get) {
      if (!allow.empty()) allow += ", ";
      allow += to_string(r.method);
      continue;
    }
    req.params.clear();
    for (size_t i = 0; i < segs.size(); ++i) {
      const auto& p = r.segments[i];
      if (p.size() >= 2 && p.front() == '{') req.params.push_back(segs[i]);
    }
    r.handler(req, make_reply(r.pattern));
    return;
  }
  if (path_match) {
    Response resp = Response::error(
        Error{Errc::MethodNotAllowed, "method " + std::string(to_string(req.method)) +
                                          " is not allowed here (allowed: " + allow + ")"});
    resp.headers.emplace_back("Allow", allow);
    make_reply(path_match->pattern)(std::move(resp));
    return;
  }
  make_reply(kUnmatched)(Response::error(Error{Errc::NotFound, "no such path"}));
}

}  // namespace ringfence::server::http
