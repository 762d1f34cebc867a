// seed_hosts: enrolls N hosts into a data directory through the server's own code
// (core::Service::enroll on the SQLite store, one durable row per host, exactly what
// POST /v1/agent/enroll does), then exits. The benchmark starts ringfence-server on that data
// directory to measure start-up time and memory per host at fleet sizes the HTTP enrolment
// would take minutes to reach.
//
//   seed_hosts --data-dir DIR --hosts N [--creds FILE] [--first K]
//
// Each host then sends one heartbeat (boot id, uptime, one channel it runs), flushed to the store
// in one batch as the server does, so a restarted server loads hosts as a live fleet leaves them.
// --creds writes the first K (default all) host credentials, one per line, for the load tools.
// Host ids are deterministic (host i is the same UUID in every run); labels come from a small
// set of realistic combinations (os, arch, site), so label sets are shared as on a real fleet.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "server/core/clock.hpp"
#include "server/core/service.hpp"
#include "server/store/migrations.hpp"
#include "server/store/store.hpp"

namespace {

std::string host_id(std::uint64_t i) {
  // A version-4 style UUID whose low 48 bits carry i.
  char buf[64];
  std::snprintf(buf, sizeof buf, "5eed0000-be4c-4000-8000-%012llx",
                static_cast<unsigned long long>(i));
  return buf;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "seed_hosts: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ringfence;
  std::string data_dir, creds_path;
  long long hosts = -1, first = -1;
  for (int a = 1; a + 1 < argc; a += 2) {
    std::string k = argv[a], v = argv[a + 1];
    if (k == "--data-dir") data_dir = v;
    else if (k == "--hosts") hosts = std::atoll(v.c_str());
    else if (k == "--creds") creds_path = v;
    else if (k == "--first") first = std::atoll(v.c_str());
    else die("unknown flag " + k);
  }
  if (data_dir.empty() || hosts < 0) die("usage: seed_hosts --data-dir DIR --hosts N [--creds FILE] [--first K]");
  if (first < 0) first = hosts;
  std::filesystem::create_directories(data_dir);

  auto store = server::store::open_sqlite(data_dir + "/ringfence.db", server::store::embedded_migrations());
  if (!store) die(store.error().message);
  server::SystemClock clock;
  server::core::Options opt;
  opt.data_dir = data_dir;
  opt.enroll_rate_per_min = 0;  // one token seeds the whole fleet at once
  server::core::Service svc(**store, clock, proto::generate_keypair(), opt);
  if (auto st = svc.load(); !st) die(st.error().message);
  auto tok = svc.create_enrollment_token({"bench-seed", server::core::Role::Admin},
                                         {{"name", "seed-" + std::to_string(clock.now_ms())}});
  if (!tok) die(tok.error().message);
  std::string token = (*tok)["token"];

  std::FILE* creds = creds_path.empty() ? nullptr : std::fopen(creds_path.c_str(), "w");
  if (!creds_path.empty() && !creds) die("cannot write " + creds_path);
  static const char* kOs[] = {"linux", "windows", "macos"};
  static const char* kArch[] = {"x86_64", "arm64"};
  static const char* kSite[] = {"fra1", "ams2", "iad1", "sfo3", "sin1"};
  auto t0 = std::chrono::steady_clock::now();
  for (long long i = 0; i < hosts; ++i) {
    proto::EnrollRequest req;
    req.enrollment_token = token;
    req.host_id = host_id(static_cast<std::uint64_t>(i));
    req.labels = {{"os", kOs[i % 3]}, {"arch", kArch[(i / 3) % 2]}, {"site", kSite[(i / 7) % 5]}};
    req.agent_version = "1.4.2";
    auto r = svc.enroll(req);
    if (!r) die(r.error().message);
    if (creds && i < first) std::fprintf(creds, "%s\n", r->credential.c_str());
    auto idx = svc.authenticate_host("Bearer " + r->credential);
    if (!idx) die(idx.error().message);
    proto::Heartbeat hb;
    char boot[64];
    std::snprintf(boot, sizeof boot, "b0070000-0000-4000-8000-%012llx", static_cast<unsigned long long>(i));
    hb.boot_id = boot;
    hb.uptime_s = 3600 + i % 86400;
    hb.channels["detections"] = {1, "active"};
    if (auto st = svc.heartbeat(*idx, hb); !st) die(st.error().message);
    if (hosts >= 100000 && (i + 1) % 200000 == 0) std::fprintf(stderr, "seed_hosts: %lld/%lld\n", i + 1, hosts);
  }
  if (creds) std::fclose(creds);
  svc.flush();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"hosts\": %lld, \"seconds\": %.3f, \"enrolls_per_s\": %.0f}\n", hosts, s,
              s > 0 ? static_cast<double>(hosts) / s : 0.0);
  return 0;
}
