#include "proto/messages.hpp"

#include <nlohmann/json.hpp>

#include "proto/ids.hpp"
#include "proto/json_fields.hpp"
#include "proto/try.hpp"

namespace ringfence::proto {
namespace {
using nlohmann::json;

constexpr std::int64_t kMaxVersion = 1'000'000'000'000LL;
constexpr std::int64_t kMaxSize = 1LL << 40;
constexpr std::int64_t kMaxTime = 100'000'000'000'000LL;  // unix ms, year ~5000

Expected<Labels> decode_labels(const json& obj) {
  Labels out;
  auto it = obj.find("labels");
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_object()) return fail(Errc::InvalidArgument, "field 'labels' must be an object");
  if (it->size() > kMaxLabels) return fail(Errc::InvalidArgument, "too many labels (max 32)");
  for (auto l = it->begin(); l != it->end(); ++l) {
    if (!is_label_key(l.key())) {
      return fail(Errc::InvalidArgument, "label key '" + l.key().substr(0, 40) + "' is invalid");
    }
    if (!l->is_string() || !is_label_value(l->get_ref<const std::string&>())) {
      return fail(Errc::InvalidArgument, "label '" + l.key() + "' has an invalid value");
    }
    out.emplace(l.key(), l->get<std::string>());
  }
  return out;
}

Expected<Manifest> decode_manifest(const json& j) {
  RF_CHECK(require_object(j, "manifest"));
  RF_CHECK(only_keys(j, {"channel", "version", "sha256", "size", "created", "expires"}));
  Manifest m;
  RF_TRY(channel, get_string(j, "channel", 63));
  RF_TRY(version, get_int(j, "version", 1, kMaxVersion));
  RF_TRY(sha, get_string(j, "sha256", 64));
  RF_TRY(size, get_int(j, "size", 0, kMaxSize));
  RF_TRY(created, get_int(j, "created", 0, kMaxTime));
  RF_TRY(expires, get_int(j, "expires", 0, kMaxTime));
  if (!is_name(channel) || !is_sha256_hex(sha)) {
    return fail(Errc::InvalidArgument, "manifest has an invalid channel or sha256");
  }
  m.channel = channel;
  m.version = version;
  m.sha256 = sha;
  m.size = size;
  m.created = created;
  m.expires = expires;
  return m;
}

json manifest_json(const Manifest& m) {
  return {{"channel", m.channel}, {"version", m.version}, {"sha256", m.sha256},
          {"size", m.size},       {"created", m.created}, {"expires", m.expires}};
}

Expected<json> parse_object(std::string_view body, std::string_view what) {
  RF_TRY(j, parse_json(body));
  RF_CHECK(require_object(j, what));
  return j;
}
}  // namespace

std::string_view to_string(ReportKind k) noexcept {
  switch (k) {
    case ReportKind::Applied: return "applied";
    case ReportKind::ApplyFailed: return "apply_failed";
    case ReportKind::Crash: return "crash";
    case ReportKind::LocalRollback: return "local_rollback";
  }
  return "applied";
}

std::optional<ReportKind> report_kind_from(std::string_view s) noexcept {
  if (s == "applied") return ReportKind::Applied;
  if (s == "apply_failed") return ReportKind::ApplyFailed;
  if (s == "crash") return ReportKind::Crash;
  if (s == "local_rollback") return ReportKind::LocalRollback;
  return std::nullopt;
}

std::string encode(const EnrollRequest& m) {
  return json{{"enrollment_token", m.enrollment_token},
              {"host_id", m.host_id},
              {"labels", m.labels},
              {"agent_version", m.agent_version}}
      .dump();
}

std::string encode(const EnrollResponse& m) {
  return json{{"host_id", m.host_id},
              {"credential", m.credential},
              {"heartbeat_s", m.heartbeat_s},
              {"poll_s", m.poll_s}}
      .dump();
}

std::string encode(const DesiredState& m) {
  json chans = json::array();
  for (const auto& c : m.channels) {
    json o = {{"channel", c.channel},   {"version", c.version},
              {"sha256", c.sha256},     {"size", c.size},
              {"url", c.url},           {"manifest", manifest_json(c.manifest)},
              {"signature", c.signature}};
    if (c.rollback) o["rollback"] = true;
    chans.push_back(std::move(o));
  }
  json bad = json::array();
  for (const auto& k : m.known_bad) bad.push_back({{"channel", k.channel}, {"version", k.version}});
  return json{{"etag", m.etag},
              {"channels", std::move(chans)},
              {"known_bad", std::move(bad)},
              {"heartbeat_s", m.heartbeat_s},
              {"poll_s", m.poll_s}}
      .dump();
}

std::string encode(const Heartbeat& m) {
  json chans = json::object();
  for (const auto& [name, st] : m.channels) {
    chans[name] = {{"version", st.version}, {"state", st.state}};
  }
  return json{{"boot_id", m.boot_id}, {"uptime_s", m.uptime_s}, {"channels", std::move(chans)}}
      .dump();
}

std::string encode(const std::vector<Report>& reports) {
  json arr = json::array();
  for (const auto& r : reports) {
    json o = {{"kind", to_string(r.kind)}, {"time", r.time}, {"boot_id", r.boot_id}};
    if (r.channel) o["channel"] = *r.channel;
    if (r.version) o["version"] = *r.version;
    json d = json::parse(r.detail_json, nullptr, false);
    o["detail"] = d.is_object() ? d : json::object();
    arr.push_back(std::move(o));
  }
  return arr.dump();
}

Expected<EnrollRequest> decode_enroll_request(std::string_view body) {
  RF_TRY(j, parse_object(body, "enroll request"));
  RF_CHECK(only_keys(j, {"enrollment_token", "host_id", "labels", "agent_version"}));
  EnrollRequest m;
  RF_TRY(tok, get_string(j, "enrollment_token", 128));
  RF_TRY(host, get_string(j, "host_id", 36));
  if (!is_uuid(host)) {
    return fail(Errc::InvalidArgument, "host_id must be a lower-case UUID");
  }
  RF_TRY(labels, decode_labels(j));
  RF_TRY(ver, get_opt_string(j, "agent_version", 64));
  m.enrollment_token = tok;
  m.host_id = host;
  m.labels = std::move(labels);
  m.agent_version = ver.value_or("");
  return m;
}

Expected<EnrollResponse> decode_enroll_response(std::string_view body) {
  RF_TRY(j, parse_object(body, "enroll response"));
  EnrollResponse m;
  RF_TRY(host, get_string(j, "host_id", 36));
  RF_TRY(cred, get_string(j, "credential", 256));
  RF_TRY(hb, get_int(j, "heartbeat_s", 1, 86400));
  RF_TRY(poll, get_int(j, "poll_s", 1, 86400));
  m.host_id = host;
  m.credential = cred;
  m.heartbeat_s = hb;
  m.poll_s = poll;
  return m;
}

Expected<DesiredState> decode_desired_state(std::string_view body) {
  RF_TRY(j, parse_object(body, "desired state"));
  DesiredState m;
  RF_TRY(etag, get_string(j, "etag", 128));
  RF_TRY(hb, get_int(j, "heartbeat_s", 1, 86400));
  RF_TRY(poll, get_int(j, "poll_s", 1, 86400));
  m.etag = etag;
  m.heartbeat_s = hb;
  m.poll_s = poll;
  auto ch = j.find("channels");
  if (ch == j.end() || !ch->is_array() || ch->size() > kMaxChannels) {
    return fail(Errc::InvalidArgument, "field 'channels' must be an array of at most 64");
  }
  for (const auto& c : *ch) {
    RF_CHECK(require_object(c, "channel entry"));
    DesiredChannel d;
    RF_TRY(name, get_string(c, "channel", 63));
    RF_TRY(version, get_int(c, "version", 1, kMaxVersion));
    RF_TRY(sha, get_string(c, "sha256", 64));
    RF_TRY(size, get_int(c, "size", 0, kMaxSize));
    RF_TRY(url, get_string(c, "url", 512));
    RF_TRY(sig, get_string(c, "signature", 128));
    RF_TRY(rb, get_opt_bool(c, "rollback"));
    auto mf = c.find("manifest");
    if (mf == c.end()) return fail(Errc::InvalidArgument, "field 'manifest' is required");
    RF_TRY(manifest, decode_manifest(*mf));
    if (!is_name(name) || !is_sha256_hex(sha)) {
      return fail(Errc::InvalidArgument, "channel entry has an invalid name or sha256");
    }
    d.channel = name;
    d.version = version;
    d.sha256 = sha;
    d.size = size;
    d.url = url;
    d.signature = sig;
    d.manifest = std::move(manifest);
    d.rollback = rb.value_or(false);
    m.channels.push_back(std::move(d));
  }
  auto kb = j.find("known_bad");
  if (kb != j.end() && !kb->is_null()) {
    if (!kb->is_array() || kb->size() > 4096) {
      return fail(Errc::InvalidArgument, "field 'known_bad' must be an array");
    }
    for (const auto& k : *kb) {
      RF_CHECK(require_object(k, "known_bad entry"));
      RF_TRY(name, get_string(k, "channel", 63));
      RF_TRY(version, get_int(k, "version", 1, kMaxVersion));
      m.known_bad.push_back({name, version});
    }
  }
  return m;
}

Expected<Heartbeat> decode_heartbeat(std::string_view body) {
  RF_TRY(j, parse_object(body, "heartbeat"));
  RF_CHECK(only_keys(j, {"boot_id", "uptime_s", "channels", "desired_etag"}));
  Heartbeat m;
  RF_TRY(boot, get_string(j, "boot_id", 64));
  RF_TRY(up, get_int(j, "uptime_s", 0, 100LL * 365 * 86400));
  m.boot_id = boot;
  m.uptime_s = up;
  auto ch = j.find("channels");
  if (ch != j.end() && !ch->is_null()) {
    if (!ch->is_object() || ch->size() > kMaxChannels) {
      return fail(Errc::InvalidArgument, "field 'channels' must be an object of at most 64");
    }
    for (auto it = ch->begin(); it != ch->end(); ++it) {
      if (!is_name(it.key())) return fail(Errc::InvalidArgument, "invalid channel name");
      RF_CHECK(require_object(*it, "channel status"));
      RF_TRY(version, get_int(*it, "version", 0, kMaxVersion));
      RF_TRY(state, get_opt_string(*it, "state", 32));
      m.channels[it.key()] = ChannelStatus{version, state.value_or("active")};
    }
  }
  return m;
}

Expected<std::vector<Report>> decode_reports(std::string_view body) {
  RF_TRY(j, parse_json(body));
  if (!j.is_array()) return fail(Errc::InvalidArgument, "reports must be a JSON array");
  if (j.size() > kMaxReportsPerBatch) {
    return fail(Errc::PayloadTooLarge, "at most 256 reports per batch");
  }
  std::vector<Report> out;
  out.reserve(j.size());
  for (const auto& o : j) {
    RF_CHECK(require_object(o, "report"));
    RF_CHECK(only_keys(o, {"kind", "time", "channel", "version", "boot_id", "detail"}));
    Report r;
    RF_TRY(kind, get_string(o, "kind", 32));
    auto k = report_kind_from(kind);
    if (!k) return fail(Errc::InvalidArgument, "unknown report kind '" + kind + "'");
    r.kind = *k;
    RF_TRY(time, get_int(o, "time", 0, kMaxTime));
    RF_TRY(boot, get_string(o, "boot_id", 64));
    RF_TRY(channel, get_opt_string(o, "channel", 63));
    RF_TRY(version, get_opt_int(o, "version", 1, kMaxVersion));
    if (channel && !is_name(*channel)) return fail(Errc::InvalidArgument, "invalid channel name");
    r.time = time;
    r.boot_id = boot;
    r.channel = channel;
    r.version = version;
    auto d = o.find("detail");
    if (d != o.end() && !d->is_null()) {
      if (!d->is_object()) return fail(Errc::InvalidArgument, "field 'detail' must be an object");
      r.detail_json = d->dump();
      if (r.detail_json.size() > kMaxDetailBytes) {
        return fail(Errc::InvalidArgument, "field 'detail' is larger than 4096 bytes");
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace ringfence::proto
