#include "agent/state/store.hpp"

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "proto/ids.hpp"

namespace ringfence::agent::state {
namespace {
using nlohmann::json;

json job_json(const proto::DesiredChannel& c) {
  proto::DesiredState wrap;
  wrap.etag = "job";
  wrap.heartbeat_s = 1;
  wrap.poll_s = 1;
  wrap.channels.push_back(c);
  return json::parse(proto::encode(wrap))["channels"][0];
}

// An integer field. nlohmann's get<int>() converts a float such as 1e300 with a plain cast
// (undefined behaviour), and an integer out of T's range silently wraps: a state file holding
// either is corrupt. Throws like json::at() does, inside decode_state's try.
template <class T>
T int_at(const json& o, const char* key) {
  const json& v = o.at(key);
  if (!v.is_number_integer()) throw std::invalid_argument(std::string(key) + " is not an integer");
  bool fits = v.is_number_unsigned() ? v.get<std::uint64_t>() <=
                                           static_cast<std::uint64_t>(std::numeric_limits<T>::max())
                                     : v.get<std::int64_t>() >= std::numeric_limits<T>::min() &&
                                           v.get<std::int64_t>() <= std::numeric_limits<T>::max();
  if (!fits) throw std::out_of_range(std::string(key) + " is out of range");
  return static_cast<T>(v.get<std::int64_t>());
}

Expected<proto::DesiredChannel> job_from(const json& j) {
  json wrap = {{"etag", "job"}, {"heartbeat_s", 1}, {"poll_s", 1}, {"channels", json::array({j})}};
  // (only the channel entry matters here; the signed header of a desired state is optional)
  auto ds = proto::decode_desired_state(wrap.dump());
  if (!ds) return tl::unexpected(ds.error());
  return ds->channels.at(0);
}

}  // namespace

bool is_valid_credential(std::string_view s) noexcept {
  if (s.empty() || s.size() > 256) return false;
  std::size_t end = s.size();
  while (end > 0 && s[end - 1] == '=') --end;  // b64token's padding, only at the end
  if (end == 0) return false;
  for (std::size_t i = 0; i < end; ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
    if (!ok) return false;
  }
  return true;
}

std::string encode(const Identity& id) {
  return json{{"host_id", id.host_id}, {"credential", id.credential}}.dump();
}

Expected<Identity> decode_identity(std::string_view text) {
  try {
    json j = json::parse(text);
    Identity id{j.at("host_id").get<std::string>(), j.at("credential").get<std::string>()};
    if (!proto::is_uuid(id.host_id)) return fail(Errc::InvalidArgument, "host_id is not a UUID");
    if (!id.credential.empty() && !is_valid_credential(id.credential)) {
      return fail(Errc::InvalidArgument,
                  "identity file holds a credential with characters or a length no server issues "
                  "(refused: it would be sent in every request's headers)");
    }
    return id;
  } catch (const std::exception& e) {
    return fail(Errc::InvalidArgument, std::string("identity file is corrupt: ") + e.what());
  }
}

std::string encode(const AgentState& s) {
  json channels = json::object();
  for (const auto& [name, c] : s.channels) {
    channels[name] = {
        {"active", c.active}, {"active_sha", c.active_sha}, {"lkg", c.lkg}, {"lkg_sha", c.lkg_sha}};
  }
  json quarantine = json::array();
  for (const auto& q : s.quarantine) {
    quarantine.push_back({{"channel", q.channel},
                          {"version", q.version},
                          {"reason", q.reason},
                          {"time_ms", q.time_ms}});
  }
  json known_bad = json::array();
  for (const auto& k : s.known_bad)
    known_bad.push_back({{"channel", k.channel}, {"version", k.version}});
  json guards = json::object();
  for (const auto& [name, g] : s.guards) {
    guards[name] = {{"version", g.version},
                    {"activated_ms", g.activated_ms},
                    {"failures", g.failures},
                    {"healthy", g.healthy}};
  }
  json out = {{"machine", to_string(s.machine)}, {"channels", channels}, {"quarantine", quarantine},
              {"known_bad", known_bad},          {"refused", s.refused}, {"guards", guards}};
  out["job"] = s.job ? job_json(*s.job) : json(nullptr);
  out["generation"] = s.generation;
  if (s.revert) {
    const auto& r = *s.revert;
    out["revert"] = {{"channel", r.channel},   {"version", r.version},
                     {"reason", r.reason},     {"quarantine", r.quarantine},
                     {"failures", r.failures}, {"time_ms", r.time_ms}};
  } else {
    out["revert"] = nullptr;
  }
  return out.dump();
}

Expected<AgentState> decode_state(std::string_view text) {
  try {
    json j = json::parse(text);
    AgentState s;
    auto m = state_from(j.at("machine").get<std::string>());
    if (!m) return fail(Errc::InvalidArgument, "unknown machine state in state file");
    s.machine = *m;
    for (const auto& [name, c] : j.at("channels").items()) {
      if (!proto::is_name(name)) return fail(Errc::InvalidArgument, "bad channel name");
      s.channels[name] = {int_at<std::int64_t>(c, "active"), c.at("active_sha").get<std::string>(),
                          int_at<std::int64_t>(c, "lkg"), c.at("lkg_sha").get<std::string>()};
    }
    for (const auto& q : j.at("quarantine")) {
      s.quarantine.push_back({q.at("channel").get<std::string>(),
                              int_at<std::int64_t>(q, "version"), q.at("reason").get<std::string>(),
                              int_at<std::int64_t>(q, "time_ms")});
    }
    for (const auto& k : j.at("known_bad")) {
      s.known_bad.push_back(
          {k.at("channel").get<std::string>(), int_at<std::int64_t>(k, "version")});
    }
    s.refused = j.at("refused").get<std::vector<std::string>>();
    for (const auto& [name, g] : j.at("guards").items()) {
      if (!proto::is_name(name)) return fail(Errc::InvalidArgument, "bad channel name");
      s.guards[name] = {int_at<std::int64_t>(g, "version"), int_at<std::int64_t>(g, "activated_ms"),
                        int_at<int>(g, "failures"), g.at("healthy").get<bool>()};
    }
    s.generation = j.value("generation", std::int64_t{0});  // absent in older state files
    if (!j.at("job").is_null()) {
      auto job = job_from(j.at("job"));
      if (!job) return tl::unexpected(job.error());
      s.job = std::move(*job);
    }
    if (!j.at("revert").is_null()) {
      const auto& r = j.at("revert");
      RevertJob rj{r.at("channel").get<std::string>(), int_at<std::int64_t>(r, "version"),
                   r.at("reason").get<std::string>(),  r.at("quarantine").get<bool>(),
                   int_at<int>(r, "failures"),         int_at<std::int64_t>(r, "time_ms")};
      if (!proto::is_name(rj.channel)) return fail(Errc::InvalidArgument, "bad channel name");
      s.revert = std::move(rj);
    }
    return s;
  } catch (const std::exception& e) {
    return fail(Errc::InvalidArgument, std::string("state file is corrupt: ") + e.what());
  }
}

std::string encode(const TrustRecord& t) {
  json out = {{"configured_root", t.configured_root}, {"root", t.root}};
  out["key_set"] = t.key_set.empty() ? json(nullptr) : json::parse(t.key_set, nullptr, false);
  return out.dump();
}

Expected<TrustRecord> decode_trust(std::string_view text) {
  try {
    json j = json::parse(text);
    TrustRecord t;
    t.configured_root = j.at("configured_root").get<std::string>();
    t.root = j.at("root").get<std::string>();
    if (!j.at("key_set").is_null()) t.key_set = j.at("key_set").dump();
    return t;
  } catch (const std::exception& e) {
    return fail(Errc::InvalidArgument, std::string("trust file is corrupt: ") + e.what());
  }
}

Expected<std::optional<TrustRecord>> load_trust(Fs& fs, const std::string& path) {
  auto text = fs.read(path);
  if (!text) {
    if (text.error().errc == Errc::NotFound) return std::optional<TrustRecord>{};
    return tl::unexpected(text.error());
  }
  auto t = decode_trust(*text);
  if (!t) return tl::unexpected(t.error());
  return std::optional<TrustRecord>(std::move(*t));
}

Expected<std::optional<Identity>> load_identity(Fs& fs, const std::string& path) {
  auto text = fs.read(path);
  if (!text) {
    if (text.error().errc == Errc::NotFound) return std::optional<Identity>{};
    return tl::unexpected(text.error());
  }
  auto id = decode_identity(*text);
  if (!id) return tl::unexpected(id.error());
  return std::optional<Identity>(std::move(*id));
}

Expected<std::optional<AgentState>> load_state(Fs& fs, const std::string& path) {
  auto text = fs.read(path);
  if (!text) {
    if (text.error().errc == Errc::NotFound) return std::optional<AgentState>{};
    return tl::unexpected(text.error());
  }
  auto s = decode_state(*text);
  if (!s) return tl::unexpected(s.error());
  return std::optional<AgentState>(std::move(*s));
}

}  // namespace ringfence::agent::state
