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
  RF_CHECK(only_keys(
      j, {"channel", "version", "sha256", "size", "created", "expires", "rollback_from"}));
  Manifest m;
  RF_TRY(channel, get_string(j, "channel", 63));
  RF_TRY(version, get_int(j, "version", 1, kMaxVersion));
  RF_TRY(sha, get_string(j, "sha256", 64));
  RF_TRY(size, get_int(j, "size", 0, kMaxSize));
  RF_TRY(created, get_int(j, "created", 0, kMaxTime));
  RF_TRY(expires, get_int(j, "expires", 0, kMaxTime));
  RF_TRY(rollback_from, get_opt_int(j, "rollback_from", 1, kMaxVersion));
  if (rollback_from && *rollback_from <= version) {
    return fail(Errc::InvalidArgument, "manifest rollback_from must be above its version");
  }
  if (!is_name(channel) || !is_sha256_hex(sha)) {
    return fail(Errc::InvalidArgument, "manifest has an invalid channel or sha256");
  }
  m.channel = channel;
  m.version = version;
  m.sha256 = sha;
  m.size = size;
  m.created = created;
  m.expires = expires;
  m.rollback_from = rollback_from;
  return m;
}

json manifest_json(const Manifest& m) {
  json j = {{"channel", m.channel}, {"version", m.version}, {"sha256", m.sha256},
            {"size", m.size},       {"created", m.created}, {"expires", m.expires}};
  if (m.rollback_from) j["rollback_from"] = *m.rollback_from;
  return j;
}

Expected<json> parse_object(std::string_view body, std::string_view what) {
  RF_TRY(j, parse_json(body));
  RF_CHECK(require_object(j, what));
  return j;
}
}  // namespace

std::string_view to_string(ReportKind k) noexcept {
  switch (k) {
    case ReportKind::Applied:
      return "applied";
    case ReportKind::ApplyFailed:
      return "apply_failed";
    case ReportKind::Crash:
      return "crash";
    case ReportKind::LocalRollback:
      return "local_rollback";
    case ReportKind::StaleDesiredState:
      return "stale_desired_state";
    case ReportKind::AgentRestart:
      return "agent_restart";
  }
  return "applied";
}

std::optional<ReportKind> report_kind_from(std::string_view s) noexcept {
  if (s == "applied") return ReportKind::Applied;
  if (s == "apply_failed") return ReportKind::ApplyFailed;
  if (s == "crash") return ReportKind::Crash;
  if (s == "local_rollback") return ReportKind::LocalRollback;
  if (s == "stale_desired_state") return ReportKind::StaleDesiredState;
  if (s == "agent_restart") return ReportKind::AgentRestart;
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

namespace {
json channel_json(const DesiredChannel& c) {
  json o = {
      {"channel", c.channel},    {"version", c.version}, {"sha256", c.sha256},
      {"size", c.size},          {"url", c.url},         {"manifest", manifest_json(c.manifest)},
      {"signature", c.signature}};
  if (!c.key_id.empty()) o["key_id"] = c.key_id;
  if (c.rollback) o["rollback"] = true;
  return o;
}
}  // namespace

std::string canonical_channels(const std::vector<DesiredChannel>& channels) {
  json chans = json::array();
  for (const auto& c : channels) chans.push_back(channel_json(c));
  return chans.dump();
}

std::string canonical_known_bad(const std::vector<KnownBad>& known_bad) {
  json bad = json::array();
  for (const auto& k : known_bad) bad.push_back({{"channel", k.channel}, {"version", k.version}});
  return bad.dump();
}

std::string canonical_desired_bytes(std::string_view channels_json, std::string_view known_bad_json,
                                    const DesiredHeader& h) {
  std::string out;
  out.reserve(channels_json.size() + known_bad_json.size() + 256);
  out += "{\"channels\":";
  out += channels_json;
  out += ",\"expires\":" + std::to_string(h.expires);
  out += ",\"generation\":" + std::to_string(h.generation);
  out += ",\"heartbeat_s\":" + std::to_string(h.heartbeat_s);
  out += ",\"host_id\":" + json(std::string(h.host_id)).dump();
  out += ",\"issued\":" + std::to_string(h.issued);
  out += ",\"key_set_version\":" + std::to_string(h.key_set_version);
  out += ",\"known_bad\":";
  out += known_bad_json;
  out += ",\"poll_s\":" + std::to_string(h.poll_s);
  out += '}';
  return out;
}

std::string canonical_bytes(const DesiredState& ds) {
  return canonical_desired_bytes(canonical_channels(ds.channels), canonical_known_bad(ds.known_bad),
                                 DesiredHeader{ds.host_id, ds.generation, ds.issued, ds.expires,
                                               ds.heartbeat_s, ds.poll_s, ds.key_set_version});
}

std::string encode(const DesiredState& m) {
  json chans = json::array();
  for (const auto& c : m.channels) chans.push_back(channel_json(c));
  json bad = json::array();
  for (const auto& k : m.known_bad) bad.push_back({{"channel", k.channel}, {"version", k.version}});
  json out = {{"etag", m.etag},
              {"host_id", m.host_id},
              {"generation", m.generation},
              {"issued", m.issued},
              {"expires", m.expires},
              {"channels", std::move(chans)},
              {"known_bad", std::move(bad)},
              {"heartbeat_s", m.heartbeat_s},
              {"poll_s", m.poll_s},
              {"key_set_version", m.key_set_version},
              {"key_id", m.key_id},
              {"signature", m.signature}};
  if (m.key_set) out["key_set"] = json::parse(*m.key_set, nullptr, false);
  return out.dump();
}

bool is_consumer_version(std::string_view s) noexcept {
  if (s.empty() || s.size() > kMaxConsumerVersionBytes) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(s.front())) return false;
  for (char c : s) {
    if (!alnum(c) && c != '.' && c != '_' && c != '+' && c != '-') return false;
  }
  return true;
}

std::string encode(const Heartbeat& m) {
  json chans = json::object();
  for (const auto& [name, st] : m.channels) {
    chans[name] = {{"version", st.version}, {"state", st.state}};
  }
  json out = {{"boot_id", m.boot_id}, {"uptime_s", m.uptime_s}, {"channels", std::move(chans)}};
  if (!m.consumers.empty()) out["consumers"] = m.consumers;
  return out.dump();
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
  // The signed header is optional here (an old server sends none): the decoder checks shape,
  // proto/keyset.hpp's verify_desired_state refuses an answer without a valid signature.
  RF_TRY(host, get_opt_string(j, "host_id", 36));
  RF_TRY(generation, get_opt_int(j, "generation", 0, kMaxTime * 1000));
  RF_TRY(issued, get_opt_int(j, "issued", 0, kMaxTime));
  RF_TRY(expires, get_opt_int(j, "expires", 0, kMaxTime));
  RF_TRY(hb, get_int(j, "heartbeat_s", 1, 86400));
  RF_TRY(poll, get_int(j, "poll_s", 1, 86400));
  RF_TRY(ksv, get_opt_int(j, "key_set_version", 0, kMaxVersion));
  RF_TRY(key_id, get_opt_string(j, "key_id", 64));
  RF_TRY(signature, get_opt_string(j, "signature", 128));
  if (host && !host->empty() && !is_uuid(*host)) {
    return fail(Errc::InvalidArgument, "host_id must be a lower-case UUID");
  }
  m.etag = etag;
  m.host_id = host.value_or("");
  m.generation = generation.value_or(0);
  m.issued = issued.value_or(0);
  m.expires = expires.value_or(0);
  m.heartbeat_s = hb;
  m.poll_s = poll;
  m.key_set_version = ksv.value_or(0);
  m.key_id = key_id.value_or("");
  m.signature = signature.value_or("");
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
    RF_TRY(kid, get_opt_string(c, "key_id", 64));
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
    d.key_id = kid.value_or("");
    d.manifest = std::move(manifest);
    d.rollback = rb.value_or(false);
    m.channels.push_back(std::move(d));
  }
  auto kb = j.find("known_bad");
  if (kb != j.end() && !kb->is_null()) {
    if (!kb->is_array() || kb->size() > kMaxKnownBad) {
      return fail(Errc::InvalidArgument, "field 'known_bad' must be an array of at most 4096");
    }
    for (const auto& k : *kb) {
      RF_CHECK(require_object(k, "known_bad entry"));
      RF_TRY(name, get_string(k, "channel", 63));
      RF_TRY(version, get_int(k, "version", 1, kMaxVersion));
      m.known_bad.push_back({name, version});
    }
  }
  auto ks = j.find("key_set");
  if (ks != j.end() && !ks->is_null()) {
    if (!ks->is_object()) return fail(Errc::InvalidArgument, "field 'key_set' must be an object");
    auto text = ks->dump();
    if (text.size() > kMaxKeySetBytes) {
      return fail(Errc::InvalidArgument, "field 'key_set' is larger than 16 KiB");
    }
    m.key_set = std::move(text);
  }
  return m;
}

namespace {
// The heartbeat is the one body every host sends every few seconds, so it is decoded straight
// from the parser's events (nlohmann's SAX interface) instead of through a DOM: no tree of maps
// is built and thrown away per request. The rules are exactly decode_heartbeat's contract (the
// json_fields checks on each value; tests/proto compares it with a DOM decoder on hostile
// input): when a key repeats, its last value counts, as in a DOM; a syntax error outranks
// everything, then nesting deeper than 32, an unknown field, then the fields in order.
class HeartbeatReader final : public nlohmann::json_sax<json> {
 public:
  static constexpr int kMaxDepth = 32;  // as parse_json

  Expected<Heartbeat> finish(bool parsed) {
    if (too_deep_) {
      return fail(Errc::InvalidArgument, "JSON nested deeper than " + std::to_string(kMaxDepth),
                  "invalid_json");
    }
    if (!parsed) return fail(Errc::InvalidArgument, "body is not valid JSON", "invalid_json");
    if (!root_object_) return fail(Errc::InvalidArgument, "heartbeat must be a JSON object");
    if (unknown_) return tl::unexpected(*unknown_);
    Heartbeat m;
    RF_TRY(boot, string_field(boot_ ? &*boot_ : nullptr, "boot_id", 64));
    RF_TRY(up, int_field(uptime_ ? &*uptime_ : nullptr, "uptime_s", 0, 100LL * 365 * 86400));
    m.boot_id = std::move(boot);
    m.uptime_s = up;
    if (channels_kind_ == Kind::Wrong || channels_.size() > kMaxChannels) {
      return fail(Errc::InvalidArgument, "field 'channels' must be an object of at most 64");
    }
    for (auto& [name, c] : channels_) {  // name order, as a DOM walk
      if (!is_name(name)) return fail(Errc::InvalidArgument, "invalid channel name");
      if (!c.is_object) return fail(Errc::InvalidArgument, "channel status must be a JSON object");
      RF_TRY(version, int_field(c.version ? &*c.version : nullptr, "version", 0, kMaxVersion));
      RF_TRY(state, opt_string_field(c.state ? &*c.state : nullptr, "state", 32));
      m.channels[name] = ChannelStatus{version, state.value_or("active")};
    }
    if (consumers_kind_ == Kind::Wrong || consumers_.size() > kMaxConsumers) {
      return fail(Errc::InvalidArgument, "field 'consumers' must be an object of at most 8");
    }
    for (auto& [name, v] : consumers_) {
      if (!is_name(name)) return fail(Errc::InvalidArgument, "invalid consumer name");
      if (!v.is_string() || !is_consumer_version(v.get_ref<const std::string&>())) {
        return fail(Errc::InvalidArgument,
                    "a consumer version is 1..64 characters of [A-Za-z0-9._+-]");
      }
      m.consumers[name] = v.get<std::string>();
    }
    return m;
  }

  bool null() override { return value(json()); }
  bool boolean(bool v) override { return value(json(v)); }
  bool number_integer(number_integer_t v) override { return value(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return value(json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return value(json(v)); }
  bool string(string_t& v) override { return value(json(std::move(v))); }
  bool binary(binary_t&) override { return value(json()); }  // not produced by JSON text

  bool start_object(std::size_t) override { return open(true); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    if (skip_ || depth_ > 3) return true;
    if (depth_ == 1) {
      key1_ = k;
      if (k != "boot_id" && k != "uptime_s" && k != "channels" && k != "desired_etag" &&
          k != "consumers" && !unknown_) {
        unknown_ = Error{Errc::InvalidArgument, "unknown field '" + k.substr(0, 64) + "'",
                         "unknown_field"};
      }
    } else if (depth_ == 2 && consumers_open_) {
      key2_ = k;
      consumers_[k] = json();  // a repeated consumer: the last one counts
    } else if (depth_ == 2) {
      auto& c = channels_[k];  // a repeated channel: the last one counts
      c = Channel{};
      chan_ = &c;
    } else {
      key3_ = k;
    }
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  enum class Kind { None, Object, Wrong };
  struct Channel {
    bool is_object = false;
    std::optional<json> version, state;
  };

  // A scalar at the current position.
  bool value(json v) {
    if (skip_) return true;
    if (depth_ == 1 && in_root_) {
      field1(std::move(v));
    } else if (depth_ == 2 && consumers_open_) {
      consumers_[key2_] = std::move(v);
    } else if (depth_ == 2 && channels_open_) {
      chan_->is_object = false;  // "c": 1
    } else if (depth_ == 3 && status_open_) {
      field3(std::move(v));
    }
    return true;
  }
  void field1(json v) {
    if (key1_ == "boot_id") boot_ = std::move(v);
    if (key1_ == "uptime_s") uptime_ = std::move(v);
    if (key1_ == "channels") {
      channels_.clear();
      channels_kind_ = v.is_null() ? Kind::None : Kind::Wrong;
    }
    if (key1_ == "consumers") {
      consumers_.clear();
      consumers_kind_ = v.is_null() ? Kind::None : Kind::Wrong;
    }
  }
  void field3(json v) {
    if (key3_ == "version") chan_->version = std::move(v);
    if (key3_ == "state") chan_->state = std::move(v);
  }

  bool open(bool object) {
    ++depth_;
    if (depth_ > kMaxDepth) {
      too_deep_ = true;
      return false;
    }
    if (skip_) return true;
    if (depth_ == 1) {
      root_object_ = object;
      in_root_ = object;
      if (!object) skip_ = 1;
    } else if (depth_ == 2 && in_root_) {
      // The value of a top-level field.
      if (key1_ == "channels") {
        channels_.clear();
        channels_kind_ = object ? Kind::Object : Kind::Wrong;
        channels_open_ = object;
        if (!object) skip_ = depth_;
      } else if (key1_ == "consumers") {
        consumers_.clear();
        consumers_kind_ = object ? Kind::Object : Kind::Wrong;
        consumers_open_ = object;
        if (!object) skip_ = depth_;
      } else {
        // A container where a scalar belongs (or desired_etag's value, which is not read).
        json marker = object ? json::object() : json::array();
        field1(std::move(marker));
        skip_ = depth_;
      }
    } else if (depth_ == 3 && consumers_open_) {
      // A container where a version string belongs: refused in finish().
      consumers_[key2_] = object ? json::object() : json::array();
      skip_ = depth_;
    } else if (depth_ == 3 && channels_open_) {
      chan_->is_object = object;
      status_open_ = object;
      if (!object) skip_ = depth_;
    } else if (depth_ == 4 && status_open_) {
      field3(object ? json::object() : json::array());
      skip_ = depth_;
    }
    return true;
  }
  bool close() {
    if (skip_ == depth_) skip_ = 0;
    if (!skip_) {
      if (depth_ == 3) status_open_ = false;
      if (depth_ == 2) channels_open_ = consumers_open_ = false;
      if (depth_ == 1) in_root_ = false;
    }
    --depth_;
    return true;
  }

  int depth_ = 0;
  int skip_ = 0;  // > 0: inside a container opened at this depth whose contents are not read
  bool too_deep_ = false, root_object_ = false, in_root_ = false;
  bool channels_open_ = false, status_open_ = false, consumers_open_ = false;
  std::string key1_, key2_, key3_;
  std::optional<Error> unknown_;
  std::optional<json> boot_, uptime_;
  Kind channels_kind_ = Kind::None;
  std::map<std::string, Channel> channels_;
  Channel* chan_ = nullptr;
  Kind consumers_kind_ = Kind::None;
  std::map<std::string, json> consumers_;
};
}  // namespace

Expected<Heartbeat> decode_heartbeat(std::string_view body) {
  HeartbeatReader r;
  bool ok = json::sax_parse(body.begin(), body.end(), &r, json::input_format_t::json,
                            /*strict=*/true, /*ignore_comments=*/false);
  return r.finish(ok);
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
