#pragma once
// Every REST route of ringfence-server, registered in one place (routes.cpp). Handlers turn our
// Request into a Response by calling the Service; no transport code here.

#include <functional>
#include <optional>
#include <string>

#include "server/api/metrics.hpp"
#include "server/core/service.hpp"
#include "server/http/router.hpp"

namespace ringfence::server::api {

struct ApiOptions {
  std::string web_dir;  // dashboard static files; empty = no dashboard
  // True once the server is shutting down: /readyz then answers 503. Called from any I/O thread.
  std::function<bool()> shutting_down;
};

// Registers all routes. svc and requests (served at /metrics) must outlive the router.
void register_routes(http::Router& router, core::Service& svc, const RequestMetrics& requests,
                     ApiOptions options);

// The OpenAPI 3 document describing every route (served at /v1/openapi.json).
std::string openapi_document(const http::Router& router);

// The credential a routed request with a body needs, checked on its head before the body is read
// (so a stranger cannot make the server read or store anything): a host credential on
// /v1/agent/* (enroll carries its token in the body), an API token elsewhere, the release role for
// blob uploads. nullopt = go on (unrouted requests too: the router answers them 404/405 after a
// bounded read); else the refusal to send. Thread-safe as the Service's authenticate calls are.
std::optional<http::Response> credential_before_body(const http::Router& router, core::Service& svc,
                                                     const http::Request& head);

// /metrics in Prometheus text exposition format: the request figures, then the core's.
std::string prometheus_text(core::Service& svc, const RequestMetrics& requests);

}  // namespace ringfence::server::api
