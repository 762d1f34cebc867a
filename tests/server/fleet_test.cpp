#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "proto/bucket.hpp"
#include "server/fleet/registry.hpp"
#include "server/fleet/selector.hpp"

namespace ringfence::server::fleet {
namespace {
using nlohmann::json;

TEST(LabelExpression, ParsesEveryClauseForm) {
  auto c = parse_label_expression(
      "os=windows,site in (fra1, ams2),arch!=arm64,tier notin (a,b),gpu,!legacy");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->size(), 6u);
  EXPECT_EQ((*c)[0].op, LabelClause::Op::Eq);
  EXPECT_EQ((*c)[1].op, LabelClause::Op::In);
  EXPECT_EQ((*c)[1].values, (std::vector<std::string>{"fra1", "ams2"}));
  EXPECT_EQ((*c)[2].op, LabelClause::Op::Ne);
  EXPECT_EQ((*c)[3].op, LabelClause::Op::NotIn);
  EXPECT_EQ((*c)[4].op, LabelClause::Op::Exists);
  EXPECT_EQ((*c)[5].op, LabelClause::Op::Absent);
}

TEST(LabelExpression, RefusesMalformedInput) {
  for (const char* bad : {"", "os=", "=windows", "site in (fra1", "site in fra1)", "a in ((b))",
                          "os=win,,site=x", "OS=windows", "os=bad value", "site in ()", "os=a)b"}) {
    EXPECT_FALSE(parse_label_expression(bad)) << bad;
  }
  EXPECT_FALSE(parse_label_expression(std::string(3000, 'a')));
}

TEST(Selector, MatchesByLabelsBucketsAndHosts) {
  auto s = parse_selector(json{{"labels", "os=windows,site in (fra1,ams2)"}});
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->matches("x", 0, {{"os", "windows"}, {"site", "ams2"}}));
  EXPECT_FALSE(s->matches("x", 0, {{"os", "windows"}, {"site", "iad1"}}));
  EXPECT_FALSE(s->matches("x", 0, {{"site", "fra1"}}));
  auto b = parse_selector(json{{"buckets", {0, 100}}});
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->matches("x", 99, {}));
  EXPECT_FALSE(b->matches("x", 100, {}));
  const std::string id = "00000000-0000-4000-8000-000000000001";
  auto h = parse_selector(json{{"hosts", {id}}});
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->matches(id, 5, {}));
  EXPECT_FALSE(h->matches("00000000-0000-4000-8000-000000000002", 5, {}));
}

TEST(Selector, RefusesBadShapes) {
  for (const auto& bad :
       {json::object(), json{{"buckets", {5, 5}}}, json{{"buckets", {-1, 10}}},
        json{{"buckets", {0, 10001}}}, json{{"buckets", {1}}}, json{{"hosts", {"not-a-uuid"}}},
        json{{"labels", 7}}, json{{"labels", "a=b"}, {"buckets", {0, 1}}}, json{{"color", "red"}},
        json::array()}) {
    EXPECT_FALSE(parse_selector(bad)) << bad.dump();
  }
}

Ring ring(const std::string& name, std::int64_t rank, const json& sel) {
  return Ring{name, rank, *parse_selector(sel), "", 0};
}

std::string uuid(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

TEST(Registry, RankOrderLastRingCatchesEveryoneAndMembershipFollowsChanges) {
  Registry r;
  r.set_rings(
      {ring("rest", 5, {{"buckets", {0, 1}}}), ring("canary", 0, {{"labels", "site=fra1"}})});
  ASSERT_EQ(r.rings()[0].name, "canary");  // sorted by rank
  for (int i = 0; i < 100; ++i) {
    Host h;
    h.id = uuid(i);
    h.labels = r.intern({{"site", i < 10 ? "fra1" : "iad1"}});
    r.upsert(std::move(h));
  }
  EXPECT_EQ(r.rings()[0].size, 10u);
  EXPECT_EQ(r.rings()[1].size, 90u);  // the last ring catches everyone else, whatever its selector
  EXPECT_EQ(r.at(*r.find(uuid(0))).bucket, proto::bucket_of(proto::BucketKey{}, uuid(0)));
  // A new ring of higher priority takes hosts over.
  auto rings = r.rings();
  rings.push_back(ring("vip", -1, {{"hosts", {uuid(50), uuid(1)}}}));
  r.set_rings(rings);
  EXPECT_EQ(r.rings()[0].name, "vip");
  EXPECT_EQ(r.rings()[0].size, 2u);
  EXPECT_EQ(r.rings()[1].size, 9u);
  EXPECT_EQ(r.rings()[2].size, 89u);
  r.remove(*r.find(uuid(50)));
  EXPECT_FALSE(r.find(uuid(50)));
  EXPECT_EQ(r.rings()[0].size, 1u);
  EXPECT_EQ(r.live(), 99u);
}

TEST(Registry, IndexFindsRemovesAndReusesAcrossGrowth) {
  // Ids that share long prefixes (as sequential UUIDs do) stress the open-addressing index.
  Registry r;
  const int n = 5000;
  for (int i = 0; i < n; ++i) {
    Host h;
    h.id = uuid(i);
    EXPECT_EQ(r.upsert(std::move(h)), static_cast<HostIndex>(i));
  }
  EXPECT_EQ(r.live(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ASSERT_EQ(r.find(uuid(i)), static_cast<HostIndex>(i)) << i;
  EXPECT_EQ(r.at(7).id.str(), uuid(7));
  EXPECT_EQ(r.at(7).bucket, proto::bucket_of(proto::BucketKey{}, uuid(7)));
  EXPECT_FALSE(r.find(uuid(n)));
  EXPECT_FALSE(r.find("not-a-uuid"));
  EXPECT_FALSE(r.find(std::string("00000000-0000-4000-8000-00000000000A")));  // not lower-case
  for (int i = 0; i < n; i += 3) r.remove(static_cast<HostIndex>(i));
  for (int i = 0; i < n; ++i) {
    if (i % 3 == 0) {
      ASSERT_FALSE(r.find(uuid(i))) << i;
    } else {
      ASSERT_EQ(r.find(uuid(i)), static_cast<HostIndex>(i)) << i;
    }
  }
  Host again;
  again.id = uuid(n + 1);
  auto slot = r.upsert(std::move(again));
  EXPECT_EQ(slot % 3, 0u);  // a freed slot
  EXPECT_EQ(r.find(uuid(n + 1)), slot);
  // Re-upserting an id replaces the host in place.
  Host same;
  same.id = uuid(1);
  same.agent_version = "2";
  EXPECT_EQ(r.upsert(std::move(same)), 1u);
  EXPECT_EQ(r.at(1).agent_version, "2");
}

// Hosts uuid(0..n-1) in slots 0..n-1.
void add_hosts(Registry& r, int n) {
  for (int i = 0; i < n; ++i) {
    Host h;
    h.id = uuid(i);
    r.upsert(std::move(h));
  }
}

TEST(Registry, DirtyHostsAreListedOnceAndCleared) {
  Registry r;
  add_hosts(r, 10);
  r.mark_dirty(5);
  r.mark_dirty(2);
  r.mark_dirty(5);
  r.mark_dirty(9);
  r.remove(9);
  EXPECT_EQ(r.dirty_hosts(), (std::vector<HostIndex>{2, 5}));
  EXPECT_TRUE(r.dirty_hosts().empty());
  EXPECT_FALSE(r.at(5).dirty);
  // Bounded: the oldest marks first (each batch in index order), the rest stay pending.
  for (HostIndex i : {8u, 1u, 6u, 0u}) r.mark_dirty(i);
  EXPECT_EQ(r.dirty_hosts(3), (std::vector<HostIndex>{1, 6, 8}));
  EXPECT_EQ(r.dirty_pending(), 1u);
  EXPECT_TRUE(r.at(0).dirty);
  EXPECT_EQ(r.dirty_hosts(3), (std::vector<HostIndex>{0}));
}

TEST(Registry, SeenHostsAreQueuedOnceInOrderAndBounded) {
  Registry r;
  add_hosts(r, 10);
  for (HostIndex i : {7u, 3u, 7u, 1u, 4u, 8u, 3u}) r.mark_seen(i);
  EXPECT_EQ(r.seen_pending(), 5u);  // 7 3 1 4 8: a host heartbeating again is not queued twice
  r.mark_dirty(4);                  // its full row will carry last_seen
  r.remove(1);
  EXPECT_EQ(r.seen_hosts(2), (std::vector<HostIndex>{7, 3}));
  EXPECT_EQ(r.seen_hosts(100), (std::vector<HostIndex>{8}));
  EXPECT_TRUE(r.seen_hosts(100).empty());
  EXPECT_EQ(r.seen_pending(), 0u);
  // A dirty host is not queued; once flushed as dirty it can be queued again.
  r.mark_seen(4);
  EXPECT_EQ(r.seen_pending(), 0u);
  EXPECT_EQ(r.dirty_hosts(), (std::vector<HostIndex>{4}));
  r.mark_seen(4);
  EXPECT_EQ(r.seen_hosts(1), (std::vector<HostIndex>{4}));
}

TEST(Registry, CredentialDigestRoundTripsAndCompares) {
  auto hex = std::string("00ff") + std::string(60, 'a');
  auto d = Digest32::from_hex(hex);
  EXPECT_EQ(d.hex(), hex);
  EXPECT_TRUE(d.equals(Digest32::from_hex(hex)));
  EXPECT_FALSE(d.equals(Digest32::from_hex(std::string("00fe") + std::string(60, 'a'))));
}

TEST(Registry, IdenticalLabelSetsAreShared) {
  Registry r;
  auto a = r.intern({{"os", "linux"}});
  auto b = r.intern({{"os", "linux"}});
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a.get(), r.intern({{"os", "windows"}}).get());
}

// Consumer versions come from heartbeats and are interned like labels: a host that reports a
// new made-up version on every heartbeat must not grow the table with sets nobody holds.
TEST(Registry, SetsNobodyHoldsAreForgotten) {
  Registry r;
  auto held = r.intern({{"os", "linux"}});
  for (int i = 0; i < 10000; ++i) (void)r.intern({{"sensor", std::to_string(i)}});
  EXPECT_LE(r.interned_count(), 64u);
  EXPECT_EQ(held.get(), r.intern({{"os", "linux"}}).get());  // a held set stays shared
}

TEST(LabelExpression, TrimsSpacesAndKeepsValues) {
  auto c = parse_label_expression(" os = windows , site in ( fra1 , ams2 ) ");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].key, "os");
  EXPECT_EQ((*c)[0].values, (std::vector<std::string>{"windows"}));
  EXPECT_EQ((*c)[1].values, (std::vector<std::string>{"fra1", "ams2"}));
}

TEST(LabelExpression, RefusesBadKeysValuesAndSizes) {
  for (const std::string& bad :
       {std::string("1os=a"), std::string("o s=a"), std::string("os=a=b"), std::string("os!=a!b"),
        std::string("site in (a,,b)"), std::string("site in (a b)"), std::string("site notin ()"),
        std::string("site in a,b"), std::string("!"), std::string("!!os"),
        std::string("os=" + std::string(129, 'v')), std::string(std::string(33, 'k') + "=v"),
        std::string(","), std::string("os=a,"), std::string("site in (a,(b))"),
        std::string("site in (a))")}) {
    EXPECT_FALSE(parse_label_expression(bad)) << bad;
  }
  // At most 32 clauses, at most 256 values in a set, at most 2048 bytes.
  std::string many;
  for (int i = 0; i < 33; ++i) many += (i ? ",k" : "k") + std::to_string(i);
  EXPECT_FALSE(parse_label_expression(many));
  std::string set = "site in (";
  for (int i = 0; i < 257; ++i) set += (i ? ",v" : "v") + std::to_string(i);
  EXPECT_FALSE(parse_label_expression(set + ")"));
  std::string ok32;
  for (int i = 0; i < 32; ++i) ok32 += (i ? ",k" : "k") + std::to_string(i);
  EXPECT_TRUE(parse_label_expression(ok32));
  EXPECT_TRUE(parse_label_expression("os=" + std::string(128, 'v')));
}

TEST(Selector, EveryLabelOperatorMatches) {
  auto sel = [](const std::string& e) {
    auto s = parse_selector(json{{"labels", e}});
    EXPECT_TRUE(s) << e;
    return *s;
  };
  const std::map<std::string, std::string> win = {
      {"os", "windows"}, {"site", "fra1"}, {"gpu", "yes"}};
  const std::map<std::string, std::string> lin = {{"os", "linux"}, {"site", "iad1"}};
  EXPECT_TRUE(sel("os=windows").matches("x", 0, win));
  EXPECT_FALSE(sel("os=windows").matches("x", 0, lin));
  EXPECT_TRUE(sel("os!=windows").matches("x", 0, lin));
  EXPECT_FALSE(sel("os!=windows").matches("x", 0, win));
  EXPECT_TRUE(sel("os!=windows").matches("x", 0, {}));  // absent is "not windows"
  EXPECT_TRUE(sel("site in (fra1,ams2)").matches("x", 0, win));
  EXPECT_FALSE(sel("site in (fra1,ams2)").matches("x", 0, lin));
  EXPECT_FALSE(sel("site in (fra1,ams2)").matches("x", 0, {}));
  EXPECT_TRUE(sel("site notin (fra1,ams2)").matches("x", 0, lin));
  EXPECT_FALSE(sel("site notin (fra1,ams2)").matches("x", 0, win));
  EXPECT_TRUE(sel("site notin (fra1)").matches("x", 0, {}));
  EXPECT_TRUE(sel("gpu").matches("x", 0, win));
  EXPECT_FALSE(sel("gpu").matches("x", 0, lin));
  EXPECT_TRUE(sel("!gpu").matches("x", 0, lin));
  EXPECT_FALSE(sel("!gpu").matches("x", 0, win));
  // Clauses are ANDed.
  EXPECT_TRUE(sel("os=windows,site in (fra1),gpu").matches("x", 0, win));
  EXPECT_FALSE(sel("os=windows,site in (fra1),!gpu").matches("x", 0, win));
  // Values compare exactly (case, prefixes).
  EXPECT_FALSE(sel("os=Windows").matches("x", 0, win));
  EXPECT_FALSE(sel("os=win").matches("x", 0, win));
}

TEST(Selector, BucketRangesAreHalfOpenAndBounded) {
  auto all = parse_selector(json{{"buckets", {0, 10000}}});
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->matches("x", 0, {}));
  EXPECT_TRUE(all->matches("x", 9999, {}));
  auto mid = parse_selector(json{{"buckets", {100, 200}}});
  ASSERT_TRUE(mid);
  EXPECT_FALSE(mid->matches("x", 99, {}));
  EXPECT_TRUE(mid->matches("x", 100, {}));
  EXPECT_TRUE(mid->matches("x", 199, {}));
  EXPECT_FALSE(mid->matches("x", 200, {}));
  for (const auto& bad :
       {json{{"buckets", {0.5, 10}}}, json{{"buckets", {"0", "10"}}}, json{{"buckets", {10, 5}}},
        json{{"buckets", {0, 10, 20}}}, json{{"buckets", json::object()}}}) {
    EXPECT_FALSE(parse_selector(bad)) << bad.dump();
  }
}

TEST(Selector, HostListsAreStrictAndRoundTrip) {
  EXPECT_TRUE(parse_selector(json{{"hosts", json::array()}}));
  EXPECT_FALSE(
      parse_selector(json{{"hosts", {"00000000-0000-4000-8000-00000000000A"}}}));  // upper case
  EXPECT_FALSE(parse_selector(json{{"hosts", {7}}}));
  EXPECT_FALSE(parse_selector(json{{"hosts", "00000000-0000-4000-8000-000000000001"}}));
  json big = json::array();
  for (int i = 0; i < 10001; ++i) big.push_back("00000000-0000-4000-8000-000000000001");
  EXPECT_FALSE(parse_selector(json{{"hosts", big}}));
  for (const auto& j :
       {json{{"hosts", {"00000000-0000-4000-8000-000000000001"}}},
        json{{"labels", "os=windows,site in (fra1,ams2)"}}, json{{"buckets", {5, 77}}}}) {
    auto s = parse_selector(j);
    ASSERT_TRUE(s);
    EXPECT_EQ(json::parse(selector_json(*s)), j);
  }
}

TEST(Registry, NoRingsMeansNoRingAndTenantIsALabel) {
  Registry r;
  Host h;
  h.id = "00000000-0000-4000-8000-000000000001";
  h.tenant = "acme";
  auto i = r.upsert(h);
  EXPECT_EQ(r.at(i).ring, -1);
  std::vector<Ring> rings;
  rings.push_back(Ring{"acme", 0, *parse_selector(json{{"labels", "tenant=acme"}}), "", 0});
  rings.push_back(Ring{"rest", 1, *parse_selector(json{{"buckets", {0, 1}}}), "", 0});
  r.set_rings(rings);
  EXPECT_EQ(r.at(i).ring, 0);
  // Re-upserting the same id replaces it (and its counts), never duplicates it.
  h.tenant = "other";
  EXPECT_EQ(r.upsert(h), i);
  EXPECT_EQ(r.live(), 1u);
  EXPECT_EQ(r.at(i).ring, 1);
  EXPECT_EQ(r.rings()[0].size, 0u);
  EXPECT_EQ(r.rings()[1].size, 1u);
  // A removed host's slot is reused; removing twice is harmless.
  r.remove(i);
  r.remove(i);
  EXPECT_EQ(r.live(), 0u);
  EXPECT_EQ(r.rings()[1].size, 0u);
  Host g;
  g.id = "00000000-0000-4000-8000-000000000002";
  EXPECT_EQ(r.upsert(g), i);
  EXPECT_EQ(r.ring_index("rest"), 1);
  EXPECT_EQ(r.ring_index("ghost"), -1);
}

TEST(Registry, EqualRanksSortByName) {
  Registry r;
  std::vector<Ring> rings;
  rings.push_back(Ring{"zeta", 1, *parse_selector(json{{"buckets", {0, 1}}}), "", 0});
  rings.push_back(Ring{"alpha", 1, *parse_selector(json{{"buckets", {0, 1}}}), "", 0});
  rings.push_back(Ring{"first", 0, *parse_selector(json{{"buckets", {0, 1}}}), "", 0});
  r.set_rings(rings);
  EXPECT_EQ(r.rings()[0].name, "first");
  EXPECT_EQ(r.rings()[1].name, "alpha");
  EXPECT_EQ(r.rings()[2].name, "zeta");
}

TEST(Registry, BucketsFollowTheInstallationKey) {
  // The bucket is keyed (proto/bucket.hpp): setting the key recomputes every host's bucket and
  // its bucket-range ring; hosts added later use the key too.
  Registry r;
  r.set_rings(
      {ring("low", 0, {{"buckets", {0, 5000}}}), ring("rest", 1, {{"buckets", {0, 10000}}})});
  for (int i = 0; i < 200; ++i) {
    Host h;
    h.id = uuid(i);
    r.upsert(std::move(h));
  }
  proto::BucketKey key;
  for (std::size_t k = 0; k < key.size(); ++k) key[k] = static_cast<std::uint8_t>(k * 7 + 1);
  auto before_low = r.rings()[0].size;
  auto version = r.membership_version();
  r.set_bucket_key(key);
  EXPECT_NE(r.membership_version(), version);
  std::size_t low = 0, moved = 0;
  for (int i = 0; i < 200; ++i) {
    const auto& h = r.at(*r.find(uuid(i)));
    EXPECT_EQ(h.bucket, proto::bucket_of(key, uuid(i)));
    moved += h.bucket != proto::bucket_of(proto::BucketKey{}, uuid(i));
    low += h.bucket < 5000;
    EXPECT_EQ(h.ring, h.bucket < 5000 ? 0 : 1);
  }
  EXPECT_EQ(r.rings()[0].size, low);
  EXPECT_GT(moved, 190u);  // another key, other buckets
  (void)before_low;
  Host late;
  late.id = uuid(500);
  auto i = r.upsert(std::move(late));
  EXPECT_EQ(r.at(i).bucket, proto::bucket_of(key, uuid(500)));
}

}  // namespace
}  // namespace ringfence::server::fleet
