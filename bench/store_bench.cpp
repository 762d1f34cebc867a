// The store's write paths, PostgreSQL against SQLite, through the Store interface the server uses:
// upsert_hosts (a batch of 1000: what enrolment bursts and group commits write), insert_reports
// (a batch of 1000 and of 10), touch_hosts (1000), append_event (one event, its own transaction),
// and one group-commit-sized transaction (50 reports + 50 exposures + 50 touches + 1 event).
// Each is repeated and the median time per call is printed as a Markdown table.
//
//   store_bench [--reps N] [--postgres URL] [--quick]
// Without --postgres it starts a throw-away PostgreSQL 15 (tests/support/postgres.hpp: initdb in
// a temp dir, as the postgres user when run as root). SQLite is a file in a temp dir, WAL,
// synchronous=NORMAL (the server's settings); PostgreSQL commits synchronously (fsync on, the
// store forces synchronous_commit on). Exits non-zero when a write fails.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/store/store.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"

using namespace ringfence;
using namespace ringfence::server::store;

namespace {

std::string host_id(int i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", i);
  return buf;
}

struct Row {
  std::string what;
  double sqlite_ms = 0, postgres_ms = 0;
  int per_call = 1;  // rows written per call
};

// Median milliseconds of reps calls of fn (each must succeed).
double median_ms(int reps, const std::function<Status(int)>& fn) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto a = std::chrono::steady_clock::now();
    auto st = fn(r);
    auto b = std::chrono::steady_clock::now();
    if (!st) {
      std::fprintf(stderr, "store_bench: write failed: %s\n", st.error().message.c_str());
      std::exit(1);
    }
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Every measured path against one store; `cols` receives the medians in order.
std::vector<double> run(Store& st, int reps) {
  std::vector<double> out;
  std::vector<HostRow> hosts;
  for (int i = 0; i < 1000; ++i) {
    hosts.push_back({host_id(i), std::string(64, 'c'), R"({"site":"fra1","os":"linux"})", "", false,
                     "1.4.2", 1700000000, 1700000000, R"({"det":{"version":7,"state":"active"}})",
                     0, R"({"sensor":"7.11"})"});
  }
  // Each repetition writes new values into the same 1000 rows (the steady state: updates).
  out.push_back(median_ms(reps, [&](int r) {
    for (auto& h : hosts) h.last_seen = 1700000000 + r, h.boot_hash = r + 1;
    return st.upsert_hosts(hosts);
  }));
  std::int64_t report_time = 0;
  auto reports = [&](int n) {
    std::vector<ReportRow> rows;
    for (int i = 0; i < n; ++i) {
      rows.push_back({host_id(i % 1000), "boot-1", "crash", ++report_time, "det", 7,
                      R"({"signal":11,"module":"sensor.sys"})", 1700000000});
    }
    return rows;
  };
  out.push_back(median_ms(reps, [&](int) { return st.insert_reports(reports(1000)); }));
  out.push_back(median_ms(reps * 5, [&](int) { return st.insert_reports(reports(10)); }));
  out.push_back(median_ms(reps, [&](int r) {
    std::vector<HostSeenRow> rows;
    for (int i = 0; i < 1000; ++i) rows.push_back({host_id(i), 1800000000 + r});
    return st.touch_hosts(rows);
  }));
  out.push_back(median_ms(reps * 20, [&](int r) {
    auto id = st.append_event(
        {0, 1700000000000 + r, "admin", "rollout_started", 1, R"({"channel":"det","version":7})"});
    return id ? Status{} : Status(tl::unexpected(id.error()));
  }));
  out.push_back(median_ms(reps * 5, [&](int r) {
    return st.transaction([&]() -> Status {
      std::vector<ExposureRow> ex;
      std::vector<HostSeenRow> seen;
      for (int i = 0; i < 50; ++i) {
        ex.push_back({1, host_id((r * 50 + i) % 1000), 0, 1700000000000, true, false, false, 0});
        seen.push_back({host_id((r * 50 + i) % 1000), 1900000000 + r});
      }
      if (auto s = st.insert_reports(reports(50)); !s) return s;
      if (auto s = st.upsert_exposures(ex); !s) return s;
      if (auto s = st.touch_hosts(seen); !s) return s;
      auto id = st.append_event({0, 1, "controller", "stage_passed", 1, "{}"});
      return id ? Status{} : Status(tl::unexpected(id.error()));
    });
  }));
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  int reps = 20;
  std::string url;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--postgres") && i + 1 < argc) {
      url = argv[++i];
    } else if (!std::strcmp(argv[i], "--quick")) {
      reps = 2;
    } else {
      std::fprintf(stderr, "usage: store_bench [--reps N] [--postgres URL] [--quick]\n");
      return 2;
    }
  }
  testing::TempDir dir;
  std::unique_ptr<testing::PostgresCluster> cluster;
  if (url.empty()) {
    cluster = std::make_unique<testing::PostgresCluster>();
    url = cluster->url();
  }
  auto lite = open_sqlite(dir.path() + "/bench.db", embedded_migrations());
  if (!lite) {
    std::fprintf(stderr, "store_bench: %s\n", lite.error().message.c_str());
    return 1;
  }
  auto pg = open_postgres(url, embedded_postgres_migrations());
  if (!pg) {
    std::fprintf(stderr, "store_bench: %s\n", pg.error().message.c_str());
    return 1;
  }
  auto a = run(**lite, reps);
  auto b = run(**pg, reps);
  const char* names[] = {"upsert_hosts, batch of 1000 (updates)",
                         "insert_reports, batch of 1000",
                         "insert_reports, batch of 10",
                         "touch_hosts, batch of 1000",
                         "append_event, one (own transaction)",
                         "group commit: 50 reports + 50 exposures + 50 touches + 1 event"};
  std::printf(
      "# store_bench: median ms per call, %d repetitions (x5 for small batches, x20 for "
      "append_event)\n\n",
      reps);
  std::printf(
      "| write path | SQLite (WAL, synchronous=NORMAL) ms | PostgreSQL 15 (loopback, "
      "synchronous commit) ms | PG / SQLite |\n|---|---:|---:|---:|\n");
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::printf("| %s | %.3f | %.3f | %.1fx |\n", names[i], a[i], b[i], a[i] > 0 ? b[i] / a[i] : 0);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "store_bench: %s\n", e.what());
  return 1;
}
