#pragma once
// The server's domain core: tokens, fleet, channels, releases, policies, rollouts, gates,
// desired states, long polls and events, over an in-memory model persisted through a Store.
// HTTP handlers (server/api) validate input shape and call these methods; every method returns
// a value or an Error (mapped to a status in one place, server/http/message.cpp).
//
// Threading: every public method takes the one state mutex; methods may be called from any
// thread. Reply callbacks (long polls, event streams) are invoked with the mutex held, so they
// must only queue work (the HTTP transport's do).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "proto/error.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"
#include "server/core/clock.hpp"
#include "server/fleet/registry.hpp"
#include "server/health/gate.hpp"
#include "server/rollout/state_machine.hpp"
#include "server/store/store.hpp"

namespace ringfence::server::core {

enum class Role { Viewer = 0, Operator = 1, Release = 2, Admin = 3 };
std::string_view to_string(Role r) noexcept;
std::optional<Role> role_from(std::string_view s) noexcept;

struct Principal {
  std::string name;
  Role role = Role::Viewer;
};

struct Options {
  std::string data_dir;
  std::int64_t heartbeat_s = 300;        // hosts not exposed to a rolling release
  std::int64_t exposed_heartbeat_s = 5;  // hosts exposed to a rolling release
  std::int64_t poll_s = 60;
  std::int64_t silence_intervals = 3;  // k heartbeat intervals of silence = suspected crash
  std::int64_t healthy_after_s = 10;   // healthy heartbeats needed after applying
  std::int64_t manifest_ttl_s = 30 * 86400;
  std::int64_t default_max_bytes = 16 << 20;
  std::int64_t budget_per_hour = 0;         // hosts newly exposed per hour, all rollouts; 0 = off
  std::int64_t tenant_budget_per_hour = 0;  // the same per tenant; 0 = off
  std::int64_t max_long_poll_s = 60;
  // After a start, nobody is found silent for this long (the agents' longest backoff): the fleet
  // could not talk to a stopped server.
  std::int64_t restart_grace_s = 60;
  // Lifetime of a signed desired state; each host's is re-signed half way (so keep it above
  // twice the long-poll cap: a parked poll always ends before the answer it holds expires).
  std::int64_t desired_ttl_s = 3600;
  // Evidence trust: a host's signals (crash, silence, apply failure, boot loop, healthy) count
  // toward a rollout's gate, in the stage and in the control cohort alike, only when its current
  // credential holder was first in contact at least this long before the rollout started (its
  // track record). Fresh enrollees are still offered the release; they just cannot move the gate
  // either way. 0 = every host counts (the wave-1 behaviour).
  std::int64_t evidence_min_age_s = 3600;
  // Enrollments per minute per enrollment token (a burst of one minute's worth, then a steady
  // rate); a token's own rate_per_min overrides it. 0 = unlimited.
  std::int64_t enroll_rate_per_min = 1200;
  // Reports per host per minute (a batch into an empty minute is always taken). 0 = unlimited.
  std::int64_t reports_per_min = 600;
};

struct DesiredAnswer {
  bool not_modified = false;
  std::string etag;
  std::string body;  // JSON when !not_modified
};

class Service {
 public:
  Service(store::Store& store, const Clock& clock, proto::KeyPair signing_key, Options options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Loads the snapshot into memory and finishes any halt a previous process left half-done.
  Status load();
  // Creates the bootstrap admin token when the store has none; returns it (else nullopt).
  Expected<std::optional<std::string>> bootstrap_admin(std::optional<std::string> wanted);

  // The content signing public key in use, base64.
  std::string signing_public_key() const;
  // The keys in use: {version, content_key_id, desired_key_id, root, key_set, expires?}.
  nlohmann::json keys() const;
  // Re-reads the key files (keys.hpp) now; the server signs with the new keys at once and every
  // host gets a fresh answer carrying the key set. Errors: InvalidArgument (the files are
  // refused: the old keys stay), Conflict (an older key set than the one in use).
  Expected<nlohmann::json> reload_keys(const Principal& by);

  // ---- auth
  Expected<Principal> authenticate(std::string_view authorization_header) const;
  Expected<std::int64_t> authenticate_host(std::string_view authorization_header) const;

  // ---- operator API; bodies are validated JSON objects; results are JSON documents.
  Expected<nlohmann::json> create_token(const Principal& by, const nlohmann::json& body);
  nlohmann::json list_tokens() const;
  Status delete_token(const Principal& by, const std::string& name);
  // body: {name, labels?, expires_in_s?, max_uses?, tenant?, rate_per_min?}; the answer carries
  // the token once. InvalidArgument for a bad body, Conflict when the name exists (revoked or not).
  Expected<nlohmann::json> create_enrollment_token(const Principal& by, const nlohmann::json& body);
  // Every enrollment token: name, labels, tenant, uses, limits, expiry, state; never the secret.
  nlohmann::json list_enrollment_tokens() const;
  // Revokes a token: it enrolls nobody from now on; hosts it enrolled keep their credentials.
  // Idempotent; NotFound for an unknown name; Unavailable when the store fails (nothing changes).
  Status revoke_enrollment_token(const Principal& by, const std::string& name);

  nlohmann::json list_rings() const;
  Expected<nlohmann::json> get_ring(const std::string& name) const;
  Expected<nlohmann::json> put_ring(const Principal& by, const std::string& name,
                                    const nlohmann::json& body, bool create_only);
  Status delete_ring(const Principal& by, const std::string& name);
  Expected<nlohmann::json> ring_hosts(const std::string& name, std::int64_t limit,
                                      const std::string& after) const;

  struct HostFilter {
    std::optional<std::string> ring, label_key, label_value, channel;
    std::optional<std::int64_t> version;
    std::int64_t limit = 100;
    std::string after;
  };
  Expected<nlohmann::json> list_hosts(const HostFilter& f) const;
  Expected<nlohmann::json> get_host(const std::string& id) const;
  Expected<nlohmann::json> patch_host(const Principal& by, const std::string& id,
                                      const nlohmann::json& body);
  Status delete_host(const Principal& by, const std::string& id);
  // An operator's reset of a host (body {reason}): its credential stops working at once, its
  // track record starts again, and the next enrollment of that id with any valid enrollment token
  // needs no credential (a re-imaged machine, a lost state dir). Audited as "host_reset".
  // NotFound for an unknown host, InvalidArgument without a reason.
  Expected<nlohmann::json> reset_host(const Principal& by, const std::string& id,
                                      const nlohmann::json& body);

  nlohmann::json list_channels() const;
  Expected<nlohmann::json> get_channel(const std::string& name) const;
  Expected<nlohmann::json> put_channel(const Principal& by, const std::string& name,
                                       const nlohmann::json& body, bool create_only);

  // Adopts a streamed upload (a temp file) into the content-addressed blob store.
  Expected<nlohmann::json> adopt_blob(const std::string& temp_path);
  // Path of a stored blob, or NotFound.
  Expected<std::string> blob_path(const std::string& sha256) const;

  Expected<nlohmann::json> create_release(const Principal& by, const std::string& channel,
                                          const nlohmann::json& body);
  Expected<nlohmann::json> list_releases(const std::string& channel) const;
  // The release-notes feeds (/v1/releases.atom): readable without a token when public. Setting
  // it is an admin's decision, stored and logged as an event; returns {"public": bool}.
  bool release_feeds_public() const;
  Expected<nlohmann::json> set_release_feeds_public(const Principal& by, bool on);
  Expected<nlohmann::json> get_release(const std::string& channel, std::int64_t version) const;
  Expected<nlohmann::json> quarantine_release(const Principal& by, const std::string& channel,
                                              std::int64_t version, const std::string& reason);

  nlohmann::json list_policies() const;
  Expected<nlohmann::json> get_policy(const std::string& name) const;
  Expected<nlohmann::json> put_policy(const Principal& by, const std::string& name,
                                      const nlohmann::json& body, bool create_only);

  Expected<nlohmann::json> create_rollout(const Principal& by, const nlohmann::json& body);
  Expected<nlohmann::json> list_rollouts(const std::optional<std::string>& channel,
                                         const std::optional<std::string>& state) const;
  Expected<nlohmann::json> get_rollout(std::int64_t id) const;
  // action: start, pause, resume, approve, abort, skip.
  Expected<nlohmann::json> rollout_action(const Principal& by, std::int64_t id,
                                          const std::string& action, const nlohmann::json& body);
  Expected<nlohmann::json> preview(const nlohmann::json& body) const;

  Expected<nlohmann::json> list_events(std::optional<std::int64_t> rollout, std::int64_t after,
                                       std::int64_t limit) const;
  // Subscribes to new events (SSE). The writer gets each event's SSE frame; when it returns
  // false the subscription is dropped. Events after `after` already in the store are replayed.
  Status subscribe_events(std::int64_t after, std::function<bool(std::string)> writer);

  Expected<nlohmann::json> set_emergency_stop(const Principal& by, bool on,
                                              const std::string& reason);
  nlohmann::json emergency_state() const;
  // For /readyz: {"emergency_stop", "store_failing_since" (unix s, absent while the store takes
  // writes), "store_error"}. Takes the state lock, so an answer also proves the core is live.
  nlohmann::json readiness() const;

  // ---- agent API
  // Enrolls a host with an enrollment token. A host id that is already enrolled is re-enrolled
  // (its credential rotated, labels replaced) only when `authorization` ("Bearer <credential>",
  // the Authorization header) carries that host's current credential, or after an operator's
  // reset_host(). Errors: Unauthenticated (unknown, expired or revoked token; wrong credential),
  // Conflict "host_enrolled" (existing id, no credential), PermissionDenied "token_used_up"
  // (max_uses reached), TooManyRequests "rate_limited" (details: retry_after_s), Unavailable.
  // Every enrollment is an event "host_enrolled" attributed to its token.
  Expected<proto::EnrollResponse> enroll(const proto::EnrollRequest& req,
                                         std::string_view authorization = {});
  // The host's desired state. With wait_s > 0 and an unchanged etag, the request is parked and
  // `reply` is called later (changed state, or the deadline); the return is then nullopt.
  Expected<std::optional<DesiredAnswer>> desired(std::int64_t host, std::string_view if_none_match,
                                                 std::int64_t wait_s,
                                                 std::function<void(DesiredAnswer)> reply);
  // Acknowledged = durable, for evidence. `done` is called exactly once, with the mutex held
  // (like reply callbacks it must only queue work): at once for an error found before anything
  // was taken (unknown host, too much evidence waiting for a failing store) and for a heartbeat
  // that changed nothing but last_seen (batched, not durable); otherwise once the group commit
  // holding what the call changed (reports, the host's row, its exposures) has committed - {} -
  // or failed - Errc::Unavailable (503), the agent resends. Memory takes the evidence at once
  // (the gates see it at once); resending it is idempotent.
  using Ack = std::function<void(Status)>;
  void heartbeat(std::int64_t host, const proto::Heartbeat& hb, Ack done);
  // `kept`, when given, is set before this returns (before `done` may run) to how many of the
  // batch were taken; the rest were dropped as described below.
  void reports(std::int64_t host, const std::vector<proto::Report>& reports, Ack done,
               std::size_t* kept = nullptr);
  // Channel states about a channel that does not exist or a version never sent to this host are
  // ignored (and counted): they neither reach the host's record nor /metrics. Reports about them
  // are dropped (and counted); more than Options::reports_per_min in a minute is TooManyRequests
  // "rate_limited" (details: retry_after_s) and nothing of the batch is taken.
  // The same, committing at once if needed: durable (or failed) when they return.
  Status heartbeat(std::int64_t host, const proto::Heartbeat& hb);
  // Reports about a channel that does not exist or a version never sent to this host are
  // dropped (and counted); more than Options::reports_per_min in a minute is TooManyRequests
  // "rate_limited" (details: retry_after_s) and nothing of the batch is taken.
  Status reports(std::int64_t host, const std::vector<proto::Report>& reports);

  // How the group commit is scheduled: `post(job)` must run job later on a thread that may call
  // the Service (the App posts it to its io_context, so every request read in the meantime joins
  // the batch). Without one, every parked call commits at once. Call before serving.
  void set_commit_scheduler(std::function<void(std::function<void()>)> post);
  // Runs the pending group commit now (answers every parked call).
  void commit();

  // Periodic work (call every ~250 ms): expire long polls, silence sweep, gate evaluation on
  // bake expiry, retries of transitions the store refused, a group commit (exposures of newly
  // offered hosts, anything a failed commit left), last_seen of repeat heartbeats (bounded).
  void tick();
  // Flushes everything dirty now (shutdown).
  void flush();
  // Answers every parked long poll now with "not modified" (shutdown: agents re-poll elsewhere).
  void release_long_polls();

  // Figures for /metrics and /readyz.
  nlohmann::json metrics() const;
  std::size_t long_polls() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringfence::server::core
