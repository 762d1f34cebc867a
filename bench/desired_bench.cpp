// desired_bench: the cost of the signed desired state in core::Service, without HTTP.
//   desired_bench [--hosts N] [--rounds R]
// Enrolls N hosts (SQLite in a temp dir), makes one release stable-less-offered to all of them
// through a one-stage rollout, then times per call, median of R rounds:
//   first_200   the first answer of each host after a change (builds the shared part once,
//               signs per host: what every host costs once per change)
//   repeat_200  the same host asking again without If-None-Match (the signed answer reused)
//   probe_304   If-None-Match equal to the current etag (the hot path)
// and prints one JSON line. Numbers are for one thread holding the service lock.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "proto/signing.hpp"
#include "server/core/clock.hpp"
#include "server/core/service.hpp"
#include "server/store/migrations.hpp"
#include "server/store/store.hpp"

namespace {
using namespace ringfence;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "desired_bench: %s\n", what.c_str());
  std::exit(1);
}

double ns_per(Clock::time_point t0, std::size_t n) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() /
         static_cast<double>(n);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  long long hosts = 2000, rounds = 5;
  for (int a = 1; a + 1 < argc; a += 2) {
    std::string k = argv[a];
    if (k == "--hosts")
      hosts = std::atoll(argv[a + 1]);
    else if (k == "--rounds")
      rounds = std::atoll(argv[a + 1]);
    else
      die("unknown flag " + k);
  }
  auto dir =
      std::filesystem::temp_directory_path() / ("desired_bench." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto store =
      server::store::open_sqlite((dir / "r.db").string(), server::store::embedded_migrations());
  if (!store) die(store.error().message);
  server::SystemClock clock;
  server::core::Options opt;
  opt.data_dir = dir.string();
  server::core::Service svc(**store, clock, proto::generate_keypair(), opt);
  if (!svc.load()) die("load");
  server::core::Principal admin{"bench", server::core::Role::Admin};
  auto tok = svc.create_enrollment_token(admin, {{"name", "b"}});
  if (!tok) die(tok.error().message);
  (void)svc.put_ring(admin, "all", {{"rank", 0}, {"selector", {{"buckets", {0, 10000}}}}}, true);
  (void)svc.put_channel(admin, "det", {{"name", "det"}}, true);
  std::vector<std::int64_t> idx;
  for (long long i = 0; i < hosts; ++i) {
    char id[64];
    std::snprintf(id, sizeof id, "00000000-0000-4000-8000-%012lld", i);
    auto r = svc.enroll({(*tok)["token"], id, {}, "b"});
    if (!r) die(r.error().message);
    idx.push_back(*svc.authenticate_host("Bearer " + r->credential));
  }
  std::vector<double> first, repeat, probe;
  std::size_t body = 0;
  for (long long round = 0; round < rounds; ++round) {
    // A change for every host: a new release rolled to everyone (its first answers are signed).
    auto path = dir / ("blob" + std::to_string(round));
    std::ofstream(path) << "{\"rules\":[" << round << "]}";
    auto blob = svc.adopt_blob(path.string());
    auto rel = svc.create_release(admin, "det", {{"sha256", (*blob)["sha256"]}});
    if (!rel) die(rel.error().message);
    auto ro = svc.create_rollout(admin, {{"channel", "det"},
                                         {"version", (*rel)["version"]},
                                         {"stages", {{{"ring", "all"}, {"bake_s", 3600}}}}});
    if (!ro) die(ro.error().message);
    if (!svc.rollout_action(admin, (*ro)["id"], "start", nlohmann::json::object())) die("start");
    std::vector<std::string> etags(idx.size());
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < idx.size(); ++i) {
      auto a = svc.desired(idx[i], "", 0, nullptr);
      etags[i] = (*a)->etag;
      body = (*a)->body.size();
    }
    first.push_back(ns_per(t0, idx.size()));
    t0 = Clock::now();
    for (std::size_t i = 0; i < idx.size(); ++i) (void)svc.desired(idx[i], "", 0, nullptr);
    repeat.push_back(ns_per(t0, idx.size()));
    t0 = Clock::now();
    for (std::size_t i = 0; i < idx.size(); ++i) {
      auto a = svc.desired(idx[i], etags[i], 0, nullptr);
      if (!(*a)->not_modified) die("expected a 304");
    }
    probe.push_back(ns_per(t0, idx.size()));
    (void)svc.rollout_action(admin, (*ro)["id"], "abort", nlohmann::json::object());
  }
  // The Ed25519 signature alone over a body-sized message: what first_200 spends signing.
  auto kp = proto::generate_keypair();
  std::string msg(body, 'x');
  std::vector<double> sign_ns;
  for (long long round = 0; round < rounds; ++round) {
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < idx.size(); ++i) {
      msg[i % msg.size()] = proto::sign(kp.secret_key, msg)[0];
    }
    sign_ns.push_back(ns_per(t0, idx.size()));
  }
  std::printf(
      "{\"hosts\":%lld,\"rounds\":%lld,\"body_bytes\":%zu,\"first_200_ns\":%.0f,"
      "\"repeat_200_ns\":%.0f,\"probe_304_ns\":%.0f,\"ed25519_sign_ns\":%.0f}\n",
      hosts, rounds, body, median(first), median(repeat), median(probe), median(sign_ns));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
