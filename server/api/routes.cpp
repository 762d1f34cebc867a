#include "server/api/routes.hpp"

#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>

#include "proto/ids.hpp"
#include "proto/json_fields.hpp"
#include "proto/messages.hpp"
#include "server/api/feeds.hpp"

namespace ringfence::server::api {
namespace {
using core::Principal;
using core::Role;
using http::Method;
using http::Reply;
using http::Request;
using http::Response;
using nlohmann::json;

Response ok_json(const json& j, int status = 200) { return Response::json(status, j.dump()); }

template <typename T>
Response result(const Expected<T>& r, int status = 200) {
  if (!r) return Response::error(r.error());
  return ok_json(*r, status);
}

// An error whose details carry retry_after_s (a rate limit) gets that as its Retry-After
// instead of the generic hint of Response::error.
Response limited_error(const Error& e) {
  Response r = Response::error(e);
  if (e.details_json.empty()) return r;
  auto d = json::parse(e.details_json, nullptr, false);
  if (!d.is_object() || !d.contains("retry_after_s") || !d["retry_after_s"].is_number_integer())
    return r;
  std::erase_if(r.headers, [](const auto& h) { return h.first == "Retry-After"; });
  r.headers.emplace_back("Retry-After", std::to_string(d["retry_after_s"].get<std::int64_t>()));
  return r;
}

Response status_result(const Status& s) {
  if (!s) return Response::error(s.error());
  return Response::no_content();
}

// Parses a JSON object body; content type must be JSON when given.
Expected<json> body_object(const Request& req, bool allow_empty = false) {
  auto ct = req.header("content-type");
  if (!ct.empty() && ct.find("application/json") == std::string_view::npos) {
    return fail(
        Errc::UnsupportedMedia,
        "send the body as application/json (with curl: -H 'Content-Type: application/json')");
  }
  if (req.body.empty()) {
    if (allow_empty) return json::object();
    return fail(Errc::InvalidArgument, "a JSON body is required");
  }
  auto j = proto::parse_json(req.body);
  if (!j) return tl::unexpected(j.error());
  if (!j->is_object()) return fail(Errc::InvalidArgument, "the body must be a JSON object");
  return j;
}

Expected<std::int64_t> int_param(const std::optional<std::string>& v, std::string_view name,
                                 std::int64_t def, std::int64_t lo, std::int64_t hi) {
  if (!v) return def;
  std::uint64_t n = 0;
  if (!proto::parse_u64(*v, n) || static_cast<std::int64_t>(n) < lo ||
      static_cast<std::int64_t>(n) > hi) {
    return fail(Errc::InvalidArgument, "query parameter '" + std::string(name) +
                                           "' must be an integer in [" + std::to_string(lo) + ", " +
                                           std::to_string(hi) + "]");
  }
  return static_cast<std::int64_t>(n);
}

Expected<std::string> name_param(const Request& req, std::size_t i, std::string_view what) {
  const auto& v = req.params.at(i);
  if (!proto::is_name(v)) {
    return fail(Errc::InvalidArgument, std::string(what) + " must match [a-z0-9][a-z0-9._-]{0,62}");
  }
  return v;
}

using OpFn = std::function<void(Request&, const Principal&, Reply&)>;

class Routes {
 public:
  Routes(http::Router& r, core::Service& s) : router_(r), svc_(s) {}

  // An operator route needing at least `min`.
  void op(Method m, std::string_view path, Role min, OpFn fn) {
    auto& svc = svc_;
    router_.add(m, path, [&svc, min, fn](Request& req, Reply reply) {
      auto p = svc.authenticate(req.header("authorization"));
      if (!p) return reply(Response::error(p.error()));
      if (p->role < min) {
        return reply(Response::error(
            Error{Errc::PermissionDenied, "this needs the " + std::string(core::to_string(min)) +
                                              " role; token '" + p->name + "' has " +
                                              std::string(core::to_string(p->role))}));
      }
      fn(req, *p, reply);
    });
  }
  // An agent route: the host credential names the host.
  void agent(Method m, std::string_view path,
             std::function<void(Request&, std::int64_t host, Reply&)> fn) {
    auto& svc = svc_;
    router_.add(m, path, [&svc, fn](Request& req, Reply reply) {
      auto h = svc.authenticate_host(req.header("authorization"));
      if (!h) return reply(Response::error(h.error()));
      fn(req, *h, reply);
    });
  }
  void open(Method m, std::string_view path, http::Handler fn) {
    router_.add(m, path, std::move(fn));
  }

 private:
  http::Router& router_;
  core::Service& svc_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Parses "bytes=N-M" / "bytes=N-" / "bytes=-N" against size. nullopt = ignore (serve whole).
struct Range {
  std::uint64_t first, last;
};
Expected<std::optional<Range>> parse_range(std::string_view h, std::uint64_t size) {
  if (h.empty()) return std::optional<Range>{};
  if (h.substr(0, 6) != "bytes=" || h.find(',') != std::string_view::npos) {
    return std::optional<Range>{};  // unsupported forms: serve the whole blob
  }
  auto spec = h.substr(6);
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return std::optional<Range>{};
  std::uint64_t a = 0, b = 0;
  auto sa = spec.substr(0, dash), sb = spec.substr(dash + 1);
  if (sa.empty()) {
    if (!proto::parse_u64(sb, b) || b == 0) return fail(Errc::InvalidArgument, "bad range");
    b = std::min(b, size);
    return std::optional<Range>(Range{size - b, size - 1});
  }
  if (!proto::parse_u64(sa, a)) return std::optional<Range>{};
  if (a >= size) {
    Error e{Errc::InvalidArgument, "range starts past the end", "range_not_satisfiable"};
    return tl::unexpected(e);
  }
  std::uint64_t last = size - 1;
  if (!sb.empty()) {
    if (!proto::parse_u64(sb, b) || b < a) return std::optional<Range>{};
    last = std::min(b, size - 1);
  }
  return std::optional<Range>(Range{a, last});
}

void serve_blob(core::Service& svc, Request& req, Reply& reply) {
  auto path = svc.blob_path(req.params[0]);
  if (!path) return reply(Response::error(path.error()));
  std::error_code ec;
  std::ifstream f(*path, std::ios::binary | std::ios::ate);
  auto size = static_cast<std::uint64_t>(f.tellg());
  std::string etag = "\"" + req.params[0] + "\"";
  Response r;
  r.content_type = "application/octet-stream";
  r.headers.emplace_back("ETag", etag);
  r.headers.emplace_back("Cache-Control", "public, max-age=31536000, immutable");
  r.headers.emplace_back("Accept-Ranges", "bytes");
  if (req.header("if-none-match") == etag) {
    r.status = 304;
    r.content_type.clear();
    return reply(std::move(r));
  }
  auto range = parse_range(req.header("range"), size);
  if (!range) {
    Response e = Response::error(range.error());
    e.status = 416;
    e.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
    return reply(std::move(e));
  }
  auto if_range = req.header("if-range");
  if (*range && (if_range.empty() || if_range == etag)) {
    r.status = 206;
    r.headers.emplace_back("Content-Range", "bytes " + std::to_string((*range)->first) + "-" +
                                                std::to_string((*range)->last) + "/" +
                                                std::to_string(size));
    r.file = http::FileBody{*path, (*range)->first, (*range)->last - (*range)->first + 1};
  } else {
    r.file = http::FileBody{*path, 0, size};
  }
  reply(std::move(r));
}

// An event stream subscribed before its response is sent. What the service writes before the
// transport attaches (the replay, early live events) is held and flushed, in order, on attach.
// write() is called by the service (its mutex held, any thread), attach() and abandon() by the
// transport's I/O thread; the mutex orders them.
class EarlyStream {
 public:
  // The subscription's writer: false once the client is gone (the service then drops it).
  bool write(std::string frame) {
    std::lock_guard lock(mu_);
    if (gone_) return false;
    if (!out_) {
      held_ += frame;
      return true;
    }
    if (!out_(std::move(frame))) gone_ = true;
    return !gone_;
  }
  // The headers are sent: flush what is held, then write through.
  void attach(http::StreamBody::Writer out) {
    std::lock_guard lock(mu_);
    if (gone_) return;
    if (!held_.empty() && !out(std::exchange(held_, {}))) {
      gone_ = true;
      return;
    }
    out_ = std::move(out);
  }
  // The response went away without being attached (a HEAD, or the client left first).
  void abandon() {
    std::lock_guard lock(mu_);
    if (out_) return;
    gone_ = true;
    held_.clear();
  }
  // Held by the response's StreamBody: abandons the stream if it is dropped unattached.
  struct Owner {
    explicit Owner(std::shared_ptr<EarlyStream> s) : stream(std::move(s)) {}
    ~Owner() { stream->abandon(); }
    Owner(const Owner&) = delete;
    Owner& operator=(const Owner&) = delete;
    std::shared_ptr<EarlyStream> stream;
  };

 private:
  std::mutex mu_;
  std::string held_;              // guarded by mu_; frames written before attach
  http::StreamBody::Writer out_;  // guarded by mu_; set by attach
  bool gone_ = false;             // guarded by mu_
};

}  // namespace

std::optional<Response> credential_before_body(const http::Router& router, core::Service& svc,
                                               const Request& head) {
  const auto* route = router.find(head.method, head.path);
  if (!route) return std::nullopt;
  std::string_view pattern = route->pattern;
  auto auth = head.header("authorization");
  if (pattern.rfind("/v1/agent/", 0) == 0) {
    if (pattern == "/v1/agent/enroll") return std::nullopt;
    auto host = svc.authenticate_host(auth);
    if (!host) return Response::error(host.error());
    return std::nullopt;
  }
  auto p = svc.authenticate(auth);
  if (!p) return Response::error(p.error());
  if (pattern == "/v1/blobs" && p->role < Role::Release) {
    return Response::error(
        Error{Errc::PermissionDenied, "uploading blobs needs the release role; token '" + p->name +
                                          "' has " + std::string(core::to_string(p->role))});
  }
  return std::nullopt;
}

void register_routes(http::Router& router, core::Service& svc, const RequestMetrics& requests,
                     ApiOptions options) {
  Routes R(router, svc);
  auto& S = svc;

  // ---- open
  R.open(Method::Get, "/healthz",
         [](Request&, Reply reply) { reply(Response::json(200, R"({"status":"ok"})")); });
  R.open(Method::Get, "/readyz",
         [&S, shutting_down = options.shutting_down](Request&, Reply reply) {
           if (shutting_down && shutting_down()) {
             return reply(Response::error({Errc::Unavailable,
                                           "the server is shutting down; send requests elsewhere",
                                           "shutting_down"}));
           }
           auto m = S.readiness();  // takes the state lock: proves the core is loaded and live
           // A store that refuses writes leaves polls and reads working (200: the node still serves
           // what agents need most), but evidence is answered 503 until it recovers: say so.
           json body{{"status", m.contains("store_failing_since") ? "degraded" : "ready"},
                     {"emergency_stop", m["emergency_stop"]}};
           if (m.contains("store_failing_since")) {
             body["store_failing_since"] = m["store_failing_since"];
             body["store_error"] = m["store_error"];
           }
           reply(ok_json(body));
         });
  R.open(Method::Get, "/v1/openapi.json", [&router](Request&, Reply reply) {
    reply(Response::json(200, openapi_document(router)));
  });
  R.open(Method::Get, "/metrics", [&S, &requests](Request&, Reply reply) {
    Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = prometheus_text(S, requests);
    reply(std::move(r));
  });
  R.open(Method::Get, "/v1/signing-key", [&S](Request&, Reply reply) {
    reply(ok_json(json{{"algorithm", "ed25519"}, {"public_key", S.signing_public_key()}}));
  });
  // ---- release notes as Atom feeds: public when an admin says so, else any API token
  auto feed_reply = [&S](Request& req, Reply& reply, const std::optional<std::string>& channel) {
    if (!S.release_feeds_public()) {
      auto p = S.authenticate(req.header("authorization"));
      if (!p) return reply(Response::error(p.error()));
    }
    std::vector<json> releases;
    std::vector<std::string> channels;
    if (channel) {
      channels.push_back(*channel);
    } else {
      json all = S.list_channels();  // (a range-for over a temporary's member would dangle)
      for (const auto& c : all["channels"]) channels.push_back(c.value("name", ""));
    }
    for (const auto& ch : channels) {
      auto list = S.list_releases(ch);
      if (!list) return reply(Response::error(list.error()));
      for (auto& r : (*list)["releases"]) releases.push_back(std::move(r));
    }
    FeedSource src;
    src.title = channel ? "Ringfence releases: " + *channel : "Ringfence releases";
    src.self_path = channel ? "/v1/channels/" + *channel + "/releases.atom" : "/v1/releases.atom";
    src.id = "tag:ringfence,2026:feed/" + (channel ? *channel : std::string("*"));
    Response r;
    r.content_type = "application/atom+xml; charset=utf-8";
    r.body = atom_feed(src, std::move(releases));
    reply(std::move(r));
  };
  R.open(Method::Get, "/v1/releases.atom",
         [feed_reply](Request& req, Reply reply) { feed_reply(req, reply, std::nullopt); });
  R.open(Method::Get, "/v1/channels/{ch}/releases.atom", [feed_reply](Request& req, Reply reply) {
    auto n = name_param(req, 0, "channel name");
    if (!n) return reply(Response::error(n.error()));
    feed_reply(req, reply, *n);
  });
  R.op(Method::Get, "/v1/settings/release-feeds", Role::Viewer,
       [&S](Request&, const Principal&, Reply& reply) {
         reply(ok_json(json{{"public", S.release_feeds_public()}}));
       });
  R.op(Method::Put, "/v1/settings/release-feeds", Role::Admin,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         if (!b->contains("public") || !(*b)["public"].is_boolean() || b->size() != 1) {
           return reply(Response::error(
               {Errc::InvalidArgument, "the body must be {\"public\": true|false}"}));
         }
         reply(result(S.set_release_feeds_public(p, (*b)["public"].get<bool>())));
       });

  // ---- keys: public facts (the key set carries its own root signatures); reload is admin
  R.open(Method::Get, "/v1/keys", [&S](Request&, Reply reply) { reply(ok_json(S.keys())); });
  R.op(Method::Post, "/v1/keys/reload", Role::Admin,
       [&S](Request&, const Principal& p, Reply& reply) { reply(result(S.reload_keys(p), 200)); });

  // ---- tokens (admin)
  R.op(Method::Post, "/v1/tokens", Role::Admin,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.create_token(p, *b), 201));
       });
  R.op(Method::Get, "/v1/tokens", Role::Admin,
       [&S](Request&, const Principal&, Reply& reply) { reply(ok_json(S.list_tokens())); });
  R.op(Method::Delete, "/v1/tokens/{name}", Role::Admin,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "token name");
         if (!n) return reply(Response::error(n.error()));
         reply(status_result(S.delete_token(p, *n)));
       });
  R.op(Method::Post, "/v1/enrollment-tokens", Role::Operator,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.create_enrollment_token(p, *b), 201));
       });
  R.op(Method::Get, "/v1/enrollment-tokens", Role::Operator,
       [&S](Request&, const Principal&, Reply& reply) {
         reply(ok_json(S.list_enrollment_tokens()));
       });
  R.op(Method::Delete, "/v1/enrollment-tokens/{name}", Role::Operator,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "enrollment token name");
         if (!n) return reply(Response::error(n.error()));
         reply(status_result(S.revoke_enrollment_token(p, *n)));
       });

  // ---- rings
  R.op(Method::Get, "/v1/rings", Role::Viewer,
       [&S](Request&, const Principal&, Reply& reply) { reply(ok_json(S.list_rings())); });
  R.op(Method::Post, "/v1/rings", Role::Operator,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         auto name = proto::get_string(*b, "name", 63);
         if (!name) return reply(Response::error(name.error()));
         reply(result(S.put_ring(p, *name, *b, true), 201));
       });
  R.op(Method::Get, "/v1/rings/{name}", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         auto n = name_param(req, 0, "ring name");
         if (!n) return reply(Response::error(n.error()));
         reply(result(S.get_ring(*n)));
       });
  R.op(Method::Put, "/v1/rings/{name}", Role::Operator,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "ring name");
         if (!n) return reply(Response::error(n.error()));
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.put_ring(p, *n, *b, false)));
       });
  R.op(Method::Delete, "/v1/rings/{name}", Role::Operator,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "ring name");
         if (!n) return reply(Response::error(n.error()));
         reply(status_result(S.delete_ring(p, *n)));
       });
  R.op(Method::Get, "/v1/rings/{name}/hosts", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         auto n = name_param(req, 0, "ring name");
         if (!n) return reply(Response::error(n.error()));
         auto limit = int_param(req.query_param("limit"), "limit", 100, 1, 1000);
         if (!limit) return reply(Response::error(limit.error()));
         auto after = req.query_param("after").value_or("");
         if (after.size() > 36)
           return reply(Response::error({Errc::InvalidArgument, "bad 'after'"}));
         reply(result(S.ring_hosts(*n, *limit, after)));
       });

  // ---- hosts
  R.op(Method::Get, "/v1/hosts", Role::Viewer, [&S](Request& req, const Principal&, Reply& reply) {
    core::Service::HostFilter f;
    auto limit = int_param(req.query_param("limit"), "limit", 100, 1, 1000);
    if (!limit) return reply(Response::error(limit.error()));
    f.limit = *limit;
    f.after = req.query_param("after").value_or("");
    if (f.after.size() > 36) return reply(Response::error({Errc::InvalidArgument, "bad 'after'"}));
    if (auto r = req.query_param("ring")) {
      if (!proto::is_name(*r))
        return reply(Response::error({Errc::InvalidArgument, "bad ring name"}));
      f.ring = *r;
    }
    if (auto l = req.query_param("label")) {
      auto eq = l->find('=');
      f.label_key = l->substr(0, eq);
      if (!proto::is_label_key(*f.label_key)) {
        return reply(Response::error({Errc::InvalidArgument, "label filter is key or key=value"}));
      }
      if (eq != std::string::npos) f.label_value = l->substr(eq + 1);
    }
    if (auto c = req.query_param("channel")) {
      if (!proto::is_name(*c))
        return reply(Response::error({Errc::InvalidArgument, "bad channel name"}));
      f.channel = *c;
    }
    if (auto v = req.query_param("version")) {
      auto n = int_param(v, "version", 0, 1, 1'000'000'000'000LL);
      if (!n) return reply(Response::error(n.error()));
      f.version = *n;
    }
    reply(result(S.list_hosts(f)));
  });
  auto host_id = [](const Request& req) -> Expected<std::string> {
    if (!proto::is_uuid(req.params[0]))
      return fail(Errc::InvalidArgument, "a host id is a lower-case UUID");
    return req.params[0];
  };
  R.op(Method::Get, "/v1/hosts/{id}", Role::Viewer,
       [&S, host_id](Request& req, const Principal&, Reply& reply) {
         auto id = host_id(req);
         if (!id) return reply(Response::error(id.error()));
         reply(result(S.get_host(*id)));
       });
  R.op(Method::Patch, "/v1/hosts/{id}", Role::Operator,
       [&S, host_id](Request& req, const Principal& p, Reply& reply) {
         auto id = host_id(req);
         if (!id) return reply(Response::error(id.error()));
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.patch_host(p, *id, *b)));
       });
  R.op(Method::Post, "/v1/hosts/{id}/reset", Role::Operator,
       [&S, host_id](Request& req, const Principal& p, Reply& reply) {
         auto id = host_id(req);
         if (!id) return reply(Response::error(id.error()));
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.reset_host(p, *id, *b)));
       });
  R.op(Method::Delete, "/v1/hosts/{id}", Role::Operator,
       [&S, host_id](Request& req, const Principal& p, Reply& reply) {
         auto id = host_id(req);
         if (!id) return reply(Response::error(id.error()));
         reply(status_result(S.delete_host(p, *id)));
       });

  // ---- channels & releases
  R.op(Method::Get, "/v1/channels", Role::Viewer,
       [&S](Request&, const Principal&, Reply& reply) { reply(ok_json(S.list_channels())); });
  R.op(Method::Post, "/v1/channels", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         auto name = proto::get_string(*b, "name", 63);
         if (!name) return reply(Response::error(name.error()));
         reply(result(S.put_channel(p, *name, *b, true), 201));
       });
  R.op(Method::Get, "/v1/channels/{name}", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         auto n = name_param(req, 0, "channel name");
         if (!n) return reply(Response::error(n.error()));
         reply(result(S.get_channel(*n)));
       });
  R.op(Method::Put, "/v1/channels/{name}", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "channel name");
         if (!n) return reply(Response::error(n.error()));
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.put_channel(p, *n, *b, false)));
       });
  R.op(
      Method::Post, "/v1/blobs", Role::Release, [&S](Request& req, const Principal&, Reply& reply) {
        if (req.body_file.empty()) {
          return reply(
              Response::error({Errc::InvalidArgument, "send the content as the raw request body"}));
        }
        reply(result(S.adopt_blob(req.body_file), 201));
      });
  // Blob download: an operator token (viewer) or a host credential.
  R.open(Method::Get, "/v1/blobs/{sha256}", [&S](Request& req, Reply reply) {
    auto auth = req.header("authorization");
    if (!S.authenticate_host(auth) && !S.authenticate(auth)) {
      return reply(Response::error(
          {Errc::Unauthenticated, "a host credential or an API token is required"}));
    }
    serve_blob(S, req, reply);
  });
  R.op(Method::Post, "/v1/channels/{ch}/releases", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "channel name");
         if (!n) return reply(Response::error(n.error()));
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.create_release(p, *n, *b), 201));
       });
  R.op(Method::Get, "/v1/channels/{ch}/releases", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         auto n = name_param(req, 0, "channel name");
         if (!n) return reply(Response::error(n.error()));
         reply(result(S.list_releases(*n)));
       });
  auto version_param = [](const Request& req) {
    return int_param(std::optional<std::string>(req.params[1]), "version", 0, 1,
                     1'000'000'000'000LL);
  };
  R.op(Method::Get, "/v1/channels/{ch}/releases/{version}", Role::Viewer,
       [&S, version_param](Request& req, const Principal&, Reply& reply) {
         auto n = name_param(req, 0, "channel name");
         if (!n) return reply(Response::error(n.error()));
         auto v = version_param(req);
         if (!v) return reply(Response::error(v.error()));
         reply(result(S.get_release(*n, *v)));
       });
  R.op(Method::Post, "/v1/channels/{ch}/releases/{version}/quarantine", Role::Release,
       [&S, version_param](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "channel name");
         if (!n) return reply(Response::error(n.error()));
         auto v = version_param(req);
         if (!v) return reply(Response::error(v.error()));
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         auto reason = proto::get_string(*b, "reason", 1024);
         if (!reason) return reply(Response::error(reason.error()));
         reply(result(S.quarantine_release(p, *n, *v, *reason)));
       });

  // ---- policies
  R.op(Method::Get, "/v1/policies", Role::Viewer,
       [&S](Request&, const Principal&, Reply& reply) { reply(ok_json(S.list_policies())); });
  R.op(Method::Post, "/v1/policies", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         auto name = proto::get_string(*b, "name", 63);
         if (!name) return reply(Response::error(name.error()));
         reply(result(S.put_policy(p, *name, *b, true), 201));
       });
  R.op(Method::Get, "/v1/policies/{name}", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         auto n = name_param(req, 0, "policy name");
         if (!n) return reply(Response::error(n.error()));
         reply(result(S.get_policy(*n)));
       });
  R.op(Method::Put, "/v1/policies/{name}", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto n = name_param(req, 0, "policy name");
         if (!n) return reply(Response::error(n.error()));
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.put_policy(p, *n, *b, false)));
       });

  // ---- rollouts
  R.op(Method::Post, "/v1/rollouts", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.create_rollout(p, *b), 201));
       });
  R.op(Method::Get, "/v1/rollouts", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         auto ch = req.query_param("channel");
         auto st = req.query_param("state");
         if (ch && !proto::is_name(*ch))
           return reply(Response::error({Errc::InvalidArgument, "bad channel name"}));
         if (st && st->size() > 32)
           return reply(Response::error({Errc::InvalidArgument, "bad state"}));
         reply(result(S.list_rollouts(ch, st)));
       });
  R.op(Method::Post, "/v1/rollouts/preview", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         reply(result(S.preview(*b)));
       });
  auto rollout_id = [](const Request& req) {
    return int_param(std::optional<std::string>(req.params[0]), "rollout id", 0, 1,
                     1'000'000'000'000LL);
  };
  R.op(Method::Get, "/v1/rollouts/{id}", Role::Viewer,
       [&S, rollout_id](Request& req, const Principal&, Reply& reply) {
         auto id = rollout_id(req);
         if (!id) return reply(Response::error(id.error()));
         reply(result(S.get_rollout(*id)));
       });
  for (const char* action : {"start", "pause", "resume", "approve", "abort", "skip"}) {
    std::string a = action;
    R.op(Method::Post, "/v1/rollouts/{id}/" + a, Role::Release,
         [&S, rollout_id, a](Request& req, const Principal& p, Reply& reply) {
           auto id = rollout_id(req);
           if (!id) return reply(Response::error(id.error()));
           auto b = body_object(req, /*allow_empty=*/true);
           if (!b) return reply(Response::error(b.error()));
           reply(result(S.rollout_action(p, *id, a, *b)));
         });
  }

  // ---- events
  R.op(Method::Get, "/v1/events", Role::Viewer, [&S](Request& req, const Principal&, Reply& reply) {
    std::optional<std::int64_t> rollout;
    if (auto r = req.query_param("rollout")) {
      auto n = int_param(r, "rollout", 0, 1, 1'000'000'000'000LL);
      if (!n) return reply(Response::error(n.error()));
      rollout = *n;
    }
    auto after = int_param(req.query_param("after"), "after", 0, 0, 1'000'000'000'000'000LL);
    if (!after) return reply(Response::error(after.error()));
    auto limit = int_param(req.query_param("limit"), "limit", 100, 1, 1000);
    if (!limit) return reply(Response::error(limit.error()));
    reply(result(S.list_events(rollout, *after, *limit)));
  });
  R.op(Method::Get, "/v1/events/stream", Role::Viewer,
       [&S](Request& req, const Principal&, Reply& reply) {
         std::int64_t after = -1;
         auto last = req.header("last-event-id");
         auto q = req.query_param("after");
         std::uint64_t n = 0;
         if (!last.empty() && proto::parse_u64(last, n)) after = static_cast<std::int64_t>(n);
         if (q && proto::parse_u64(*q, n)) after = static_cast<std::int64_t>(n);
         // Subscribed before answering, so a refused subscription (too many streams) is a 429,
         // not a 200 that never carries an event.
         auto stream = std::make_shared<EarlyStream>();
         auto sub = S.subscribe_events(
             after, [stream](std::string frame) { return stream->write(std::move(frame)); });
         if (!sub) return reply(Response::error(sub.error()));
         Response r;
         r.content_type = "text/event-stream";
         r.headers.emplace_back("Cache-Control", "no-cache");
         r.stream = std::make_shared<http::StreamBody>();
         auto owner = std::make_shared<EarlyStream::Owner>(std::move(stream));
         r.stream->attach = [owner](http::StreamBody::Writer w) {
           owner->stream->attach(std::move(w));
         };
         reply(std::move(r));
       });
  R.op(Method::Post, "/v1/emergency-stop", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req);
         if (!b) return reply(Response::error(b.error()));
         auto reason = proto::get_string(*b, "reason", 1024);
         if (!reason) return reply(Response::error(reason.error()));
         reply(result(S.set_emergency_stop(p, true, *reason)));
       });
  R.op(Method::Delete, "/v1/emergency-stop", Role::Release,
       [&S](Request& req, const Principal& p, Reply& reply) {
         auto b = body_object(req, true);
         if (!b) return reply(Response::error(b.error()));
         auto reason = proto::get_opt_string(*b, "reason", 1024);
         if (!reason) return reply(Response::error(reason.error()));
         reply(result(S.set_emergency_stop(p, false, reason->value_or(""))));
       });
  R.op(Method::Get, "/v1/emergency-stop", Role::Viewer,
       [&S](Request&, const Principal&, Reply& reply) { reply(ok_json(S.emergency_state())); });

  // ---- agent API
  R.open(Method::Post, "/v1/agent/enroll", [&S](Request& req, Reply reply) {
    auto m = proto::decode_enroll_request(req.body);
    if (!m) return reply(Response::error(m.error()));
    // Re-enrolling an enrolled host id: its current credential as Authorization: Bearer.
    auto r = S.enroll(*m, req.header("authorization"));
    if (!r) return reply(limited_error(r.error()));
    reply(Response::json(200, proto::encode(*r)));
  });
  R.agent(Method::Get, "/v1/agent/desired", [&S](Request& req, std::int64_t host, Reply& reply) {
    auto wait = int_param(req.query_param("wait"), "wait", 0, 0, 3600);
    if (!wait) return reply(Response::error(wait.error()));
    auto inm = req.header("if-none-match");
    if (inm.size() >= 2 && inm.front() == '"' && inm.back() == '"')
      inm = inm.substr(1, inm.size() - 2);
    auto to_response = [](core::DesiredAnswer a) {
      Response r;
      r.headers.emplace_back("ETag", "\"" + a.etag + "\"");
      if (a.not_modified) {
        r.status = 304;
        r.content_type.clear();
      } else {
        r.body = std::move(a.body);
      }
      return r;
    };
    auto shared = std::make_shared<Reply>(std::move(reply));
    auto r = S.desired(host, inm, *wait, [shared, to_response](core::DesiredAnswer a) {
      (*shared)(to_response(std::move(a)));
    });
    if (!r) return (*shared)(Response::error(r.error()));
    if (*r) (*shared)(to_response(std::move(**r)));
  });
  // Acknowledged = durable: a heartbeat that changed state and every report are answered once
  // the group commit holding them has committed (503 when it failed), like a parked long poll.
  R.agent(Method::Post, "/v1/agent/heartbeat", [&S](Request& req, std::int64_t host, Reply& reply) {
    auto hb = proto::decode_heartbeat(req.body);
    if (!hb) return reply(Response::error(hb.error()));
    S.heartbeat(host, *hb, [reply = std::move(reply)](Status st) { reply(status_result(st)); });
  });
  R.agent(Method::Post, "/v1/agent/reports", [&S](Request& req, std::int64_t host, Reply& reply) {
    auto rs = proto::decode_reports(req.body);
    if (!rs) return reply(Response::error(rs.error()));
    // The answer says how many were taken: reports about what was never sent are dropped and
    // an agent must not believe they count (it need not resend them either).
    auto kept = std::make_shared<std::size_t>(0);
    S.reports(
        host, *rs,
        [reply = std::move(reply), n = rs->size(), kept](Status st) {
          if (!st) return reply(limited_error(st.error()));
          reply(Response::json(202,
                               nlohmann::json{{"accepted", *kept}, {"dropped", n - *kept}}.dump()));
        },
        kept.get());
  });

  // ---- dashboard (static files from a fixed list; no path is built from user input)
  if (!options.web_dir.empty()) {
    for (const auto& [route, file, type] :
         std::vector<std::tuple<std::string, std::string, std::string>>{
             {"/", "index.html", "text/html; charset=utf-8"},
             {"/app.js", "app.js", "application/javascript"},
             {"/app.css", "app.css", "text/css"},
             {"/vendor/uPlot.iife.min.js", "vendor/uPlot.iife.min.js", "application/javascript"},
             {"/vendor/uPlot.min.css", "vendor/uPlot.min.css", "text/css"}}) {
      std::string path = options.web_dir + "/" + file;
      std::string ct = type;
      R.open(Method::Get, route, [path, ct](Request&, Reply reply) {
        auto body = read_file(path);
        if (body.empty()) return reply(Response::error({Errc::NotFound, "dashboard file missing"}));
        Response r;
        r.content_type = ct;
        r.body = std::move(body);
        reply(std::move(r));
      });
    }
  }
}

}  // namespace ringfence::server::api
