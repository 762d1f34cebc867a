// Key sets (root-signed, TUF-like) and the signed desired state: canonical bytes, codecs and
// every refusal an agent makes.
#include "proto/keyset.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

namespace ringfence::proto {
namespace {
using nlohmann::json;

constexpr const char* kSha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
constexpr const char* kHost = "8f14e45f-ceea-4672-9f3d-5b2a1c0e9d77";
constexpr std::int64_t kNow = 1'700'000'000;

DesiredState sample(const KeyPair& kp) {
  DesiredState d;
  d.etag = "0123456789abcdef";
  d.host_id = kHost;
  d.generation = 1'700'000'000'000'000;
  d.issued = kNow;
  d.expires = kNow + 3600;
  d.heartbeat_s = 15;
  d.poll_s = 60;
  d.key_set_version = 3;
  DesiredChannel c;
  c.channel = "detections";
  c.version = 7;
  c.sha256 = kSha;
  c.size = 10;
  c.url = std::string("/v1/blobs/") + kSha;
  c.manifest = Manifest{"detections", 7, kSha, 10, 1000, 2000};
  c.signature = sign(kp.secret_key, canonical_bytes(c.manifest));
  c.key_id = key_id(kp.public_key);
  d.channels.push_back(c);
  d.known_bad.push_back({"detections", 8});
  d.key_id = key_id(kp.public_key);
  d.signature = sign(kp.secret_key, canonical_bytes(d));
  return d;
}

TEST(DesiredSigning, CanonicalBytesAreExactAndSortedAndSkipTheUnsignedFields) {
  auto kp = generate_keypair();
  auto d = sample(kp);
  auto bytes = canonical_bytes(d);
  std::string channel = json::parse(canonical_channels(d.channels))[0].dump();
  EXPECT_EQ(bytes, std::string("{\"channels\":[") + channel +
                       "],\"expires\":1700003600,\"generation\":1700000000000000,"
                       "\"heartbeat_s\":15,\"host_id\":\"" +
                       kHost +
                       "\",\"issued\":1700000000,\"key_set_version\":3,"
                       "\"known_bad\":[{\"channel\":\"detections\",\"version\":8}],\"poll_s\":60}");
  // The same bytes nlohmann writes for the sorted object: any implementation can rebuild them.
  auto j = json::parse(bytes);
  EXPECT_EQ(j.dump(), bytes);
  EXPECT_EQ(
      canonical_desired_bytes(canonical_channels(d.channels), canonical_known_bad(d.known_bad),
                              DesiredHeader{d.host_id, d.generation, d.issued, d.expires,
                                            d.heartbeat_s, d.poll_s, d.key_set_version}),
      bytes);
  // etag, key_id, signature and key_set are not covered.
  auto other = d;
  other.etag = "fedcba9876543210";
  other.key_set = "{}";
  EXPECT_EQ(canonical_bytes(other), bytes);
}

TEST(DesiredSigning, SurvivesTheWireWhateverTheKeyOrderOrSpacing) {
  auto kp = generate_keypair();
  auto d = sample(kp);
  auto keys = implicit_key_set(kp.public_key);
  auto wire = json::parse(encode(d));
  // Re-serialised with indentation and the keys in another order.
  std::string pretty = wire.dump(2);
  auto back = decode_desired_state(pretty);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_TRUE(verify_desired_state(*back, keys, kHost, 0, kNow));
  EXPECT_EQ(back->host_id, kHost);
  EXPECT_EQ(back->generation, d.generation);
  EXPECT_EQ(back->expires, d.expires);
  EXPECT_EQ(back->key_set_version, 3);
  EXPECT_EQ(back->channels[0].key_id, d.channels[0].key_id);
}

// Every covered field, changed after signing, breaks the signature.
TEST(DesiredSigning, AnyCoveredChangeBreaksTheSignature) {
  auto kp = generate_keypair();
  auto keys = implicit_key_set(kp.public_key);
  std::vector<std::pair<const char*, std::function<void(DesiredState&)>>> edits = {
      {"strip known_bad", [](DesiredState& d) { d.known_bad.clear(); }},
      {"add known_bad",
       [](DesiredState& d) {
         d.known_bad.push_back({"detections", 7});
       }},
      {"drop a channel", [](DesiredState& d) { d.channels.clear(); }},
      {"other version", [](DesiredState& d) { d.channels[0].version = 6; }},
      {"other url", [](DesiredState& d) { d.channels[0].url = "/v1/blobs/x"; }},
      {"rollback hint", [](DesiredState& d) { d.channels[0].rollback = true; }},
      {"heartbeat", [](DesiredState& d) { d.heartbeat_s = 3600; }},
      {"poll", [](DesiredState& d) { d.poll_s = 86400; }},
      {"host", [](DesiredState& d) { d.host_id = "00000000-0000-4000-8000-000000000000"; }},
      {"generation", [](DesiredState& d) { d.generation += 1; }},
      {"issued", [](DesiredState& d) { d.issued -= 1; }},
      {"expires", [](DesiredState& d) { d.expires += 86400; }},
      {"key set version", [](DesiredState& d) { d.key_set_version = 4; }},
  };
  for (auto& [name, edit] : edits) {
    auto d = sample(kp);
    edit(d);
    auto st = verify_desired_state(d, keys, d.host_id, 0, kNow);
    ASSERT_FALSE(st) << name;
    EXPECT_EQ(st.error().code, "desired_signature") << name;
  }
}

TEST(DesiredSigning, EveryRefusalHasItsCode) {
  auto kp = generate_keypair();
  auto keys = implicit_key_set(kp.public_key);
  auto d = sample(kp);
  EXPECT_TRUE(verify_desired_state(d, keys, kHost, d.generation, kNow)) << "equal = same answer";
  auto code = [&](const DesiredState& x, std::string_view host, std::int64_t min_gen,
                  std::int64_t now, const KeySet& k) {
    auto st = verify_desired_state(x, k, host, min_gen, now);
    return st ? std::string("ok") : st.error().code;
  };
  EXPECT_EQ(code(d, "00000000-0000-4000-8000-000000000000", 0, kNow, keys), "wrong_host");
  EXPECT_EQ(code(d, kHost, d.generation + 1, kNow, keys), "replayed_generation");
  EXPECT_EQ(code(d, kHost, 0, d.expires, keys), "stale_desired_state");
  EXPECT_EQ(code(d, kHost, 0, kNow, KeySet{}), "unknown_key");
  auto unsigned_d = d;
  unsigned_d.signature.clear();
  EXPECT_EQ(code(unsigned_d, kHost, 0, kNow, keys), "desired_signature");
  auto other = generate_keypair();
  auto forged = d;
  forged.signature = sign(other.secret_key, canonical_bytes(forged));
  EXPECT_EQ(code(forged, kHost, 0, kNow, keys), "desired_signature");
  // A forgery is reported as a forgery even when it also names another host and is old.
  EXPECT_EQ(
      code(forged, "00000000-0000-4000-8000-000000000000", d.generation + 5, d.expires + 1, keys),
      "desired_signature");
  auto revoked = keys;
  revoked.revoked.push_back(d.key_id);
  EXPECT_EQ(code(d, kHost, 0, kNow, revoked), "revoked_key");
  KeySet content_only;
  content_only.keys.push_back({d.key_id, kp.public_key, KeyRole::Content, 0});
  EXPECT_EQ(code(d, kHost, 0, kNow, content_only), "key_role");
  KeySet retired;
  retired.keys.push_back({d.key_id, kp.public_key, KeyRole::Desired, kNow - 1});
  EXPECT_EQ(code(d, kHost, 0, kNow, retired), "key_expired");
}

// ---------------------------------------------------------------- key sets

KeySet make_set(std::int64_t version, const KeyPair& root, std::vector<KeyPair> online) {
  KeySet s;
  s.version = version;
  s.expires = kNow + 86400;
  s.root = root.public_key;
  for (const auto& k : online) {
    s.keys.push_back({key_id(k.public_key), k.public_key, KeyRole::Content, 0});
    s.keys.push_back({key_id(k.public_key), k.public_key, KeyRole::Desired, 0});
  }
  return s;
}

TEST(KeySet, CanonicalBytesAndRoundTrip) {
  auto root = generate_keypair();
  auto k1 = generate_keypair();
  auto s = make_set(2, root, {k1});
  s.revoked.push_back("0011223344556677");
  auto bytes = canonical_bytes(s);
  EXPECT_EQ(json::parse(bytes).dump(), bytes) << "sorted keys, no white space";
  EXPECT_EQ(bytes.find("{\"expires\":" + std::to_string(kNow + 86400) + ",\"keys\":[{\"id\":\"" +
                       key_id(k1.public_key) + "\",\"not_after\":0,\"public\":\""),
            0u)
      << bytes;
  auto signed_set = sign_key_set(s, {root.secret_key});
  auto back = decode_key_set(json::parse(encode(signed_set)).dump(4));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(canonical_bytes(back->set), bytes);
  ASSERT_EQ(back->signatures.size(), 1u);
  EXPECT_EQ(back->signatures[0].key_id, key_id(root.public_key));
  EXPECT_EQ(key_id(k1.public_key).size(), 16u);
}

TEST(KeySet, DecoderIsStrict) {
  auto root = generate_keypair();
  auto k1 = generate_keypair();
  auto good = json::parse(encode(sign_key_set(make_set(2, root, {k1}), {root.secret_key})));
  auto refused = [&](auto edit) {
    auto j = good;
    edit(j);
    return !decode_key_set(j.dump());
  };
  EXPECT_TRUE(refused([](json& j) { j["signed"]["keys"][0]["id"] = "0000000000000000"; }));
  EXPECT_TRUE(refused([](json& j) { j["signed"]["keys"][0]["role"] = "root"; }));
  EXPECT_TRUE(refused([](json& j) { j["signed"]["keys"][1]["role"] = "content"; }))
      << "one key listed twice for one role";
  EXPECT_TRUE(refused([](json& j) { j["signed"]["version"] = 0; }));
  EXPECT_TRUE(refused([](json& j) { j["signed"]["extra"] = 1; }));
  EXPECT_TRUE(refused([](json& j) { j["signatures"] = json::array(); }));
  EXPECT_TRUE(refused([](json& j) { j["signed"]["revoked"] = json::array({"XYZ"}); }));
  EXPECT_TRUE(refused([](json& j) { j["signed"]["root"] = "not base64!"; }));
}

std::string accept_code(const Trust& t, const SignedKeySet& c, std::int64_t now = kNow) {
  auto r = accept_key_set(t, c, now);
  return r ? std::string("ok") : r.error().code;
}

TEST(KeySet, AcceptedOnlyNewerRootSignedAndUnexpired) {
  auto root = generate_keypair();
  auto k1 = generate_keypair(), k2 = generate_keypair();
  Trust t{root.public_key, implicit_key_set(k1.public_key)};
  auto v2 = sign_key_set(make_set(2, root, {k1, k2}), {root.secret_key});
  auto next = accept_key_set(t, v2, kNow);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next->keys.version, 2);
  EXPECT_EQ(*next->root, root.public_key);
  // Replays: the same version again, an older one.
  EXPECT_EQ(accept_code(*next, v2), "key_set_replayed");
  EXPECT_EQ(accept_code(*next, sign_key_set(make_set(1, root, {k1}), {root.secret_key})),
            "key_set_replayed");
  // Signed by a key that is not the root (an online key, even a trusted one).
  EXPECT_EQ(accept_code(t, sign_key_set(make_set(3, root, {k1}), {k1.secret_key})),
            "key_set_signature");
  // Tampered after signing.
  auto tampered = v2;
  tampered.set.revoked.push_back(key_id(k2.public_key));
  EXPECT_EQ(accept_code(t, tampered), "key_set_signature");
  // Expired.
  auto old = make_set(3, root, {k1});
  old.expires = kNow;
  EXPECT_EQ(accept_code(t, sign_key_set(old, {root.secret_key})), "key_set_expired");
  // An agent with --public-key only pins no root: it cannot take a key set at all.
  EXPECT_EQ(accept_code(Trust{std::nullopt, implicit_key_set(k1.public_key)}, v2),
            "key_set_no_root");
}

TEST(KeySet, RootRotationNeedsTheOldAndTheNewRoot) {
  auto root = generate_keypair(), root2 = generate_keypair();
  auto k1 = generate_keypair();
  Trust t{root.public_key, make_set(1, root, {k1})};
  auto rotated = make_set(2, root2, {k1});
  EXPECT_EQ(accept_code(t, sign_key_set(rotated, {root.secret_key})), "key_set_signature")
      << "the new root did not sign";
  EXPECT_EQ(accept_code(t, sign_key_set(rotated, {root2.secret_key})), "key_set_signature")
      << "the pinned root did not sign";
  auto next = accept_key_set(t, sign_key_set(rotated, {root.secret_key, root2.secret_key}), kNow);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(*next->root, root2.public_key);
  // From now on the old root alone signs nothing the agent takes.
  EXPECT_EQ(accept_code(*next, sign_key_set(make_set(3, root, {k1}), {root.secret_key})),
            "key_set_signature");
  EXPECT_EQ(accept_code(*next, sign_key_set(make_set(3, root2, {k1}), {root2.secret_key})), "ok");
}

TEST(KeySet, TrustedKeyChecksRoleRevocationAndDates) {
  auto root = generate_keypair();
  auto k1 = generate_keypair(), k2 = generate_keypair();
  auto s = make_set(2, root, {k1});
  s.keys.push_back({key_id(k2.public_key), k2.public_key, KeyRole::Content, kNow + 10});
  auto code = [&](const KeySet& ks, const KeyPair& k, KeyRole role, std::int64_t now = kNow) {
    auto r = trusted_key(ks, key_id(k.public_key), role, now);
    return r ? std::string("ok") : r.error().code;
  };
  EXPECT_EQ(code(s, k1, KeyRole::Content), "ok");
  EXPECT_EQ(code(s, k2, KeyRole::Content), "ok");
  EXPECT_EQ(code(s, k2, KeyRole::Desired), "key_role");
  EXPECT_EQ(code(s, k2, KeyRole::Content, kNow + 10), "key_expired");
  EXPECT_EQ(code(s, root, KeyRole::Content), "unknown_key");
  EXPECT_EQ(code(s, k1, KeyRole::Content, s.expires), "key_expired") << "the set expired";
  s.revoked.push_back(key_id(k1.public_key));
  EXPECT_EQ(code(s, k1, KeyRole::Content), "revoked_key");
}

}  // namespace
}  // namespace ringfence::proto
