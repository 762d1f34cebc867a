#include "cli/api.hpp"

#include <nlohmann/json.hpp>

namespace ringfence::cli {
using nlohmann::json;

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

CliError refusal(const HttpResponse& r) {
  CliError e;
  e.exit = r.status >= 500 ? Exit::Unreachable : Exit::Refused;
  std::string code;
  std::string message;
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const auto& err = j["error"];
    code = err.value("code", "");
    message = err.value("message", "");
    // Validation findings (422): one indented line each.
    if (auto d = err.find("details"); d != err.end()) {
      const json* findings = d->is_array() ? &*d : nullptr;
      if (d->is_object() && d->contains("findings")) findings = &(*d)["findings"];
      if (findings && findings->is_array()) {
        for (const auto& f : *findings) {
          std::string path = f.value("path", "");
          e.details += "  - " + (path.empty() ? std::string("(content)") : path) + ": " +
                       f.value("message", f.dump()) + "\n";
        }
      }
    }
  }
  if (message.empty()) message = r.body.empty() ? "no message" : r.body.substr(0, 200);
  for (auto& ch : message) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  e.message =
      message + " (HTTP " + std::to_string(r.status) + (code.empty() ? "" : ", " + code) + ")";
  return e;
}

Api::Api(HttpClient& http, std::string token) : http_(http), token_(std::move(token)) {}

Result<json> Api::call(HttpRequest req) {
  if (!token_.empty()) req.headers.emplace_back("Authorization", "Bearer " + token_);
  req.headers.emplace_back("Accept", "application/json");
  auto r = http_.send(req);
  if (!r) return tl::unexpected(CliError{Exit::Unreachable, r.error().message, {}});
  if (r->status < 200 || r->status > 299) return tl::unexpected(refusal(*r));
  if (r->status == 204 || r->body.empty()) return json(nullptr);
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) {
    return tl::unexpected(
        CliError{Exit::Unreachable, "the server sent a body that is not JSON", {}});
  }
  return j;
}

Result<json> Api::get(const std::string& target) { return call({"GET", target, {}, {}, {}}); }

Result<json> Api::post(const std::string& target, const json& body) {
  return call({"POST", target, {}, body.dump(), "application/json"});
}

Result<json> Api::put(const std::string& target, const json& body) {
  return call({"PUT", target, {}, body.dump(), "application/json"});
}

Result<json> Api::patch(const std::string& target, const json& body) {
  return call({"PATCH", target, {}, body.dump(), "application/json"});
}

Result<json> Api::del(const std::string& target, const json* body) {
  if (body) return call({"DELETE", target, {}, body->dump(), "application/json"});
  return call({"DELETE", target, {}, {}, {}});
}

Result<json> Api::upload(const std::string& target, std::string bytes) {
  return call({"POST", target, {}, std::move(bytes), "application/octet-stream"});
}

Result<std::unique_ptr<EventStream>> Api::event_stream(std::int64_t after) {
  HttpRequest req{"GET", "/v1/events/stream", {}, {}, {}};
  if (after >= 0) {
    req.target += "?after=" + std::to_string(after);
    req.headers.emplace_back("Last-Event-ID", std::to_string(after));
  }
  if (!token_.empty()) req.headers.emplace_back("Authorization", "Bearer " + token_);
  req.headers.emplace_back("Accept", "text/event-stream");
  auto r = http_.open_stream(req);
  if (!r) return tl::unexpected(CliError{Exit::Unreachable, r.error().message, {}});
  if (r->response.status != 200) return tl::unexpected(refusal(r->response));
  return std::move(r->stream);
}

}  // namespace ringfence::cli
