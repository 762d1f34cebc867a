#include "server/app.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "proto/signing.hpp"
#include "proto/try.hpp"
#include "server/api/routes.hpp"
#include "server/http/router.hpp"
#include "server/http/server.hpp"
#include "server/store/store.hpp"

namespace ringfence::server {
namespace fs = std::filesystem;

namespace {
// True for "127.x.y.z:port", "[::1]:port" and "localhost:port": plain HTTP stays allowed there.
bool is_loopback(const std::string& host_port) {
  auto host = host_port.substr(0, host_port.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(host, ec);
  return !ec && addr.is_loopback();
}

Status write_private_file(const std::string& path, const std::string& content, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return fail(Errc::Unavailable, "cannot write " + path);
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(Errc::Unavailable, "cannot write " + path);
  }
  return {};
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// DIR/signing.key (0600) holds the Ed25519 secret key, created on first start; the public key is
// written to DIR/signing.pub. Nothing already there is written again: a start on a full disk
// must not fail on a file it did not need to touch. A key others can read is refused: whoever
// read it can sign content every agent trusts.
Expected<proto::KeyPair> load_or_create_key(const std::string& dir) {
  auto key_path = dir + "/signing.key", pub_path = dir + "/signing.pub";
  proto::KeyPair kp;
  struct stat st {};
  if (::stat(key_path.c_str(), &st) == 0) {
    if ((st.st_mode & 077) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return fail(Errc::InvalidArgument, "the signing key " + key_path +
                                             " is readable by others (mode " + mode +
                                             "); run: chmod 600 " + key_path);
    }
    RF_TRY(sk, proto::parse_secret_key(read_all(key_path)));
    kp.secret_key = sk;
    std::copy(sk.begin() + 32, sk.end(), kp.public_key.begin());  // libsodium: sk = seed || pk
  } else {
    kp = proto::generate_keypair();
    RF_CHECK(write_private_file(key_path,
                                proto::base64_encode(std::string_view(
                                    reinterpret_cast<const char*>(kp.secret_key.data()), 64)) +
                                    "\n",
                                0600));
  }
  auto pub = proto::base64_encode(
      std::string_view(reinterpret_cast<const char*>(kp.public_key.data()), 32));
  if (read_all(pub_path) != pub + "\n") RF_CHECK(write_private_file(pub_path, pub + "\n", 0644));
  return kp;
}

// The data dir holds credential hashes and the signing key: owner only (0700). Created so, and
// tightened when an older version left it open (chmod needs no free space).
Status prepare_data_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    auto parent = fs::path(dir).parent_path();
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return fail(Errc::Unavailable, "cannot create data dir " + dir + ": " + std::strerror(errno));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail(Errc::Unavailable, "data dir " + dir + " is not a directory");
  }
  if ((st.st_mode & 077) != 0) {
    if (::chmod(dir.c_str(), 0700) != 0) {
      return fail(Errc::Unavailable,
                  "cannot make data dir " + dir + " private (chmod 700): " + std::strerror(errno));
    }
    spdlog::warn("data dir {} was open to others; made it private (0700)", dir);
  }
  auto token = dir + "/admin.token";
  if (::stat(token.c_str(), &st) == 0 && (st.st_mode & 077) != 0 &&
      ::chmod(token.c_str(), 0600) != 0) {
    return fail(Errc::Unavailable,
                "cannot make " + token + " private (chmod 600): " + std::strerror(errno));
  }
  for (const char* sub : {"/uploads", "/blobs"}) {
    fs::create_directories(dir + sub, ec);
    if (ec) return fail(Errc::Unavailable, "cannot create " + dir + sub + ": " + ec.message());
  }
  return {};
}
}  // namespace

struct App::Impl {
  AppConfig cfg;
  boost::asio::io_context io;
  SystemClock clock;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<core::Service> service;
  api::RequestMetrics requests;  // outlives the router and the server that feed it
  http::Router router;
  std::unique_ptr<http::HttpServer> http;
  std::unique_ptr<boost::asio::steady_timer> ticker;
  std::atomic<bool> shutting_down{false};  // from the first SIGINT/SIGTERM on: /readyz is 503

  // Checked on a request's head before its body is read: the client certificate (below), then
  // the credential its route needs (api::credential_before_body).
  std::optional<http::Response> check_before_body(const http::Request& head) const {
    if (auto refused = check_client_cert(head)) return refused;
    return api::credential_before_body(router, *service, head);
  }

  // With --agent-client-ca, /v1/agent/* needs a client certificate from that CA (on top of the
  // host credential): checked on the head, before any body and before the route runs.
  std::optional<http::Response> check_client_cert(const http::Request& head) const {
    if (cfg.agent_client_ca.empty() || head.client_cert_verified ||
        head.path.rfind("/v1/agent/", 0) != 0) {
      return std::nullopt;
    }
    return http::Response::error(Error{Errc::PermissionDenied,
                                       "agent requests need a client certificate from the "
                                       "configured agent CA",
                                       "client_certificate_required"});
  }

  void schedule_tick() {
    ticker->expires_after(std::chrono::milliseconds(250));
    ticker->async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      service->tick();
      schedule_tick();
    });
  }
};

namespace {
// --store: absent or "sqlite" = the embedded database in the data dir; a postgres:// URL = the
// shared PostgreSQL store. The URL is never logged or echoed with its password.
Expected<std::unique_ptr<store::Store>> open_store(const AppConfig& cfg) {
  if (store::is_postgres_url(cfg.store)) {
    spdlog::info("store: PostgreSQL at {}", store::redact_conninfo(cfg.store));
    return store::open_postgres(cfg.store, store::embedded_postgres_migrations());
  }
  if (!cfg.store.empty() && cfg.store != "sqlite") {
    return fail(Errc::InvalidArgument,
                "--store must be \"sqlite\" or a postgres:// (postgresql://) URL");
  }
  spdlog::info("store: SQLite at {}/ringfence.db", cfg.data_dir);
  return store::open_sqlite(cfg.data_dir + "/ringfence.db", store::embedded_migrations());
}
}  // namespace

App::App(AppConfig config) : impl_(std::make_unique<Impl>()) { impl_->cfg = std::move(config); }
App::~App() = default;

Expected<std::uint16_t> App::start() {
  auto& m = *impl_;
  std::error_code ec;
  if (m.cfg.data_dir.empty()) return fail(Errc::InvalidArgument, "--data-dir is required");
  RF_CHECK(prepare_data_dir(m.cfg.data_dir));
  // Leftover partial uploads from a killed process are dropped.
  for (const auto& e : fs::directory_iterator(m.cfg.data_dir + "/uploads", ec))
    fs::remove(e.path(), ec);
  RF_TRY(key, load_or_create_key(m.cfg.data_dir));
  RF_TRY(store, open_store(m.cfg));
  m.store = std::move(store);
  m.cfg.core.data_dir = m.cfg.data_dir;
  m.service = std::make_unique<core::Service>(*m.store, m.clock, key, m.cfg.core);
  // Group commit: agents' evidence is answered once durable; the commit job runs on the loop
  // after the requests already read, so they share one transaction.
  m.service->set_commit_scheduler(
      [io = &m.io](std::function<void()> job) { boost::asio::post(*io, std::move(job)); });
  RF_CHECK(m.service->load());
  const char* env_token = std::getenv("RINGFENCE_ADMIN_TOKEN");
  RF_TRY(admin, m.service->bootstrap_admin(env_token ? std::optional<std::string>(env_token)
                                                     : std::nullopt));
  if (admin) {
    RF_CHECK(write_private_file(m.cfg.data_dir + "/admin.token", *admin + "\n", 0600));
    spdlog::info("created the admin token; it is in {}/admin.token", m.cfg.data_dir);
  }
  api::register_routes(m.router, *m.service, m.requests,
                       api::ApiOptions{m.cfg.web_dir, [&m] { return m.shutting_down.load(); }});
  http::ServerOptions opts;
  opts.upload_limit = m.cfg.upload_limit;
  opts.upload_dir = m.cfg.data_dir + "/uploads";
  opts.is_upload = [](http::Method method, std::string_view path) {
    return method == http::Method::Post && path == "/v1/blobs";
  };
  opts.upload_timeout = std::chrono::seconds(m.cfg.upload_timeout_s);
  opts.upload_min_rate = m.cfg.upload_min_rate;
  opts.upload_space = m.cfg.upload_space_bytes;
  opts.before_body = [&m](const http::Request& head) { return m.check_before_body(head); };
  opts.access_log = m.cfg.access_log;
  opts.io_threads = static_cast<unsigned>(m.cfg.threads);  // 1: sessions need no strand
  if (!m.cfg.tls_cert.empty()) {
    opts.tls = http::TlsOptions{m.cfg.tls_cert, m.cfg.tls_key, m.cfg.agent_client_ca,
                                std::chrono::seconds(m.cfg.tls_handshake_timeout_s)};
  } else if (!m.cfg.agent_client_ca.empty()) {
    return fail(Errc::InvalidArgument, "--agent-client-ca needs --tls-cert and --tls-key");
  } else if (!m.cfg.allow_plaintext && !is_loopback(m.cfg.listen)) {
    return fail(Errc::InvalidArgument,
                "refusing plain HTTP on " + m.cfg.listen +
                    ": give --tls-cert/--tls-key, or --allow-plaintext (behind a TLS proxy)");
  }
  auto* router = &m.router;
  auto* requests = &m.requests;
  auto* app = &m;
  m.http = std::make_unique<http::HttpServer>(
      m.io, opts, [router, requests, app](http::Request& req, http::Reply reply) {
        if (auto refused = app->check_client_cert(req)) return reply(std::move(*refused));
        auto start = std::chrono::steady_clock::now();
        // Labelled by the matched route pattern (or "unmatched"), so /metrics stays bounded
        // whatever ids and paths clients send.
        router->dispatch(req, [&reply, start, requests](std::string_view route) -> http::Reply {
          return [reply = std::move(reply), start, requests, route](http::Response resp) {
            requests->record(
                route, resp.status,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
            reply(std::move(resp));
          };
        });
      });
  m.requests.set_transport_stats([http = m.http.get()] { return http->stats(); });
  RF_TRY(port, m.http->listen(m.cfg.listen));
  m.ticker = std::make_unique<boost::asio::steady_timer>(m.io);
  m.schedule_tick();
  return port;
}

// Waits for open connections to close after stop(), then stops the loop.
struct App::Drain {
  Drain(boost::asio::io_context& io, std::chrono::steady_clock::time_point d)
      : timer(io), deadline(d) {}
  boost::asio::steady_timer timer;
  std::chrono::steady_clock::time_point deadline;
  void step(std::shared_ptr<Drain> self, Impl& m) {
    if (m.http->connections() == 0 || std::chrono::steady_clock::now() >= deadline) {
      m.io.stop();
      return;
    }
    timer.expires_after(std::chrono::milliseconds(20));
    timer.async_wait([self, &m](boost::system::error_code) { self->step(self, m); });
  }
};

void App::run() {
  auto& m = *impl_;
  boost::asio::signal_set signals(m.io, SIGINT, SIGTERM);
  boost::asio::steady_timer grace(m.io);
  // Handlers may run on any of the io threads: the two flags are atomics.
  std::atomic<bool> stopped{false};
  boost::asio::signal_set* hup_ptr = nullptr;  // set below; cancelled on stop
  auto stop = [&m, &stopped, &hup_ptr] {
    if (stopped.exchange(true)) return;
    if (hup_ptr) {
      boost::system::error_code ec;
      hup_ptr->cancel(ec);
    }
    m.http->stop();
    m.ticker->cancel();
    m.service->release_long_polls();
    m.service->flush();
    // In-flight requests finish; the loop stops when the last connection closes (or after 5 s).
    auto drain =
        std::make_shared<Drain>(m.io, std::chrono::steady_clock::now() + std::chrono::seconds(5));
    drain->step(drain, m);
  };
  // The first signal makes /readyz answer 503; with a grace period the server keeps serving that
  // long (so load balancers take it out first), and a second signal ends the wait.
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec,
                                                                      int sig) {
    if (ec) return;
    bool again = m.shutting_down.exchange(true);
    // systemd (Type=notify): the service is stopping, not failing.
    if (!again) sd_notify(0, "STOPPING=1");
    if (again || m.cfg.shutdown_grace_s <= 0) {
      spdlog::info("signal {}: shutting down", sig);
      return stop();  // a grace timer still pending is harmless: stop() runs once
    }
    spdlog::info("signal {}: not ready; shutting down in {} s (a second signal: now)", sig,
                 m.cfg.shutdown_grace_s);
    grace.expires_after(std::chrono::seconds(m.cfg.shutdown_grace_s));
    grace.async_wait([&stop](boost::system::error_code gec) {
      if (!gec) stop();
    });
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  // SIGHUP re-reads the TLS certificate and key: new connections get them, open ones keep
  // theirs; a bad pair is refused with one line and the old one stays.
  boost::asio::signal_set hup(m.io, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_hup = [&](boost::system::error_code ec,
                                                                   int) {
    if (ec || stopped) return;
    // systemctl reload waits for READY=1 after RELOADING=1 (what the unit's ExecReload sends).
    sd_notify(0, "RELOADING=1");
    if (m.cfg.tls_cert.empty()) {
      spdlog::info("SIGHUP: no TLS certificate to reload");
    } else if (auto st = m.http->reload_tls(); !st) {
      spdlog::error("SIGHUP: keeping the current TLS certificate: {}", st.error().message);
    } else {
      spdlog::info("SIGHUP: reloaded the TLS certificate from {}", m.cfg.tls_cert);
    }
    sd_notify(0, "READY=1");
    hup.async_wait(on_hup);
  };
  hup.async_wait(on_hup);
  hup_ptr = &hup;
  std::vector<std::thread> extra;
  for (int i = 1; i < m.cfg.threads; ++i) extra.emplace_back([&m] { m.io.run(); });
  m.io.run();
  for (auto& t : extra) t.join();
  m.service->flush();
  m.store.reset();
}

}  // namespace ringfence::server
