// The domain core's operator and agent surface through Service (no sockets): tokens and roles,
// enrollment and host credentials, rings and membership, hosts, channels, releases (versions,
// signatures, schema refusal), policies, rollout creation rules, preview, events.
#include <gtest/gtest.h>

#include "proto/bucket.hpp"
#include "proto/signing.hpp"
#include "tests/server/harness.hpp"

namespace ringfence::server::core {
namespace {
using nlohmann::json;
using ServiceApi = Harness;

TEST_F(ServiceApi, TokensAreStoredHashedAndAuthenticateWithTheirRole) {
  std::map<std::string, std::string> tokens;
  for (const char* role : {"viewer", "operator", "release", "admin"}) {
    auto t = service_->create_token(admin_, {{"name", std::string("t-") + role}, {"role", role}});
    ASSERT_TRUE(t) << t.error().message;
    EXPECT_EQ((*t)["role"], role);
    tokens[role] = (*t)["token"];
  }
  for (const auto& [role, tok] : tokens) {
    auto p = service_->authenticate("Bearer " + tok);
    ASSERT_TRUE(p) << role;
    EXPECT_EQ(to_string(p->role), role);
    EXPECT_EQ(p->name, "t-" + role);
  }
  for (const char* bad : {"", "Bearer", "Bearer ", "Basic abc", "bearer x", "Bearer rf_unknown"}) {
    auto p = service_->authenticate(bad);
    ASSERT_FALSE(p) << bad;
    EXPECT_EQ(p.error().errc, Errc::Unauthenticated) << bad;
  }
  EXPECT_FALSE(service_->authenticate("Bearer " + tokens["viewer"] + "x"));
  EXPECT_FALSE(service_->authenticate("Bearer " + std::string(300, 'a')));
  // The store holds hashes only.
  auto snap = store_->load();
  ASSERT_TRUE(snap);
  ASSERT_EQ(snap->tokens.size(), 4u);
  for (const auto& row : snap->tokens) {
    auto role = row.role;
    EXPECT_EQ(row.hash, proto::sha256_hex(tokens[role]));
    EXPECT_NE(row.hash, tokens[role]);
  }
  // The listing never shows a secret.
  EXPECT_EQ(service_->list_tokens().dump().find(tokens["admin"]), std::string::npos);
  // Refusals.
  EXPECT_EQ(service_->create_token(admin_, {{"name", "t-viewer"}, {"role", "viewer"}}).error().errc,
            Errc::Conflict);
  EXPECT_EQ(service_->create_token(admin_, {{"name", "x"}, {"role", "root"}}).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(service_->create_token(admin_, {{"name", "X Y"}, {"role", "viewer"}}).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(
      service_->create_token(admin_, {{"name", "x"}, {"role", "viewer"}, {"ttl", 1}}).error().errc,
      Errc::InvalidArgument);
  // Deletion: gone at once; the last admin token stays.
  ASSERT_TRUE(service_->delete_token(admin_, "t-viewer"));
  EXPECT_FALSE(service_->authenticate("Bearer " + tokens["viewer"]));
  EXPECT_EQ(service_->delete_token(admin_, "t-viewer").error().errc, Errc::NotFound);
  auto last = service_->delete_token(admin_, "t-admin");  // the only admin token here
  ASSERT_FALSE(last);
  EXPECT_EQ(last.error().errc, Errc::Conflict);
  EXPECT_TRUE(service_->authenticate("Bearer " + tokens["admin"]));
}

TEST_F(ServiceApi, TheLastAdminTokenCannotBeDeleted) {
  auto t = service_->create_token(admin_, {{"name", "only-admin"}, {"role", "admin"}});
  ASSERT_TRUE(t);
  auto del = service_->delete_token(admin_, "only-admin");
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().errc, Errc::Conflict);
  EXPECT_TRUE(service_->authenticate("Bearer " + (*t)["token"].get<std::string>()));
  ASSERT_TRUE(service_->create_token(admin_, {{"name", "second-admin"}, {"role", "admin"}}));
  EXPECT_TRUE(service_->delete_token(admin_, "only-admin"));
}

TEST_F(ServiceApi, BootstrapAdminOnlyOnce) {
  auto short_tok = service_->bootstrap_admin(std::string("short"));
  ASSERT_FALSE(short_tok);
  EXPECT_EQ(short_tok.error().errc, Errc::InvalidArgument);
  auto first = service_->bootstrap_admin(std::string("a-wanted-admin-token-123"));
  ASSERT_TRUE(first);
  ASSERT_TRUE(*first);
  EXPECT_EQ(**first, "a-wanted-admin-token-123");
  auto p = service_->authenticate("Bearer a-wanted-admin-token-123");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->role, Role::Admin);
  auto second = service_->bootstrap_admin(std::string("another-token-1234567"));
  ASSERT_TRUE(second);
  EXPECT_FALSE(*second);
  open();  // a restart keeps it and does not create another
  EXPECT_TRUE(service_->authenticate("Bearer a-wanted-admin-token-123"));
  auto third = service_->bootstrap_admin(std::nullopt);
  ASSERT_TRUE(third);
  EXPECT_FALSE(*third);
}

TEST_F(ServiceApi, EnrollmentAndHostCredentials) {
  auto tok = service_->create_enrollment_token(
      admin_, {{"name", "site"}, {"labels", {{"site", "fra1"}}}, {"expires_in_s", 600}});
  ASSERT_TRUE(tok) << tok.error().message;
  std::string t = (*tok)["token"];
  auto r = service_->enroll({t, test_uuid(1), {{"site", "spoofed"}, {"os", "linux"}}, "1.0"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->host_id, test_uuid(1));
  EXPECT_EQ(r->credential.substr(0, 37), test_uuid(1) + ".");
  EXPECT_GT(r->heartbeat_s, 0);
  auto h = service_->get_host(test_uuid(1));
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)["labels"]["site"], "fra1");  // the token's labels win
  EXPECT_EQ((*h)["labels"]["os"], "linux");
  EXPECT_LT((*h)["bucket"].get<int>(), 10000);
  // Host credentials: only the exact secret for the exact host.
  EXPECT_TRUE(service_->authenticate_host("Bearer " + r->credential));
  auto secret = r->credential.substr(37);
  for (const std::string& bad :
       {std::string(""), "Bearer " + test_uuid(2) + "." + secret, "Bearer " + test_uuid(1) + ".00",
        "Bearer " + secret, "Bearer " + test_uuid(1) + "x" + secret, "Basic " + r->credential}) {
    auto a = service_->authenticate_host(bad);
    ASSERT_FALSE(a) << bad;
    EXPECT_EQ(a.error().errc, Errc::Unauthenticated);
  }
  // An API token is not a host credential and vice versa.
  EXPECT_FALSE(service_->authenticate("Bearer " + r->credential));
  // Re-enrolling (with the current credential) rotates the credential: the old one is refused.
  auto again = service_->enroll({t, test_uuid(1), {}, "1.1"}, "Bearer " + r->credential);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_NE(again->credential, r->credential);
  EXPECT_FALSE(service_->authenticate_host("Bearer " + r->credential));
  EXPECT_TRUE(service_->authenticate_host("Bearer " + again->credential));
  // Credentials survive a restart (stored hashed, durable before the answer).
  open();
  EXPECT_TRUE(service_->authenticate_host("Bearer " + again->credential));
  EXPECT_FALSE(service_->authenticate_host("Bearer " + r->credential));
  auto snap = store_->load();
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->hosts.at(0).credential_hash, proto::sha256_hex(again->credential.substr(37)));
  // Wrong and expired enrollment tokens.
  auto wrong = service_->enroll({"rfe_wrong", test_uuid(3), {}, "1"});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().errc, Errc::Unauthenticated);
  clock_.advance_ms(601 * 1000);
  auto expired = service_->enroll({t, test_uuid(4), {}, "1"});
  ASSERT_FALSE(expired);
  EXPECT_EQ(expired.error().errc, Errc::Unauthenticated);
  EXPECT_FALSE(service_->get_host(test_uuid(4)));
  // Enrollment token input.
  EXPECT_EQ(service_->create_enrollment_token(admin_, {{"name", "site"}}).error().errc,
            Errc::Conflict);
  EXPECT_EQ(
      service_->create_enrollment_token(admin_, {{"name", "e2"}, {"expires_in_s", 1}}).error().errc,
      Errc::InvalidArgument);
  EXPECT_EQ(service_->create_enrollment_token(admin_, {{"name", "e2"}, {"labels", {{"k", 1}}}})
                .error()
                .errc,
            Errc::InvalidArgument);
}

TEST_F(ServiceApi, RingMembershipFollowsRingAndLabelChanges) {
  fleet(0, 0);
  auto tok = service_->create_enrollment_token(admin_, {{"name", "t2"}});
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(service_->enroll(
        {(*tok)["token"], test_uuid(i), {{"site", i < 5 ? "fra1" : "iad1"}}, "1"}));
  }
  auto size = [&](const std::string& ring) {
    return (*service_->get_ring(ring))["hosts"].get<int>();
  };
  EXPECT_EQ(size("canary"), 0);  // nobody carries ring=canary
  EXPECT_EQ(size("rest"), 20);   // the last ring catches everyone
  EXPECT_EQ((*service_->get_ring("rest"))["catch_all"], true);
  // A ring of higher priority takes its hosts over at once.
  ASSERT_TRUE(service_->put_ring(admin_, "fra",
                                 {{"rank", 0}, {"selector", {{"labels", "site=fra1"}}}}, true));
  EXPECT_EQ(size("fra"), 5);
  EXPECT_EQ(size("rest"), 15);
  EXPECT_EQ((*service_->get_host(test_uuid(0)))["ring"], "fra");
  // Changing the selector moves them back.
  ASSERT_TRUE(service_->put_ring(admin_, "fra",
                                 {{"rank", 0}, {"selector", {{"labels", "site=nowhere"}}}}, false));
  EXPECT_EQ(size("fra"), 0);
  EXPECT_EQ((*service_->get_host(test_uuid(0)))["ring"], "rest");
  // Relabelling a host moves it.
  ASSERT_TRUE(service_->patch_host(admin_, test_uuid(7), {{"labels", {{"site", "nowhere"}}}}));
  EXPECT_EQ((*service_->get_host(test_uuid(7)))["ring"], "fra");
  // Ring members, paged in host id order.
  auto p1 = service_->ring_hosts("rest", 10, "");
  ASSERT_TRUE(p1);
  EXPECT_EQ((*p1)["hosts"].size(), 10u);
  EXPECT_EQ((*p1)["total"], 19);
  auto p2 = service_->ring_hosts("rest", 10, (*p1)["next"]);
  ASSERT_TRUE(p2);
  EXPECT_EQ((*p2)["hosts"].size(), 9u);
  EXPECT_FALSE(p2->contains("next"));
  EXPECT_LT((*p1)["hosts"][9]["host_id"].get<std::string>(),
            (*p2)["hosts"][0]["host_id"].get<std::string>());
  // Deleting a ring hands its hosts to the others.
  ASSERT_TRUE(service_->delete_ring(admin_, "fra"));
  EXPECT_EQ(size("rest"), 20);
  EXPECT_EQ(service_->get_ring("fra").error().errc, Errc::NotFound);
  // Ring input.
  EXPECT_EQ(
      service_->put_ring(admin_, "rest", {{"rank", 1}, {"selector", {{"buckets", {0, 1}}}}}, true)
          .error()
          .errc,
      Errc::Conflict);
  EXPECT_EQ(service_
                ->put_ring(admin_, "x",
                           {{"name", "y"}, {"rank", 1}, {"selector", {{"buckets", {0, 1}}}}}, false)
                .error()
                .errc,
            Errc::InvalidArgument);
  EXPECT_EQ(
      service_->put_ring(admin_, "..", {{"rank", 1}, {"selector", {{"buckets", {0, 1}}}}}, false)
          .error()
          .errc,
      Errc::InvalidArgument);
  EXPECT_EQ(service_->put_ring(admin_, "x", {{"rank", 1}}, false).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(
      service_->put_ring(admin_, "x", {{"rank", -3}, {"selector", {{"buckets", {0, 1}}}}}, false)
          .error()
          .errc,
      Errc::InvalidArgument);
  EXPECT_EQ(service_->delete_ring(admin_, "ghost").error().errc, Errc::NotFound);
  // Memberships survive a restart.
  open();
  EXPECT_EQ(size("rest"), 20);
}

TEST_F(ServiceApi, ARingUsedByAnActiveRolloutCannotBeDeleted) {
  fleet(1, 1);
  auto id = rollout(two_stages());
  auto del = service_->delete_ring(admin_, "canary");
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().errc, Errc::Conflict);
  ASSERT_TRUE(act(id, "abort", {{"reason", "x"}}));
  EXPECT_TRUE(service_->delete_ring(admin_, "canary"));
}

TEST_F(ServiceApi, HostListFiltersAndPaging) {
  fleet(2, 3);
  // Host 0 runs version_, which a rollout sent it (what was never sent is not recorded).
  ASSERT_TRUE(act(rollout(two_stages()), "start"));
  ASSERT_EQ(offered(0), version_);
  heartbeat(0, version_);
  Service::HostFilter f;
  EXPECT_EQ((*service_->list_hosts(f))["total"], 5);
  f.ring = "canary";
  EXPECT_EQ((*service_->list_hosts(f))["total"], 2);
  f = {};
  f.label_key = "ring";
  f.label_value = "rest";
  EXPECT_EQ((*service_->list_hosts(f))["total"], 3);
  f = {};
  f.channel = "det";
  f.version = version_;
  auto on = service_->list_hosts(f);
  ASSERT_EQ((*on)["total"], 1);
  EXPECT_EQ((*on)["hosts"][0]["channels"]["det"]["version"], version_);
  f = {};
  f.ring = "ghost";
  EXPECT_EQ(service_->list_hosts(f).error().errc, Errc::NotFound);
  f = {};
  f.limit = 2;
  auto page = service_->list_hosts(f);
  ASSERT_EQ((*page)["hosts"].size(), 2u);
  f.after = (*page)["next"];
  EXPECT_EQ((*service_->list_hosts(f))["hosts"].size(), 2u);
  // patch / delete
  EXPECT_EQ(service_->patch_host(admin_, test_uuid(1), {{"color", "red"}}).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(service_->patch_host(admin_, test_uuid(1), {{"pinned", "yes"}}).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(service_->patch_host(admin_, test_uuid(99), {{"pinned", true}}).error().errc,
            Errc::NotFound);
  ASSERT_TRUE(service_->delete_host(admin_, test_uuid(1)));
  EXPECT_EQ(service_->get_host(test_uuid(1)).error().errc, Errc::NotFound);
  EXPECT_FALSE(service_->authenticate_host("Bearer " + creds_[1]));
  EXPECT_EQ((*service_->list_hosts({}))["total"], 4);
  open();
  EXPECT_EQ((*service_->list_hosts({}))["total"], 4);
}

TEST_F(ServiceApi, ChannelsAndTheirValidatorCommand) {
  Principal rel{"rel", Role::Release};
  auto c = service_->put_channel(
      rel, "det", {{"name", "det"}, {"schema", {{"type", "object"}}}, {"max_bytes", 100}}, true);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ((*c)["max_bytes"], 100);
  EXPECT_EQ(service_->put_channel(rel, "det", {{"name", "det"}}, true).error().errc,
            Errc::Conflict);
  auto v = service_->put_channel(rel, "det", {{"validator", {{"argv", {"/bin/true"}}}}}, false);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().errc, Errc::PermissionDenied);
  ASSERT_TRUE(
      service_->put_channel(admin_, "det", {{"validator", {{"argv", {"/bin/true"}}}}}, false));
  // Removing it needs admin too.
  EXPECT_EQ(service_->put_channel(rel, "det", {{"schema", json::object()}}, false).error().errc,
            Errc::PermissionDenied);
  EXPECT_EQ(service_->put_channel(rel, "Bad", json::object(), true).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(service_->put_channel(rel, "c2", {{"schema", {{"type", "banana"}}}}, true).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(service_->put_channel(rel, "c2", {{"max_bytes", 0}}, true).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(service_->get_channel("ghost").error().errc, Errc::NotFound);
  EXPECT_EQ(service_->list_channels()["channels"].size(), 1u);
}

TEST_F(ServiceApi, ReleasesAreVersionedSignedAndValidated) {
  fleet(1, 1);
  auto rel = service_->get_release("det", version_);
  ASSERT_TRUE(rel);
  EXPECT_EQ(version_, 1);
  EXPECT_EQ((*rel)["state"], "validated");
  const auto& mj = (*rel)["manifest"];
  proto::Manifest m{mj["channel"], mj["version"], mj["sha256"],
                    mj["size"],    mj["created"], mj["expires"]};
  EXPECT_EQ(m.channel, "det");
  EXPECT_EQ(m.version, version_);
  EXPECT_EQ(m.sha256, proto::sha256_hex("{\"rules\":[1]}"));
  EXPECT_EQ(m.size, static_cast<std::int64_t>(std::string("{\"rules\":[1]}").size()));
  EXPECT_GT(m.expires, m.created);
  EXPECT_TRUE(proto::verify(key_.public_key, proto::canonical_bytes(m),
                            (*rel)["signature"].get<std::string>()));
  auto forged = m;
  forged.version = 99;
  EXPECT_FALSE(proto::verify(key_.public_key, proto::canonical_bytes(forged),
                             (*rel)["signature"].get<std::string>()));
  EXPECT_EQ(service_->signing_public_key(),
            proto::base64_encode(
                std::string_view(reinterpret_cast<const char*>(key_.public_key.data()), 32)));
  // Versions are monotonic per channel.
  EXPECT_EQ(release("{\"rules\":[2]}"), version_ + 1);
  EXPECT_EQ(release("{\"rules\":[3]}"), version_ + 2);
  EXPECT_EQ((*service_->list_releases("det"))["releases"].size(), 3u);
  // The same content twice is refused.
  auto dup =
      service_->create_release(admin_, "det", {{"sha256", proto::sha256_hex("{\"rules\":[1]}")}});
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().errc, Errc::Conflict);
  // Content that fails the channel schema is refused with findings, and no version is used up.
  ASSERT_TRUE(service_->put_channel(
      admin_, "det", {{"schema", {{"type", "object"}, {"required", {"rules"}}}}}, false));
  auto bad = service_->create_release(admin_, "det", {{"sha256", blob("{\"other\":1}")}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errc, Errc::Unprocessable);
  auto details = json::parse(bad.error().details_json, nullptr, false);
  ASSERT_TRUE(details.is_object()) << bad.error().details_json;
  EXPECT_NE(bad.error().details_json.find("rules"), std::string::npos);
  auto notjson = service_->create_release(admin_, "det", {{"sha256", blob("not json")}});
  ASSERT_FALSE(notjson);
  EXPECT_EQ(notjson.error().errc, Errc::Unprocessable);
  EXPECT_EQ(release("{\"rules\":[4]}"), version_ + 3);
  // Too big for the channel.
  ASSERT_TRUE(service_->put_channel(admin_, "det", {{"max_bytes", 5}}, false));
  auto big = service_->create_release(admin_, "det", {{"sha256", blob("{\"rules\":[5]}")}});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().errc, Errc::Unprocessable);
  // Input.
  EXPECT_EQ(service_->create_release(admin_, "det", {{"sha256", "XYZ"}}).error().errc,
            Errc::InvalidArgument);
  EXPECT_EQ(
      service_->create_release(admin_, "det", {{"sha256", std::string(64, 'a')}}).error().errc,
      Errc::NotFound);
  EXPECT_EQ(
      service_->create_release(admin_, "ghost", {{"sha256", std::string(64, 'a')}}).error().errc,
      Errc::NotFound);
  EXPECT_EQ(service_->create_release(admin_, "det", {{"sha256", std::string(64, 'a')}, {"x", 1}})
                .error()
                .errc,
            Errc::InvalidArgument);
  EXPECT_EQ(service_->get_release("det", 99).error().errc, Errc::NotFound);
  // Blobs: content-addressed, never a path from input.
  EXPECT_EQ(service_->blob_path("../../etc/passwd").error().errc, Errc::InvalidArgument);
  EXPECT_EQ(service_->blob_path(std::string(64, 'A')).error().errc, Errc::InvalidArgument);
  EXPECT_EQ(service_->blob_path(std::string(64, 'b')).error().errc, Errc::NotFound);
  EXPECT_TRUE(service_->blob_path(proto::sha256_hex("{\"rules\":[1]}")));
}

TEST_F(ServiceApi, QuarantineIsKnownBadForEveryAgent) {
  fleet(1, 1);
  auto q = service_->quarantine_release(admin_, "det", version_, "bad");
  ASSERT_TRUE(q);
  EXPECT_EQ((*q)["state"], "quarantined");
  auto n = event_count();
  ASSERT_TRUE(service_->quarantine_release(admin_, "det", version_, "bad"));  // idempotent
  EXPECT_EQ(event_count(), n);
  EXPECT_EQ(poll(0)["known_bad"], json::array({{{"channel", "det"}, {"version", version_}}}));
  auto r = service_->create_rollout(
      admin_, {{"channel", "det"}, {"version", version_}, {"stages", two_stages()}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errc, Errc::Conflict);
  EXPECT_EQ(service_->quarantine_release(admin_, "det", 42, "x").error().errc, Errc::NotFound);
}

TEST_F(ServiceApi, PoliciesValidateAndRolloutsCopyThem) {
  fleet(1, 1);
  Principal rel{"rel", Role::Release};
  auto p = service_->put_policy(rel, "std", {{"name", "std"}, {"stages", two_stages(30, 1)}}, true);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ((*p)["stages"].size(), 2u);
  EXPECT_EQ((*p)["stages"][0]["gate"]["alpha"], 0.001);  // defaults are explicit
  EXPECT_EQ(service_->put_policy(rel, "std", {{"stages", two_stages()}}, true).error().errc,
            Errc::Conflict);
  for (const auto& bad : {json{{"stages", json::array()}}, json{{"stages", "x"}}, json::object(),
                          json{{"stages", {{{"ring", "canary"}, {"percent", 0}}}}},
                          json{{"stages", {{{"ring", "canary"}, {"percent", 101}}}}},
                          json{{"stages", {{{"ring", "canary"}, {"bake_s", -1}}}}},
                          json{{"stages", {{{"ring", "canary"}, {"min_hosts", 0}}}}},
                          json{{"stages", {{{"ring", "canary"}, {"approval", "later"}}}}},
                          json{{"stages", {{{"ring", "Canary"}}}}},
                          json{{"stages", {{{"ring", "canary"}, {"gate", {{"alpha", 0.7}}}}}}},
                          json{{"stages", {{{"ring", "canary"}, {"gate", {{"min_ratio", 1}}}}}}},
                          json{{"stages", {{{"ring", "canary"}, {"gate", {{"nonsense", 1}}}}}}},
                          json{{"stages", {{{"ring", "canary"}}}}, {"extra", 1}}}) {
    auto r = service_->put_policy(rel, "p2", bad, true);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().errc, Errc::InvalidArgument) << bad.dump();
  }
  EXPECT_EQ(service_->get_policy("p2").error().errc, Errc::NotFound);
  // A rollout copies the plan: changing the policy later does not change it.
  auto ro =
      service_->create_rollout(rel, {{"channel", "det"}, {"version", version_}, {"policy", "std"}});
  ASSERT_TRUE(ro) << ro.error().message;
  EXPECT_EQ((*ro)["policy"], "std");
  EXPECT_EQ((*ro)["stages"][0]["bake_s"], 30);
  ASSERT_TRUE(service_->put_policy(
      rel, "std", {{"stages", json::array({{{"ring", "rest"}, {"bake_s", 5}}})}}, false));
  auto rid = (*ro)["id"].get<std::int64_t>();
  EXPECT_EQ(get(rid)["stages"].size(), 2u);
  EXPECT_EQ((*service_->get_policy("std"))["stages"].size(), 1u);
  open();
  EXPECT_EQ((*service_->get_policy("std"))["stages"][0]["bake_s"], 5);
  EXPECT_EQ(get(rid)["stages"][0]["bake_s"], 30);
}

TEST_F(ServiceApi, HeartbeatsReachTheStoreChangedRowsInFullRepeatsAsLastSeenOnly) {
  fleet(0, 3);
  auto row = [&](int i) {
    auto snap = store_->load();
    EXPECT_TRUE(snap);
    for (const auto& h : snap->hosts) {
      if (h.host_id == test_uuid(i)) return h;
    }
    ADD_FAILURE() << "no row for host " << i;
    return store::HostRow{};
  };
  // Host 0 runs version_, which a rollout sent it (what was never sent is not recorded).
  ASSERT_TRUE(act(rollout(json::array({{{"ring", "rest"}, {"bake_s", 600}, {"min_hosts", 10}}})),
                  "start"));
  ASSERT_EQ(offered(0), version_);
  heartbeat(0, version_);  // new channels: the full row
  advance_s(1);
  EXPECT_EQ(row(0).last_seen, clock_.now_ms() / 1000 - 1);
  EXPECT_EQ(json::parse(row(0).channels_json)["det"]["version"], version_);
  advance_s(100);
  heartbeat(0, version_);  // nothing new but the time: last_seen alone
  heartbeat(1, 0);
  auto seen_at = clock_.now_ms() / 1000;
  advance_s(1);
  EXPECT_EQ(row(0).last_seen, seen_at);
  EXPECT_EQ(json::parse(row(0).channels_json)["det"]["version"], version_);
  EXPECT_EQ(row(1).last_seen, seen_at);
  // A restarted server sees what memory had.
  advance_s(50);
  heartbeat(0, version_);
  service_->flush();  // shutdown path: everything pending, unbounded
  auto last = clock_.now_ms() / 1000;
  open();
  auto h = service_->get_host(test_uuid(0));
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)["last_seen"], last);
  EXPECT_EQ((*h)["channels"]["det"]["version"], version_);
}

TEST_F(ServiceApi, RolloutCreationRules) {
  fleet(1, 1);
  auto bad = [&](json body) {
    auto r = service_->create_rollout(admin_, body);
    EXPECT_FALSE(r) << body.dump();
    return r ? Errc::Internal : r.error().errc;
  };
  EXPECT_EQ(bad({{"channel", "det"}, {"version", version_}}), Errc::InvalidArgument);  // no plan
  EXPECT_EQ(
      bad({{"channel", "det"}, {"version", version_}, {"policy", "p"}, {"stages", two_stages()}}),
      Errc::InvalidArgument);
  EXPECT_EQ(bad({{"channel", "det"}, {"version", version_}, {"policy", "ghost"}}), Errc::NotFound);
  EXPECT_EQ(bad({{"channel", "ghost"}, {"version", 1}, {"stages", two_stages()}}), Errc::NotFound);
  EXPECT_EQ(bad({{"channel", "det"}, {"version", 9}, {"stages", two_stages()}}), Errc::NotFound);
  EXPECT_EQ(bad({{"channel", "det"}, {"version", 0}, {"stages", two_stages()}}),
            Errc::InvalidArgument);
  EXPECT_EQ(bad({{"channel", "det"}, {"version", "1"}, {"stages", two_stages()}}),
            Errc::InvalidArgument);
  EXPECT_EQ(bad({{"channel", "det"}, {"version", version_}, {"stages", {{{"ring", "ghost"}}}}}),
            Errc::InvalidArgument);
  EXPECT_EQ(bad({{"channel", "det"}, {"version", version_}, {"stages", two_stages()}, {"x", 1}}),
            Errc::InvalidArgument);
  auto n = event_count();
  auto id = rollout(two_stages());
  EXPECT_EQ(get(id)["state"], "pending");
  EXPECT_EQ(event_count(), n + 1);
  auto busy = service_->create_rollout(
      admin_, {{"channel", "det"}, {"version", version_}, {"stages", two_stages()}});
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().errc, Errc::Conflict);
  EXPECT_NE(busy.error().message.find("pending"),
            std::string::npos);  // names the active one's state
  // Listing and filters.
  EXPECT_EQ((*service_->list_rollouts("det", std::nullopt))["rollouts"].size(), 1u);
  EXPECT_EQ((*service_->list_rollouts("other", std::nullopt))["rollouts"].size(), 0u);
  EXPECT_EQ((*service_->list_rollouts(std::nullopt, "pending"))["rollouts"].size(), 1u);
  EXPECT_EQ((*service_->list_rollouts(std::nullopt, "running"))["rollouts"].size(), 0u);
  EXPECT_EQ(service_->get_rollout(999).error().errc, Errc::NotFound);
  // Ids keep counting after a restart.
  ASSERT_TRUE(act(id, "abort", {{"reason", "x"}}));
  open();
  auto v2 = release("{\"rules\":[2]}");
  auto id2 = rollout(two_stages(), v2);
  EXPECT_GT(id2, id);
}

TEST_F(ServiceApi, PreviewShowsWhichHostsEachStageReaches) {
  fleet(3, 7);
  ASSERT_TRUE(service_->patch_host(admin_, test_uuid(0), {{"pinned", true}}));
  auto p = service_->preview({{"channel", "det"}, {"stages", two_stages(60, 1)}});
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ((*p)["fleet_hosts"], 10);
  ASSERT_EQ((*p)["stages"].size(), 2u);
  EXPECT_EQ((*p)["stages"][0]["new_hosts"], 2);
  EXPECT_EQ((*p)["stages"][0]["pinned_hosts_held_back"], 1);
  EXPECT_EQ((*p)["stages"][1]["new_hosts"], 7);
  EXPECT_EQ((*p)["stages"][1]["cumulative_hosts"], 9);
  EXPECT_EQ((*p)["stages"][1]["earliest_start_s"], 60);
  EXPECT_EQ(service_->preview({{"channel", "ghost"}, {"stages", two_stages()}}).error().errc,
            Errc::NotFound);
  EXPECT_EQ(service_->preview({{"stages", two_stages()}, {"x", 1}}).error().errc,
            Errc::InvalidArgument);
  // A preview changes nothing.
  EXPECT_TRUE((*service_->list_rollouts(std::nullopt, std::nullopt))["rollouts"].empty());
}

TEST_F(ServiceApi, EventsCarryActorAndReasonAndPageByCursor) {
  fleet(1, 1);
  Principal dave{"dave", Role::Release};
  auto id = rollout(two_stages());
  ASSERT_TRUE(service_->rollout_action(dave, id, "start", {{"reason", "go"}}));
  ASSERT_TRUE(service_->rollout_action(dave, id, "pause", {{"reason", "lunch"}}));
  auto evs = events(id);
  bool start = false, pause = false;
  for (const auto& e : evs) {
    EXPECT_EQ(e["rollout"], id);
    EXPECT_GT(e["time"].get<std::int64_t>(), 0);
    if (e["kind"] == "rollout_start") {
      start = true;
      EXPECT_EQ(e["actor"], "dave");
      EXPECT_EQ(e["data"]["reason"], "go");
      EXPECT_EQ(e["data"]["from"], "pending");
      EXPECT_EQ(e["data"]["to"], "baking");
    }
    if (e["kind"] == "rollout_pause") {
      pause = true;
      EXPECT_EQ(e["actor"], "dave");
      EXPECT_EQ(e["data"]["reason"], "lunch");
    }
  }
  EXPECT_TRUE(start);
  EXPECT_TRUE(pause);
  // Cursor paging over the whole log.
  auto all = events();
  auto first = (*service_->list_events(std::nullopt, 0, 2));
  ASSERT_EQ(first["events"].size(), 2u);
  auto rest = (*service_->list_events(std::nullopt, first["next_after"], 1000));
  EXPECT_EQ(rest["events"].size() + 2, all.size());
  // The live stream: replay after a cursor, then new events as SSE frames.
  std::vector<std::string> frames;
  ASSERT_TRUE(
      service_->subscribe_events(all.back()["id"].get<std::int64_t>() - 1, [&](std::string f) {
        frames.push_back(std::move(f));
        return true;
      }));
  ASSERT_GE(frames.size(), 2u);  // the last event replayed, then ": connected"
  ASSERT_TRUE(service_->rollout_action(dave, id, "resume", json::object()));
  bool streamed = false;
  for (const auto& f : frames)
    streamed = streamed || f.find("event: rollout_resume") != std::string::npos;
  EXPECT_TRUE(streamed);
}

TEST_F(ServiceApi, AStreamResumedFarBehindReplaysEverythingItMissed) {
  std::int64_t cursor = 0;
  // Held in a local: a range-for over a member of the temporary read freed memory (ASan).
  auto listed = service_->list_events(std::nullopt, 0, 100000);
  ASSERT_TRUE(listed);
  for (const auto& e : (*listed)["events"]) cursor = e["id"];
  // More events than one replay page (1000).
  for (int i = 0; i < 1200; ++i) {
    ASSERT_TRUE(service_->put_ring(admin_, "r" + std::to_string(i % 3),
                                   {{"rank", i % 3},
                                    {"selector", {{"buckets", {0, 10000}}}},
                                    {"description", std::to_string(i)}},
                                   i < 3));
  }
  std::vector<std::int64_t> ids;
  ASSERT_TRUE(service_->subscribe_events(cursor, [&](std::string f) {
    if (f.compare(0, 4, "id: ") == 0) ids.push_back(std::strtoll(f.c_str() + 4, nullptr, 10));
    return true;
  }));
  ASSERT_EQ(ids.size(), 1200u);
  for (std::size_t i = 1; i < ids.size(); ++i) ASSERT_LT(ids[i - 1], ids[i]);
}

}  // namespace
}  // namespace ringfence::server::core
