#pragma once
// A Service on a real SQLite store (or PostgreSQL, see open()) in a temp dir (blobs in the same
// dir), a fake clock and no sockets: simulated hosts enroll, poll their desired state, heartbeat
// and report, and the test moves time forward and calls tick() the way the App's timer does.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "proto/signing.hpp"
#include "server/core/service.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"

namespace ringfence::server::core {

inline std::string test_uuid(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

class Harness : public ::testing::Test {
 protected:
  using json = nlohmann::json;

  // (Re)opens the store and constructs a fresh Service on it, as a restarted process would.
  void open(Options opt = {}) {
    service_.reset();
    store_.reset();
    // RINGFENCE_TEST_STORE=postgres runs the same tests on a PostgreSQL the harness starts (not
    // in CI: a cluster per test; the DiskFull tests only bite SQLite, a file of this process).
    const char* backend = std::getenv("RINGFENCE_TEST_STORE");
    bool on_postgres = backend && std::string(backend) == "postgres";
    if (on_postgres && !pg_) pg_ = std::make_unique<testing::PostgresCluster>();
    auto s = on_postgres ? store::open_postgres(pg_->url(), store::embedded_postgres_migrations())
                         : store::open_sqlite(dir_.path() + "/r.db", store::embedded_migrations());
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    opt.data_dir = dir_.path();
    opt.exposed_heartbeat_s = 5;
    opt.healthy_after_s = 10;
    // These tests enroll fleets moments before a rollout (as the scenarios do): no track record
    // is asked for unless a test sets evidence_min_age_s_ (tests/server/trust_test.cpp).
    opt.evidence_min_age_s = evidence_min_age_s_;
    options_ = opt;
    service_ = std::make_unique<Service>(*store_, clock_, key_, opt);
    auto st = service_->load();
    ASSERT_TRUE(st) << st.error().message;
    for (std::size_t i = 0; i < creds_.size(); ++i) {  // host indices of the new process
      auto idx = service_->authenticate_host("Bearer " + creds_[i]);
      if (idx) hosts_[i] = *idx;
    }
  }

  void SetUp() override {
    key_ = proto::generate_keypair();
    open();
  }

  // Rings: canary = label ring=canary (rank 0), rest = everyone else (rank 1); hosts 0..canary-1
  // carry ring=canary. Channel "det" with release 1 ({"rules":[1]}).
  void fleet(int canary, int rest, Options opt = {}) {
    if (opt.budget_per_hour || opt.tenant_budget_per_hour) open(opt);
    ASSERT_TRUE(service_->put_ring(admin_, "canary",
                                   {{"rank", 0}, {"selector", {{"labels", "ring=canary"}}}}, true));
    ASSERT_TRUE(service_->put_ring(admin_, "rest",
                                   {{"rank", 1}, {"selector", {{"buckets", {0, 10000}}}}}, true));
    for (int i = 0; i < canary + rest; ++i) add_host(i, i < canary ? "canary" : "rest");
    ASSERT_TRUE(service_->put_channel(admin_, "det", {{"name", "det"}}, true));
    version_ = release("{\"rules\":[1]}");
  }

  void add_host(int i, const std::string& ring_label) {
    if (enroll_token_.empty()) {
      auto tok = service_->create_enrollment_token(admin_, {{"name", "fleet"}});
      ASSERT_TRUE(tok) << tok.error().message;
      enroll_token_ = (*tok)["token"];
    }
    proto::EnrollRequest req{enroll_token_, test_uuid(i), {{"ring", ring_label}}, "t"};
    auto r = service_->enroll(req);
    ASSERT_TRUE(r) << r.error().message;
    auto idx = service_->authenticate_host("Bearer " + r->credential);
    ASSERT_TRUE(idx);
    hosts_.push_back(*idx);
    creds_.push_back(r->credential);
  }

  std::string blob(const std::string& content) {
    auto path = dir_.path() + "/upload-" + std::to_string(++uploads_);
    std::ofstream(path) << content;
    auto b = service_->adopt_blob(path);
    EXPECT_TRUE(b) << b.error().message;
    return (*b)["sha256"];
  }

  std::int64_t release(const std::string& content) {
    auto rel = service_->create_release(admin_, "det", {{"sha256", blob(content)}});
    EXPECT_TRUE(rel) << rel.error().message;
    return rel ? (*rel)["version"].get<std::int64_t>() : 0;
  }

  std::int64_t rollout(json stages, std::int64_t version = 0) {
    auto r = service_->create_rollout(
        admin_,
        {{"channel", "det"}, {"version", version ? version : version_}, {"stages", stages}});
    EXPECT_TRUE(r) << r.error().message;
    return r ? (*r)["id"].get<std::int64_t>() : 0;
  }

  Expected<json> act(std::int64_t id, const std::string& action, json body = json::object()) {
    return service_->rollout_action(admin_, id, action, body);
  }

  json get(std::int64_t id) { return *service_->get_rollout(id); }
  json events(std::optional<std::int64_t> rollout = std::nullopt) {
    return (*service_->list_events(rollout, 0, 1000))["events"];
  }
  std::size_t event_count() { return events().size(); }

  // One poll without parking: the desired body as JSON.
  json poll(int h) {
    auto a = service_->desired(hosts_[static_cast<size_t>(h)], "", 0, nullptr);
    EXPECT_TRUE(a && *a);
    if (!a || !*a) return json::object();
    return json::parse((*a)->body);
  }
  json offered_channel(int h) {
    auto d = poll(h);
    for (const auto& c : d["channels"]) {
      if (c["channel"] == "det") return c;
    }
    return json();
  }
  std::int64_t offered(int h) {
    auto c = offered_channel(h);
    return c.is_null() ? 0 : c["version"].get<std::int64_t>();
  }
  void heartbeat(int h, std::int64_t version, const std::string& boot = "b1",
                 std::int64_t up = 100) {
    proto::Heartbeat hb{boot, up, {}};
    if (version) hb.channels["det"] = {version, "active"};
    ASSERT_TRUE(service_->heartbeat(hosts_[static_cast<size_t>(h)], hb));
  }
  void report(int h, proto::ReportKind kind, std::int64_t version) {
    proto::Report r{kind, clock_.now_ms(), "det", version, "b2", "{}"};
    ASSERT_TRUE(service_->reports(hosts_[static_cast<size_t>(h)], {r}));
  }
  void crash(int h, std::int64_t version) { report(h, proto::ReportKind::Crash, version); }

  // s seconds in steps of 4 s while hosts [from, to) keep heartbeating on version v.
  void live_for(int s, int from, int to, std::int64_t v) {
    for (int t = 0; t < s; t += 4) {
      advance_s(4);
      for (int h = from; h < to; ++h) heartbeat(h, v);
    }
  }
  // s seconds in steps of 4 s while hosts [from, to) behave like agents: poll, run what they are
  // offered, heartbeat.
  void live_as_agents(int s, int from, int to) {
    for (int t = 0; t < s; t += 4) {
      advance_s(4);
      for (int h = from; h < to; ++h) heartbeat(h, offered(h));
    }
  }
  void advance_s(int s) {
    clock_.advance_ms(s * 1000LL);
    service_->tick();
  }

  // Rolls `v` out through canary then rest (short bakes) with healthy agents: v becomes stable.
  void make_stable(std::int64_t v, int hosts) {
    auto id = rollout(json::array({{{"ring", "canary"}, {"bake_s", 12}, {"min_hosts", 1}},
                                   {{"ring", "rest"}, {"bake_s", 12}, {"min_hosts", 1}}}),
                      v);
    ASSERT_TRUE(act(id, "start"));
    for (int i = 0; i < 40 && get(id)["state"] != "completed"; ++i) live_as_agents(4, 0, hosts);
    ASSERT_EQ(get(id)["state"], "completed") << get(id).dump();
  }

  testing::TempDir dir_;
  FakeClock clock_;
  proto::KeyPair key_;
  Options options_;
  std::unique_ptr<testing::PostgresCluster> pg_;  // RINGFENCE_TEST_STORE=postgres only
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Service> service_;
  Principal admin_{"admin", Role::Admin};
  std::string enroll_token_;
  std::vector<std::int64_t> hosts_;
  std::vector<std::string> creds_;
  std::int64_t version_ = 0;
  int uploads_ = 0;
  std::int64_t evidence_min_age_s_ = 0;
};

inline nlohmann::json two_stages(std::int64_t bake = 60, int min_hosts = 3,
                                 const char* approval = "auto") {
  return nlohmann::json::array(
      {{{"ring", "canary"}, {"bake_s", bake}, {"min_hosts", min_hosts}},
       {{"ring", "rest"}, {"bake_s", bake}, {"min_hosts", min_hosts}, {"approval", approval}}});
}

}  // namespace ringfence::server::core
