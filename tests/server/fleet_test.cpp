#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "proto/bucket.hpp"
#include "server/fleet/registry.hpp"
#include "server/fleet/selector.hpp"

namespace ringfence::server::fleet {
namespace {
using nlohmann::json;

TEST(LabelExpression, ParsesEveryClauseForm) {
  auto c = parse_label_expression("os=windows,site in (fra1, ams2),arch!=arm64,tier notin (a,b),gpu,!legacy");
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
                          "os=win,,site=x", "OS=windows", "os=bad value", "site in ()",
                          "os=a)b"}) {
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
  for (const auto& bad : {json::object(), json{{"buckets", {5, 5}}}, json{{"buckets", {-1, 10}}},
                          json{{"buckets", {0, 10001}}}, json{{"buckets", {1}}},
                          json{{"hosts", {"not-a-uuid"}}}, json{{"labels", 7}},
                          json{{"labels", "a=b"}, {"buckets", {0, 1}}}, json{{"color", "red"}},
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
  r.set_rings({ring("rest", 5, {{"buckets", {0, 1}}}), ring("canary", 0, {{"labels", "site=fra1"}})});
  ASSERT_EQ(r.rings()[0].name, "canary");  // sorted by rank
  for (int i = 0; i < 100; ++i) {
    Host h;
    h.id = uuid(i);
    h.labels = r.intern({{"site", i < 10 ? "fra1" : "iad1"}});
    r.upsert(std::move(h));
  }
  EXPECT_EQ(r.rings()[0].size, 10u);
  EXPECT_EQ(r.rings()[1].size, 90u);  // the last ring catches everyone else, whatever its selector
  EXPECT_EQ(r.at(*r.find(uuid(0))).bucket, proto::bucket_of(uuid(0)));
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

TEST(Registry, IdenticalLabelSetsAreShared) {
  Registry r;
  auto a = r.intern({{"os", "linux"}});
  auto b = r.intern({{"os", "linux"}});
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a.get(), r.intern({{"os", "windows"}}).get());
}

}  // namespace
}  // namespace ringfence::server::fleet
