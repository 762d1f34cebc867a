#include "agent/agent.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "proto/ids.hpp"
#include "proto/keyset.hpp"
#include "proto/signing.hpp"

namespace ringfence::agent {
namespace {
using nlohmann::json;
using state::Event;
using state::State;

constexpr std::string_view kMarker = "agent.running";
constexpr std::string_view kIdentity = "identity.json";
constexpr std::string_view kState = "state.json";
constexpr std::string_view kSpool = "spool.json";
constexpr std::string_view kTrust = "trust.json";

// A fresh random UUID v4, lower case.
std::string new_uuid_v4() {
  std::string h = proto::random_hex(16);
  h[12] = '4';
  static constexpr char kVariant[] = "89ab";
  h[16] = kVariant[std::stoi(h.substr(16, 1), nullptr, 16) & 3];
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20, 12);
}

// A refusal is remembered per signed manifest: the same content re-signed (a fresh expiry after
// a refusal for "expired") is a new candidate.
std::string refused_key(const proto::DesiredChannel& c) {
  return c.channel + "|" + std::to_string(c.version) + "|" + c.sha256 + "|" +
         c.signature.substr(0, 16);
}

std::string join(const std::string& a, std::string_view b) { return a + "/" + std::string(b); }

}  // namespace

Agent::Agent(Config cfg, Deps deps)
    : cfg_(std::move(cfg)),
      deps_(deps),
      spool_(deps.fs, join(cfg_.state_dir, kSpool)),
      enroll_backoff_(cfg_.backoff_base_ms, cfg_.backoff_cap_ms, deps.rand01),
      poll_backoff_(cfg_.backoff_base_ms, cfg_.backoff_cap_ms, deps.rand01),
      hb_backoff_(cfg_.backoff_base_ms, cfg_.backoff_cap_ms, deps.rand01),
      report_backoff_(cfg_.backoff_base_ms, cfg_.backoff_cap_ms, deps.rand01),
      download_backoff_(cfg_.backoff_base_ms, cfg_.backoff_cap_ms, deps.rand01) {}

Agent::~Agent() {
  *alive_ = false;
  if (!stopped_) {
    for (auto* t : {&enroll_timer_, &poll_timer_, &hb_timer_, &report_timer_, &download_timer_,
                    &job_hold_timer_}) {
      cancel_timer(*t);
    }
    for (auto& [ch, slot] : consumers_) {
      cancel_timer(slot.restart_timer);
      cancel_timer(slot.healthy_timer);
    }
  }
}

void Agent::cancel_timer(Clock::TimerId& id) {
  if (id != 0) deps_.clock.cancel(id);
  id = 0;
}

std::string Agent::current_link(const std::string& channel) const {
  return cfg_.content_dir + "/" + channel + "/current";
}

std::string Agent::version_path(const std::string& channel, std::int64_t version) const {
  return cfg_.content_dir + "/" + channel + "/versions/v" + std::to_string(version);
}

std::string Agent::staging_path(const proto::DesiredChannel& job) const {
  return cfg_.state_dir + "/staging/" + job.channel + "-v" + std::to_string(job.version) + "-" +
         job.sha256.substr(0, 16) + ".part";
}

// ---------------------------------------------------------------- state machine

Status Agent::persist() {
  return deps_.fs.write_atomic(join(cfg_.state_dir, kState), state::encode(st_), 0600);
}

Status Agent::fire(Event e) {
  auto to = state::next(st_.machine, e);
  if (!to) {
    spdlog::error("state machine: {}", to.error().message);
    return tl::unexpected(to.error());
  }
  if (*to != st_.machine || e == Event::Restart) {
    spdlog::info("state {} --{}--> {}", state::to_string(st_.machine), state::to_string(e),
                 state::to_string(*to));
  }
  State from = st_.machine;
  st_.machine = *to;
  if (auto p = persist(); !p) {
    st_.machine = from;
    spdlog::error("cannot persist agent state: {}", p.error().message);
    return p;
  }
  return {};
}

Status Agent::start() {
  start_mono_ = deps_.clock.mono_ms();
  auto& fs = deps_.fs;
  if (auto st = fs.make_dirs(cfg_.state_dir, 0700); !st) return st;
  if (auto st = fs.make_dirs(cfg_.state_dir + "/staging", 0700); !st) return st;
  if (auto st = fs.make_dirs(cfg_.content_dir, 0755); !st) return st;

  auto id = state::load_identity(fs, join(cfg_.state_dir, kIdentity));
  if (!id) return tl::unexpected(id.error());
  id_ = *id;
  if (!id_) {
    id_ = state::Identity{new_uuid_v4(), ""};
    if (auto st = fs.write_atomic(join(cfg_.state_dir, kIdentity), state::encode(*id_), 0600);
        !st) {
      return st;
    }
  }
  auto loaded = state::load_state(fs, join(cfg_.state_dir, kState));
  if (!loaded) {
    // Keep the content and identity; start the pipeline over rather than refuse to run.
    spdlog::error("{}; starting from an empty state", loaded.error().message);
  } else if (*loaded) {
    st_ = std::move(**loaded);
  }
  if (auto st = spool_.load(); !st) spdlog::error("{}", st.error().message);
  load_trust();

  boot_id_ = deps_.system.boot_id();
  detect_previous_crash();  // counts the crash against armed guards; reverts come below
  json marker = {{"boot_id", boot_id_}, {"started_ms", deps_.clock.wall_ms()}};
  if (auto st = fs.write_atomic(join(cfg_.state_dir, kMarker), marker.dump(), 0600); !st) {
    return st;
  }
  if (auto st = fire(Event::Restart); !st) return st;
  spdlog::info("agent {} host {} state {}", kAgentVersion, id_->host_id,
               state::to_string(st_.machine));
  resume();
  if (stopped_) return {};
  // A guard that tripped on this start (counted in detect_previous_crash): revert now, before
  // the consumer is started on the content that keeps crashing.
  for (const auto& [ch, g] : std::map<std::string, state::Guard>(st_.guards)) {
    if (!g.healthy && g.failures >= cfg_.crash_loop_k && st_.machine != State::Activating &&
        st_.machine != State::Reverting && st_.channels[ch].active == g.version) {
      spdlog::warn("{} v{} crashed {} times since activation: reverting", ch, g.version,
                   g.failures);
      begin_revert(ch, "crash_loop", true, g.failures);
    }
  }
  for (const auto& [ch, rec] : st_.channels) {
    if (rec.active != 0 && st_.machine != State::Reverting) start_consumer(ch);
  }
  if (enrolled() && st_.machine != State::Unenrolled) {
    on_enrolled();
  } else if (st_.machine == State::Unenrolled) {
    begin_enroll();
  } else {
    ensure_enrolling();
  }
  return {};
}

void Agent::ensure_enrolling() {
  if (enrolled() || stopped_) return;
  if (st_.machine == State::Idle) (void)fire(Event::Unauthorized);
  if (st_.machine != State::Unenrolled || enroll_timer_ != 0) return;
  enroll_timer_ = deps_.clock.schedule(enroll_backoff_.next_delay_ms(), [this] {
    enroll_timer_ = 0;
    begin_enroll();
  });
}

void Agent::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto* t : {&enroll_timer_, &poll_timer_, &hb_timer_, &report_timer_, &download_timer_,
                  &job_hold_timer_}) {
    cancel_timer(*t);
  }
  for (auto& [ch, slot] : consumers_) {
    cancel_timer(slot.restart_timer);
    cancel_timer(slot.healthy_timer);
    if (deps_.consumer) deps_.consumer->stop(ch);
  }
  deps_.api.cancel_all();
  (void)deps_.fs.remove(join(cfg_.state_dir, kMarker));
  spdlog::info("agent stopped cleanly");
}

void Agent::resume() {
  switch (st_.machine) {
    case State::Unenrolled:
    case State::Enrolling:
    case State::Idle:
      drop_bad_active();
      break;
    case State::Downloading:
      start_download();
      break;
    case State::Verifying:
      verify_staged();
      break;
    case State::Activating:
      activate();
      break;
    case State::Reverting:
      revert();
      break;
  }
}

// ---------------------------------------------------------------- crash detection

void Agent::detect_previous_crash() {
  auto marker_text = deps_.fs.read(join(cfg_.state_dir, kMarker));
  if (!marker_text) return;  // clean exit (or first start)
  std::string prev_boot;
  std::int64_t prev_started_ms = 0;
  try {
    auto m = json::parse(*marker_text);
    prev_boot = m.value("boot_id", "");
    prev_started_ms = m.value("started_ms", std::int64_t{0});
  } catch (const std::exception&) {
  }
  // Without a readable boot id on either side the two cannot be told apart: a crash, as before.
  bool known = !prev_boot.empty() && prev_boot != "unknown" && boot_id_ != "unknown";
  bool same_boot = known && prev_boot == boot_id_;
  bool host_rebooted = !prev_boot.empty() && prev_boot != boot_id_;
  std::int64_t now = deps_.clock.wall_ms();

  // The channel whose guard is armed (content on probation), if any: the report names it.
  std::optional<std::string> guarded;
  for (auto& [ch, g] : st_.guards) {
    if (g.healthy || now - g.activated_ms > cfg_.crash_loop_window_s * 1000) continue;
    guarded = ch;
    // Only the host dying counts against the content: the agent process dying on the same boot
    // (OOM killer, an administrator, an upgrade) left the host and the consumer's input intact.
    // Consumer crashes are counted as they happen (on_consumer_exit).
    if (!same_boot) ++g.failures;
  }
  std::optional<std::int64_t> version;
  if (guarded) version = st_.guards[*guarded].version;
  if (same_boot) {
    json detail = {{"kind", "agent_restart"},
                   {"boot_id_changed", false},
                   {"previous_started_ms", prev_started_ms},
                   {"uptime_s", deps_.system.host_uptime_s()},
                   {"versions", json::parse(versions_json())}};
    spdlog::warn("previous run did not shut down cleanly (agent_restart: same boot, not a crash)");
    report(proto::ReportKind::AgentRestart, guarded, version, detail.dump());
    return;
  }
  (void)persist();
  std::string kind = host_rebooted && guarded ? "boot_loop" : "unclean_shutdown";
  json detail = {{"kind", kind},
                 {"host_rebooted", host_rebooted},
                 {"previous_boot_id", prev_boot},
                 {"uptime_s", deps_.system.host_uptime_s()},
                 {"versions", json::parse(versions_json())}};
  if (guarded) detail["failures"] = st_.guards[*guarded].failures;
  spdlog::warn("previous run did not shut down cleanly ({}{})", kind,
               host_rebooted ? ", host rebooted" : "");
  report(proto::ReportKind::Crash, guarded, version, detail.dump());
}

std::string Agent::versions_json() const {
  json v = json::object();
  for (const auto& [ch, rec] : st_.channels) v[ch] = rec.active;
  return v.dump();
}

// ---------------------------------------------------------------- enrollment

void Agent::begin_enroll() {
  if (stopped_ || st_.machine != State::Unenrolled) return;
  if (!fire(Event::Enroll)) return;
  proto::EnrollRequest req{cfg_.enroll_token, id_->host_id, cfg_.labels,
                           std::string(kAgentVersion)};
  deps_.api.enroll(req, [this, alive = alive_](net::Result<proto::EnrollResponse> r) {
    if (!*alive || stopped_ || st_.machine != State::Enrolling) return;
    if (r && r->host_id == id_->host_id && !state::is_valid_credential(r->credential)) {
      // Never stored, never sent: CR/LF in it would inject headers into every later request.
      spdlog::error("enroll answered with a malformed credential ({} bytes); not accepted",
                    r->credential.size());
    } else if (r && r->host_id == id_->host_id) {
      id_->credential = r->credential;
      if (auto st =
              deps_.fs.write_atomic(join(cfg_.state_dir, kIdentity), state::encode(*id_), 0600);
          !st) {
        spdlog::error("cannot store credential: {}", st.error().message);
      }
      heartbeat_s_ = r->heartbeat_s;
      poll_s_ = r->poll_s;
      enroll_backoff_.reset();
      spdlog::info("enrolled as host {}", id_->host_id);
      if (fire(Event::EnrollOk)) on_enrolled();
      return;
    }
    std::int64_t retry_after = 0;
    if (r && r->host_id == id_->host_id) {
      // malformed credential: logged above
    } else if (r) {
      spdlog::error("enroll answered for host {} instead of {}", r->host_id, id_->host_id);
    } else {
      retry_after = r.error().retry_after_ms;
      spdlog::warn("enroll failed ({}): {}", r.error().http_status, r.error().error.message);
    }
    (void)fire(Event::EnrollFailed);
    auto delay = enroll_backoff_.next_delay_ms(retry_after);
    enroll_timer_ = deps_.clock.schedule(delay, [this] {
      enroll_timer_ = 0;
      begin_enroll();
    });
  });
}

void Agent::on_enrolled() {
  drop_bad_active();
  poll();
  send_heartbeat();
  flush_reports();
}

void Agent::on_unauthorized() {
  if (!enrolled()) return;  // another call already saw the 401
  spdlog::warn("server rejected the host credential; enrolling again");
  if (!fire(Event::Unauthorized)) {
    // Mid-apply (Verifying/Activating/Reverting): finish that first, poll again later.
    schedule_poll(poll_backoff_.next_delay_ms());
    return;
  }
  id_->credential.clear();
  (void)deps_.fs.write_atomic(join(cfg_.state_dir, kIdentity), state::encode(*id_), 0600);
  ++job_gen_;
  downloading_ = false;
  cancel_timer(poll_timer_);
  cancel_timer(hb_timer_);
  cancel_timer(download_timer_);
  etag_.clear();
  auto delay = enroll_backoff_.next_delay_ms();
  enroll_timer_ = deps_.clock.schedule(delay, [this] {
    enroll_timer_ = 0;
    begin_enroll();
  });
}

// ---------------------------------------------------------------- long poll

void Agent::schedule_poll(std::int64_t delay_ms) {
  cancel_timer(poll_timer_);
  poll_timer_ = deps_.clock.schedule(delay_ms, [this] {
    poll_timer_ = 0;
    poll();
  });
}

void Agent::poll() {
  if (stopped_ || polling_ || !enrolled()) return;
  polling_ = true;
  std::int64_t t0 = deps_.clock.mono_ms();
  // A 304 keeps the last verified answer in force only until it expires: past that, ask for a
  // whole new one (no If-None-Match) and hold still meanwhile.
  if (desired_expired()) {
    enter_stale("the desired state in force expired at " + std::to_string(desired_->expires));
    etag_.clear();
  }
  deps_.api.desired(id_->credential, etag_, cfg_.poll_wait_s,
                    [this, alive = alive_, t0](net::Result<net::DesiredAnswer> r) {
                      if (!*alive || stopped_) return;
                      polling_ = false;
                      if (!r) {
                        if (r.error().http_status == 401) return on_unauthorized();
                        auto delay = poll_backoff_.next_delay_ms(r.error().retry_after_ms);
                        spdlog::warn("desired-state poll failed ({}): {}; retrying in {} ms",
                                     r.error().http_status, r.error().error.message, delay);
                        return schedule_poll(delay);
                      }
                      poll_backoff_.reset();
                      on_server_ok();
                      if (!r->not_modified) on_desired(r->state);
                      // A server that answers at once every time (no long-poll support, or a proxy
                      // that cuts the hold) must not turn the loop into a request storm: fall back
                      // to poll_s.
                      bool fast = deps_.clock.mono_ms() - t0 < 1000;
                      fast_polls_ = fast ? fast_polls_ + 1 : 0;
                      schedule_poll(fast_polls_ >= 2 ? poll_s_ * 1000 : 0);
                    });
}

// ---------------------------------------------------------------- trust

void Agent::load_trust() {
  auto configured = cfg_.root_key ? proto::encode_public_key(*cfg_.root_key) : std::string();
  trust_.root = cfg_.root_key;
  trust_.keys = cfg_.public_key ? proto::implicit_key_set(*cfg_.public_key) : proto::KeySet{};
  if (!cfg_.root_key) return;  // --public-key only: that key, for good
  auto rec = state::load_trust(deps_.fs, join(cfg_.state_dir, kTrust));
  if (!rec) {
    spdlog::error("{}; starting from the configured keys", rec.error().message);
    return;
  }
  if (!*rec) return;
  if ((*rec)->configured_root != configured) {
    spdlog::warn("--root-key changed since the key set in {} was taken: it is dropped", kTrust);
    return;
  }
  auto root = proto::parse_public_key((*rec)->root);
  auto set = proto::decode_key_set((*rec)->key_set);
  if (!root || !set) {
    spdlog::error("{} is unreadable: starting from the configured keys", kTrust);
    return;
  }
  trust_.root = *root;
  trust_.keys = set->set;
  spdlog::info("key set v{} (root {})", trust_.keys.version, proto::key_id(*trust_.root));
}

void Agent::learn_key_set(const std::string& text) {
  auto set = proto::decode_key_set(text);
  if (!set) {
    ++refusals_["key_set_invalid"];
    spdlog::warn("refusing the key set in the desired state: {}", set.error().message);
    return;
  }
  if (set->set.version <= trust_.keys.version) return;  // the one we have (or older): nothing new
  auto now_s = deps_.clock.wall_ms() / 1000;
  auto next = proto::accept_key_set(trust_, *set, now_s);
  if (!next) {
    ++refusals_[std::string(next.error().code_or_default())];
    spdlog::warn("refusing key set v{}: {} [{}]", set->set.version, next.error().message,
                 next.error().code_or_default());
    return;
  }
  state::TrustRecord rec{proto::encode_public_key(*cfg_.root_key),
                         proto::encode_public_key(*next->root), proto::encode(*set)};
  if (auto st = deps_.fs.write_atomic(join(cfg_.state_dir, kTrust), state::encode(rec), 0600);
      !st) {
    spdlog::error("cannot store key set v{}: {}", set->set.version, st.error().message);
    return;  // not taken: asked again with the next answer
  }
  bool rotated = *next->root != *trust_.root;
  trust_ = std::move(*next);
  spdlog::info("accepted key set v{} ({} keys, {} revoked{})", trust_.keys.version,
               trust_.keys.keys.size(), trust_.keys.revoked.size(),
               rotated ? ", new root " + proto::key_id(*trust_.root) : std::string());
}

bool Agent::desired_expired() const {
  return desired_ && desired_->expires <= deps_.clock.wall_ms() / 1000;
}

void Agent::enter_stale(const std::string& why) {
  if (stale_) return;
  stale_ = true;
  spdlog::warn(
      "desired state is stale ({}): keeping the current content until a fresh one "
      "verifies",
      why);
  json detail = {{"reason", why},
                 {"generation", st_.generation},
                 {"expires", desired_ ? desired_->expires : 0},
                 {"versions", json::parse(versions_json())}};
  report(proto::ReportKind::StaleDesiredState, std::nullopt, std::nullopt, detail.dump());
}

void Agent::refuse_desired(const Error& why, const proto::DesiredState& ds) {
  std::string code(why.code_or_default());
  ++refusals_[code];
  spdlog::warn("refusing desired state (generation {}, key {}): {} [{}]", ds.generation,
               ds.key_id.empty() ? "-" : ds.key_id, why.message, code);
  if (code == "stale_desired_state") enter_stale(why.message);
}

void Agent::on_desired(const proto::DesiredState& ds) {
  if (ds.key_set && trust_.root) learn_key_set(*ds.key_set);
  // Nothing of an answer is acted on before the whole of it verifies.
  auto now_s = deps_.clock.wall_ms() / 1000;
  if (auto ok = proto::verify_desired_state(ds, trust_.keys, id_->host_id, st_.generation, now_s);
      !ok) {
    return refuse_desired(ok.error(), ds);
  }
  if (stale_) spdlog::info("fresh desired state (generation {}): no longer stale", ds.generation);
  stale_ = false;
  st_.generation = ds.generation;
  etag_ = ds.etag;
  poll_s_ = ds.poll_s;
  if (ds.heartbeat_s != heartbeat_s_) {
    spdlog::info("heartbeat interval {} s -> {} s", heartbeat_s_, ds.heartbeat_s);
    heartbeat_s_ = ds.heartbeat_s;
    if (hb_timer_ != 0) {
      std::int64_t due = last_hb_mono_ + heartbeat_s_ * 1000 - deps_.clock.mono_ms();
      schedule_heartbeat(std::max<std::int64_t>(0, due));
    }
  }
  desired_ = ds;
  st_.known_bad = ds.known_bad;
  (void)persist();
  drop_bad_active();
  maybe_start_job();
}

// ---------------------------------------------------------------- heartbeat and reports

void Agent::schedule_heartbeat(std::int64_t delay_ms) {
  cancel_timer(hb_timer_);
  hb_timer_ = deps_.clock.schedule(delay_ms, [this] {
    hb_timer_ = 0;
    send_heartbeat();
  });
}

void Agent::send_heartbeat() {
  if (stopped_ || !enrolled()) return;
  if (hb_inflight_) {
    hb_again_ = true;
    return;
  }
  hb_again_ = false;
  cancel_timer(hb_timer_);
  proto::Heartbeat hb;
  hb.consumers = cfg_.consumers;
  hb.boot_id = boot_id_;
  hb.uptime_s = deps_.system.host_uptime_s();
  for (const auto& [ch, rec] : st_.channels) {
    hb.channels[ch] = proto::ChannelStatus{rec.active, rec.active != 0 ? "active" : "failed"};
  }
  hb_inflight_ = true;
  last_hb_mono_ = deps_.clock.mono_ms();
  deps_.api.heartbeat(id_->credential, hb, [this, alive = alive_](net::Result<bool> r) {
    if (!*alive || stopped_) return;
    hb_inflight_ = false;
    if (!r) {
      if (r.error().http_status == 401) return on_unauthorized();
      auto delay = std::min(hb_backoff_.next_delay_ms(r.error().retry_after_ms),
                            std::max<std::int64_t>(heartbeat_s_ * 1000, 1000));
      spdlog::warn("heartbeat failed ({}): {}", r.error().http_status, r.error().error.message);
      return schedule_heartbeat(delay);
    }
    hb_backoff_.reset();
    on_server_ok();
    schedule_heartbeat(hb_again_ ? 0 : heartbeat_s_ * 1000);
  });
}

void Agent::on_server_ok() {
  if (spool_.size() > 0 && !flushing_ && report_timer_ == 0) flush_reports();
}

void Agent::report(proto::ReportKind kind, const std::optional<std::string>& channel,
                   std::optional<std::int64_t> version, const std::string& detail_json,
                   std::optional<std::int64_t> time_ms) {
  proto::Report r;
  r.kind = kind;
  r.time = time_ms.value_or(deps_.clock.wall_ms());
  r.channel = channel;
  r.version = version;
  r.boot_id = boot_id_;
  r.detail_json =
      detail_json.size() > proto::kMaxDetailBytes ? "{\"truncated\":true}" : detail_json;
  auto added = spool_.add(std::move(r));
  if (!added) spdlog::error("cannot spool report: {}", added.error().message);
  if (added && *added) {
    spdlog::info("report {} {} v{} queued ({} in spool)", proto::to_string(kind),
                 channel.value_or("-"), version.value_or(0), spool_.size());
  }
  if (report_timer_ == 0) flush_reports();
}

void Agent::flush_reports() {
  if (stopped_ || flushing_ || !enrolled() || spool_.size() == 0) return;
  auto batch = spool_.batch();
  flushing_ = true;
  deps_.api.reports(id_->credential, batch, [this, alive = alive_, batch](net::Result<bool> r) {
    if (!*alive || stopped_) return;
    flushing_ = false;
    if (!r) {
      if (r.error().http_status == 401) return on_unauthorized();
      if (!r.error().transient()) {
        // The server refuses this batch for good; keeping it would block every later report.
        spdlog::error("server refused {} reports ({}): {}; dropping them", batch.size(),
                      r.error().http_status, r.error().error.message);
        (void)spool_.ack(batch);
        return flush_reports();
      }
      auto delay = report_backoff_.next_delay_ms(r.error().retry_after_ms);
      cancel_timer(report_timer_);
      report_timer_ = deps_.clock.schedule(delay, [this] {
        report_timer_ = 0;
        flush_reports();
      });
      return;
    }
    report_backoff_.reset();
    if (auto st = spool_.ack(batch); !st) spdlog::error("spool: {}", st.error().message);
    spdlog::info("sent {} reports", batch.size());
    flush_reports();
  });
}

// ---------------------------------------------------------------- content pipeline

content::VersionSet Agent::known_bad_set() const {
  content::VersionSet s;
  for (const auto& k : st_.known_bad) s.insert({k.channel, k.version});
  return s;
}

content::VersionSet Agent::quarantine_set() const {
  content::VersionSet s;
  for (const auto& q : st_.quarantine) s.insert({q.channel, q.version});
  return s;
}

std::optional<proto::DesiredChannel> Agent::next_job() const {
  if (!desired_) return std::nullopt;
  for (const auto& e : desired_->channels) {
    auto it = st_.channels.find(e.channel);
    if (it != st_.channels.end() && it->second.active == e.version &&
        it->second.active_sha == e.sha256) {
      continue;
    }
    if (std::find(st_.refused.begin(), st_.refused.end(), refused_key(e)) != st_.refused.end()) {
      continue;
    }
    return e;
  }
  return std::nullopt;
}

void Agent::maybe_start_job() {
  if (stopped_ || !enrolled() || job_hold_timer_ != 0 || !desired_) return;
  if (desired_expired()) {
    return enter_stale("the desired state in force expired at " +
                       std::to_string(desired_->expires));
  }
  if (st_.machine == State::Downloading && st_.job) {
    bool still_wanted = std::any_of(
        desired_->channels.begin(), desired_->channels.end(),
        [&](const proto::DesiredChannel& e) { return refused_key(e) == refused_key(*st_.job); });
    if (still_wanted) return;
    // The desired state moved on (a newer version, or a rollback away from this one): drop the
    // download rather than finish and apply content the server no longer wants here.
    spdlog::info("desired state no longer names {} v{}: dropping its download", st_.job->channel,
                 st_.job->version);
    (void)deps_.fs.remove(staging_path(*st_.job));
    st_.job.reset();
    ++job_gen_;
    downloading_ = false;
    cancel_timer(download_timer_);
    if (!fire(Event::Refused)) return;
  }
  if (st_.machine != State::Idle) return;  // busy: re-evaluated when back in Idle
  auto job = next_job();
  if (!job) return;
  st_.job = *job;
  ++job_gen_;
  downloading_ = false;
  cancel_timer(download_timer_);
  download_backoff_.reset();
  if (!fire(Event::UpdateNeeded)) return;
  spdlog::info("new desired content: {} v{} ({} bytes)", job->channel, job->version, job->size);
  start_download();
}

content::VerifyContext Agent::verify_context(const std::string& channel) const {
  content::VerifyContext ctx;
  ctx.keys = &trust_.keys;
  ctx.now_s = deps_.clock.wall_ms() / 1000;
  ctx.max_size = cfg_.max_content_bytes;
  auto it = st_.channels.find(channel);
  if (it != st_.channels.end() && it->second.active != 0) ctx.active_version = it->second.active;
  return ctx;
}

void Agent::start_download() {
  if (stopped_ || downloading_ || !st_.job || st_.machine != State::Downloading) return;
  if (!enrolled()) return;
  const auto job = *st_.job;
  auto kb = known_bad_set();
  auto q = quarantine_set();
  auto ctx = verify_context(job.channel);
  ctx.known_bad = &kb;
  ctx.quarantined = &q;
  if (auto st = content::verify_entry(job, ctx); !st) return refuse(st.error());
  if (!job.url.starts_with("/") || job.url.find("..") != std::string::npos) {
    return refuse(Error{Errc::Unprocessable, "blob url must be a server path", "url", {}});
  }
  std::string path = staging_path(job);
  auto have = deps_.fs.file_size(path).value_or(0);
  if (have == job.size) {
    if (fire(Event::DownloadOk)) verify_staged();
    return;
  }
  if (have > 0)
    spdlog::info("resuming download of {} v{} at byte {}", job.channel, job.version, have);
  downloading_ = true;
  auto gen = job_gen_;
  bool first_chunk = true;
  deps_.api.download(
      id_->credential, job.url, path, job.sha256, job.size,
      [this, first_chunk](std::int64_t) mutable {
        if (first_chunk) {
          first_chunk = false;
          fault("download_progress");
        }
      },
      [this, alive = alive_, gen, path](net::Result<net::DownloadDone> r) {
        if (!*alive || stopped_ || gen != job_gen_ || st_.machine != State::Downloading) return;
        downloading_ = false;
        if (!r) {
          const auto& f = r.error();
          if (f.http_status == 401) return on_unauthorized();
          if (f.http_status == 416) (void)deps_.fs.remove(path);  // our partial file is wrong
          if (f.transient() || f.http_status == 416) {
            (void)fire(Event::DownloadFailed);
            auto delay = download_backoff_.next_delay_ms(f.retry_after_ms);
            spdlog::warn("download failed ({}): {}; retrying in {} ms", f.http_status,
                         f.error.message, delay);
            download_timer_ = deps_.clock.schedule(delay, [this] {
              download_timer_ = 0;
              start_download();
            });
            return;
          }
          (void)deps_.fs.remove(path);
          return refuse(
              Error{Errc::Unprocessable,
                    "download failed (" + std::to_string(f.http_status) + "): " + f.error.message,
                    "download",
                    {}});
        }
        download_backoff_.reset();
        if (fire(Event::DownloadOk)) verify_staged();
      });
}

void Agent::verify_staged() {
  if (stopped_ || !st_.job || st_.machine != State::Verifying || checking_) return;
  const auto job = *st_.job;
  auto kb = known_bad_set();
  auto q = quarantine_set();
  auto ctx = verify_context(job.channel);
  ctx.known_bad = &kb;
  ctx.quarantined = &q;
  if (auto st = content::verify_entry(job, ctx); !st) return refuse(st.error());
  std::string path = staging_path(job);
  if (auto st = content::verify_blob(path, job.manifest); !st) {
    (void)deps_.fs.remove(path);
    return refuse(st.error());
  }
  if (!deps_.consumer) {
    if (fire(Event::Verified)) activate();
    return;
  }
  checking_ = true;
  auto gen = job_gen_;
  deps_.consumer->check(path, cfg_.check_timeout_ms, [this, alive = alive_, gen](Status st) {
    if (!*alive || stopped_) return;
    checking_ = false;
    if (gen != job_gen_ || st_.machine != State::Verifying) return;
    if (!st) {
      return refuse(Error{Errc::Unprocessable,
                          "consumer check refused the content: " + st.error().message,
                          "consumer_check",
                          {}});
    }
    // Arm the crash-loop guard in the same durable write that enters Activating.
    st_.guards[st_.job->channel] = state::Guard{st_.job->version, deps_.clock.wall_ms(), 0, false};
    if (fire(Event::Verified)) activate();
  });
}

void Agent::activate() {
  if (stopped_ || !st_.job) return;
  const auto job = *st_.job;
  auto& fs = deps_.fs;
  // Without a consumer the guard is armed here (the check path arms it before firing).
  auto g = st_.guards.find(job.channel);
  if (g == st_.guards.end() || g->second.version != job.version) {
    st_.guards[job.channel] = state::Guard{job.version, deps_.clock.wall_ms(), 0, false};
    (void)persist();
  }
  std::string chdir = cfg_.content_dir + "/" + job.channel;
  std::string dst = version_path(job.channel, job.version);
  if (auto st = fs.make_dirs(chdir + "/versions", 0755); !st) return refuse(st.error());
  if (!fs.exists(dst)) {
    std::string staged = staging_path(job);
    if (!fs.exists(staged)) {
      return refuse(
          Error{Errc::Unprocessable, "staged content vanished before activation", "staging", {}});
    }
    if (auto st = fs.install(staged, dst); !st) return refuse(st.error());
  }
  fault("swap_after_install");
  if (auto st =
          fs.symlink_atomic("versions/v" + std::to_string(job.version), current_link(job.channel));
      !st) {
    return refuse(st.error());
  }
  fault("swap_after_flip");
  auto& rec = st_.channels[job.channel];
  std::int64_t previous = rec.active;
  if (rec.active != job.version) {
    if (rec.lkg != 0 && rec.lkg != job.version && rec.lkg != rec.active) {
      (void)fs.remove(version_path(job.channel, rec.lkg));  // keep current + last-known-good only
    }
    if (rec.active != 0) {
      rec.lkg = rec.active;
      rec.lkg_sha = rec.active_sha;
    }
    rec.active = job.version;
    rec.active_sha = job.sha256;
  }
  st_.job.reset();
  ++job_gen_;
  if (!fire(Event::Activated)) return;
  spdlog::info("activated {} v{} (last-known-good v{})", job.channel, job.version, rec.lkg);
  json detail = {{"from", previous}, {"sha256", job.sha256}, {"rollback", job.rollback}};
  report(proto::ReportKind::Applied, job.channel, job.version, detail.dump());
  start_consumer(job.channel);
  send_heartbeat();
  maybe_start_job();
}

void Agent::refuse(const Error& why) {
  if (!st_.job) return;
  const auto job = *st_.job;
  spdlog::warn("refusing {} v{}: {}", job.channel, job.version, why.message);
  if (why.errc == Errc::Unprocessable || why.errc == Errc::InvalidArgument) {
    st_.refused.push_back(refused_key(job));
    if (st_.refused.size() > 256) st_.refused.erase(st_.refused.begin());
  }
  (void)deps_.fs.remove(staging_path(job));
  auto g = st_.guards.find(job.channel);
  if (g != st_.guards.end() && g->second.version == job.version &&
      st_.channels[job.channel].active != job.version) {
    st_.guards.erase(g);
  }
  st_.job.reset();
  ++job_gen_;
  downloading_ = false;
  cancel_timer(download_timer_);
  if (!fire(Event::Refused)) return;
  json detail = {{"reason", why.message},
                 {"check", std::string(why.code_or_default())},
                 {"sha256", job.sha256}};
  report(proto::ReportKind::ApplyFailed, job.channel, job.version, detail.dump());
  if (why.errc != Errc::Unprocessable && why.errc != Errc::InvalidArgument) {
    // Local trouble (a full disk): try the version again after a backoff, not in a tight loop
    // of downloads.
    cancel_timer(job_hold_timer_);
    job_hold_timer_ = deps_.clock.schedule(download_backoff_.next_delay_ms(), [this] {
      job_hold_timer_ = 0;
      maybe_start_job();
    });
    return;
  }
  maybe_start_job();
}

// ---------------------------------------------------------------- known-bad and revert

void Agent::drop_bad_active() {
  if (st_.machine == State::Activating || st_.machine == State::Reverting) return;
  auto kb = known_bad_set();
  auto q = quarantine_set();
  for (const auto& [ch, rec] : st_.channels) {
    if (rec.active == 0) continue;
    if (kb.count({ch, rec.active}) || q.count({ch, rec.active})) {
      spdlog::warn("active {} v{} is known-bad: dropping it", ch, rec.active);
      begin_revert(ch, "known_bad", false, 0);
      return;  // one at a time; Reverted comes back here
    }
  }
}

void Agent::begin_revert(const std::string& channel, std::string reason, bool quarantine,
                         int failures) {
  auto& rec = st_.channels[channel];
  st_.revert = state::RevertJob{channel,    rec.active, std::move(reason),
                                quarantine, failures,   deps_.clock.wall_ms()};
  if (st_.job) {
    (void)deps_.fs.remove(staging_path(*st_.job));
    st_.job.reset();
  }
  ++job_gen_;
  downloading_ = false;
  cancel_timer(download_timer_);
  if (!fire(Event::RevertNeeded)) {
    st_.revert.reset();
    return;
  }
  revert();
}

void Agent::revert() {
  if (!st_.revert) {
    (void)fire(Event::Reverted);
    return;
  }
  const auto rj = *st_.revert;
  auto& fs = deps_.fs;
  auto& rec = st_.channels[rj.channel];
  if (rj.quarantine &&
      std::none_of(st_.quarantine.begin(), st_.quarantine.end(), [&](const auto& q) {
        return q.channel == rj.channel && q.version == rj.version;
      })) {
    st_.quarantine.push_back({rj.channel, rj.version, rj.reason, rj.time_ms});
  }
  auto kb = known_bad_set();
  auto q = quarantine_set();
  if (deps_.consumer) deps_.consumer->stop(rj.channel);
  std::int64_t restored = 0;
  if (rec.active == rj.version) {
    bool lkg_ok = rec.lkg != 0 && !kb.count({rj.channel, rec.lkg}) &&
                  !q.count({rj.channel, rec.lkg}) && fs.exists(version_path(rj.channel, rec.lkg));
    if (lkg_ok) {
      if (auto st =
              fs.symlink_atomic("versions/v" + std::to_string(rec.lkg), current_link(rj.channel));
          !st) {
        spdlog::error("cannot restore last-known-good: {}", st.error().message);
        return;  // stays in Reverting; retried at the next start
      }
      restored = rec.lkg;
      rec.active = rec.lkg;
      rec.active_sha = rec.lkg_sha;
    } else {
      (void)fs.remove(current_link(rj.channel));
      rec.active = 0;
      rec.active_sha.clear();
    }
    fault("revert_after_flip");
    (void)fs.remove(version_path(rj.channel, rj.version));
    rec.lkg = 0;
    rec.lkg_sha.clear();
  } else {
    restored = rec.active;
  }
  st_.guards.erase(rj.channel);
  st_.revert.reset();
  if (!fire(Event::Reverted)) return;
  spdlog::warn("reverted {} v{} -> v{} ({})", rj.channel, rj.version, restored, rj.reason);
  json detail = {{"reason", rj.reason},
                 {"from", rj.version},
                 {"to", restored},
                 {"failures", rj.failures},
                 {"window_s", cfg_.crash_loop_window_s},
                 {"quarantined", rj.quarantine}};
  report(proto::ReportKind::LocalRollback, rj.channel, rj.version, detail.dump(), rj.time_ms);
  if (restored != 0) start_consumer(rj.channel);
  send_heartbeat();
  if (!enrolled()) return ensure_enrolling();
  drop_bad_active();
  maybe_start_job();
}

// ---------------------------------------------------------------- consumers and the guard

void Agent::start_consumer(const std::string& channel) {
  if (stopped_) return;
  auto& slot = consumers_[channel];
  cancel_timer(slot.restart_timer);
  cancel_timer(slot.healthy_timer);
  auto it = st_.channels.find(channel);
  if (it == st_.channels.end() || it->second.active == 0) return;
  if (deps_.consumer) {
    auto gen = ++slot.gen;
    std::string file = version_path(channel, it->second.active);
    if (!deps_.consumer->run(channel, file, [this, alive = alive_, channel, gen](ConsumerExit ex) {
          if (*alive) on_consumer_exit(channel, gen, ex);
        })) {
      spdlog::error("cannot start the consumer for {}", channel);
    }
  }
  arm_healthy_timer(channel);
}

void Agent::arm_healthy_timer(const std::string& channel) {
  auto g = st_.guards.find(channel);
  if (g == st_.guards.end() || g->second.healthy) return;
  auto& slot = consumers_[channel];
  auto gen = slot.gen;
  cancel_timer(slot.healthy_timer);
  slot.healthy_timer = deps_.clock.schedule(cfg_.healthy_after_s * 1000, [this, channel, gen] {
    auto& s = consumers_[channel];
    s.healthy_timer = 0;
    if (s.gen != gen) return;
    if (deps_.consumer && !deps_.consumer->running(channel)) return;
    auto it = st_.guards.find(channel);
    if (it == st_.guards.end() || it->second.healthy) return;
    it->second.healthy = true;
    (void)persist();
    s.backoff.reset();
    spdlog::info("{} v{} reached the healthy checkpoint", channel, it->second.version);
  });
}

bool Agent::count_failure(const std::string& channel) {
  auto it = st_.guards.find(channel);
  if (it == st_.guards.end() || it->second.healthy) return false;
  auto& g = it->second;
  if (deps_.clock.wall_ms() - g.activated_ms > cfg_.crash_loop_window_s * 1000) return false;
  ++g.failures;
  (void)persist();
  spdlog::warn("{} v{}: failure {} of {} within the crash-loop window", channel, g.version,
               g.failures, cfg_.crash_loop_k);
  if (g.failures < cfg_.crash_loop_k) return false;
  if (st_.machine == State::Activating || st_.machine == State::Reverting) return false;
  begin_revert(channel, "crash_loop", true, g.failures);
  return true;
}

void Agent::on_consumer_exit(const std::string& channel, std::uint64_t gen, ConsumerExit ex) {
  if (stopped_) return;
  auto& slot = consumers_[channel];
  if (slot.gen != gen) return;
  cancel_timer(slot.healthy_timer);
  auto version = st_.channels[channel].active;
  if (ex.signaled) {
    spdlog::warn("consumer for {} v{} died on signal {}", channel, version, ex.code);
    json detail = {{"kind", "consumer_signal"},
                   {"signal", ex.code},
                   {"uptime_s", deps_.system.host_uptime_s()},
                   {"agent_uptime_s", (deps_.clock.mono_ms() - start_mono_) / 1000},
                   {"versions", json::parse(versions_json())}};
    report(proto::ReportKind::Crash, channel, version, detail.dump());
  } else {
    spdlog::warn("consumer for {} v{} exited with status {}", channel, version, ex.code);
  }
  if ((ex.signaled || ex.code != 0) && count_failure(channel)) return;  // reverted + restarted
  auto delay = slot.backoff.next_delay_ms();
  slot.restart_timer = deps_.clock.schedule(delay, [this, channel] {
    consumers_[channel].restart_timer = 0;
    start_consumer(channel);
  });
}

}  // namespace ringfence::agent
