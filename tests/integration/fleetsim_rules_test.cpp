// fleetsim's simulated hosts accept content by the real agent's rule (agent/content/verify.cpp):
// a lower version only when the *signed* manifest's rollback_from covers the version they run,
// never on the desired entry's unsigned `rollback` hint. First the rule itself, then the real
// fleetsim binary against a scripted server that tries both.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fleetsim/accept.hpp"
#include "proto/keyset.hpp"
#include "proto/messages.hpp"
#include "proto/signing.hpp"
#include "tests/support/process.hpp"

namespace ringfence::fleetsim {
namespace {
using nlohmann::json;
using namespace std::chrono_literals;

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

proto::DesiredChannel signed_entry(const proto::KeyPair& k, std::int64_t version,
                                   const std::string& bytes,
                                   std::optional<std::int64_t> rollback_from = {},
                                   bool rollback_hint = false) {
  proto::DesiredChannel c;
  c.channel = "detections";
  c.version = version;
  c.sha256 = proto::sha256_hex(bytes);
  c.size = static_cast<std::int64_t>(bytes.size());
  c.url = "/v1/blobs/" + c.sha256;
  c.manifest = proto::Manifest{c.channel, version, c.sha256, c.size, now_s(), now_s() + 3600};
  c.manifest.rollback_from = rollback_from;
  c.signature = proto::sign(k.secret_key, proto::canonical_bytes(c.manifest));
  c.rollback = rollback_hint;
  return c;
}

TEST(FleetsimAcceptance, TheUnsignedRollbackHintAuthorisesNoDowngrade) {
  auto k = proto::generate_keypair();
  SignatureCache cache;
  auto v1 = signed_entry(k, 1, "one", std::nullopt, /*rollback_hint=*/true);
  EXPECT_EQ(check_offer(v1, 2, &k.public_key, now_s(), cache), OfferVerdict::Downgrade);
  EXPECT_EQ(check_offer(v1, 0, &k.public_key, now_s(), cache), OfferVerdict::Accept);
  EXPECT_EQ(check_offer(v1, 1, &k.public_key, now_s(), cache), OfferVerdict::Accept);
}

TEST(FleetsimAcceptance, ASignedRollbackCoversOnlyUpToItsRollbackFrom) {
  auto k = proto::generate_keypair();
  SignatureCache cache;
  auto v1 = signed_entry(k, 1, "one", 3);
  EXPECT_EQ(check_offer(v1, 2, &k.public_key, now_s(), cache), OfferVerdict::Accept);
  EXPECT_EQ(check_offer(v1, 3, &k.public_key, now_s(), cache), OfferVerdict::Accept);
  EXPECT_EQ(check_offer(v1, 4, &k.public_key, now_s(), cache), OfferVerdict::Downgrade);
}

TEST(FleetsimAcceptance, ARollbackFromAddedWithoutTheKeyIsASignatureFailure) {
  auto k = proto::generate_keypair();
  SignatureCache cache;
  auto v1 = signed_entry(k, 1, "one");
  EXPECT_EQ(check_offer(v1, 0, &k.public_key, now_s(), cache), OfferVerdict::Accept);
  v1.manifest.rollback_from = 9;  // forged after signing: the cached signature must not carry it
  EXPECT_EQ(check_offer(v1, 2, &k.public_key, now_s(), cache), OfferVerdict::Signature);
}

TEST(FleetsimAcceptance, SignatureKeyExpiryAndManifestAreChecked) {
  auto k = proto::generate_keypair();
  auto other = proto::generate_keypair();
  SignatureCache cache;
  auto v1 = signed_entry(k, 1, "one");
  EXPECT_EQ(check_offer(v1, 0, &other.public_key, now_s(), cache), OfferVerdict::Signature);
  EXPECT_EQ(check_offer(v1, 0, nullptr, now_s(), cache), OfferVerdict::Signature);
  EXPECT_EQ(check_offer(v1, 0, &k.public_key, now_s() + 7200, cache), OfferVerdict::Expired);
  auto wrong = v1;
  wrong.version = 5;
  EXPECT_EQ(check_offer(wrong, 0, &k.public_key, now_s(), cache), OfferVerdict::Mismatch);
  EXPECT_EQ(to_string(OfferVerdict::Downgrade), "downgrade");
}

// A keep-alive HTTP/1.1 server on 127.0.0.1:0 answering by `respond(method, target, body)`;
// one thread per connection.
class ScriptedServer {
 public:
  using Respond =
      std::function<std::string(const std::string&, const std::string&, const std::string&)>;
  explicit ScriptedServer(Respond r) : respond_(std::move(r)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 64);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    accept_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        std::lock_guard lock(mu_);
        if (stop_) {
          ::close(c);
          return;
        }
        conns_.push_back(c);
        workers_.emplace_back([this, c] { serve(c); });
      }
    });
  }
  ~ScriptedServer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      for (int c : conns_) ::shutdown(c, SHUT_RDWR);
    }
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    accept_.join();
    for (auto& w : workers_) w.join();
    for (int c : conns_) ::close(c);
  }
  int port() const { return port_; }

 private:
  void serve(int c) {
    std::string buf;
    char chunk[8192];
    while (true) {
      auto end = buf.find("\r\n\r\n");
      while (end == std::string::npos) {
        auto n = ::recv(c, chunk, sizeof chunk, 0);
        if (n <= 0) return;
        buf.append(chunk, static_cast<std::size_t>(n));
        end = buf.find("\r\n\r\n");
      }
      std::string head = buf.substr(0, end);
      std::size_t want = 0;
      for (const char* h : {"Content-Length: ", "content-length: "}) {
        auto p = head.find(h);
        if (p != std::string::npos) want = std::stoul(head.substr(p + 16));
      }
      while (buf.size() < end + 4 + want) {
        auto n = ::recv(c, chunk, sizeof chunk, 0);
        if (n <= 0) return;
        buf.append(chunk, static_cast<std::size_t>(n));
      }
      std::string body = buf.substr(end + 4, want);
      buf.erase(0, end + 4 + want);
      std::istringstream first(head);
      std::string method, target;
      first >> method >> target;
      std::string resp = respond_(method, target, body);
      if (::send(c, resp.data(), resp.size(), MSG_NOSIGNAL) < 0) return;
    }
  }

  Respond respond_;
  int fd_ = -1, port_ = 0;
  std::thread accept_;
  std::mutex mu_;
  bool stop_ = false;
  std::vector<int> conns_;
  std::vector<std::thread> workers_;
};

std::string http(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nContent-Type: application/json\r\n" + extra + "\r\n" + body;
}

// The real fleetsim, one host: v2 is offered, then v1 with only the unsigned rollback hint
// (refused, as the agent refuses it), then v1 signed with rollback_from = 2 (taken).
TEST(FleetsimAcceptance, TheRealFleetsimRefusesAnUnsignedDowngradeAndTakesASignedOne) {
  auto k = proto::generate_keypair();
  auto v2 = signed_entry(k, 2, R"({"two":2})");
  auto v1_hint = signed_entry(k, 1, R"({"one":1})", std::nullopt, true);
  auto v1_signed = signed_entry(k, 1, R"({"one":1})", 2, true);
  std::map<std::string, std::string> blobs = {{v2.url, R"({"two":2})"},
                                              {v1_hint.url, R"({"one":1})"}};
  std::mutex mu;
  std::vector<json> reports;
  std::atomic<int> phase{0};  // 0: offer v2, 1: the hint, 2: the signed rollback
  std::string enrolled_host;  // guarded by mu
  std::int64_t generation = 0;  // guarded by mu

  ScriptedServer server([&](const std::string& method, const std::string& target,
                            const std::string& body) -> std::string {
    if (target == proto::kPathSigningKey) {
      return http(200, json{{"algorithm", "ed25519"},
                            {"public_key", proto::base64_encode(std::string_view(
                                               reinterpret_cast<const char*>(k.public_key.data()),
                                               k.public_key.size()))}}
                           .dump());
    }
    if (target == proto::kPathEnroll && method == "POST") {
      auto req = json::parse(body);
      {
        std::lock_guard lock(mu);
        enrolled_host = req["host_id"].get<std::string>();
      }
      return http(200, proto::encode(proto::EnrollResponse{req["host_id"].get<std::string>(),
                                                           "cred-" + std::to_string(1), 1, 1}));
    }
    if (target.starts_with(proto::kPathDesired)) {
      proto::DesiredState ds;
      ds.heartbeat_s = 1;
      ds.poll_s = 1;
      int p = phase.load();
      ds.etag = "e" + std::to_string(p);
      ds.channels.push_back(p == 0 ? v2 : p == 1 ? v1_hint : v1_signed);
      // Signed as the real server signs it (fleetsim refuses an unsigned answer, as the agent
      // does): for the enrolled host, a growing generation, a future expiry.
      {
        std::lock_guard lock(mu);
        ds.host_id = enrolled_host;
        ds.generation = ++generation;
      }
      ds.issued = std::time(nullptr);
      ds.expires = ds.issued + 3600;
      ds.key_id = proto::key_id(k.public_key);
      ds.signature = proto::sign(k.secret_key, proto::canonical_bytes(ds));
      return http(200, proto::encode(ds), "ETag: \"" + ds.etag + "\"\r\n");
    }
    if (target.starts_with(proto::kPathBlobs)) {
      auto it = blobs.find(target);
      if (it == blobs.end()) return http(404, R"({"error":{"code":"not_found","message":"x"}})");
      return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(it->second.size()) +
             "\r\nContent-Type: application/octet-stream\r\n\r\n" + it->second;
    }
    if (target == proto::kPathHeartbeat) return "HTTP/1.1 204 No Content\r\n\r\n";
    if (target == proto::kPathReports) {
      auto batch = json::parse(body, nullptr, false);
      std::lock_guard lock(mu);
      if (batch.is_array()) {
        for (auto& r : batch) reports.push_back(r);
      }
      return http(202, "{}");
    }
    return http(404, R"({"error":{"code":"not_found","message":"x"}})");
  });
  auto has_report = [&](const std::string& kind, std::int64_t version, const std::string& code) {
    std::lock_guard lock(mu);
    for (const auto& r : reports) {
      if (r.value("kind", "") != kind || r.value("version", 0LL) != version) continue;
      if (code.empty()) return true;
      auto d = r.value("detail", json::object());
      if (d.is_object() && d.value("code", "") == code) return true;
    }
    return false;
  };

  testing::TempDir dir;
  auto fleet = testing::Process::start(
      {testing::built_program("fleetsim/fleetsim"), "--server",
       "http://127.0.0.1:" + std::to_string(server.port()), "--enroll-token", "t", "--hosts", "1",
       "--long-poll", "0", "--status-every", "0", "--seed", "3"},
      {}, dir.path() + "/fleetsim.err");
  ASSERT_TRUE(testing::eventually([&] { return has_report("applied", 2, ""); }, 30s));
  phase = 1;
  ASSERT_TRUE(testing::eventually([&] { return has_report("apply_failed", 1, "downgrade"); }, 30s))
      << "fleetsim took a downgrade on the unsigned rollback hint";
  EXPECT_FALSE(has_report("applied", 1, ""));
  phase = 2;
  EXPECT_TRUE(testing::eventually([&] { return has_report("applied", 1, ""); }, 30s))
      << "the signed rollback (rollback_from = 2) was not taken";
  fleet.signal(SIGTERM);
  fleet.wait(10s);
}

}  // namespace
}  // namespace ringfence::fleetsim
