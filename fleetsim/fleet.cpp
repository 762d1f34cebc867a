#include "fleetsim/fleet.hpp"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <unordered_map>
#include <vector>

#include "fleetsim/accept.hpp"
#include "fleetsim/sample_content.hpp"
#include "proto/bucket.hpp"
#include "proto/keyset.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"

namespace ringfence::fleetsim {
namespace {
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr auto kTick = std::chrono::milliseconds(20);
constexpr std::int64_t kOneShotTimeoutMs = 20000;
constexpr std::int64_t kBlobTimeoutMs = 60000;

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

enum class EvKind : std::uint8_t {
  Heartbeat,
  Poll,
  Enroll,
  RateCrash,
  CrashOnce,
  GoSilent,
  Report,
  Recover
};

struct Ev {
  std::int64_t at_ms;
  std::uint32_t host;
  EvKind kind;
  std::uint32_t epoch;
  bool operator>(const Ev& o) const noexcept { return at_ms > o.at_ms; }
};

struct ChannelState {
  std::int64_t version = 0;
  std::string state = "active";
  std::int64_t target = 0;         // a version being downloaded / applied
  std::int64_t lkg = 0;            // last-known-good: the version active before this one
  std::set<std::int64_t> refused;  // versions this host failed to apply: not retried
  // Offers refused by the agent's acceptance rule, per signed manifest (like the agent's
  // refused list: the same version re-signed, e.g. as a rollback target, is a new offer).
  std::set<std::string> refused_offers;
};

struct Host {
  std::string id;
  std::string auth;  // "Bearer <credential>"
  std::string boot_id;
  std::int64_t boot_ms = 0;
  proto::Labels labels;
  proto::Labels consumers;  // consumer name -> version (--consumer-version mix), sent in heartbeats
  std::string etag;
  std::int64_t generation = 0;  // of the last desired state acted on (a lower one is a replay)
  std::int64_t heartbeat_s = 60;
  std::int64_t poll_s = 60;
  std::map<std::string, ChannelState> channels;
  std::vector<proto::Report> outbox;  // reports not yet accepted
  bool enrolled = false;
  bool enrolling = false;
  bool silent = false;
  bool long_poll = false;
  bool poll_in_flight = false;
  bool report_in_flight = false;
  std::uint16_t hb_in_flight = 0;  // heartbeats queued or unanswered
  HttpClient::LaneId lane = 0;
  std::uint32_t hb_epoch = 0, poll_epoch = 0, crash_epoch = 0;
  std::int64_t next_hb_ms = 0;
  std::int64_t last_hb_ok_ms = -1;    // when the last heartbeat was answered 2xx (-1: never)
  std::int64_t last_hb_every_ms = 0;  // the interval that one was sent at
  int failures = 0;                   // consecutive request failures, for backoff
  // A crash scheduled after an apply (crash:P): the version it is attributed to.
  std::string crash_channel;
  std::int64_t crash_version = 0;
  // The version a silent boot loop is attributed to (silent:P): what the agent's crash-loop
  // guard reverts when the host comes back.
  std::string loop_channel;
  std::int64_t loop_version = 0;
};

struct VersionStats {
  std::string model = "healthy";
  std::int64_t exposed = 0;  // hosts that were told to run it and fetched it
  std::int64_t applied = 0;
  std::int64_t apply_failed = 0;
  std::int64_t crashes = 0;           // crashes attributed to this version (model or rate)
  std::int64_t went_silent = 0;       // hosts that went silent right after applying it
  std::int64_t rolled_back_from = 0;  // hosts that left it for a lower version
  std::int64_t local_rollbacks = 0;   // hosts whose crash-loop guard reverted it
};

// Whether the fleet keeps the heartbeat rate the server asks for. The server counts a host as
// silent after k intervals (default 3) without a heartbeat, so gaps of 3x the interval between
// answered heartbeats would be false silences caused by the simulator, not by the host.
struct HeartbeatStats {
  std::int64_t sent = 0;
  std::int64_t answered = 0;        // 2xx
  std::int64_t overrun = 0;         // due while the previous one was unanswered
  std::int64_t latency_ms_sum = 0;  // due -> answered, over the answered ones
  std::int64_t latency_ms_max = 0;
  std::int64_t gaps_over_2x = 0;  // answered heartbeats more than 2x / 3x the interval after
  std::int64_t gaps_over_3x = 0;  // the host's previous answered one
  double gap_ratio_max = 0;       // the longest such gap, in intervals
};

struct Blob {
  enum class State { Fetching, Ready, Failed } state = State::Fetching;
  std::string data;
  std::optional<ConsumerResult> consumer;  // evaluated once, when model_from_content
  // ... and once per consumer version of the hosts (the values that version supplies).
  // A cache of a pure function of `data`: filled in on first use, hence mutable.
  mutable std::map<long long, ConsumerVerdict> by_supplied;
  std::vector<std::function<void(const Blob*)>> waiters;
};
}  // namespace

struct Fleet::Impl {
  Impl(boost::asio::io_context& io_, HttpClient& c, FleetOptions o)
      : io(io_), client(c), opt(std::move(o)), timer(io_), rng(opt.seed) {}

  boost::asio::io_context& io;
  HttpClient& client;
  FleetOptions opt;
  boost::asio::steady_timer timer;
  std::mt19937_64 rng;
  Clock::time_point t0 = Clock::now();
  bool stopped = false;
  std::optional<proto::PublicKey> public_key;
  proto::Trust trust;  // keys for desired states: GET /v1/keys (root pinned on first use)

  std::vector<Host> hosts;
  std::priority_queue<Ev, std::vector<Ev>, std::greater<Ev>> events;
  std::size_t enroll_cursor = 0;
  std::size_t enrolls_in_flight = 0;
  std::size_t enrolled = 0;
  std::size_t silent = 0;
  std::size_t recovered = 0;  // boot-looping hosts brought back by their crash-loop guard

  std::unordered_map<std::string, Blob> blobs;
  SignatureCache verified_signatures;
  std::map<ModelKey, VersionStats> versions;
  std::map<std::string, std::int64_t> requests, responses, errors;
  HeartbeatStats hb;
  std::int64_t behind_checked_ms = 0, behind_overrun = 0, behind_expired = 0;
  std::int64_t crashes = 0, background_crashes = 0;
  double background_factor = 1;       // background_rise while the rise is on (set_background_rise)
  std::int64_t rise_changed_ms = -1;  // when it last changed (-1: never)

  // ---------------------------------------------------------------- helpers
  std::int64_t now_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  }
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }
  bool coin(double p) { return p >= 1.0 || (p > 0 && uniform() < p); }
  std::int64_t jitter_ms(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, std::max(lo, hi))(rng);
  }
  std::int64_t scaled_ms(std::int64_t seconds) const {
    return std::max<std::int64_t>(200, static_cast<std::int64_t>(static_cast<double>(seconds) *
                                                                 1000.0 * opt.heartbeat_scale));
  }
  std::int64_t backoff_ms(Host& h) {
    // Exponential backoff with full jitter, 0.5 s .. 30 s.
    int n = std::min(h.failures, 6);
    std::int64_t cap = std::min<std::int64_t>(30000, 500LL << n);
    return jitter_ms(250, cap);
  }
  void schedule(std::uint32_t host, EvKind kind, std::int64_t delay_ms, std::uint32_t epoch = 0) {
    events.push(Ev{now_ms() + std::max<std::int64_t>(0, delay_ms), host, kind, epoch});
  }
  std::string uuid() {
    std::uint64_t a = rng(), b = rng();
    a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
    char buf[40];
    std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx",
                  static_cast<unsigned long long>(a >> 32),
                  static_cast<unsigned long long>((a >> 16) & 0xffff),
                  static_cast<unsigned long long>(a & 0xffff),
                  static_cast<unsigned long long>(b >> 48),
                  static_cast<unsigned long long>(b & 0xffffffffffffULL));
    return buf;
  }
  template <typename T>
  const T& pick(const std::vector<std::pair<T, double>>& weighted) {
    double total = 0;
    for (const auto& [v, w] : weighted) total += w;
    double x = uniform() * total;
    for (const auto& [v, w] : weighted) {
      if (x < w) return v;
      x -= w;
    }
    return weighted.back().first;
  }
  void count_response(const char* kind, const HttpResponse& r) {
    if (r.status == 0) {
      ++errors["transport"];
      ++errors[std::string("transport_") + kind];
    } else if (r.status == 304) {
      ++responses["304"];
    } else if (r.status < 300) {
      ++responses["2xx"];
    } else if (r.status < 500) {
      ++responses["4xx"];
      if (r.status != 401) ++errors["http_4xx"];
    } else {
      ++responses["5xx"];
      ++errors["http_5xx"];
    }
  }

  // ---------------------------------------------------------------- fleet
  void make_hosts() {
    static const std::vector<std::pair<std::string, double>> os = {
        {"windows", 0.70}, {"linux", 0.22}, {"macos", 0.08}};
    static const std::vector<std::pair<std::string, double>> win = {
        {"10.0.19045", 0.45}, {"10.0.22631", 0.35}, {"server-2019", 0.08}, {"server-2022", 0.12}};
    static const std::vector<std::pair<std::string, double>> lin = {
        {"debian-12", 0.3}, {"ubuntu-22.04", 0.4}, {"ubuntu-24.04", 0.15}, {"rhel-9", 0.15}};
    static const std::vector<std::pair<std::string, double>> mac = {
        {"14.5", 0.6}, {"13.6", 0.3}, {"15.0", 0.1}};
    static const std::vector<std::pair<std::string, double>> sites = {
        {"fra1", 0.18}, {"ams2", 0.14}, {"iad1", 0.2},  {"sfo3", 0.12}, {"lon1", 0.12},
        {"nyc3", 0.1},  {"sin1", 0.07}, {"syd1", 0.04}, {"gru1", 0.03}};
    // Tenants: a few large customers and a long tail (Zipf, s = 1.1, over 200 tenants).
    std::vector<std::pair<std::string, double>> tenants;
    for (int t = 1; t <= 200; ++t) {
      char name[24];
      std::snprintf(name, sizeof name, "tenant-%03d", t);
      tenants.emplace_back(name, 1.0 / std::pow(t, 1.1));
    }
    hosts.resize(opt.hosts);
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      auto& h = hosts[i];
      h.id = uuid();
      const auto& o = pick(os);
      const auto& site = pick(sites);
      std::string version = o == "windows" ? pick(win) : o == "linux" ? pick(lin) : pick(mac);
      std::string arch =
          o == "macos" ? (coin(0.7) ? "arm64" : "x86_64") : (coin(0.06) ? "arm64" : "x86_64");
      char hostname[64];
      std::snprintf(hostname, sizeof hostname, "%s-%s-%06zu",
                    o == "windows" ? "win"
                    : o == "linux" ? "lnx"
                                   : "mac",
                    site.c_str(), i);
      h.labels = {{"os", o},      {"os_version", version},   {"arch", arch},
                  {"site", site}, {"tenant", pick(tenants)}, {"hostname", hostname}};
      for (const auto& [name, mix] : opt.consumer_versions) h.consumers[name] = pick(mix);
      h.long_poll = i < opt.long_poll_hosts;
      h.boot_id = uuid();
      h.boot_ms = now_ms() - jitter_ms(60'000, 30LL * 86'400'000);  // booted some time ago
    }
  }

  void start() {
    make_hosts();
    tick();
    fetch_signing_key();
  }

  void fetch_signing_key() {
    if (stopped) return;
    HttpRequest req;
    req.target = std::string(proto::kPathSigningKey);
    req.timeout = std::chrono::milliseconds(kOneShotTimeoutMs);
    ++requests["signing_key"];
    client.submit(std::move(req), [this](HttpResponse r) {
      count_response("signing_key", r);
      if (r.status == 200) {
        auto j = json::parse(r.body, nullptr, false);
        if (j.is_object() && j.contains("public_key") && j["public_key"].is_string()) {
          auto pk = proto::parse_public_key(j["public_key"].get<std::string>());
          if (pk) {
            public_key = *pk;
            trust.keys = proto::implicit_key_set(*pk);
            fetch_keys();
            return;
          }
        }
        ++errors["signing_key"];
      }
      std::fprintf(stderr, "fleetsim: waiting for the server's signing key (%s)\n",
                   r.status ? ("HTTP " + std::to_string(r.status)).c_str() : r.error.c_str());
      auto t = std::make_shared<boost::asio::steady_timer>(io, std::chrono::seconds(1));
      t->async_wait([this, t](const boost::system::error_code&) { fetch_signing_key(); });
    });
  }

  // ---------------------------------------------------------------- scheduler
  // Says so on stderr, at most every 5 s, while the fleet falls behind the server's heartbeat
  // rate: what the server then counts as silence is the simulator's, not the hosts'.
  void warn_if_behind(std::int64_t now) {
    if (now - behind_checked_ms < 5000) return;
    behind_checked_ms = now;
    auto pool = client.pool_stats();
    auto overrun = hb.overrun - behind_overrun;
    auto expired = static_cast<std::int64_t>(pool.expired) - behind_expired;
    behind_overrun = hb.overrun;
    behind_expired = static_cast<std::int64_t>(pool.expired);
    if (overrun > 0 || expired > 0) {
      std::fprintf(stderr,
                   "fleetsim: behind the heartbeat rate the server asks for (%.0f/s): %lld "
                   "heartbeats came due before the host's previous one was answered and %lld "
                   "requests timed out in the queue in the last 5 s, %zu queued; the server may "
                   "count healthy hosts as silent (fewer --hosts, longer intervals, or a less "
                   "loaded machine)\n",
                   heartbeat_rate_asked(), static_cast<long long>(overrun),
                   static_cast<long long>(expired), client.pool_backlog());
    }
  }

  void tick() {
    if (stopped) return;
    auto now = now_ms();
    warn_if_behind(now);
    // Bounded work per tick keeps the io thread responsive to completions.
    std::size_t budget = 20000;
    while (!events.empty() && events.top().at_ms <= now && budget-- > 0) {
      Ev e = events.top();
      events.pop();
      dispatch(e);
    }
    timer.expires_after(kTick);
    timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) tick();
    });
  }

  void dispatch(const Ev& e) {
    auto& h = hosts[e.host];
    if (e.kind == EvKind::Recover) return recover(e.host);
    if (h.silent) return;
    switch (e.kind) {
      case EvKind::Enroll:
        enroll(e.host);
        break;
      case EvKind::Heartbeat:
        if (e.epoch == h.hb_epoch) heartbeat(e.host);
        break;
      case EvKind::Poll:
        if (e.epoch == h.poll_epoch) poll(e.host);
        break;
      case EvKind::RateCrash:
        if (e.epoch == h.crash_epoch) rate_crash(e.host);
        break;
      case EvKind::CrashOnce:
        crash(e.host, h.crash_channel, h.crash_version, "model");
        break;
      case EvKind::GoSilent:
        go_silent(e.host);
        break;
      case EvKind::Report:
        flush_reports(e.host);
        break;
      case EvKind::Recover:
        break;
    }
  }

  // ---------------------------------------------------------------- enrollment
  void start_enrolls() {
    while (enrolls_in_flight < opt.enroll_concurrency && enroll_cursor < hosts.size()) {
      enroll(static_cast<std::uint32_t>(enroll_cursor++));
    }
  }

  void enroll(std::uint32_t i) {
    auto& h = hosts[i];
    if (h.enrolling || stopped) return;
    h.enrolling = true;
    ++enrolls_in_flight;
    proto::EnrollRequest m{opt.enroll_token, h.id, h.labels, "fleetsim/0.1"};
    HttpRequest req;
    req.method = Method::Post;
    req.target = std::string(proto::kPathEnroll);
    req.body = proto::encode(m);
    req.timeout = std::chrono::milliseconds(kOneShotTimeoutMs);
    ++requests["enroll"];
    client.submit(std::move(req), [this, i](HttpResponse r) {
      count_response("enroll", r);
      auto& host = hosts[i];
      host.enrolling = false;
      --enrolls_in_flight;
      start_enrolls();
      if (host.silent || stopped) return;
      if (r.status == 200) {
        auto resp = proto::decode_enroll_response(r.body);
        if (resp) {
          bool first = !host.enrolled;
          host.enrolled = true;
          host.failures = 0;
          host.auth = "Bearer " + resp->credential;
          if (resp->heartbeat_s > 0) host.heartbeat_s = resp->heartbeat_s;
          if (resp->poll_s > 0) host.poll_s = resp->poll_s;
          if (first) {
            ++enrolled;
            on_enrolled(i);
          } else {
            poll(i);  // re-enrolled after a 401: the poll loop continues with the new credential
          }
          return;
        }
        ++errors["decode_enroll"];
      }
      if (r.status == 401 || r.status == 403) ++errors["enroll_refused"];
      ++host.failures;
      schedule(i, EvKind::Enroll, backoff_ms(host) + 1000);
    });
  }

  void on_enrolled(std::uint32_t i) {
    auto& h = hosts[i];
    if (h.long_poll) h.lane = client.open_lane();
    poll(i);
    // Spread the first heartbeats over the first interval (at most 10 s).
    schedule_heartbeat(i, jitter_ms(100, std::min<std::int64_t>(scaled_ms(h.heartbeat_s), 10000)));
    schedule_rate_crash(i);
  }

  void reenroll(std::uint32_t i) {
    auto& h = hosts[i];
    h.failures++;
    schedule(i, EvKind::Enroll, backoff_ms(h));
  }

  // The server's key set, if it has one: its root is pinned from here on (first use), later
  // sets arrive in the desired states. An older server (404) leaves the signing key alone.
  void fetch_keys() {
    if (stopped) return;
    HttpRequest req;
    req.target = "/v1/keys";
    req.timeout = std::chrono::milliseconds(kOneShotTimeoutMs);
    ++requests["keys"];
    client.submit(std::move(req), [this](HttpResponse r) {
      count_response("keys", r);
      auto j = json::parse(r.body, nullptr, false);
      if (r.status == 200 && j.is_object() && j.contains("key_set") && j["key_set"].is_object()) {
        auto set = proto::decode_key_set(j["key_set"].dump());
        if (set) {
          trust.root = set->set.root;
          trust.keys = set->set;
        } else {
          ++errors["keys"];
        }
      }
      start_enrolls();
    });
  }

  // Verifies a desired state as the agent does (proto::verify_desired_state) before any part
  // of it is used: signed by a trusted desired-state key, for this host, not a replay, not
  // expired. Newer root-signed key sets are taken on the way. False = refused (counted).
  bool verify_desired(std::uint32_t i, const proto::DesiredState& ds) {
    auto& h = hosts[i];
    auto now_s = unix_ms() / 1000;
    if (ds.key_set && trust.root) {
      auto set = proto::decode_key_set(*ds.key_set);
      if (set && set->set.version > trust.keys.version) {
        auto next = proto::accept_key_set(trust, *set, now_s);
        if (next) {
          trust = std::move(*next);
        } else {
          ++errors[std::string(next.error().code_or_default())];
        }
      }
    }
    auto ok = proto::verify_desired_state(ds, trust.keys, h.id, h.generation, now_s);
    if (!ok) {
      auto code = std::string(ok.error().code_or_default());
      if (errors[code]++ == 0) {
        std::fprintf(stderr, "fleetsim: refusing a desired state: %s\n",
                     ok.error().message.c_str());
      }
      return false;
    }
    h.generation = ds.generation;
    return true;
  }

  // ---------------------------------------------------------------- desired state
  void poll(std::uint32_t i) {
    auto& h = hosts[i];
    if (h.silent || stopped || !h.enrolled || h.poll_in_flight) return;
    h.poll_in_flight = true;
    ++h.poll_epoch;  // a scheduled poll that is now redundant is dropped
    HttpRequest req;
    req.target = std::string(proto::kPathDesired);
    bool wait = h.long_poll && !h.etag.empty();
    if (wait) req.target += "?wait=" + std::to_string(opt.long_poll_wait_s);
    req.authorization = h.auth;
    if (!h.etag.empty()) req.if_none_match = "\"" + h.etag + "\"";
    req.timeout =
        std::chrono::milliseconds(wait ? (opt.long_poll_wait_s + 15) * 1000 : kOneShotTimeoutMs);
    ++requests[wait ? "long_poll" : "desired"];
    auto done = [this, i](HttpResponse r) { on_desired(i, std::move(r)); };
    if (h.long_poll) {
      client.submit_on(h.lane, std::move(req), std::move(done));
    } else {
      client.submit(std::move(req), std::move(done));
    }
  }

  void on_desired(std::uint32_t i, HttpResponse r) {
    count_response("desired", r);
    auto& h = hosts[i];
    h.poll_in_flight = false;
    if (h.silent || stopped) return;
    if (r.status == 401) return reenroll(i);
    if (r.status == 200) {
      auto ds = proto::decode_desired_state(r.body);
      if (!ds) {
        ++errors["decode_desired"];
        std::fprintf(stderr, "fleetsim: undecodable desired state: %s\n",
                     ds.error().message.c_str());
        ++h.failures;
        schedule(i, EvKind::Poll, backoff_ms(h), h.poll_epoch);
        return;
      }
      if (!verify_desired(i, *ds)) {
        ++h.failures;
        schedule(i, EvKind::Poll, backoff_ms(h), h.poll_epoch);
        return;
      }
      h.failures = 0;
      h.etag = ds->etag;
      bool faster = ds->heartbeat_s > 0 && ds->heartbeat_s < h.heartbeat_s;
      if (ds->heartbeat_s > 0) h.heartbeat_s = ds->heartbeat_s;
      if (ds->poll_s > 0) h.poll_s = ds->poll_s;
      if (faster && h.next_hb_ms - now_ms() > scaled_ms(h.heartbeat_s)) {
        schedule_heartbeat(i, jitter_ms(0, scaled_ms(h.heartbeat_s)));
      }
      apply(i, *ds);
      next_poll(i, 0);
      return;
    }
    if (r.status == 304) {
      h.failures = 0;
      next_poll(i, 0);
      return;
    }
    ++h.failures;
    next_poll(i, backoff_ms(h));
  }

  void next_poll(std::uint32_t i, std::int64_t delay_ms) {
    auto& h = hosts[i];
    if (h.long_poll && delay_ms == 0) return poll(i);
    std::int64_t d =
        delay_ms > 0 ? delay_ms : scaled_ms(h.poll_s) + jitter_ms(0, scaled_ms(h.poll_s) / 10);
    schedule(i, EvKind::Poll, d, ++h.poll_epoch);
  }

  static bool is_known_bad(const proto::DesiredState& ds, const std::string& ch, std::int64_t v) {
    for (const auto& k : ds.known_bad) {
      if (k.channel == ch && k.version == v) return true;
    }
    return false;
  }

  void apply(std::uint32_t i, const proto::DesiredState& ds) {
    auto& h = hosts[i];
    for (const auto& dc : ds.channels) {
      auto& ch = h.channels[dc.channel];
      if (dc.version == ch.version || dc.version == ch.target) continue;
      if (is_known_bad(ds, dc.channel, dc.version) || ch.refused.count(dc.version)) continue;
      // The agent's rule (fleetsim/accept.hpp): a signed, unexpired manifest, and never a lower
      // version unless its signed rollback_from covers the one running.
      std::string offer = std::to_string(dc.version) + "|" + dc.signature.substr(0, 16);
      if (ch.refused_offers.count(offer)) continue;
      auto verdict = check_offer(dc, ch.version, public_key ? &*public_key : nullptr,
                                 unix_ms() / 1000, verified_signatures);
      if (verdict != OfferVerdict::Accept) {
        if (ch.refused_offers.size() >= 16) ch.refused_offers.erase(ch.refused_offers.begin());
        ch.refused_offers.insert(offer);
        ++errors["refused_" + std::string(to_string(verdict))];
        ++versions[{dc.channel, dc.version}].apply_failed;
        add_report(i, proto::ReportKind::ApplyFailed, dc.channel, dc.version,
                   json{{"reason", "refused before download"},
                        {"code", to_string(verdict)},
                        {"running", ch.version}}
                       .dump());
        continue;
      }
      ch.target = dc.version;
      fetch_blob(i, dc.sha256, dc.url, [this, i, dc](const Blob* b) { finish_apply(i, dc, b); });
    }
  }

  void fetch_blob(std::uint32_t i, const std::string& sha, const std::string& url,
                  std::function<void(const Blob*)> then) {
    auto [it, fresh] = blobs.try_emplace(sha);
    auto& blob = it->second;
    if (!fresh && blob.state == Blob::State::Ready) return then(&blob);
    if (!fresh && blob.state == Blob::State::Fetching) {
      blob.waiters.push_back(std::move(then));
      return;
    }
    blob.state = Blob::State::Fetching;
    blob.waiters.push_back(std::move(then));
    HttpRequest req;
    req.target = url.empty() ? std::string(proto::kPathBlobs) + "/" + sha : url;
    req.authorization = hosts[i].auth;
    req.timeout = std::chrono::milliseconds(kBlobTimeoutMs);
    ++requests["blob"];
    client.submit(std::move(req), [this, sha](HttpResponse r) {
      count_response("blob", r);
      auto& b = blobs[sha];
      if (r.status == 200 && proto::sha256_hex(r.body) == sha) {
        b.state = Blob::State::Ready;
        b.data = std::move(r.body);
        if (opt.model_from_content) b.consumer = evaluate_consumer(b.data);
      } else {
        if (r.status == 200) ++errors["blob_sha_mismatch"];
        b.state = Blob::State::Failed;
      }
      auto waiters = std::move(b.waiters);
      b.waiters.clear();
      const Blob* result = b.state == Blob::State::Ready ? &b : nullptr;
      for (auto& w : waiters) w(result);
    });
  }

  // After download: the blob is what the (already accepted) manifest says, still unexpired.
  bool verify(const proto::DesiredChannel& dc, const Blob& b) {
    if (dc.manifest.size != static_cast<std::int64_t>(b.data.size())) return false;
    return check_offer(dc, 0, public_key ? &*public_key : nullptr, unix_ms() / 1000,
                       verified_signatures) == OfferVerdict::Accept;
  }

  Model model_for(const Host& h, const std::string& channel, std::int64_t version, const Blob& b) {
    auto it = opt.models.find({channel, version});
    if (it != opt.models.end()) return it->second;
    if (opt.model_from_content && b.consumer) {
      auto verdict = b.consumer->verdict;
      // The host's own consumer version decides when it names a number of values it supplies.
      auto cv = h.consumers.find(opt.content_consumer);
      if (auto n = cv == h.consumers.end() ? 0 : supplied_values(cv->second); n > 0) {
        auto [slot, fresh] = b.by_supplied.try_emplace(n, ConsumerVerdict::Loads);
        if (fresh) slot->second = evaluate_consumer(b.data, n).verdict;
        verdict = slot->second;
      }
      switch (verdict) {
        case ConsumerVerdict::Loads:
          return Model{ModelKind::Healthy, 0};
        case ConsumerVerdict::Crashes:
          return Model{ModelKind::Silent, 1.0};  // the incident
        case ConsumerVerdict::Refuses:
          return Model{ModelKind::ApplyFail, 1.0};
      }
    }
    return Model{};
  }

  void finish_apply(std::uint32_t i, const proto::DesiredChannel& dc, const Blob* b) {
    auto& h = hosts[i];
    if (h.silent || stopped) return;
    auto& ch = h.channels[dc.channel];
    if (ch.target != dc.version) return;  // superseded meanwhile
    ch.target = 0;
    if (!b) {
      // Download failed: forget the etag so the next poll returns the whole state again.
      ++errors["download"];
      h.etag.clear();
      ++h.failures;
      if (h.long_poll && !h.poll_in_flight) {
        schedule(i, EvKind::Poll, backoff_ms(h), ++h.poll_epoch);
      }
      return;
    }
    auto& vs = versions[{dc.channel, dc.version}];
    ++vs.exposed;
    if (!verify(dc, *b)) {
      ++errors["verify"];
      ++vs.apply_failed;
      ch.refused.insert(dc.version);
      add_report(i, proto::ReportKind::ApplyFailed, dc.channel, dc.version,
                 json{{"reason", "signature, hash or manifest check failed"}}.dump());
      return;
    }
    Model m = model_for(h, dc.channel, dc.version, *b);
    vs.model = to_string(m);
    if (m.kind == ModelKind::ApplyFail && coin(m.value)) {
      ++vs.apply_failed;
      ch.refused.insert(dc.version);
      add_report(i, proto::ReportKind::ApplyFailed, dc.channel, dc.version,
                 json{{"reason", "simulated apply failure"}, {"stage", "validate"}}.dump());
      return;
    }
    std::int64_t previous = ch.version;
    if (previous > dc.version) ++versions[{dc.channel, previous}].rolled_back_from;
    if (previous != 0 && previous != dc.version) ch.lkg = previous;  // as the agent keeps it
    ch.version = dc.version;
    ch.state = "active";
    ++vs.applied;
    add_report(i, proto::ReportKind::Applied, dc.channel, dc.version,
               json{{"previous", previous}, {"rollback", dc.rollback}}.dump());
    if (m.kind == ModelKind::Silent && coin(m.value)) {
      h.loop_channel = dc.channel;
      h.loop_version = dc.version;
      schedule(i, EvKind::GoSilent, jitter_ms(500, 2000));
    } else if (m.kind == ModelKind::Crash && coin(m.value)) {
      h.crash_channel = dc.channel;
      h.crash_version = dc.version;
      schedule(i, EvKind::CrashOnce, jitter_ms(1000, 4000));
    }
    schedule_rate_crash(i);  // the rate may depend on the version now running
  }

  // ---------------------------------------------------------------- heartbeats, reports
  void schedule_heartbeat(std::uint32_t i, std::int64_t delay_ms) {
    auto& h = hosts[i];
    h.next_hb_ms = now_ms() + delay_ms;
    schedule(i, EvKind::Heartbeat, delay_ms, ++h.hb_epoch);
  }

  void heartbeat(std::uint32_t i) {
    auto& h = hosts[i];
    if (!h.enrolled) return;
    std::int64_t every = scaled_ms(h.heartbeat_s);
    // The previous one still queued or unanswered: the fleet is behind the rate the server asks
    // for. It is sent all the same (the server sees the rate the pool can keep); the pool's
    // queue stays bounded because a heartbeat that waits most of its timeout is dropped unsent.
    if (h.hb_in_flight > 0) ++this->hb.overrun;
    proto::Heartbeat hb;
    hb.boot_id = h.boot_id;
    hb.uptime_s = std::max<std::int64_t>(0, (now_ms() - h.boot_ms) / 1000);
    hb.consumers = h.consumers;
    for (const auto& [name, ch] : h.channels) {
      if (ch.version > 0) hb.channels[name] = proto::ChannelStatus{ch.version, ch.state};
    }
    HttpRequest req;
    req.method = Method::Post;
    req.target = std::string(proto::kPathHeartbeat);
    req.authorization = h.auth;
    req.body = proto::encode(hb);
    req.timeout = std::chrono::milliseconds(kOneShotTimeoutMs);
    ++requests["heartbeat"];
    ++this->hb.sent;
    std::int64_t due = h.next_hb_ms;
    ++h.hb_in_flight;
    client.submit(std::move(req), [this, i, due, every](HttpResponse r) {
      count_response("heartbeat", r);
      auto& host = hosts[i];
      --host.hb_in_flight;
      if (r.status >= 200 && r.status < 300) on_heartbeat_answered(host, due, every);
      if (r.status == 401 && !host.silent) reenroll(i);
    });
    schedule_heartbeat(i, every + jitter_ms(-every / 20, every / 20));
  }

  void on_heartbeat_answered(Host& h, std::int64_t due_ms, std::int64_t every_ms) {
    auto now = now_ms();
    ++hb.answered;
    std::int64_t latency = std::max<std::int64_t>(0, now - due_ms);
    hb.latency_ms_sum += latency;
    hb.latency_ms_max = std::max(hb.latency_ms_max, latency);
    if (h.last_hb_ok_ms >= 0) {
      // Against the longer of the two intervals: a host just told to heartbeat faster was not
      // late before it knew.
      double ratio = static_cast<double>(now - h.last_hb_ok_ms) /
                     static_cast<double>(std::max(every_ms, h.last_hb_every_ms));
      hb.gap_ratio_max = std::max(hb.gap_ratio_max, ratio);
      if (ratio > 2) ++hb.gaps_over_2x;
      if (ratio > 3) ++hb.gaps_over_3x;
    }
    h.last_hb_ok_ms = now;
    h.last_hb_every_ms = every_ms;
  }

  // Heartbeats per second the server asks of the live enrolled hosts (their intervals, scaled).
  double heartbeat_rate_asked() const {
    double rate = 0;
    for (const auto& h : hosts) {
      if (h.enrolled && !h.silent) rate += 1000.0 / static_cast<double>(scaled_ms(h.heartbeat_s));
    }
    return rate;
  }

  void add_report(std::uint32_t i, proto::ReportKind kind, const std::string& channel,
                  std::int64_t version, std::string detail) {
    auto& h = hosts[i];
    proto::Report r;
    r.kind = kind;
    r.time = unix_ms();
    if (!channel.empty()) {
      r.channel = channel;
      r.version = version;
    }
    r.boot_id = h.boot_id;
    r.detail_json = std::move(detail);
    h.outbox.push_back(std::move(r));
    flush_reports(i);
  }

  void flush_reports(std::uint32_t i) {
    auto& h = hosts[i];
    if (h.report_in_flight || h.outbox.empty() || !h.enrolled || h.silent) return;
    std::size_t n = std::min(h.outbox.size(), proto::kMaxReportsPerBatch);
    std::vector<proto::Report> batch(h.outbox.begin(),
                                     h.outbox.begin() + static_cast<std::ptrdiff_t>(n));
    h.report_in_flight = true;
    HttpRequest req;
    req.method = Method::Post;
    req.target = std::string(proto::kPathReports);
    req.authorization = h.auth;
    req.body = proto::encode(batch);
    req.timeout = std::chrono::milliseconds(kOneShotTimeoutMs);
    ++requests["reports"];
    client.submit(std::move(req), [this, i, n](HttpResponse r) {
      count_response("reports", r);
      auto& host = hosts[i];
      host.report_in_flight = false;
      if (host.silent || stopped) return;
      if (r.status >= 200 && r.status < 300) {
        host.outbox.erase(host.outbox.begin(),
                          host.outbox.begin() + static_cast<std::ptrdiff_t>(n));
        if (!host.outbox.empty()) flush_reports(i);
        return;
      }
      if (r.status == 400) {  // the server will never take this batch: drop it, say so
        ++errors["reports_dropped"];
        host.outbox.erase(host.outbox.begin(),
                          host.outbox.begin() + static_cast<std::ptrdiff_t>(n));
        return;
      }
      if (r.status == 401) reenroll(i);
      ++host.failures;
      schedule(i, EvKind::Report, backoff_ms(host) + 500);  // kept: sent when back
    });
  }

  // ---------------------------------------------------------------- crashes
  double crash_rate_per_hour(const Host& h) const {
    double rate = opt.background_crash_rate * background_factor;
    for (const auto& [name, ch] : h.channels) {
      auto it = opt.models.find({name, ch.version});
      if (it != opt.models.end() && it->second.kind == ModelKind::CrashRate)
        rate += it->second.value;
    }
    return rate;
  }

  void schedule_rate_crash(std::uint32_t i) {
    auto& h = hosts[i];
    ++h.crash_epoch;
    double rate = crash_rate_per_hour(h);
    if (rate <= 0) return;
    double hours = std::exponential_distribution<double>(rate)(rng);
    double ms = std::min(hours * 3.6e6, 1e12);
    schedule(i, EvKind::RateCrash, static_cast<std::int64_t>(ms), h.crash_epoch);
  }

  void rate_crash(std::uint32_t i) {
    auto& h = hosts[i];
    // Attribute it: to a version whose crash-rate model contributed, in proportion, else to
    // none (a background crash: the report names no channel; the server counts it against
    // whatever the host runs).
    double total = crash_rate_per_hour(h);
    double x = uniform() * total;
    std::string channel;
    std::int64_t version = 0;
    for (const auto& [name, ch] : h.channels) {
      auto it = opt.models.find({name, ch.version});
      if (it == opt.models.end() || it->second.kind != ModelKind::CrashRate) continue;
      if (x < it->second.value) {
        channel = name;
        version = ch.version;
        break;
      }
      x -= it->second.value;
    }
    crash(i, channel, version, channel.empty() ? "background" : "rate");
  }

  void set_background_rise(bool on) {
    double factor = on ? opt.background_rise : 1.0;
    if (factor == background_factor) return;
    background_factor = factor;
    rise_changed_ms = now_ms();
    for (std::uint32_t i = 0; i < hosts.size(); ++i) {
      if (hosts[i].enrolled && !hosts[i].silent) schedule_rate_crash(i);
    }
  }

  void crash(std::uint32_t i, const std::string& channel, std::int64_t version, const char* cause) {
    auto& h = hosts[i];
    if (!h.enrolled) return;
    ++crashes;
    if (channel.empty()) {
      ++background_crashes;
    } else {
      ++versions[{channel, version}].crashes;
    }
    std::string crashed_boot = h.boot_id;
    std::int64_t uptime = (now_ms() - h.boot_ms) / 1000;
    // Reboot: a new boot id, uptime from zero; the crash report is sent from the new boot.
    h.boot_id = uuid();
    h.boot_ms = now_ms();
    json versions_json = json::object();
    for (const auto& [name, ch] : h.channels) versions_json[name] = ch.version;
    char stack[17];
    std::snprintf(
        stack, sizeof stack, "%016llx",
        static_cast<unsigned long long>(proto::fnv1a64(channel + std::to_string(version))));
    add_report(i, proto::ReportKind::Crash, channel, version,
               json{{"cause", cause},
                    {"faulting_module", channel.empty() ? "kernel" : "sensor.sys"},
                    {"exception_code", channel.empty() ? "0x0000001e" : "0xc0000005"},
                    {"stack_hash", stack},
                    {"crashed_boot_id", crashed_boot},
                    {"uptime_s", uptime},
                    {"versions", versions_json}}
                   .dump());
    schedule_heartbeat(i, jitter_ms(200, 1500));  // the first heartbeat of the new boot
    schedule_rate_crash(i);
  }

  void go_silent(std::uint32_t i) {
    auto& h = hosts[i];
    if (h.silent) return;
    h.silent = true;
    ++silent;
    for (const auto& [name, ch] : h.channels) {
      if (ch.version > 0) ++versions[{name, ch.version}].went_silent;
    }
    if (h.long_poll && h.lane) {
      client.close_lane(h.lane);
      h.poll_in_flight = false;  // its callback is dropped with the lane
    }
    h.lane = 0;
    // The agent's crash-loop guard (agent/agent.cpp): every boot after the apply counts; at the
    // K-th one it restores last-known-good before the consumer loads the content again. A boot
    // of a looping host lasts about boot_loop_ms, so the host is back after ~K of them.
    if (opt.crash_loop_k > 0 && !h.loop_channel.empty()) {
      auto boot = std::max<std::int64_t>(1, opt.boot_loop_ms);
      schedule(i, EvKind::Recover, opt.crash_loop_k * boot + jitter_ms(0, boot / 2));
    }
  }

  // A boot-looping host whose guard tripped: last-known-good restored, the version quarantined
  // locally (never applied again, even when offered), a new boot, and the reports the agent
  // spooled meanwhile (the boot-loop crash and the local rollback) sent now that it is back.
  void recover(std::uint32_t i) {
    auto& h = hosts[i];
    if (!h.silent || stopped || h.loop_channel.empty()) return;
    h.silent = false;
    --silent;
    ++recovered;
    auto channel = h.loop_channel;
    auto bad = h.loop_version;
    h.loop_channel.clear();
    h.loop_version = 0;
    auto& ch = h.channels[channel];
    std::int64_t from = ch.version, to = ch.version;
    if (ch.version == bad) {
      to = ch.lkg != bad ? ch.lkg : 0;
      ch.version = to;
      ch.state = "active";
      ch.lkg = 0;
    }
    ch.target = 0;
    ch.refused.insert(bad);
    ++versions[{channel, bad}].local_rollbacks;
    if (from == bad && to != 0) ++versions[{channel, bad}].rolled_back_from;
    std::string crashed_boot = h.boot_id;
    h.boot_id = uuid();
    h.boot_ms = now_ms();
    json versions_json = json::object();
    for (const auto& [name, c] : h.channels) versions_json[name] = c.version;
    add_report(i, proto::ReportKind::Crash, channel, bad,
               json{{"kind", "boot_loop"},
                    {"host_rebooted", true},
                    {"previous_boot_id", crashed_boot},
                    {"failures", opt.crash_loop_k},
                    {"uptime_s", 0},
                    {"versions", versions_json}}
                   .dump());
    add_report(i, proto::ReportKind::LocalRollback, channel, bad,
               json{{"reason", "crash_loop"},
                    {"from", bad},
                    {"to", to},
                    {"failures", opt.crash_loop_k},
                    {"quarantined", true}}
                   .dump());
    h.etag.clear();  // a whole new desired state: what it held before the loop is stale
    if (h.long_poll) h.lane = client.open_lane();
    if (h.enrolled && !h.poll_in_flight) poll(i);
    schedule_heartbeat(i, jitter_ms(200, 1500));
    schedule_rate_crash(i);
  }

  // ---------------------------------------------------------------- output
  std::map<ModelKey, std::pair<std::int64_t, std::int64_t>> ended_on() const {
    std::map<ModelKey, std::pair<std::int64_t, std::int64_t>> out;  // live, silent
    for (const auto& h : hosts) {
      for (const auto& [name, ch] : h.channels) {
        if (ch.version <= 0) continue;
        auto& slot = out[{name, ch.version}];
        (h.silent ? slot.second : slot.first)++;
      }
    }
    return out;
  }

  std::int64_t total_requests() const {
    std::int64_t n = 0;
    for (const auto& [k, v] : requests) n += v;
    return n;
  }
  std::int64_t total_errors() const {
    std::int64_t n = 0;
    for (const auto& [k, v] : errors) {
      if (k.rfind("transport_", 0) != 0) n += v;
    }
    return n;
  }
};

Fleet::Fleet(boost::asio::io_context& io, HttpClient& client, FleetOptions options)
    : impl_(std::make_unique<Impl>(io, client, std::move(options))) {}
Fleet::~Fleet() = default;

void Fleet::start() { impl_->start(); }

void Fleet::set_background_rise(bool on) { impl_->set_background_rise(on); }

void Fleet::stop() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

std::string Fleet::status_line() const {
  const auto& m = *impl_;
  char head[384];
  std::snprintf(
      head, sizeof head,
      "fleetsim t=%llds enrolled=%zu/%zu live=%zu silent=%zu crashes=%lld req=%lld err=%lld "
      "conns=%zu backlog=%zu hb_late=%lld expired=%llu",
      static_cast<long long>(m.now_ms() / 1000), m.enrolled, m.hosts.size(), m.enrolled - m.silent,
      m.silent, static_cast<long long>(m.crashes), static_cast<long long>(m.total_requests()),
      static_cast<long long>(m.total_errors()), m.client.open_connections(),
      m.client.pool_backlog(), static_cast<long long>(m.hb.overrun),
      static_cast<unsigned long long>(m.client.pool_stats().expired));
  std::string out = head;
  std::string last_channel;
  for (const auto& [key, counts] : m.ended_on()) {
    if (key.first != last_channel) {
      out += " | " + key.first + ":";
      last_channel = key.first;
    }
    out += " v" + std::to_string(key.second) + "=" + std::to_string(counts.first);
    if (counts.second) out += "(+" + std::to_string(counts.second) + " silent)";
  }
  return out;
}

std::string Fleet::summary_json() const {
  const auto& m = *impl_;
  json channels = json::object();
  auto ended = m.ended_on();
  for (const auto& [key, counts] : ended) {
    channels[key.first][std::to_string(key.second)] = {{"live", counts.first},
                                                       {"silent", counts.second}};
  }
  json versions = json::array();
  std::set<ModelKey> keys;
  for (const auto& [k, v] : m.versions) keys.insert(k);
  for (const auto& [k, v] : ended) keys.insert(k);
  for (const auto& k : keys) {
    VersionStats vs;
    if (auto it = m.versions.find(k); it != m.versions.end()) vs = it->second;
    auto e = ended.count(k) ? ended.at(k) : std::pair<std::int64_t, std::int64_t>{0, 0};
    versions.push_back({{"channel", k.first},
                        {"version", k.second},
                        {"model", vs.model},
                        {"exposed", vs.exposed},
                        {"applied", vs.applied},
                        {"apply_failed", vs.apply_failed},
                        {"crashes", vs.crashes},
                        {"went_silent", vs.went_silent},
                        {"rolled_back_from", vs.rolled_back_from},
                        {"local_rollbacks", vs.local_rollbacks},
                        {"ended_live", e.first},
                        {"ended_silent", e.second}});
  }
  json req = m.requests;
  req["total"] = m.total_requests();
  json err = m.errors;
  err["total"] = m.total_errors();
  auto pool = m.client.pool_stats();
  std::size_t long_polls = 0;
  for (const auto& h : m.hosts) long_polls += (h.long_poll && h.enrolled && !h.silent) ? 1 : 0;
  return json{{"hosts", m.hosts.size()},
              {"enrolled", m.enrolled},
              {"live", m.enrolled - m.silent},
              {"silent_hosts", m.silent},
              {"recovered_hosts", m.recovered},
              {"long_poll_hosts", long_polls},
              {"elapsed_s", static_cast<double>(m.now_ms()) / 1000.0},
              {"time_ms", unix_ms()},  // wall clock of this snapshot, comparable to the server's
              {"crashes", m.crashes},
              {"background_crashes", m.background_crashes},
              {"background_crash_rate_per_hour", m.opt.background_crash_rate * m.background_factor},
              {"background_rise_on", m.background_factor != 1.0},
              {"background_rise_changed_ms",
               m.rise_changed_ms < 0 ? json(nullptr) : json(m.rise_changed_ms)},
              {"channels", channels},
              {"versions", versions},
              {"requests", req},
              {"responses", m.responses},
              {"errors", err},
              {"heartbeats",
               {{"sent", m.hb.sent},
                {"answered", m.hb.answered},
                {"overrun", m.hb.overrun},
                {"latency_ms_avg", m.hb.answered ? m.hb.latency_ms_sum / m.hb.answered : 0},
                {"latency_ms_max", m.hb.latency_ms_max},
                {"gaps_over_2x", m.hb.gaps_over_2x},
                {"gaps_over_3x", m.hb.gaps_over_3x},
                {"gap_intervals_max", m.hb.gap_ratio_max},
                {"rate_asked", m.heartbeat_rate_asked()}}},
              {"pool",
               {{"started", pool.started},
                {"expired_in_queue", pool.expired},
                {"wait_ms_avg",
                 pool.started ? pool.wait_ms_sum / static_cast<std::int64_t>(pool.started) : 0},
                {"wait_ms_max", pool.wait_ms_max}}},
              {"open_connections", m.client.open_connections()},
              {"pool_backlog", m.client.pool_backlog()}}
      .dump(1);
}

}  // namespace ringfence::fleetsim
