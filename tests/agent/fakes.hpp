#pragma once
// Test doubles for the agent's seams: a manual clock, a scripted server, a consumer whose
// processes are plain records, a host whose boot id the test chooses — and a Harness that
// boots, kills (no stop(): the marker stays) and restarts an Agent on the same directories.

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/agent.hpp"
#include "proto/keyset.hpp"
#include "proto/signing.hpp"
#include "tests/support/process.hpp"

namespace ringfence::agent::testing {

class FakeClock final : public Clock {
 public:
  std::int64_t wall_ms() const override { return wall_; }
  std::int64_t mono_ms() const override { return mono_; }
  TimerId schedule(std::int64_t delay_ms, std::function<void()> fn) override {
    TimerId id = next_++;
    timers_[id] = {mono_ + std::max<std::int64_t>(0, delay_ms), std::move(fn)};
    return id;
  }
  void cancel(TimerId id) override { timers_.erase(id); }
  // Moves time forward, firing due timers in order (including ones they schedule).
  void advance(std::int64_t ms) {
    std::int64_t end = mono_ + ms;
    while (true) {
      auto due = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it) {
        if (it->second.first <= end &&
            (due == timers_.end() || it->second.first < due->second.first)) {
          due = it;
        }
      }
      if (due == timers_.end()) break;
      wall_ += due->second.first - mono_;
      mono_ = due->second.first;
      auto fn = std::move(due->second.second);
      timers_.erase(due);
      fn();
    }
    wall_ += end - mono_;
    mono_ = end;
  }
  // Delay of the earliest pending timer, or -1.
  std::int64_t next_delay() const {
    std::int64_t best = -1;
    for (const auto& [id, t] : timers_) {
      if (best < 0 || t.first - mono_ < best) best = t.first - mono_;
    }
    return best;
  }
  std::size_t pending() const { return timers_.size(); }
  void clear() { timers_.clear(); }

 private:
  std::int64_t wall_ = 1'700'000'000'000;
  std::int64_t mono_ = 1'000;
  TimerId next_ = 1;
  std::map<TimerId, std::pair<std::int64_t, std::function<void()>>> timers_;
};

inline net::Failure failure(int status, std::int64_t retry_after_ms = 0) {
  return net::Failure{Error{status == 0 ? Errc::Unavailable : Errc::InvalidArgument,
                            "fake failure " + std::to_string(status),
                            "",
                            {}},
                      status, retry_after_ms};
}

class FakeServer final : public net::ServerApi {
 public:
  struct Enroll {
    proto::EnrollRequest req;
    net::Callback<proto::EnrollResponse> cb;
  };
  struct Desired {
    std::string credential, etag;
    int wait_s;
    net::Callback<net::DesiredAnswer> cb;
  };
  struct Beat {
    proto::Heartbeat hb;
    net::Callback<bool> cb;
  };
  struct Reports {
    std::vector<proto::Report> batch;
    net::Callback<bool> cb;
  };
  struct Download {
    std::string url, path;
    std::int64_t offset;
    std::function<void(std::int64_t)> progress;
    net::Callback<net::DownloadDone> cb;
  };

  void enroll(const proto::EnrollRequest& req, net::Callback<proto::EnrollResponse> cb) override {
    enrolls.push_back({req, std::move(cb)});
  }
  void desired(const std::string& cred, const std::string& etag, int wait_s,
               net::Callback<net::DesiredAnswer> cb) override {
    desireds.push_back({cred, etag, wait_s, std::move(cb)});
  }
  void heartbeat(const std::string&, const proto::Heartbeat& hb, net::Callback<bool> cb) override {
    beats.push_back({hb, std::move(cb)});
  }
  void reports(const std::string&, const std::vector<proto::Report>& b,
               net::Callback<bool> cb) override {
    report_calls.push_back({b, std::move(cb)});
  }
  void download(const std::string&, const std::string& url, const std::string& path,
                const std::string&, std::int64_t, std::function<void(std::int64_t)> progress,
                net::Callback<net::DownloadDone> cb) override {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    std::int64_t have = in ? static_cast<std::int64_t>(in.tellg()) : 0;
    downloads.push_back({url, path, have, std::move(progress), std::move(cb)});
  }
  void cancel_all() override { clear(); }

  // Serves blobs[url] into the last download's file from its offset up to `upto` bytes
  // (default: all), then completes it; a partial serve leaves the call hanging (a kill).
  void serve_download(std::int64_t upto = -1) {
    auto d = downloads.back();
    downloads.pop_back();
    const std::string& blob = blobs.at(d.url);
    std::int64_t end = upto < 0 ? static_cast<std::int64_t>(blob.size()) : upto;
    std::ofstream out(d.path, std::ios::binary | std::ios::app);
    out << blob.substr(static_cast<std::size_t>(d.offset),
                       static_cast<std::size_t>(end - d.offset));
    out.close();
    if (d.progress) d.progress(end);
    if (end == static_cast<std::int64_t>(blob.size())) d.cb(net::DownloadDone{end});
  }
  // Completes the oldest pending long poll.
  void answer_desired(net::Result<net::DesiredAnswer> r) {
    auto d = std::move(desireds.front());
    desireds.erase(desireds.begin());
    d.cb(std::move(r));
  }
  void ack_beats() {
    auto b = std::move(beats);
    beats.clear();
    for (auto& x : b) x.cb(true);
  }
  void ack_reports(bool ok = true, int status = 503) {
    auto r = std::move(report_calls);
    report_calls.clear();
    for (auto& x : r) {
      if (ok) {
        acked.insert(acked.end(), x.batch.begin(), x.batch.end());
        x.cb(true);
      } else {
        x.cb(tl::unexpected(failure(status)));
      }
    }
  }
  void clear() {
    enrolls.clear();
    desireds.clear();
    beats.clear();
    report_calls.clear();
    downloads.clear();
  }

  std::vector<Enroll> enrolls;
  std::vector<Desired> desireds;
  std::vector<Beat> beats;
  std::vector<Reports> report_calls;
  std::vector<Download> downloads;
  std::vector<proto::Report> acked;
  std::map<std::string, std::string> blobs;  // url -> bytes
};

class FakeConsumer final : public ConsumerRunner {
 public:
  void check(const std::string& file, std::int64_t, std::function<void(Status)> done) override {
    checks.push_back({file, std::move(done)});
  }
  bool run(const std::string& channel, const std::string& file,
           std::function<void(ConsumerExit)> on_exit) override {
    running_[channel] = {file, std::move(on_exit)};
    ++starts;
    return true;
  }
  void stop(const std::string& channel) override { running_.erase(channel); }
  bool running(const std::string& channel) const override { return running_.count(channel) > 0; }

  std::string file_of(const std::string& channel) const {
    auto it = running_.find(channel);
    return it == running_.end() ? "" : it->second.first;
  }
  // The channel's consumer dies (signal > 0) or exits (code).
  void crash(const std::string& channel, int sig = 11) {
    auto cb = running_.at(channel).second;
    running_.erase(channel);
    cb(ConsumerExit{true, sig});
  }
  void answer_check(Status st) {
    auto c = std::move(checks.front());
    checks.erase(checks.begin());
    c.second(std::move(st));
  }
  void clear() {
    running_.clear();
    checks.clear();
  }

  std::vector<std::pair<std::string, std::function<void(Status)>>> checks;
  int starts = 0;

 private:
  std::map<std::string, std::pair<std::string, std::function<void(ConsumerExit)>>> running_;
};

class FakeSystem final : public telemetry::SystemInfo {
 public:
  std::string boot_id() override { return boot; }
  std::int64_t host_uptime_s() override { return uptime; }
  std::string boot = "11111111-2222-4333-8444-555555555555";
  std::int64_t uptime = 1234;
};

// The real file system with one switchable failure: install() (moving a verified blob into the
// content dir) fails as on a full disk.
class FlakyFs final : public Fs {
 public:
  Expected<std::string> read(const std::string& p) override { return real_.read(p); }
  Status write_atomic(const std::string& p, std::string_view d, unsigned m) override {
    return real_.write_atomic(p, d, m);
  }
  std::optional<std::int64_t> file_size(const std::string& p) override {
    return real_.file_size(p);
  }
  bool exists(const std::string& p) override { return real_.exists(p); }
  Status make_dirs(const std::string& p, unsigned m) override { return real_.make_dirs(p, m); }
  Status remove(const std::string& p) override { return real_.remove(p); }
  Status install(const std::string& src, const std::string& dst) override {
    if (fail_install) return fail(Errc::Unavailable, "No space left on device");
    return real_.install(src, dst);
  }
  Status symlink_atomic(const std::string& t, const std::string& l) override {
    return real_.symlink_atomic(t, l);
  }
  std::optional<std::string> read_link(const std::string& l) override { return real_.read_link(l); }
  bool fail_install = false;

 private:
  RealFs real_;
};

// Thrown by the fault hook: a simulated kill -9 at a named point.
struct Killed : std::runtime_error {
  Killed() : std::runtime_error("killed") {}
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Harness {
 public:
  explicit Harness(bool with_consumer = false) : with_consumer_(with_consumer) {
    // Quiet unless asked: RINGFENCE_TEST_LOG=debug shows the agent's log while debugging a test.
    const char* level = std::getenv("RINGFENCE_TEST_LOG");
    spdlog::set_level(spdlog::level::from_str(level ? level : "off"));
    cfg.state_dir = dir.path() + "/state";
    cfg.content_dir = dir.path() + "/content";
    cfg.enroll_token = "enroll-token";
    cfg.public_key = keys.public_key;
    cfg.healthy_after_s = 60;
  }
  ~Harness() {
    if (agent) agent->stop();
  }

  // Starts an Agent on the directories; kill_at names a fault point that throws Killed.
  void boot(std::string kill_at = "") {
    kill_at_ = std::move(kill_at);
    FaultHook hook = [this](std::string_view p) {
      if (p == kill_at_) throw Killed();
    };
    agent = std::make_unique<Agent>(cfg, Deps{clock, fs, api, with_consumer_ ? &consumer : nullptr,
                                              sys, [] { return 0.5; }, hook});
    auto st = agent->start();
    ASSERT_TRUE(st) << st.error().message;
  }
  // kill -9: no stop(), the marker stays; in-flight calls and timers vanish.
  void kill() {
    agent.reset();
    api.clear();
    clock.clear();
    consumer.clear();
  }
  void restart(std::string kill_at = "") {
    kill();
    boot(std::move(kill_at));
  }
  // Boots and completes enrollment.
  void boot_enrolled() {
    boot();
    ASSERT_EQ(api.enrolls.size(), 1u);
    auto host = api.enrolls[0].req.host_id;
    auto cb = api.enrolls[0].cb;
    api.enrolls.clear();
    cb(proto::EnrollResponse{host, "cred-1", 60, 30});
  }

  // A signed release entry; its blob is served at /v1/blobs/<sha>.
  proto::DesiredChannel release(const std::string& channel, std::int64_t version,
                                const std::string& bytes, std::int64_t expires_in_s = 86400) {
    proto::DesiredChannel c;
    c.channel = channel;
    c.version = version;
    c.sha256 = proto::sha256_hex(bytes);
    c.size = static_cast<std::int64_t>(bytes.size());
    c.url = "/v1/blobs/" + c.sha256;
    c.manifest = proto::Manifest{channel,
                                 version,
                                 c.sha256,
                                 c.size,
                                 clock.wall_ms() / 1000,
                                 clock.wall_ms() / 1000 + expires_in_s};
    c.signature = proto::sign(keys.secret_key, proto::canonical_bytes(c.manifest));
    c.key_id = proto::key_id(keys.public_key);
    api.blobs[c.url] = bytes;
    return c;
  }
  // A desired state for this agent's host, signed with `keys` (the --public-key of the harness
  // unless a test set a root) under a generation above every earlier one, valid for an hour.
  proto::DesiredState desired(std::vector<proto::DesiredChannel> chans,
                              std::vector<proto::KnownBad> bad = {}, std::int64_t hb = 60) {
    proto::DesiredState ds;
    ds.etag = "e" + std::to_string(++etag_n_);
    ds.channels = std::move(chans);
    ds.known_bad = std::move(bad);
    ds.heartbeat_s = hb;
    ds.poll_s = 30;
    ds.host_id = agent && agent->identity() ? agent->identity()->host_id : "";
    ds.generation = ++generation_;
    ds.issued = clock.wall_ms() / 1000;
    ds.expires = ds.issued + 3600;
    sign(ds, desired_keys);
    return ds;
  }
  // (Re)signs ds with kp, naming kp's key id and the key set version in use.
  static void sign(proto::DesiredState& ds, const proto::KeyPair& kp) {
    ds.key_id = proto::key_id(kp.public_key);
    ds.signature = proto::sign(kp.secret_key, proto::canonical_bytes(ds));
  }
  // Answers the pending long poll with ds.
  void deliver(const proto::DesiredState& ds) {
    ASSERT_FALSE(api.desireds.empty()) << "no long poll pending";
    api.answer_desired(net::DesiredAnswer{false, ds});
  }
  // Delivers one entry and drives it through download (+ check) to activation.
  // settle: let the healthy checkpoint pass afterwards (so later restarts are not counted).
  void apply(const proto::DesiredChannel& c, std::vector<proto::KnownBad> bad = {},
             bool settle = true) {
    deliver(desired({c}, std::move(bad)));
    ASSERT_EQ(api.downloads.size(), 1u);
    api.serve_download();
    if (with_consumer_) {
      ASSERT_EQ(consumer.checks.size(), 1u);
      consumer.answer_check({});
    }
    if (settle) clock.advance((cfg.healthy_after_s + 1) * 1000);
  }
  std::string current(const std::string& channel) {
    return slurp(cfg.content_dir + "/" + channel + "/current");
  }
  std::vector<proto::Report> spooled(proto::ReportKind kind) {
    std::vector<proto::Report> out;
    for (const auto& r : agent->spool().reports()) {
      if (r.kind == kind) out.push_back(r);
    }
    for (const auto& r : api.acked) {
      if (r.kind == kind) out.push_back(r);
    }
    return out;
  }

  ringfence::testing::TempDir dir;
  FakeClock clock;
  FlakyFs fs;
  FakeServer api;
  FakeConsumer consumer;
  FakeSystem sys;
  proto::KeyPair keys = proto::generate_keypair();
  proto::KeyPair desired_keys = keys;  // the key desired() signs with
  Config cfg;
  std::unique_ptr<Agent> agent;

 private:
  bool with_consumer_;
  std::string kill_at_;
  int etag_n_ = 0;
  std::int64_t generation_ = 1000;
};

}  // namespace ringfence::agent::testing
