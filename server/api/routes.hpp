#pragma once
// Every REST route of ringfence-server, registered in one place (routes.cpp). Handlers turn our
// Request into a Response by calling the Service; no transport code here.

#include <functional>
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

// /metrics in Prometheus text exposition format: the request figures, then the core's.
std::string prometheus_text(core::Service& svc, const RequestMetrics& requests);

}  // namespace ringfence::server::api
