// /metrics in Prometheus text format: requests by route and status, latency histograms, and the
// core's figures (hosts by ring and version, rollouts by state, gate statistics, long polls).
#include "server/api/metrics.hpp"

#include <array>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "server/api/routes.hpp"

namespace ringfence::server::api {
namespace {
constexpr std::array<double, 10> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                             0.025,  0.05,  0.1,    0.5,   1.0};

std::string esc(std::string_view s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

void write_transport(std::ostream& o, const http::HttpStats& t) {
  auto family = [&o](const char* name, const char* type, const char* help, std::uint64_t v) {
    o << "# HELP ringfence_http_" << name << " " << help << "\n# TYPE ringfence_http_" << name
      << " " << type << "\nringfence_http_" << name << " " << v << "\n";
  };
  family("connections_open", "gauge", "Open connections.", t.connections_open);
  family("connections_accepted_total", "counter", "Connections accepted.", t.connections_accepted);
  o << "# HELP ringfence_http_connections_rejected_total Connections closed at once over a cap.\n"
       "# TYPE ringfence_http_connections_rejected_total counter\n"
       "ringfence_http_connections_rejected_total{cap=\"total\"} "
    << t.connections_rejected_limit
    << "\nringfence_http_connections_rejected_total{cap=\"per_ip\"} "
    << t.connections_rejected_per_ip << "\n";
  family("accept_errors_total", "counter", "Failed accepts (e.g. out of file descriptors).",
         t.accept_errors);
  family("bad_requests_total", "counter", "Request heads refused by the transport (400/431).",
         t.bad_requests);
  family("timeouts_total", "counter", "Connections closed by a read or write deadline.",
         t.timeouts);
  family("refused_before_body_total", "counter",
         "Requests answered on their head, body unread (401/403).", t.refused_before_body);
  o << "# HELP ringfence_http_uploads_refused_total Uploads cut short, by reason.\n"
       "# TYPE ringfence_http_uploads_refused_total counter\n";
  for (auto [reason, v] :
       {std::pair{"space_full", t.uploads_space_full}, std::pair{"too_slow", t.uploads_too_slow},
        std::pair{"timed_out", t.uploads_timed_out}, std::pair{"disk_full", t.uploads_disk_full}}) {
    o << "ringfence_http_uploads_refused_total{reason=\"" << reason << "\"} " << v << "\n";
  }
  family("upload_space_used_bytes", "gauge", "Upload space held by uploads in progress.",
         t.upload_space_used_bytes);
  family("tls_handshakes_total", "counter", "Completed TLS handshakes.", t.tls_handshakes);
  o << "# HELP ringfence_http_tls_handshake_failures_total TLS handshakes that failed, by reason.\n"
       "# TYPE ringfence_http_tls_handshake_failures_total counter\n"
       "ringfence_http_tls_handshake_failures_total{reason=\"error\"} "
    << t.tls_handshake_failures
    << "\nringfence_http_tls_handshake_failures_total{reason=\"timeout\"} "
    << t.tls_handshake_timeouts << "\n"
    << "ringfence_http_tls_handshake_failures_total{reason=\"plaintext\"} " << t.tls_plaintext
    << "\n";
  family("tls_reloads_total", "counter", "Certificate reloads that took effect.", t.tls_reloads);
  family("tls_reload_failures_total", "counter", "Certificate reloads refused (old one kept).",
         t.tls_reload_failures);
}
}  // namespace

void RequestMetrics::record(std::string_view route, int status, double seconds) {
  static_assert(kBuckets.size() == kBucketCount);
  std::lock_guard lock(mu_);
  auto it = routes_.find(route);
  if (it == routes_.end()) it = routes_.emplace(std::string(route), RouteStats{}).first;
  auto& s = it->second;
  ++s.by_status[status];
  ++s.count;
  s.sum += seconds;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++s.buckets[i];
  }
}

void RequestMetrics::write_prometheus(std::ostream& o) const {
  std::lock_guard lock(mu_);
  o << "# HELP ringfence_http_requests_total HTTP requests by route and status.\n"
       "# TYPE ringfence_http_requests_total counter\n";
  for (const auto& [route, s] : routes_) {
    for (const auto& [st, n] : s.by_status) {
      o << "ringfence_http_requests_total{route=\"" << esc(route) << "\",status=\"" << st << "\"} "
        << n << "\n";
    }
  }
  o << "# HELP ringfence_http_request_duration_seconds Request latency by route.\n"
       "# TYPE ringfence_http_request_duration_seconds histogram\n";
  for (const auto& [route, s] : routes_) {
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      o << "ringfence_http_request_duration_seconds_bucket{route=\"" << esc(route) << "\",le=\""
        << kBuckets[i] << "\"} " << s.buckets[i] << "\n";
    }
    o << "ringfence_http_request_duration_seconds_bucket{route=\"" << esc(route)
      << "\",le=\"+Inf\"} " << s.count << "\n";
    o << "ringfence_http_request_duration_seconds_sum{route=\"" << esc(route) << "\"} " << s.sum
      << "\n";
    o << "ringfence_http_request_duration_seconds_count{route=\"" << esc(route) << "\"} " << s.count
      << "\n";
  }
  if (transport_) write_transport(o, transport_());
}

void RequestMetrics::set_transport_stats(std::function<http::HttpStats()> source) {
  std::lock_guard lock(mu_);
  transport_ = std::move(source);
}

std::string prometheus_text(core::Service& svc, const RequestMetrics& requests) {
  std::ostringstream o;
  requests.write_prometheus(o);
  auto m = svc.metrics();
  o << "# HELP ringfence_hosts Enrolled hosts.\n# TYPE ringfence_hosts gauge\n"
    << "ringfence_hosts " << m["hosts"].get<std::int64_t>() << "\n";
  o << "# HELP ringfence_ring_hosts Hosts by ring.\n# TYPE ringfence_ring_hosts gauge\n";
  for (const auto& r : m["rings"]) {
    o << "ringfence_ring_hosts{ring=\"" << esc(r["ring"].get<std::string>()) << "\"} "
      << r["hosts"].get<std::int64_t>() << "\n";
  }
  o << "# HELP ringfence_host_versions Hosts by channel and content version they report.\n"
       "# TYPE ringfence_host_versions gauge\n";
  for (const auto& v : m["host_versions"]) {
    o << "ringfence_host_versions{channel=\"" << esc(v["channel"].get<std::string>())
      << "\",version=\"" << esc(v["version"].get<std::string>()) << "\"} "
      << v["hosts"].get<std::int64_t>() << "\n";
  }
  o << "# HELP ringfence_rollouts Rollouts by state.\n# TYPE ringfence_rollouts gauge\n";
  for (auto it = m["rollouts_by_state"].begin(); it != m["rollouts_by_state"].end(); ++it) {
    o << "ringfence_rollouts{state=\"" << esc(it.key()) << "\"} " << it->get<std::int64_t>()
      << "\n";
  }
  o << "# HELP ringfence_gate_statistic SPRT log-likelihood ratio of the active stage.\n"
       "# TYPE ringfence_gate_statistic gauge\n";
  for (const auto& a : m["active_stages"]) {
    o << "ringfence_gate_statistic{rollout=\"" << a["id"].get<std::int64_t>() << "\",channel=\""
      << esc(a["channel"].get<std::string>()) << "\",stage=\"" << a["stage"].get<std::int64_t>()
      << "\"} " << a["statistic"].get<double>() << "\n";
  }
  o << "# HELP ringfence_gate_threshold SPRT fail boundary of the active stage.\n"
       "# TYPE ringfence_gate_threshold gauge\n";
  for (const auto& a : m["active_stages"]) {
    o << "ringfence_gate_threshold{rollout=\"" << a["id"].get<std::int64_t>() << "\",channel=\""
      << esc(a["channel"].get<std::string>()) << "\",stage=\"" << a["stage"].get<std::int64_t>()
      << "\"} " << a["upper"].get<double>() << "\n";
  }
  o << "# HELP ringfence_heartbeats_total Heartbeats ingested.\n# TYPE ringfence_heartbeats_total "
       "counter\n"
    << "ringfence_heartbeats_total " << m["heartbeats_total"].get<std::uint64_t>() << "\n";
  o << "# HELP ringfence_reports_total Agent reports ingested.\n# TYPE ringfence_reports_total "
       "counter\n"
    << "ringfence_reports_total " << m["reports_total"].get<std::uint64_t>() << "\n";
  o << "# HELP ringfence_polls_total Desired-state polls answered.\n# TYPE ringfence_polls_total "
       "counter\n"
    << "ringfence_polls_total " << m["polls_total"].get<std::uint64_t>() << "\n";
  o << "# HELP ringfence_long_polls Long polls held now.\n# TYPE ringfence_long_polls gauge\n"
    << "ringfence_long_polls " << m["long_polls"].get<std::uint64_t>() << "\n";
  // Acknowledged = durable: the group commits that answer agents' evidence.
  auto scalar = [&o, &m](const char* name, const char* type, const char* help, const char* key) {
    o << "# HELP ringfence_" << name << " " << help << "\n# TYPE ringfence_" << name << " " << type
      << "\nringfence_" << name << " " << m[key].dump() << "\n";
  };
  scalar("group_commits_total", "counter", "Group commits of agent evidence attempted.",
         "group_commits_total");
  scalar("group_commit_failures_total", "counter",
         "Group commits the store refused (their agents were answered 503 and resend).",
         "group_commit_failures_total");
  scalar("group_commit_answers_total", "counter",
         "Agent requests answered by a group commit (after it committed or failed).",
         "group_commit_answers_total");
  scalar("group_commit_wait_seconds_total", "counter",
         "Time agent requests waited for their group commit, summed.",
         "group_commit_wait_seconds_total");
  scalar("group_commit_wait_seconds_max", "gauge",
         "Longest wait of an agent request for its group commit since start.",
         "group_commit_wait_seconds_max");
  scalar("reports_pending", "gauge", "Agent reports in memory waiting for their commit.",
         "reports_pending");
  // What the limits and trust rules refused: one counter per limit, labels from a fixed set.
  const auto& ref = m["refused"];
  o << "# HELP ringfence_enroll_refused_total Enrollments refused, by reason.\n"
       "# TYPE ringfence_enroll_refused_total counter\n";
  for (auto it = ref["enroll"].begin(); it != ref["enroll"].end(); ++it) {
    o << "ringfence_enroll_refused_total{reason=\"" << it.key() << "\"} "
      << it->get<std::uint64_t>() << "\n";
  }
  o << "# HELP ringfence_reports_refused_total Agent reports refused or dropped, by reason.\n"
       "# TYPE ringfence_reports_refused_total counter\n";
  for (auto it = ref["reports"].begin(); it != ref["reports"].end(); ++it) {
    o << "ringfence_reports_refused_total{reason=\"" << it.key() << "\"} "
      << it->get<std::uint64_t>() << "\n";
  }
  o << "# HELP ringfence_heartbeat_channels_ignored_total Heartbeat channel states ignored "
       "(channel or version never sent to the host).\n"
       "# TYPE ringfence_heartbeat_channels_ignored_total counter\n";
  for (auto it = ref["heartbeat_channels"].begin(); it != ref["heartbeat_channels"].end(); ++it) {
    o << "ringfence_heartbeat_channels_ignored_total{reason=\"" << it.key() << "\"} "
      << it->get<std::uint64_t>() << "\n";
  }
  o << "# HELP ringfence_signals_without_track_record_total Host signals the gates ignored: the "
       "host had no track record when the rollout started.\n"
       "# TYPE ringfence_signals_without_track_record_total counter\n"
    << "ringfence_signals_without_track_record_total "
    << ref["signals_without_track_record"].get<std::uint64_t>() << "\n";
  if (m["key_set_expires"].is_number()) {
    o << "# HELP ringfence_key_set_expiry_timestamp_seconds When the key set in use expires "
         "(unix s): alert well before, agents freeze after it.\n"
         "# TYPE ringfence_key_set_expiry_timestamp_seconds gauge\n"
         "ringfence_key_set_expiry_timestamp_seconds "
      << m["key_set_expires"].get<std::int64_t>() << "\n";
  }
  o << "# HELP ringfence_emergency_stop 1 while an emergency stop is in force.\n"
       "# TYPE ringfence_emergency_stop gauge\n"
    << "ringfence_emergency_stop " << (m["emergency_stop"].get<bool>() ? 1 : 0) << "\n";
  return o.str();
}

}  // namespace ringfence::server::api
