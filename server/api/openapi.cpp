// The OpenAPI 3 document, generated from the router's table so it can never miss a route.
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "server/api/routes.hpp"

namespace ringfence::server::api {
namespace {
using nlohmann::json;

struct Doc {
  const char* summary;
  const char* tag;
  const char* auth;  // "none", "token", "host", "token_or_host"
  int ok;
};

// Summaries per (method path); anything missing still appears with a generic summary.
const std::map<std::string, Doc>& docs() {
  static const std::map<std::string, Doc> kDocs = {
      {"GET /healthz", {"Liveness", "service", "none", 200}},
      {"GET /readyz", {"Readiness: store open, migrations done", "service", "none", 200}},
      {"GET /metrics", {"Prometheus metrics", "service", "none", 200}},
      {"GET /v1/openapi.json", {"This document", "service", "none", 200}},
      {"GET /v1/signing-key", {"Content signing public key (Ed25519, base64)", "service", "none", 200}},
      {"GET /v1/keys", {"Keys in use: key set (root-signed), content and desired-state key ids", "service", "none", 200}},
      {"GET /v1/releases.atom", {"Release notes of every channel as an Atom feed (RFC 4287), newest change first; a withdrawn (quarantined) release's entry is updated. No token when the release feeds are public", "releases", "token", 200}},
      {"GET /v1/channels/{ch}/releases.atom", {"Release notes of one channel as an Atom feed (RFC 4287). No token when the release feeds are public", "releases", "token", 200}},
      {"GET /v1/settings/release-feeds", {"Whether the release feeds are readable without a token: {public}", "service", "token", 200}},
      {"PUT /v1/settings/release-feeds", {"Make the release feeds public or not: {public: bool} (admin)", "service", "token", 200}},
      {"POST /v1/keys/reload", {"Re-read the key files (keyset.json, keys/) now (admin)", "service", "token", 200}},
      {"POST /v1/tokens", {"Create an API token (admin)", "tokens", "token", 201}},
      {"GET /v1/tokens", {"List API tokens (admin)", "tokens", "token", 200}},
      {"DELETE /v1/tokens/{name}", {"Delete an API token (admin)", "tokens", "token", 204}},
      {"POST /v1/enrollment-tokens", {"Create an agent enrollment token (operator): {name, labels?, expires_in_s?, max_uses?, tenant?, rate_per_min?}; the token is shown once", "tokens", "token", 201}},
      {"GET /v1/enrollment-tokens", {"List enrollment tokens (operator): name, labels, tenant, uses, max_uses, rate_per_min, expires, revoked, state; never the secret", "tokens", "token", 200}},
      {"DELETE /v1/enrollment-tokens/{name}", {"Revoke an enrollment token (operator): it enrolls nobody from now on; idempotent", "tokens", "token", 204}},
      {"POST /v1/hosts/{id}/reset", {"Reset a host (operator, {reason}, audited): its credential stops working and the next enrollment of its id needs none", "hosts", "token", 200}},
      {"GET /v1/rings", {"List rings with sizes", "rings", "token", 200}},
      {"POST /v1/rings", {"Create a ring (operator)", "rings", "token", 201}},
      {"GET /v1/rings/{name}", {"Get a ring", "rings", "token", 200}},
      {"PUT /v1/rings/{name}", {"Create or replace a ring (operator)", "rings", "token", 200}},
      {"DELETE /v1/rings/{name}", {"Delete a ring (operator)", "rings", "token", 204}},
      {"GET /v1/rings/{name}/hosts", {"Ring members, paged (limit, after)", "rings", "token", 200}},
      {"GET /v1/hosts", {"List hosts (ring, label, channel, version, limit, after)", "hosts", "token", 200}},
      {"GET /v1/hosts/{id}", {"Get a host (labels, ring, bucket, channels, consumers: the consumer versions it reports)", "hosts", "token", 200}},
      {"PATCH /v1/hosts/{id}", {"Change labels, tenant, pinned (operator)", "hosts", "token", 200}},
      {"DELETE /v1/hosts/{id}", {"Forget a host (operator)", "hosts", "token", 204}},
      {"GET /v1/channels", {"List channels", "channels", "token", 200}},
      {"POST /v1/channels", {"Create a channel {name, schema, validator?, max_bytes?, consumer?} (release; validator needs admin). consumer {name, min_hosts?, versions?} with a validator whose argv holds {consumer_version}: every release is validated once per version of that consumer reported by at least min_hosts hosts, plus the listed versions", "channels", "token", 201}},
      {"GET /v1/channels/{name}", {"Get a channel", "channels", "token", 200}},
      {"PUT /v1/channels/{name}", {"Create or replace a channel {name, schema, validator?, max_bytes?, consumer?} (release; validator needs admin)", "channels", "token", 200}},
      {"POST /v1/blobs", {"Upload content (raw body), content-addressed (release)", "releases", "token", 201}},
      {"GET /v1/blobs/{sha256}", {"Download content (strong ETag, Range)", "releases", "token_or_host", 200}},
      {"POST /v1/channels/{ch}/releases", {"Create a release; 422 validation_failed with findings if validation fails (with a channel consumer: findings name each consumer version in the field that refuses it, consumer_versions [{version, hosts, passed, exit_code, timed_out, output}]; accepted releases carry validation.consumers)", "releases", "token", 201}},
      {"GET /v1/channels/{ch}/releases", {"List releases of a channel", "releases", "token", 200}},
      {"GET /v1/channels/{ch}/releases/{version}", {"Get a release", "releases", "token", 200}},
      {"POST /v1/channels/{ch}/releases/{version}/quarantine", {"Quarantine a release (known-bad)", "releases", "token", 200}},
      {"GET /v1/policies", {"List rollout policies", "policies", "token", 200}},
      {"POST /v1/policies", {"Create a policy (release): {name, stages:[{ring (a ring name, or \"*\" = every host), percent, bake_s, min_hosts, gate, approval, pacing:{initial (hosts of the first wave, default 8), growth (hosts let in per confirmed host, default 2)}, strata:{keys (1 to 4 label keys), min_hosts_per_stratum (default 1, up to 1000), min_stratum_size (live hosts for a stratum to qualify, default 20)}}]}", "policies", "token", 201}},
      {"GET /v1/policies/{name}", {"Get a policy", "policies", "token", 200}},
      {"PUT /v1/policies/{name}", {"Create or replace a policy (release)", "policies", "token", 200}},
      {"POST /v1/rollouts", {"Create a rollout (pending); a plan that does not reach every host at 100 % gets an implicit final stage {ring \"*\", percent 100, implicit true} with the last stage's bake, sample, gate and pacing", "rollouts", "token", 201}},
      {"GET /v1/rollouts", {"List rollouts (channel, state)", "rollouts", "token", 200}},
      {"POST /v1/rollouts/preview", {"Which hosts each stage would reach; per stage with strata: strata {strata, qualifying, coverage:[{stratum, live_hosts, qualifying, reached_by_earlier_stages, picked_hosts}] (first 20)}", "rollouts", "token", 200}},
      {"GET /v1/rollouts/{id}", {"Get a rollout with per-stage figures and gate verdicts; while active: waiting (the gate's sentence), blocked {code: no_live_hosts|waiting_for_budget|not_enough_hosts|strata_not_covered, message} or null, not_offered_live_hosts, not_taking_updates_hosts (live hosts that have not polled within the poll bound: not waited for, event hosts_not_taking_updates); per stage: implicit, pacing {initial, growth, confirmed, window, ranked_hosts}, strata {keys, min_hosts_per_stratum, min_stratum_size; current stage: strata, qualifying, covered, coverage:[{stratum, live_hosts, healthy, applied, failed, covered}] (missing strata first, first 20), missing}, blocked", "rollouts", "token", 200}},
      {"POST /v1/rollouts/{id}/start", {"Start", "rollouts", "token", 200}},
      {"POST /v1/rollouts/{id}/pause", {"Pause: no new exposure", "rollouts", "token", 200}},
      {"POST /v1/rollouts/{id}/resume", {"Resume", "rollouts", "token", 200}},
      {"POST /v1/rollouts/{id}/approve", {"Approve the waiting stage", "rollouts", "token", 200}},
      {"POST /v1/rollouts/{id}/abort", {"Abort: quarantine and send everyone back to stable", "rollouts", "token", 200}},
      {"POST /v1/rollouts/{id}/skip", {"Skip to stage {to} with a reason (never the canary)", "rollouts", "token", 200}},
      {"GET /v1/events", {"Events (rollout, after, limit)", "events", "token", 200}},
      {"GET /v1/events/stream", {"Live events as server-sent events (Last-Event-ID)", "events", "token", 200}},
      {"POST /v1/emergency-stop", {"Freeze every channel", "rollouts", "token", 200}},
      {"DELETE /v1/emergency-stop", {"Lift the emergency stop", "rollouts", "token", 200}},
      {"GET /v1/emergency-stop", {"Emergency stop state", "rollouts", "token", 200}},
      {"POST /v1/agent/enroll", {"Enroll a host with an enrollment token. Re-enrolling an enrolled host id needs its current credential as Authorization: Bearer (or an operator's reset): 409 host_enrolled without it, 401 with a wrong one; 403 token_used_up past max_uses; 429 rate_limited (Retry-After) past the token's rate", "agent", "enroll", 200}},
      {"GET /v1/agent/desired", {"Signed desired state {host_id, generation, issued, expires, channels, known_bad, heartbeat_s, poll_s, key_set_version, key_id, signature, key_set?} (ETag, 304, long poll with wait=)", "agent", "host", 200}},
      {"POST /v1/agent/heartbeat", {"Heartbeat {boot_id, uptime_s, channels, consumers?}; consumers {name: version} (at most 8, versions 1..64 of [A-Za-z0-9._+-]); one that changes state (boot id, versions, consumer versions) is answered once stored, 503 when the store refuses it", "agent", "host", 204}},
      {"POST /v1/agent/reports", {"Batched reports (applied, apply_failed, crash, local_rollback, stale_desired_state, agent_restart: the agent process restarted on the same boot, an event agent_restarted on active rollouts exposing the host, never a failure); 202 once stored (group commit), 503 when the store refuses them: send again; reports about channels or versions never sent to the host are dropped and counted in the answer (accepted, dropped); 429 rate_limited (Retry-After) past the per-host limit", "agent", "host", 202}},
  };
  return kDocs;
}

std::string op_id(const std::string& method, const std::string& path) {
  std::string id;
  for (char c : method) id += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  bool up = true;
  for (char c : path) {
    if (c == '/' || c == '{' || c == '}' || c == '-' || c == '.' || c == '_') {
      up = true;
      continue;
    }
    id += up ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    up = false;
  }
  return id;
}
}  // namespace

std::string openapi_document(const http::Router& router) {
  json error_schema = {
      {"type", "object"},
      {"required", {"error"}},
      {"properties",
       {{"error",
         {{"type", "object"},
          {"required", {"code", "message"}},
          {"properties", {{"code", {{"type", "string"}}}, {"message", {{"type", "string"}}}, {"details", {{"type", "object"}}}, {"request_id", {{"type", "string"}, {"description", "the request's X-Request-Id, to quote in a report"}}}}}}}}}};
  json paths = json::object();
  for (const auto& r : router.routes()) {
    std::string method(http::to_string(r.method));
    std::string key = method + " " + r.pattern;
    auto it = docs().find(key);
    Doc d = it != docs().end() ? it->second : Doc{"Dashboard asset", "dashboard", "none", 200};
    std::string lower;
    for (char c : method) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    json op = {{"operationId", op_id(method, r.pattern)}, {"summary", d.summary}, {"tags", {d.tag}}};
    json params = json::array();
    for (const auto& seg : r.segments) {
      if (seg.size() > 2 && seg.front() == '{') {
        params.push_back({{"name", seg.substr(1, seg.size() - 2)},
                          {"in", "path"},
                          {"required", true},
                          {"schema", {{"type", "string"}}}});
      }
    }
    if (!params.empty()) op["parameters"] = params;
    json responses = json::object();
    std::string ok = std::to_string(d.ok);
    responses[ok] = {{"description", "Success"}};
    if (d.ok != 204) responses[ok]["content"] = {{"application/json", {{"schema", {{"type", "object"}}}}}};
    responses["4XX"] = {{"description", "Client error"},
                        {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}};
    op["responses"] = responses;
    std::string auth = d.auth;
    if (auth == "none") {
      op["security"] = json::array();
    } else if (auth == "host") {
      op["security"] = json::array({{{"hostCredential", json::array()}}});
    } else if (auth == "enroll") {
      // The enrollment token is in the body; a re-enrollment adds the host's credential.
      op["security"] = json::array({json::object(), {{"hostCredential", json::array()}}});
    } else if (auth == "token_or_host") {
      op["security"] = json::array({{{"apiToken", json::array()}}, {{"hostCredential", json::array()}}});
    }
    if (method == "POST" || method == "PUT" || method == "PATCH") {
      if (r.pattern == "/v1/blobs") {
        op["requestBody"] = {{"required", true},
                             {"content", {{"application/octet-stream", {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}};
      } else if (r.pattern.find("/rollouts/{id}/") == std::string::npos) {
        op["requestBody"] = {{"required", true},
                             {"content", {{"application/json", {{"schema", {{"type", "object"}}}}}}}};
      }
    }
    paths[r.pattern][lower] = op;
  }
  json doc = {
      {"openapi", "3.0.3"},
      {"info",
       {{"title", "Ringfence"},
        {"version", "1.0.0"},
        {"description", "Staged rollouts of content updates with automatic halt and rollback."},
        {"license", {{"name", "Proprietary"}, {"url", "https://example.invalid/license"}}}}},
      {"servers", json::array({{{"url", "/"}}})},
      {"security", json::array({{{"apiToken", json::array()}}})},
      {"tags", json::array()},
      {"paths", paths},
      {"components",
       {{"securitySchemes",
         {{"apiToken", {{"type", "http"}, {"scheme", "bearer"}, {"description", "Operator API token"}}},
          {"hostCredential", {{"type", "http"}, {"scheme", "bearer"}, {"description", "Per-host credential from enroll"}}}}},
        {"schemas", {{"Error", error_schema}}}}}};
  for (const char* t : {"service", "tokens", "rings", "hosts", "channels", "releases", "policies",
                        "rollouts", "events", "agent", "dashboard"}) {
    doc["tags"].push_back({{"name", t}, {"description", std::string("Ringfence ") + t}});
  }
  return doc.dump(2);
}

}  // namespace ringfence::server::api
