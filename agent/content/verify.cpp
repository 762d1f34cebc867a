#include "agent/content/verify.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringfence::agent::content {
namespace {

tl::unexpected<Error> refuse(std::string code, std::string message) {
  return fail(Errc::Unprocessable, std::move(message), std::move(code));
}

bool contains(const VersionSet* set, const std::string& ch, std::int64_t v) {
  return set != nullptr && set->count({ch, v}) > 0;
}

}  // namespace

Status verify_entry(const proto::DesiredChannel& e, const VerifyContext& ctx) {
  const auto& m = e.manifest;
  if (m.channel != e.channel || m.version != e.version || m.sha256 != e.sha256 ||
      m.size != e.size) {
    return refuse("manifest", "manifest does not match the desired entry (channel " + m.channel +
                                  " v" + std::to_string(m.version) + " vs " + e.channel + " v" +
                                  std::to_string(e.version) + ")");
  }
  static const proto::KeySet kNone;
  const auto& keys = ctx.keys ? *ctx.keys : kNone;
  auto bytes = proto::canonical_bytes(m);
  if (!e.key_id.empty()) {
    auto pk = proto::trusted_key(keys, e.key_id, proto::KeyRole::Content, ctx.now_s);
    if (!pk) {
      return refuse(std::string(pk.error().code_or_default()),
                    "manifest signed by an untrusted key: " + pk.error().message);
    }
    if (!proto::verify(*pk, bytes, e.signature)) {
      return refuse("signature", "manifest signature does not verify with key " + e.key_id);
    }
  } else {
    bool ok = false;
    for (const auto& k : keys.keys) {
      if (k.role != proto::KeyRole::Content) continue;
      if (!proto::trusted_key(keys, k.id, k.role, ctx.now_s)) continue;
      if (proto::verify(k.public_key, bytes, e.signature)) ok = true;
    }
    if (!ok) {
      return refuse("signature", "manifest signature does not verify with any trusted content key");
    }
  }
  if (m.expires <= ctx.now_s) {
    return refuse("expired", "manifest expired at " + std::to_string(m.expires) + " (now " +
                                 std::to_string(ctx.now_s) + ")");
  }
  if (contains(ctx.known_bad, e.channel, e.version)) {
    return refuse("known_bad",
                  "version " + std::to_string(e.version) + " is on the channel's known-bad list");
  }
  if (contains(ctx.quarantined, e.channel, e.version)) {
    return refuse("quarantined", "version " + std::to_string(e.version) +
                                     " is quarantined on this host after a crash loop");
  }
  // A downgrade needs the server's signed authorisation (the manifest's rollback_from, covered
  // by the signature checked above) reaching at least the version this host runs; the unsigned
  // "rollback" hint of the desired entry authorises nothing.
  if (ctx.active_version && e.version < *ctx.active_version &&
      !(m.rollback_from && *ctx.active_version <= *m.rollback_from)) {
    return refuse("downgrade", "refusing downgrade from v" + std::to_string(*ctx.active_version) +
                                   " to v" + std::to_string(e.version) +
                                   (m.rollback_from ? " (signed rollback covers up to v" +
                                                          std::to_string(*m.rollback_from) + ")"
                                                    : " without a signed rollback authorisation"));
  }
  if (ctx.max_size > 0 && e.size > ctx.max_size) {
    return refuse("too_large", "content of " + std::to_string(e.size) +
                                   " bytes exceeds the agent's limit of " +
                                   std::to_string(ctx.max_size));
  }
  return {};
}

Expected<std::pair<std::string, std::int64_t>> hash_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(Errc::Unavailable, "open " + path + ": " + std::strerror(errno));
  proto::Sha256 h;
  std::int64_t total = 0;
  char buf[16384];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return fail(Errc::Unavailable, "read " + path + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    h.update(std::string_view(buf, static_cast<std::size_t>(n)));
    total += n;
  }
  ::close(fd);
  return std::make_pair(h.final_hex(), total);
}

Status verify_blob(const std::string& path, const proto::Manifest& m) {
  auto h = hash_file(path);
  if (!h) return tl::unexpected(h.error());
  if (h->second != m.size) {
    return refuse("size", "downloaded " + std::to_string(h->second) + " bytes, manifest says " +
                              std::to_string(m.size));
  }
  if (h->first != m.sha256) {
    return refuse("sha256", "sha256 mismatch: manifest " + m.sha256 + ", content " + h->first);
  }
  return {};
}

}  // namespace ringfence::agent::content
