#include "proto/keyset.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "proto/json_fields.hpp"
#include "proto/try.hpp"

namespace ringfence::proto {
namespace {
using nlohmann::json;

constexpr std::int64_t kMaxTime = 100'000'000'000LL;  // unix seconds, far future
constexpr std::int64_t kMaxVersion = 1'000'000'000'000LL;

tl::unexpected<Error> refuse(std::string code, std::string message) {
  return fail(Errc::Unprocessable, std::move(message), std::move(code));
}

bool is_key_id(std::string_view s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

json signed_json(const KeySet& s) {
  json keys = json::array();
  for (const auto& k : s.keys) {
    keys.push_back({{"id", k.id},
                    {"public", encode_public_key(k.public_key)},
                    {"role", to_string(k.role)},
                    {"not_after", k.not_after}});
  }
  return {{"version", s.version},
          {"expires", s.expires},
          {"root", encode_public_key(s.root)},
          {"keys", std::move(keys)},
          {"revoked", s.revoked}};
}

bool signed_by(const SignedKeySet& c, const PublicKey& pk, const std::string& bytes) {
  auto id = key_id(pk);
  for (const auto& sig : c.signatures) {
    if (sig.key_id == id && verify(pk, bytes, sig.signature)) return true;
  }
  return false;
}
}  // namespace

std::string_view to_string(KeyRole r) noexcept {
  return r == KeyRole::Content ? "content" : "desired";
}

std::string key_id(const PublicKey& pk) {
  return sha256_hex(std::string_view(reinterpret_cast<const char*>(pk.data()), pk.size()))
      .substr(0, 16);
}

std::string encode_public_key(const PublicKey& pk) {
  return base64_encode(std::string_view(reinterpret_cast<const char*>(pk.data()), pk.size()));
}

std::string canonical_bytes(const KeySet& s) { return signed_json(s).dump(); }

SignedKeySet sign_key_set(KeySet set, const std::vector<SecretKey>& signers) {
  SignedKeySet out;
  auto bytes = canonical_bytes(set);
  for (const auto& sk : signers) {
    PublicKey pk;
    std::copy(sk.begin() + 32, sk.end(), pk.begin());  // libsodium: sk = seed || pk
    out.signatures.push_back({key_id(pk), sign(sk, bytes)});
  }
  out.set = std::move(set);
  return out;
}

std::string encode(const SignedKeySet& s) {
  json sigs = json::array();
  for (const auto& g : s.signatures)
    sigs.push_back({{"key_id", g.key_id}, {"signature", g.signature}});
  return json{{"signed", signed_json(s.set)}, {"signatures", std::move(sigs)}}.dump();
}

Expected<SignedKeySet> decode_key_set(std::string_view text) {
  if (text.size() > kMaxKeySetBytes) {
    return fail(Errc::InvalidArgument, "key set is larger than 16 KiB");
  }
  RF_TRY(j, parse_json(text));
  RF_CHECK(require_object(j, "key set"));
  RF_CHECK(only_keys(j, {"signed", "signatures"}));
  auto sj = j.find("signed");
  if (sj == j.end()) return fail(Errc::InvalidArgument, "field 'signed' is required");
  RF_CHECK(require_object(*sj, "signed"));
  RF_CHECK(only_keys(*sj, {"version", "expires", "root", "keys", "revoked"}));
  SignedKeySet out;
  auto& s = out.set;
  RF_TRY(version, get_int(*sj, "version", 1, kMaxVersion));
  RF_TRY(expires, get_int(*sj, "expires", 1, kMaxTime));
  RF_TRY(root_text, get_string(*sj, "root", 64));
  RF_TRY(root, parse_public_key(root_text));
  s.version = version;
  s.expires = expires;
  s.root = root;
  auto keys = sj->find("keys");
  if (keys == sj->end() || !keys->is_array() || keys->size() > kMaxKeys) {
    return fail(Errc::InvalidArgument, "field 'keys' must be an array of at most 32");
  }
  for (const auto& k : *keys) {
    RF_CHECK(require_object(k, "key"));
    RF_CHECK(only_keys(k, {"id", "public", "role", "not_after"}));
    RF_TRY(id, get_string(k, "id", 16));
    RF_TRY(pub_text, get_string(k, "public", 64));
    RF_TRY(role_text, get_string(k, "role", 16));
    RF_TRY(not_after, get_int(k, "not_after", 0, kMaxTime));
    RF_TRY(pub, parse_public_key(pub_text));
    if (id != key_id(pub)) {
      return fail(Errc::InvalidArgument,
                  "key id '" + id.substr(0, 16) + "' does not match its key");
    }
    if (role_text != "content" && role_text != "desired") {
      return fail(Errc::InvalidArgument, "key role must be 'content' or 'desired'");
    }
    KeyEntry e{id, pub, role_text == "content" ? KeyRole::Content : KeyRole::Desired, not_after};
    for (const auto& other : s.keys) {
      if (other.id == e.id && other.role == e.role) {
        return fail(Errc::InvalidArgument, "key " + id + " is listed twice for one role");
      }
    }
    s.keys.push_back(std::move(e));
  }
  auto revoked = sj->find("revoked");
  if (revoked != sj->end() && !revoked->is_null()) {
    if (!revoked->is_array() || revoked->size() > kMaxRevoked) {
      return fail(Errc::InvalidArgument, "field 'revoked' must be an array of at most 256");
    }
    for (const auto& r : *revoked) {
      if (!r.is_string() || !is_key_id(r.get_ref<const std::string&>())) {
        return fail(Errc::InvalidArgument, "a revoked key id is 16 lower-case hex digits");
      }
      s.revoked.push_back(r.get<std::string>());
    }
  }
  auto sigs = j.find("signatures");
  if (sigs == j.end() || !sigs->is_array() || sigs->empty() || sigs->size() > 4) {
    return fail(Errc::InvalidArgument, "field 'signatures' must be an array of 1 to 4");
  }
  for (const auto& g : *sigs) {
    RF_CHECK(require_object(g, "signature"));
    RF_CHECK(only_keys(g, {"key_id", "signature"}));
    RF_TRY(kid, get_string(g, "key_id", 16));
    RF_TRY(sig, get_string(g, "signature", 128));
    out.signatures.push_back({kid, sig});
  }
  return out;
}

KeySet implicit_key_set(const PublicKey& pk) {
  KeySet s;
  auto id = key_id(pk);
  s.keys.push_back({id, pk, KeyRole::Content, 0});
  s.keys.push_back({id, pk, KeyRole::Desired, 0});
  return s;
}

Expected<Trust> accept_key_set(const Trust& current, const SignedKeySet& c, std::int64_t now_s) {
  if (!current.root) {
    return refuse("key_set_no_root", "no root key is pinned (--root-key): key set v" +
                                         std::to_string(c.set.version) + " cannot be checked");
  }
  if (c.set.version <= current.keys.version) {
    return refuse("key_set_replayed", "key set v" + std::to_string(c.set.version) +
                                          " is not newer than v" +
                                          std::to_string(current.keys.version));
  }
  auto bytes = canonical_bytes(c.set);
  if (!signed_by(c, *current.root, bytes)) {
    return refuse("key_set_signature", "key set v" + std::to_string(c.set.version) +
                                           " is not signed by the pinned root key " +
                                           key_id(*current.root));
  }
  bool rotates = c.set.root != *current.root;
  if (rotates && !signed_by(c, c.set.root, bytes)) {
    return refuse("key_set_signature", "key set v" + std::to_string(c.set.version) +
                                           " names a new root " + key_id(c.set.root) +
                                           " that did not sign it");
  }
  if (c.set.expires <= now_s) {
    return refuse("key_set_expired", "key set v" + std::to_string(c.set.version) + " expired at " +
                                         std::to_string(c.set.expires) + " (now " +
                                         std::to_string(now_s) + ")");
  }
  return Trust{c.set.root, c.set};
}

Expected<PublicKey> trusted_key(const KeySet& keys, std::string_view id, KeyRole role,
                                std::int64_t now_s) {
  std::string name(id.substr(0, 16));
  if (std::find(keys.revoked.begin(), keys.revoked.end(), id) != keys.revoked.end()) {
    return refuse("revoked_key",
                  "key " + name + " is revoked (key set v" + std::to_string(keys.version) + ")");
  }
  if (keys.expires != 0 && keys.expires <= now_s) {
    return refuse("key_expired", "key set v" + std::to_string(keys.version) + " expired at " +
                                     std::to_string(keys.expires));
  }
  bool listed = false;
  for (const auto& k : keys.keys) {
    if (k.id != id) continue;
    listed = true;
    if (k.role != role) continue;
    if (k.not_after != 0 && k.not_after <= now_s) {
      return refuse("key_expired",
                    "key " + name + " is not trusted after " + std::to_string(k.not_after));
    }
    return k.public_key;
  }
  if (listed) {
    return refuse("key_role", "key " + name + " may not sign " + std::string(to_string(role)) +
                                  (role == KeyRole::Desired ? " states" : ""));
  }
  return refuse("unknown_key", "key " + (name.empty() ? std::string("(none)") : name) +
                                   " is not in key set v" + std::to_string(keys.version));
}

Status verify_desired_state(const DesiredState& ds, const KeySet& keys, std::string_view host_id,
                            std::int64_t min_generation, std::int64_t now_s) {
  auto pk = trusted_key(keys, ds.key_id, KeyRole::Desired, now_s);
  if (!pk) {
    return refuse(std::string(pk.error().code_or_default()),
                  "desired state signed by an untrusted key: " + pk.error().message);
  }
  if (!verify(*pk, canonical_bytes(ds), ds.signature)) {
    return refuse("desired_signature",
                  "desired state signature does not verify with key " + ds.key_id);
  }
  if (ds.host_id != host_id) {
    return refuse("wrong_host",
                  "desired state is for host " + ds.host_id + ", not " + std::string(host_id));
  }
  if (ds.generation < min_generation) {
    return refuse("replayed_generation", "desired state generation " +
                                             std::to_string(ds.generation) +
                                             " is below the one already acted on (" +
                                             std::to_string(min_generation) + ")");
  }
  if (ds.expires <= now_s) {
    return refuse("stale_desired_state", "desired state expired at " + std::to_string(ds.expires) +
                                             " (now " + std::to_string(now_s) + ")");
  }
  return {};
}

}  // namespace ringfence::proto
