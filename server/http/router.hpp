#pragma once
// Maps (method, path pattern) to handlers. Patterns are literal segments and "{name}" segments
// ("/v1/rings/{name}/hosts"); a matched request gets its parameters in Request::params in order.
// Unknown path → 404, known path with another method → 405 with an Allow header.
// Not thread-safe to mutate; add all routes before serving, then dispatch from any thread.

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/message.hpp"

namespace ringfence::server::http {

class Router {
 public:
  // The route label of a request no pattern matched (404), whatever its path.
  static constexpr std::string_view kUnmatched = "unmatched";

  void add(Method method, std::string_view pattern, Handler handler);
  // Dispatches to the matching handler or replies 404/405 itself.
  void dispatch(Request& req, Reply reply) const;
  // The same, but the Reply is made once the route is known: `make_reply` is called exactly once,
  // before the handler runs, with the pattern that matched ("/v1/hosts/{id}"; for a 405 the first
  // pattern whose path matched) or kUnmatched. The view stays valid as long as the router, so
  // per-route accounting has one entry per pattern whatever paths clients send.
  void dispatch(Request& req, const std::function<Reply(std::string_view route)>& make_reply) const;

  struct Route;
  // The route a request with this method and path would be dispatched to (HEAD finds GET), or
  // nullptr when dispatch would answer 404/405. Any thread once routes are added.
  const Route* find(Method method, std::string_view path) const;

  struct Route {
    Method method;
    std::string pattern;
    std::vector<std::string> segments;
    Handler handler;
  };
  const std::vector<Route>& routes() const noexcept { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace ringfence::server::http
