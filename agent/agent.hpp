#pragma once
// The agent's core: enrollment, the long poll, the content pipeline (state machine in
// state/machine.hpp), heartbeats, the report spool, crash detection and the crash-loop guard.
// It owns no transport and no clock: everything with an effect comes in through Deps, so the
// unit tests drive it with a fake ServerApi, a fake Clock and a simulated kill -9 (a fault hook
// that throws), then "restart" it by constructing a new Agent on the same directories.
//
// Threading: single-threaded. Every method and every callback runs on the loop thread that
// drives the Clock and the ServerApi.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/content/fs.hpp"
#include "agent/content/verify.hpp"
#include "agent/net/server_api.hpp"
#include "agent/runtime/backoff.hpp"
#include "agent/runtime/clock.hpp"
#include "agent/runtime/consumer.hpp"
#include "agent/state/machine.hpp"
#include "agent/state/store.hpp"
#include "agent/telemetry/spool.hpp"
#include "agent/telemetry/system.hpp"

namespace ringfence::agent {

inline constexpr std::string_view kAgentVersion = "0.1.0";

struct Config {
  std::string state_dir;
  std::string content_dir;
  std::string enroll_token;
  proto::Labels labels;
  // Consumer name -> version (--consumer-version), sent in every heartbeat: the server validates
  // new releases against every consumer version in the field. Checked by main (proto rules).
  std::map<std::string, std::string> consumers;
  // Trust: the pinned root of the key set (--root-key) and/or the first key set's one key
  // (--public-key, trusted for content and desired states until a root-signed set replaces it).
  std::optional<proto::PublicKey> root_key;
  std::optional<proto::PublicKey> public_key;
  int poll_wait_s = 30;  // long-poll hold asked of the server
  int crash_loop_k = 2;  // restarts/crashes within the window that revert
  std::int64_t crash_loop_window_s = 600;
  std::int64_t healthy_after_s = 60;  // consumer alive this long = healthy checkpoint
  std::int64_t max_content_bytes = 256LL << 20;
  std::int64_t check_timeout_ms = 30'000;
  std::int64_t backoff_base_ms = 500;
  std::int64_t backoff_cap_ms = 60'000;
};

// A simulated-crash point: the hook is called with names like "download_progress",
// "swap_after_install", "swap_after_flip", "revert_after_flip". Production: raise(SIGKILL) when
// RINGFENCE_AGENT_FAULT names the point (tests only); unit tests: throw.
using FaultHook = std::function<void(std::string_view point)>;

struct Deps {
  Clock& clock;
  Fs& fs;
  net::ServerApi& api;
  ConsumerRunner* consumer = nullptr;  // null: no --consumer
  telemetry::SystemInfo& system;
  std::function<double()> rand01;  // jitter source; empty = CSPRNG
  FaultHook fault;                 // empty = none
};

class Agent {
 public:
  Agent(Config cfg, Deps deps);
  ~Agent();  // does not remove the unclean-shutdown marker: only stop() does
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Loads the state dir, detects a crash of the previous run (marker + boot id), counts it
  // against the crash-loop guard (reverting on its own if the guard trips), writes the marker,
  // resumes the persisted state (Restart event) and starts enrolling or polling.
  // Fails only for a state dir it cannot create or write (fatal at start-up).
  Status start();
  // Clean shutdown: cancels timers and requests, stops consumers, removes the marker.
  void stop();

  // Introspection for tests and logs.
  state::State machine_state() const noexcept { return st_.machine; }
  const state::AgentState& persisted() const noexcept { return st_; }
  const telemetry::Spool& spool() const noexcept { return spool_; }
  const std::optional<state::Identity>& identity() const noexcept { return id_; }
  std::int64_t heartbeat_interval_s() const noexcept { return heartbeat_s_; }
  // content_dir/<channel>/current
  std::string current_link(const std::string& channel) const;
  // The keys trusted now (the implicit --public-key set, or the last root-signed set taken).
  const proto::Trust& trust() const noexcept { return trust_; }
  // Refusals of desired states and key sets so far, by code (wrong_host, replayed_generation,
  // stale_desired_state, desired_signature, unknown_key, revoked_key, key_set_signature, ...).
  const std::map<std::string, std::int64_t>& refusals() const noexcept { return refusals_; }
  // True while frozen: the answer in force expired and no fresh verified one came yet.
  bool stale() const noexcept { return stale_; }

 private:
  // --- state machine ---
  Status fire(state::Event e);
  Status persist();
  void resume();

  // --- enrollment ---
  void begin_enroll();
  void on_enrolled();
  void on_unauthorized();
  // Back to Unenrolled (from Idle) with an enroll attempt scheduled, when there is no credential.
  void ensure_enrolling();
  bool enrolled() const { return id_ && !id_->credential.empty(); }

  // --- long poll / heartbeat / reports ---
  void poll();
  void schedule_poll(std::int64_t delay_ms);
  void on_desired(const proto::DesiredState& ds);
  // Verifies and, when newer, adopts the key set an answer carries (root-signed, unexpired).
  void learn_key_set(const std::string& text);
  void load_trust();
  void refuse_desired(const Error& why, const proto::DesiredState& ds);
  // The answer in force expired: freeze on the current content, report it once.
  void enter_stale(const std::string& why);
  bool desired_expired() const;
  void send_heartbeat();
  void schedule_heartbeat(std::int64_t delay_ms);
  void flush_reports();
  void on_server_ok();
  void report(proto::ReportKind kind, const std::optional<std::string>& channel,
              std::optional<std::int64_t> version, const std::string& detail_json,
              std::optional<std::int64_t> time_ms = std::nullopt);

  // --- content pipeline ---
  void maybe_start_job();
  std::optional<proto::DesiredChannel> next_job() const;
  void start_download();
  void verify_staged();
  void activate();
  void refuse(const Error& why);
  void drop_bad_active();
  void begin_revert(const std::string& channel, std::string reason, bool quarantine, int failures);
  void revert();
  content::VerifyContext verify_context(const std::string& channel) const;
  content::VersionSet known_bad_set() const;
  content::VersionSet quarantine_set() const;
  std::string staging_path(const proto::DesiredChannel& job) const;
  std::string version_path(const std::string& channel, std::int64_t version) const;

  // --- crash detection, consumers, guard ---
  void detect_previous_crash();
  void start_consumer(const std::string& channel);
  void on_consumer_exit(const std::string& channel, std::uint64_t gen, ConsumerExit ex);
  void arm_healthy_timer(const std::string& channel);
  // Counts one failure against the channel's guard; true when it tripped (revert begun).
  bool count_failure(const std::string& channel);
  std::string versions_json() const;

  void fault(std::string_view point) {
    if (deps_.fault) deps_.fault(point);
  }
  void cancel_timer(Clock::TimerId& id);

  Config cfg_;
  Deps deps_;
  telemetry::Spool spool_;
  state::AgentState st_;
  std::optional<state::Identity> id_;
  std::string boot_id_;
  std::int64_t start_mono_ = 0;
  bool stopped_ = false;

  // Server cadence (from every answer).
  std::int64_t heartbeat_s_ = 60;
  std::int64_t poll_s_ = 30;
  std::string etag_;
  std::optional<proto::DesiredState> desired_;  // the last verified answer
  proto::Trust trust_;
  std::map<std::string, std::int64_t> refusals_;
  bool stale_ = false;

  bool polling_ = false;
  bool hb_inflight_ = false;
  bool hb_again_ = false;  // state changed while a heartbeat was in flight: send another
  bool flushing_ = false;
  bool downloading_ = false;
  bool checking_ = false;
  int fast_polls_ = 0;
  std::int64_t last_hb_mono_ = 0;
  std::uint64_t job_gen_ = 0;  // bumped whenever a job ends, so stale callbacks are ignored

  Backoff enroll_backoff_;
  Backoff poll_backoff_;
  Backoff hb_backoff_;
  Backoff report_backoff_;
  Backoff download_backoff_;

  Clock::TimerId enroll_timer_ = 0;
  Clock::TimerId poll_timer_ = 0;
  Clock::TimerId hb_timer_ = 0;
  Clock::TimerId report_timer_ = 0;
  Clock::TimerId download_timer_ = 0;
  Clock::TimerId job_hold_timer_ = 0;  // local failure: no new job until it fires

  struct ConsumerSlot {
    std::uint64_t gen = 0;
    Backoff backoff;
    Clock::TimerId restart_timer = 0;
    Clock::TimerId healthy_timer = 0;
  };
  std::map<std::string, ConsumerSlot> consumers_;
  // Bound on the shared alive flag captured by callbacks that may outlive this object.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ringfence::agent
