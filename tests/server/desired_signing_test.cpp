// The signed desired state as the Service makes it: per host, verified with the agent's own
// rule, signed once per change (not per poll), re-signed half way to expiry; a bounded
// known-bad list on a channel of 10 000 releases; key sets loaded from the data dir and
// switched to at run time (the content re-signed, every host told).
#include <gtest/gtest.h>

#include <filesystem>

#include "proto/keyset.hpp"
#include "server/core/keys.hpp"
#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {

class DesiredSigning : public Harness {
 protected:
  proto::DesiredState decoded(int h) {
    auto a = service_->desired(hosts_[static_cast<size_t>(h)], "", 0, nullptr);
    EXPECT_TRUE(a && *a);
    auto ds = proto::decode_desired_state((*a)->body);
    EXPECT_TRUE(ds) << ds.error().message << "\n" << (*a)->body;
    return *ds;
  }
  std::string etag(int h) {
    auto a = service_->desired(hosts_[static_cast<size_t>(h)], "", 0, nullptr);
    return (*a)->etag;
  }
  std::int64_t now_s() const { return clock_.now_ms() / 1000; }
  proto::Trust legacy() const { return {std::nullopt, proto::implicit_key_set(key_.public_key)}; }

  // Writes root.pub, keys/<id>.key for `online` (except the first key) and keyset.json.
  void write_keys(std::int64_t version, const proto::KeyPair& root,
                  const std::vector<proto::KeyPair>& online, std::vector<std::string> revoked = {},
                  const proto::KeyPair* signer = nullptr) {
    auto dir = dir_.path();
    ASSERT_TRUE(write_private_file(dir + "/root.pub",
                                   proto::encode_public_key(root.public_key) + "\n", 0644));
    std::filesystem::create_directories(dir + "/keys");
    proto::KeySet s;
    s.version = version;
    s.expires = now_s() + 86400;
    s.root = root.public_key;
    for (const auto& k : online) {
      if (k.public_key != key_.public_key) {
        ASSERT_TRUE(write_private_file(dir + "/keys/" + proto::key_id(k.public_key) + ".key",
                                       key_pair_text(k), 0600));
      }
      s.keys.push_back({proto::key_id(k.public_key), k.public_key, proto::KeyRole::Content, 0});
      s.keys.push_back({proto::key_id(k.public_key), k.public_key, proto::KeyRole::Desired, 0});
    }
    s.revoked = std::move(revoked);
    auto doc = proto::encode(proto::sign_key_set(s, {(signer ? *signer : root).secret_key}));
    ASSERT_TRUE(write_private_file(dir + "/keyset.json", doc, 0644));
  }
};

TEST_F(DesiredSigning, EveryAnswerIsSignedForItsHostAndVerifiesWithTheAgentsRule) {
  fleet(1, 2);
  make_stable(version_, 3);
  auto keys = proto::implicit_key_set(key_.public_key);
  for (int h = 0; h < 3; ++h) {
    auto ds = decoded(h);
    EXPECT_EQ(ds.host_id, test_uuid(h));
    auto st = proto::verify_desired_state(ds, keys, test_uuid(h), 0, now_s());
    EXPECT_TRUE(st) << st.error().message;
    EXPECT_EQ(ds.key_id, proto::key_id(key_.public_key));
    EXPECT_EQ(ds.expires - ds.issued, Options{}.desired_ttl_s);
    EXPECT_FALSE(ds.key_set) << "no key set made yet";
    ASSERT_EQ(ds.channels.size(), 1u);
    EXPECT_EQ(ds.channels[0].key_id, proto::key_id(key_.public_key));
  }
  // Host 0's answer is refused by host 1.
  auto st = proto::verify_desired_state(decoded(0), keys, test_uuid(1), 0, now_s());
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, "wrong_host");
}

// A release's `updated` (the release feeds' <updated>) moves when what a reader sees changes (its
// state), not when its manifest is signed again half way to expiry: every offered release is
// re-signed every manifest_ttl_s / 2, and each one bounced to the top of the feeds.
TEST_F(DesiredSigning, ReSigningAManifestIsNotAChangeOfTheRelease) {
  fleet(1, 1);
  auto before = *service_->get_release("det", version_);
  clock_.advance_ms(Options{}.manifest_ttl_s * 500 + 1000);
  service_->tick();
  auto after = *service_->get_release("det", version_);
  ASSERT_NE(after["manifest"]["expires"], before["manifest"]["expires"]) << "re-signed";
  EXPECT_EQ(after["updated"], before["updated"]);
  ASSERT_TRUE(service_->quarantine_release(admin_, "det", version_, "bad"));
  EXPECT_GT((*service_->get_release("det", version_))["updated"].get<std::int64_t>(),
            before["updated"].get<std::int64_t>());
  open();  // and the stored value is the same one
  EXPECT_GT((*service_->get_release("det", version_))["updated"].get<std::int64_t>(),
            before["updated"].get<std::int64_t>());
}

TEST_F(DesiredSigning, SignedOncePerChangeNotPerPollAndTheGenerationOnlyGrows) {
  fleet(1, 1);
  auto first = decoded(0);
  auto again = decoded(0);
  EXPECT_EQ(again.generation, first.generation) << "a repeat 200 is the same signed answer";
  EXPECT_EQ(again.signature, first.signature);
  auto tag = etag(0);
  auto a = service_->desired(hosts_[0], tag, 0, nullptr);
  ASSERT_TRUE(a && *a);
  EXPECT_TRUE((*a)->not_modified);
  // A change (a new release quarantined: the known-bad list moves) is a new generation.
  auto v2 = release("{\"rules\":[2]}");
  ASSERT_TRUE(service_->quarantine_release(admin_, "det", v2, "bad"));
  auto changed = decoded(0);
  EXPECT_GT(changed.generation, first.generation);
  EXPECT_NE(etag(0), tag);
  ASSERT_EQ(changed.known_bad.size(), 1u);
  // Half way to expiry it is signed again (a fresh expiry), so a host never holds a stale one.
  auto before = changed;
  clock_.advance_ms(Options{}.desired_ttl_s * 500 - 1000);
  EXPECT_EQ(decoded(0).generation, before.generation);
  clock_.advance_ms(1000);
  auto refreshed = decoded(0);
  EXPECT_GT(refreshed.generation, before.generation);
  EXPECT_GT(refreshed.expires, before.expires);
  // A restarted server starts above what it gave out (wall-clock microseconds: a restart takes
  // longer than the millisecond the fake clock moves here).
  clock_.advance_ms(1);
  open();
  EXPECT_GT(decoded(0).generation, refreshed.generation);
}

TEST_F(DesiredSigning, KnownBadListIsBoundedOnAChannelOfTenThousandReleases) {
  fleet(1, 1);
  // 10 000 releases written straight to the store (one transaction), then loaded as a restart
  // would: stable at 9500, every third quarantined.
  const std::int64_t kReleases = 10'000, kStable = 9'500;
  ASSERT_TRUE(store_->transaction([&]() -> Status {
    for (std::int64_t v = 2; v <= kReleases; ++v) {
      std::string state = v == kStable  ? "stable"
                          : v % 3 == 0  ? "quarantined"
                          : v < kStable ? "superseded"
                                        : "validated";
      proto::Manifest mf{"det", v, std::string(64, 'a'), 1, now_s(), now_s() + 86400};
      auto st = store_->put_release(
          {"det", v, std::string(64, 'a'), 1, "", state, proto::canonical_bytes(mf),
           proto::sign(key_.secret_key, proto::canonical_bytes(mf)), "{}", now_s()});
      if (!st) return st;
    }
    return store_->put_channel({"det", "{}", std::nullopt, 1 << 20, kStable, now_s()});
  }));
  open();
  auto ds = decoded(0);
  // Only quarantined versions at or above the oldest one offered (N-1 = 9499 for pinned hosts).
  std::int64_t expected = 0;
  for (std::int64_t v = kStable - 1; v <= kReleases; ++v) expected += v % 3 == 0 ? 1 : 0;
  ASSERT_GT(expected, 100);
  EXPECT_EQ(static_cast<std::int64_t>(ds.known_bad.size()), expected);
  for (const auto& k : ds.known_bad) EXPECT_GE(k.version, kStable - 1);
  auto st = proto::verify_desired_state(ds, proto::implicit_key_set(key_.public_key), test_uuid(0),
                                        0, now_s());
  EXPECT_TRUE(st) << st.error().message;
  auto a = service_->desired(hosts_[0], "", 0, nullptr);
  EXPECT_LT((*a)->body.size(), 16u * 1024) << "a hundred and some entries, not 3 333";
}

TEST_F(DesiredSigning, AKeySetFromTheDataDirIsUsedAndARotationReachesEveryone) {
  fleet(1, 1);
  make_stable(version_, 2);
  auto root = proto::generate_keypair();
  auto k2 = proto::generate_keypair();
  write_keys(1, root, {key_});
  auto loaded = service_->reload_keys(admin_);
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_EQ((*loaded)["version"], 1);
  proto::Trust trust{root.public_key, proto::implicit_key_set(key_.public_key)};
  auto ds = decoded(0);
  ASSERT_TRUE(ds.key_set);
  auto set = proto::decode_key_set(*ds.key_set);
  ASSERT_TRUE(set);
  auto t1 = proto::accept_key_set(trust, *set, now_s());
  ASSERT_TRUE(t1) << t1.error().message;
  EXPECT_EQ(ds.key_set_version, 1);
  // Rotate: k2 joins; the server signs desired states and content with it at once.
  auto gen = ds.generation;
  write_keys(2, root, {key_, k2});
  ASSERT_TRUE(service_->reload_keys(admin_));
  ds = decoded(0);
  EXPECT_GT(ds.generation, gen);
  EXPECT_EQ(ds.key_id, proto::key_id(k2.public_key));
  ASSERT_EQ(ds.channels.size(), 1u);
  EXPECT_EQ(ds.channels[0].key_id, proto::key_id(k2.public_key));
  auto t2 = proto::accept_key_set(*t1, *proto::decode_key_set(*ds.key_set), now_s());
  ASSERT_TRUE(t2) << t2.error().message;
  EXPECT_TRUE(proto::verify_desired_state(ds, t2->keys, test_uuid(0), gen, now_s()));
  auto rel = service_->get_release("det", version_);
  EXPECT_EQ((*rel)["key_id"], proto::key_id(k2.public_key)) << "re-signed by the new key";
  EXPECT_EQ(service_->signing_public_key(), proto::encode_public_key(k2.public_key));
  // The old key revoked: everything still verifies under v3.
  write_keys(3, root, {k2}, {proto::key_id(key_.public_key)});
  ASSERT_TRUE(service_->reload_keys(admin_));
  ds = decoded(0);
  auto t3 = proto::accept_key_set(*t2, *proto::decode_key_set(*ds.key_set), now_s());
  ASSERT_TRUE(t3);
  EXPECT_TRUE(proto::verify_desired_state(ds, t3->keys, test_uuid(0), 0, now_s()));
  ASSERT_EQ(ds.channels.size(), 1u);
  EXPECT_TRUE(
      proto::trusted_key(t3->keys, ds.channels[0].key_id, proto::KeyRole::Content, now_s()));
  // A restart finds the same keys.
  open();
  EXPECT_EQ(decoded(0).key_id, proto::key_id(k2.public_key));
}

// A key set close to its expiry is announced (log, event, metric) before agents freeze on it.
TEST_F(DesiredSigning, AKeySetCloseToItsExpiryIsAnnounced) {
  fleet(1, 1);
  auto root = proto::generate_keypair();
  write_keys(1, root, {key_});  // expires in one day
  ASSERT_TRUE(service_->reload_keys(admin_));
  EXPECT_EQ(service_->metrics()["key_set_expires"].get<std::int64_t>(), now_s() + 86400);
  auto count = [&] {
    int n = 0;
    for (const auto& e : events()) n += e["kind"] == "key_set_expiring";
    return n;
  };
  advance_s(3);
  service_->tick();
  ASSERT_EQ(count(), 1);
  advance_s(60);  // not again within six hours
  service_->tick();
  EXPECT_EQ(count(), 1);
  advance_s(6 * 3600);
  service_->tick();
  EXPECT_EQ(count(), 2);
}

TEST_F(DesiredSigning, AKeySetNotSignedByTheRootOrOlderIsRefusedAndTheOldKeysStay) {
  fleet(1, 1);
  auto root = proto::generate_keypair();
  auto k2 = proto::generate_keypair();
  write_keys(2, root, {key_});
  ASSERT_TRUE(service_->reload_keys(admin_));
  write_keys(3, root, {key_, k2}, {}, &k2);  // signed by an online key
  auto r = service_->reload_keys(admin_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, Errc::InvalidArgument);
  write_keys(1, root, {key_, k2});  // older than the one in use
  r = service_->reload_keys(admin_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "key_set_older");
  auto ds = decoded(0);
  EXPECT_EQ(ds.key_set_version, 2);
  EXPECT_EQ(ds.key_id, proto::key_id(key_.public_key));
}

}  // namespace
}  // namespace ringfence::server::core
