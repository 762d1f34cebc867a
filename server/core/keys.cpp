// Key files (keys.hpp) and the Service's key handling: reload of keyset.json, the keys behind
// GET /v1/keys, re-signing content when the content key changes.
#include "server/core/keys.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "proto/try.hpp"
#include "server/core/impl.hpp"

namespace ringfence::server::core {
namespace fs = std::filesystem;

namespace {
std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

std::string key_pair_text(const proto::KeyPair& kp) {
  return proto::base64_encode(
             std::string_view(reinterpret_cast<const char*>(kp.secret_key.data()), 64)) +
         "\n";
}

Expected<proto::KeyPair> read_key_pair(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return fail(Errc::NotFound, "no key file " + path);
  auto sk = proto::parse_secret_key(read_all(path));
  if (!sk) return fail(Errc::InvalidArgument, path + ": " + sk.error().message);
  proto::KeyPair kp;
  kp.secret_key = *sk;
  std::copy(sk->begin() + 32, sk->end(), kp.public_key.begin());  // libsodium: sk = seed || pk
  return kp;
}

Status write_private_file(const std::string& path, const std::string& content, unsigned mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return fail(Errc::Unavailable, "cannot write " + path);
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(Errc::Unavailable, "cannot write " + path);
  }
  return {};
}

std::pair<std::int64_t, std::int64_t> file_stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {0, 0};
  return {static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
          static_cast<std::int64_t>(st.st_size)};
}

Expected<ServerKeys> load_server_keys(const std::string& data_dir, const proto::KeyPair& signing,
                                      std::int64_t now_s) {
  ServerKeys k;
  auto first = proto::key_id(signing.public_key);
  k.online[first] = signing;
  k.content_id = k.desired_id = first;
  if (data_dir.empty()) return k;
  std::error_code ec;
  if (fs::is_directory(data_dir + "/keys", ec)) {
    for (const auto& e : fs::directory_iterator(data_dir + "/keys", ec)) {
      if (e.path().extension() != ".key") continue;
      RF_TRY(kp, read_key_pair(e.path().string()));
      k.online[proto::key_id(kp.public_key)] = kp;
    }
  }
  auto set_path = data_dir + "/keyset.json";
  if (!fs::exists(set_path, ec)) return k;
  auto root_text = read_all(data_dir + "/root.pub");
  auto root = proto::parse_public_key(root_text);
  if (!root) {
    return fail(Errc::InvalidArgument,
                data_dir + "/keyset.json needs the root public key in " + data_dir + "/root.pub");
  }
  auto text = read_all(set_path);
  auto set = proto::decode_key_set(text);
  if (!set) return fail(Errc::InvalidArgument, set_path + ": " + set.error().message);
  // The same rule as an agent's, from an empty trust pinned to root.pub (expiry aside).
  proto::Trust pinned{*root, proto::KeySet{}};
  auto accepted = proto::accept_key_set(pinned, *set, 0);
  if (!accepted) return fail(Errc::InvalidArgument, set_path + ": " + accepted.error().message);
  if (set->set.root != *root) {
    return fail(Errc::InvalidArgument, set_path + " names a root other than root.pub");
  }
  auto pick = [&](proto::KeyRole role) -> std::string {
    std::string chosen;
    for (const auto& e : set->set.keys) {
      if (e.role != role || !k.online.count(e.id)) continue;
      if (!proto::trusted_key(set->set, e.id, role, now_s)) continue;
      chosen = e.id;  // the last listed wins: the newest key
    }
    return chosen;
  };
  auto content = pick(proto::KeyRole::Content);
  auto desired = pick(proto::KeyRole::Desired);
  if (content.empty() || desired.empty()) {
    return fail(Errc::InvalidArgument,
                set_path + " (v" + std::to_string(set->set.version) + ") names no trusted " +
                    (content.empty() ? "content" : "desired") +
                    " key whose secret this server holds (in signing.key or keys/)");
  }
  k.content_id = content;
  k.desired_id = desired;
  k.root = *root;
  k.key_set_json = proto::encode(*set);
  k.key_set = std::move(*set);
  return k;
}

// ---------------------------------------------------------------- Service

void Service::Impl::install_keys(ServerKeys k) {
  bool content_changed = k.content_id != keys.content_id;
  bool desired_changed = k.desired_id != keys.desired_id || k.version() != keys.version();
  keys = std::move(k);
  key_stamp = file_stamp(opt.data_dir + "/keyset.json");
  if (content_changed) resign_content();
  if (content_changed || desired_changed) {
    ++desired_generation;  // every host's next answer is signed anew and carries the key set
    notify_waiters();
  }
}

void Service::Impl::resign_content() {
  auto now = now_s();
  for (auto& [name, ch] : channels) {
    ch.downgrades.clear();  // signed again on first use, by the new key
    for (auto& [v, r] : ch.releases) {
      if (r.state == ReleaseState::Quarantined || r.state == ReleaseState::Superseded) continue;
      if (r.key_id == keys.content_id) continue;
      auto saved = r;
      if (r.manifest.expires - now <= opt.manifest_ttl_s / 2) {
        r.manifest.expires = now + opt.manifest_ttl_s;
      }
      r.signature = proto::sign(keys.content().secret_key, proto::canonical_bytes(r.manifest));
      r.key_id = keys.content_id;
      if (!persist_release(r)) r = saved;  // retried by refresh_manifests
    }
  }
}

void Service::Impl::check_key_files() {
  auto now_ms = clock.now_ms();
  if (opt.data_dir.empty() || now_ms < next_key_check_ms) return;
  next_key_check_ms = now_ms + 2000;
  // An expired key set freezes every agent (they keep their content and report
  // stale_desired_state): warn well before, in the log and the event stream, every 6 hours.
  if (keys.key_set && now_ms >= next_expiry_warning_ms) {
    auto left = keys.key_set->set.expires - now_ms / 1000;
    if (left < kKeySetWarnS) {
      next_expiry_warning_ms = now_ms + 6 * 3600 * 1000;
      auto msg = left > 0 ? "key set v" + std::to_string(keys.version()) + " expires in " +
                                std::to_string(left / 3600) +
                                " h: renew it (ringfence-server keys renew) before agents freeze"
                          : "key set v" + std::to_string(keys.version()) +
                                " has EXPIRED: agents keep their content and take nothing new "
                                "until it is renewed (ringfence-server keys renew)";
      spdlog::warn("{}", msg);
      (void)event("keys", "key_set_expiring", std::nullopt,
                  {{"version", keys.version()},
                   {"expires", keys.key_set->set.expires},
                   {"seconds_left", left},
                   {"message", msg}});
    }
  }
  if (file_stamp(opt.data_dir + "/keyset.json") == key_stamp) return;
  auto st = reload_keys_locked("keys:file");
  if (!st) {
    key_stamp = file_stamp(opt.data_dir + "/keyset.json");  // logged once, not every 2 s
  }
}

Status Service::Impl::reload_keys_locked(const std::string& actor) {
  auto loaded = load_server_keys(opt.data_dir, key, now_s());
  if (!loaded) {
    (void)event(actor, "key_set_refused", std::nullopt, {{"reason", loaded.error().message}});
    return tl::unexpected(loaded.error());
  }
  if (loaded->version() < keys.version()) {
    auto msg = "keyset.json holds v" + std::to_string(loaded->version()) + ", older than the v" +
               std::to_string(keys.version()) + " in use";
    (void)event(actor, "key_set_refused", std::nullopt, {{"reason", msg}});
    return fail(Errc::Conflict, msg, "key_set_older");
  }
  json data = {{"version", loaded->version()},
               {"content_key_id", loaded->content_id},
               {"desired_key_id", loaded->desired_id}};
  install_keys(std::move(*loaded));
  (void)event(actor, "key_set_loaded", std::nullopt, data);
  return {};
}

json Service::Impl::keys_json() const {
  json out = {
      {"version", keys.version()},
      {"content_key_id", keys.content_id},
      {"desired_key_id", keys.desired_id},
      {"root", keys.root ? json(proto::encode_public_key(*keys.root)) : json(nullptr)},
      {"key_set", keys.key_set_json.empty() ? json(nullptr) : json::parse(keys.key_set_json)}};
  if (keys.key_set) {
    out["expires"] = keys.key_set->set.expires;
  }
  return out;
}

json Service::keys() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  return m.keys_json();
}

Expected<json> Service::reload_keys(const Principal& by) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  RF_CHECK(m.reload_keys_locked(by.name));
  return m.keys_json();
}

}  // namespace ringfence::server::core
