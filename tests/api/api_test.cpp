// api_test: the real ringfence-server process over real sockets. Every route of
// server/api/routes.cpp answers a well-formed request; malformed, oversized, hostile and
// unauthorised requests get their 4xx with API.md's error shape and change nothing (the event log
// and every listed object are compared before and after). Also: a release engineer's walk, push
// over held long polls, the event stream, SIGTERM, restart on the same data dir, key files.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "proto/signing.hpp"
#include "tests/api/client.hpp"
#include "tests/support/process.hpp"

namespace ringfence::apitest {
namespace {
using nlohmann::json;
using ringfence::testing::read_file;
using namespace std::chrono_literals;

const std::string kAdmin = "api-test-admin-token-0123456789";
const std::string kHost1 = "0e3b7a2c-1111-4222-8333-444455556666";
const std::string kHost2 = "0e3b7a2c-1111-4222-8333-444455556667";

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

unsigned file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

// The real server binary on 127.0.0.1:0 with its own data dir.
class Server {
 public:
  Server(const std::string& data_dir, std::map<std::string, std::string> env,
         std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {testing::built_program("server/ringfence-server"),
                                     "--data-dir", data_dir, "--listen", "127.0.0.1:0",
                                     "--no-access-log",
                                     // Hosts here enroll moments before rollouts: no track
                                     // record asked for (a test that wants one passes it).
                                     "--evidence-min-age-s", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc_ = testing::Process::start(argv, env, data_dir + ".log");
    auto line = proc_.wait_for_line("listening on", 20s);
    if (!line) return;
    static const std::regex kLine(R"(listening on 127\.0\.0\.1:(\d+))");
    std::smatch m;
    if (std::regex_search(*line, m, kLine)) port_ = std::stoi(m[1]);
  }
  int port() const noexcept { return port_; }
  testing::Process& process() { return proc_; }
  // SIGTERM, then the raw wait status (nullopt when it did not exit within the deadline).
  std::optional<int> terminate(std::chrono::milliseconds deadline = 5s) {
    proc_.signal(SIGTERM);
    return proc_.wait(deadline);
  }

 private:
  testing::Process proc_;
  int port_ = 0;
};

class Api : public ::testing::Test {
 protected:
  void SetUp() override { boot(); }

  void boot(std::vector<std::string> extra = {}) {
    server_.reset();
    server_ = std::make_unique<Server>(
        data(), std::map<std::string, std::string>{{"RINGFENCE_ADMIN_TOKEN", kAdmin}},
        std::move(extra));
    ASSERT_GT(server_->port(), 0) << "server did not start; log: " << read_file(data() + ".log");
    c_ = std::make_unique<Client>(server_->port());
  }
  std::string data() const { return dir_.path() + "/data"; }
  Client& c() { return *c_; }

  // Expects `status` and returns the JSON body.
  json expect(const HttpResponse& r, int status, const std::string& what) {
    EXPECT_EQ(r.status, status) << what << ": " << r.body.substr(0, 400);
    return r.json();
  }

  // What a refused request must not change.
  std::string snapshot() {
    std::string s;
    auto ev = c().get("/v1/events?limit=1000", kAdmin).json();
    s += "events=" + std::to_string(ev.is_object() ? ev["events"].size() : 9999) + "\n";
    for (const char* p : {"/v1/rings", "/v1/channels", "/v1/policies", "/v1/rollouts", "/v1/tokens",
                          "/v1/hosts", "/v1/emergency-stop", "/v1/enrollment-tokens"}) {
      s += std::string(p) + "=" + c().get(p, kAdmin).body + "\n";
    }
    return s;
  }

  // A refused request: the wanted status, the JSON error shape, and nothing changed.
  void refused(int want, const std::string& what, const std::function<HttpResponse()>& send) {
    auto before = snapshot();
    auto r = send();
    EXPECT_EQ(r.status, want) << what << ": " << r.body.substr(0, 400);
    EXPECT_TRUE(r.is_error_shape()) << what << ": not the error shape: " << r.raw.substr(0, 400);
    EXPECT_EQ(snapshot(), before) << what << ": the refused request changed something";
  }

  std::string token(const std::string& name, const std::string& role) {
    auto j = expect(c().post("/v1/tokens", kAdmin, {{"name", name}, {"role", role}}), 201,
                    "token " + name);
    return j.value("token", "");
  }

  std::string upload(const std::string& content, const std::string& tok = kAdmin) {
    auto j = expect(c().request("POST", "/v1/blobs", tok, content, "application/octet-stream"), 201,
                    "upload");
    return j.value("sha256", "");
  }

  // Rings "canary" (host list of kHost1), "rest" (buckets) ; channel "det" with a schema;
  // release 1.
  void basic_setup() {
    expect(c().post("/v1/rings", kAdmin,
                    {{"name", "canary"}, {"rank", 0}, {"selector", {{"hosts", {kHost1}}}}}),
           201, "ring");
    expect(c().post("/v1/rings", kAdmin,
                    {{"name", "rest"}, {"rank", 1}, {"selector", {{"buckets", {0, 10000}}}}}),
           201, "ring");
    expect(c().post("/v1/channels", kAdmin,
                    {{"name", "det"}, {"schema", {{"type", "object"}, {"required", {"rules"}}}}}),
           201, "channel");
    sha_ = upload(R"({"rules":[1,2,3]})");
    expect(c().post("/v1/channels/det/releases", kAdmin, {{"sha256", sha_}, {"notes", "v1"}}), 201,
           "release");
    expect(c().post(
               "/v1/policies", kAdmin,
               {{"name", "std"},
                {"stages",
                 {{{"ring", "canary"}, {"bake_s", 60}, {"min_hosts", 1}},
                  {{"ring", "rest"}, {"bake_s", 60}, {"min_hosts", 1}, {"approval", "manual"}}}}}),
           201, "policy");
  }

  // Enrolls a host; returns its credential. `current`: the host's credential, to re-enroll it.
  std::string enroll(const std::string& host_id, json labels = json::object(),
                     const std::string& current = "") {
    if (enroll_token_.empty()) {
      enroll_token_ = expect(c().post("/v1/enrollment-tokens", kAdmin, {{"name", "fleet"}}), 201,
                             "enroll token")
                          .value("token", "");
    }
    auto j = expect(c().post("/v1/agent/enroll", current,
                             {{"enrollment_token", enroll_token_},
                              {"host_id", host_id},
                              {"labels", labels},
                              {"agent_version", "test"}}),
                    200, "enroll");
    return j.value("credential", "");
  }

  std::int64_t events_count() {
    auto j = c().get("/v1/events?limit=1000", kAdmin).json();
    return static_cast<std::int64_t>(j["events"].size());
  }

  testing::TempDir dir_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> c_;
  std::string sha_, enroll_token_;
};

// ------------------------------------------------------------------ service endpoints

TEST_F(Api, HealthReadinessAndSigningKey) {
  expect(c().get("/healthz", ""), 200, "healthz");
  auto ready = expect(c().get("/readyz", ""), 200, "readyz");
  EXPECT_EQ(ready["status"], "ready");
  auto key = expect(c().get("/v1/signing-key", ""), 200, "signing key");
  EXPECT_EQ(key["algorithm"], "ed25519");
  EXPECT_EQ(key["public_key"], trim(read_file(data() + "/signing.pub")));
  EXPECT_TRUE(proto::parse_public_key(key["public_key"].get<std::string>()));
  EXPECT_EQ(file_mode(data() + "/signing.key"), 0600u);
}

TEST_F(Api, OpenApiDocumentListsEveryRoute) {
  auto r = c().get("/v1/openapi.json", "");
  ASSERT_EQ(r.status, 200);
  auto doc = json::parse(r.body, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << "not valid JSON";
  EXPECT_TRUE(doc.contains("openapi"));
  ASSERT_TRUE(doc["paths"].is_object());
  // Every route registered in server/api/routes.cpp (method, path pattern).
  const std::vector<std::pair<std::string, std::string>> routes = {
      {"get", "/healthz"},
      {"get", "/readyz"},
      {"get", "/v1/openapi.json"},
      {"get", "/metrics"},
      {"get", "/v1/signing-key"},
      {"post", "/v1/tokens"},
      {"get", "/v1/tokens"},
      {"delete", "/v1/tokens/{name}"},
      {"post", "/v1/enrollment-tokens"},
      {"get", "/v1/enrollment-tokens"},
      {"delete", "/v1/enrollment-tokens/{name}"},
      {"post", "/v1/hosts/{id}/reset"},
      {"get", "/v1/rings"},
      {"post", "/v1/rings"},
      {"get", "/v1/rings/{name}"},
      {"put", "/v1/rings/{name}"},
      {"delete", "/v1/rings/{name}"},
      {"get", "/v1/rings/{name}/hosts"},
      {"get", "/v1/hosts"},
      {"get", "/v1/hosts/{id}"},
      {"patch", "/v1/hosts/{id}"},
      {"delete", "/v1/hosts/{id}"},
      {"get", "/v1/channels"},
      {"post", "/v1/channels"},
      {"get", "/v1/channels/{name}"},
      {"put", "/v1/channels/{name}"},
      {"post", "/v1/blobs"},
      {"get", "/v1/blobs/{sha256}"},
      {"post", "/v1/channels/{ch}/releases"},
      {"get", "/v1/channels/{ch}/releases"},
      {"get", "/v1/channels/{ch}/releases/{version}"},
      {"post", "/v1/channels/{ch}/releases/{version}/quarantine"},
      {"get", "/v1/policies"},
      {"post", "/v1/policies"},
      {"get", "/v1/policies/{name}"},
      {"put", "/v1/policies/{name}"},
      {"post", "/v1/rollouts"},
      {"get", "/v1/rollouts"},
      {"post", "/v1/rollouts/preview"},
      {"get", "/v1/rollouts/{id}"},
      {"post", "/v1/rollouts/{id}/start"},
      {"post", "/v1/rollouts/{id}/pause"},
      {"post", "/v1/rollouts/{id}/resume"},
      {"post", "/v1/rollouts/{id}/approve"},
      {"post", "/v1/rollouts/{id}/abort"},
      {"post", "/v1/rollouts/{id}/skip"},
      {"get", "/v1/events"},
      {"get", "/v1/events/stream"},
      {"post", "/v1/emergency-stop"},
      {"delete", "/v1/emergency-stop"},
      {"get", "/v1/emergency-stop"},
      {"post", "/v1/agent/enroll"},
      {"get", "/v1/agent/desired"},
      {"post", "/v1/agent/heartbeat"},
      {"post", "/v1/agent/reports"}};
  for (const auto& [method, path] : routes) {
    ASSERT_TRUE(doc["paths"].contains(path)) << path;
    EXPECT_TRUE(doc["paths"][path].contains(method)) << method << " " << path;
  }
}

TEST_F(Api, MetricsHaveTheExpectedNames) {
  c().get("/v1/rings", kAdmin);  // at least one counted request
  auto r = c().get("/metrics", "");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.header("content-type").find("text/plain"), std::string::npos);
  for (const char* name :
       {"ringfence_hosts", "ringfence_long_polls", "ringfence_heartbeats_total",
        "ringfence_reports_total", "ringfence_polls_total", "ringfence_emergency_stop",
        "ringfence_http_requests_total", "ringfence_http_request_duration_seconds_bucket",
        "ringfence_http_request_duration_seconds_count", "ringfence_enroll_refused_total",
        "ringfence_reports_refused_total", "ringfence_heartbeat_channels_ignored_total",
        "ringfence_signals_without_track_record_total", "ringfence_group_commits_total",
        "ringfence_group_commit_failures_total", "ringfence_group_commit_wait_seconds_max",
        "ringfence_reports_pending"}) {
    EXPECT_NE(r.body.find(name), std::string::npos) << name;
  }
  EXPECT_NE(r.body.find("# TYPE ringfence_http_requests_total counter"), std::string::npos);
}

// The route label of every ringfence_http_requests_total sample, with its request count.
std::map<std::string, std::uint64_t> route_labels(const std::string& metrics) {
  static const std::regex kSample(
      R"re(^ringfence_http_requests_total\{route="([^"]*)",status="\d+"\} (\d+)$)re");
  std::map<std::string, std::uint64_t> out;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, kSample)) out[m[1]] += std::stoull(m[2]);
  }
  return out;
}

TEST_F(Api, MetricsRouteLabelsAreRoutePatternsWhateverThePaths) {
  constexpr int kEach = 40;
  for (int i = 0; i < kEach; ++i) {
    auto n = std::to_string(i);
    char uuid[37];
    std::snprintf(uuid, sizeof uuid, "0e3b7a2c-1111-4222-8333-%012d", i);
    c().get("/v1/hosts/" + std::string(uuid), kAdmin);                 // 404 from the route
    c().get("/v1/rollouts/" + n, kAdmin);                              // 404 from the route
    c().get("/v1/blobs/" + std::string(64, 'a' + i % 6) + n, kAdmin);  // bad sha
    c().get("/scanner/" + n + "/wp-login.php", "");                    // no such path
    c().get("/.env" + n, "");
    c().get("/v1/agent/x" + n, "");
    c().request("DELETE", "/v1/rings/r" + n + "/hosts", kAdmin);  // 405
  }
  auto labels = route_labels(c().get("/metrics", "").body);
  // Every label is a registered pattern (as the OpenAPI document lists them) or "unmatched".
  auto doc = c().get("/v1/openapi.json", "").json();
  std::set<std::string> patterns = {"unmatched"};
  for (auto it = doc["paths"].begin(); it != doc["paths"].end(); ++it) patterns.insert(it.key());
  for (const auto& [route, n] : labels) {
    EXPECT_TRUE(patterns.count(route)) << "route label \"" << route << "\" is not a route pattern";
  }
  EXPECT_LE(labels.size(), 12u) << "one label per route touched, not per path";
  EXPECT_GE(labels["/v1/hosts/{id}"], std::uint64_t{kEach});
  EXPECT_GE(labels["/v1/rollouts/{id}"], std::uint64_t{kEach});
  EXPECT_GE(labels["/v1/blobs/{sha256}"], std::uint64_t{kEach});
  EXPECT_GE(labels["/v1/rings/{name}/hosts"], std::uint64_t{kEach});
  EXPECT_GE(labels["unmatched"], std::uint64_t{3 * kEach});
  auto body = c().get("/metrics", "").body;
  EXPECT_NE(body.find(R"(ringfence_http_requests_total{route="unmatched",status="404"})"),
            std::string::npos);
  EXPECT_NE(
      body.find(R"(ringfence_http_requests_total{route="/v1/rings/{name}/hosts",status="405"})"),
      std::string::npos);
}

// ------------------------------------------------------------------ a release engineer's walk

TEST_F(Api, ReleaseEngineerWalk) {
  // Rings of every selector kind.
  expect(c().post("/v1/rings", kAdmin,
                  {{"name", "canary"}, {"rank", 0}, {"selector", {{"buckets", {0, 100}}}}}),
         201, "ring canary");
  expect(c().post("/v1/rings", kAdmin,
                  {{"name", "early"},
                   {"rank", 1},
                   {"selector", {{"labels", "os=windows,site in (fra1,ams2)"}}}}),
         201, "ring early");
  expect(c().post("/v1/rings", kAdmin,
                  {{"name", "broad"},
                   {"rank", 2},
                   {"selector", {{"hosts", {kHost2}}}},
                   {"description", "all"}}),
         201, "ring broad");
  auto ring = expect(c().get("/v1/rings/early", kAdmin), 200, "get ring");
  EXPECT_EQ(ring["selector"]["labels"], "os=windows,site in (fra1,ams2)");
  auto put = expect(
      c().put("/v1/rings/broad", kAdmin, {{"rank", 5}, {"selector", {{"buckets", {100, 10000}}}}}),
      200, "put ring");
  EXPECT_EQ(put["rank"], 5);
  auto rings = expect(c().get("/v1/rings", kAdmin), 200, "list rings")["rings"];
  ASSERT_EQ(rings.size(), 3u);
  EXPECT_EQ(rings[0]["name"], "canary");
  EXPECT_EQ(rings[2]["name"], "broad");
  expect(c().get("/v1/rings/broad/hosts?limit=10", kAdmin), 200, "ring hosts");

  // Channel, blob, release.
  expect(
      c().post("/v1/channels", kAdmin,
               {{"name", "detections"}, {"schema", {{"type", "object"}, {"required", {"rules"}}}}}),
      201, "channel");
  auto ch = expect(
      c().put("/v1/channels/detections", kAdmin,
              {{"schema", {{"type", "object"}, {"required", {"rules"}}}}, {"max_bytes", 4096}}),
      200, "put channel");
  EXPECT_EQ(ch["max_bytes"], 4096);
  expect(c().get("/v1/channels/detections", kAdmin), 200, "get channel");
  EXPECT_EQ(expect(c().get("/v1/channels", kAdmin), 200, "channels")["channels"].size(), 1u);
  const std::string content = R"({"rules":[1,2,3]})";
  auto blob = expect(c().request("POST", "/v1/blobs", kAdmin, content, "application/octet-stream"),
                     201, "upload");
  EXPECT_EQ(blob["size"], content.size());
  EXPECT_EQ(blob["sha256"], proto::sha256_hex(content));
  std::string sha = blob["sha256"];
  auto dl = c().get("/v1/blobs/" + sha, kAdmin);
  EXPECT_EQ(dl.status, 200);
  EXPECT_EQ(dl.body, content);
  EXPECT_EQ(dl.header("etag"), "\"" + sha + "\"");
  EXPECT_NE(dl.header("cache-control").find("immutable"), std::string::npos);
  auto part = c().get("/v1/blobs/" + sha, kAdmin, {{"Range", "bytes=2-6"}});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.body, content.substr(2, 5));
  EXPECT_EQ(part.header("content-range"), "bytes 2-6/" + std::to_string(content.size()));
  EXPECT_EQ(c().get("/v1/blobs/" + sha, kAdmin, {{"Range", "bytes=999-"}}).status, 416);
  EXPECT_EQ(c().get("/v1/blobs/" + sha, kAdmin, {{"If-None-Match", "\"" + sha + "\""}}).status,
            304);

  auto rel = expect(
      c().post("/v1/channels/detections/releases", kAdmin, {{"sha256", sha}, {"notes", "first"}}),
      201, "release");
  EXPECT_EQ(rel["version"], 1);
  EXPECT_EQ(rel["state"], "validated");
  // The signature verifies against the served key, over the manifest's canonical bytes.
  auto pk = proto::parse_public_key(
      c().get("/v1/signing-key", "").json()["public_key"].get<std::string>());
  ASSERT_TRUE(pk);
  const auto& m = rel["manifest"];
  proto::Manifest man{m["channel"], m["version"], m["sha256"],
                      m["size"],    m["created"], m["expires"]};
  EXPECT_TRUE(proto::verify(*pk, proto::canonical_bytes(man), rel["signature"].get<std::string>()));
  expect(c().get("/v1/channels/detections/releases", kAdmin), 200, "list releases");
  expect(c().get("/v1/channels/detections/releases/1", kAdmin), 200, "get release");

  // Policy: the canary waits for approval, so the walk can approve without a fleet.
  json stages = {{{"ring", "canary"}, {"bake_s", 60}, {"min_hosts", 1}, {"approval", "manual"}},
                 {{"ring", "early"}, {"percent", 50}},
                 {{"ring", "broad"}}};
  expect(c().post("/v1/policies", kAdmin, {{"name", "std"}, {"stages", stages}}), 201, "policy");
  expect(c().put("/v1/policies/std", kAdmin, {{"stages", stages}}), 200, "put policy");
  EXPECT_EQ(expect(c().get("/v1/policies/std", kAdmin), 200, "get policy")["stages"].size(), 3u);
  expect(c().get("/v1/policies", kAdmin), 200, "list policies");
  auto preview = expect(
      c().post("/v1/rollouts/preview", kAdmin, {{"channel", "detections"}, {"policy", "std"}}), 200,
      "preview");
  // early at 50 % leaves hosts no stage reaches: an implicit final stage over the whole fleet.
  ASSERT_EQ(preview["stages"].size(), 4u);
  EXPECT_EQ(preview["stages"][3]["ring"], "*");
  EXPECT_EQ(preview["stages"][3]["implicit"], true);

  auto ro = expect(c().post("/v1/rollouts", kAdmin,
                            {{"channel", "detections"}, {"version", 1}, {"policy", "std"}}),
                   201, "rollout");
  EXPECT_EQ(ro["state"], "pending");
  auto id = std::to_string(ro["id"].get<std::int64_t>());
  auto act = [&](const std::string& a, json body = json::object()) {
    return expect(c().post("/v1/rollouts/" + id + "/" + a, kAdmin, body), 200, a);
  };
  auto s = act("start");
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["phase"], "awaiting_approval");
  EXPECT_EQ(act("pause")["state"], "paused");
  auto resumed = act("resume");
  EXPECT_EQ(resumed["state"], "running");
  EXPECT_EQ(resumed["phase"], "awaiting_approval");  // resume does not approve
  EXPECT_EQ(act("approve")["phase"], "baking");
  EXPECT_EQ(expect(c().get("/v1/rollouts/" + id, kAdmin), 200, "get rollout")["phase"], "baking");
  EXPECT_EQ(expect(c().get("/v1/rollouts?channel=detections&state=running", kAdmin), 200,
                   "list")["rollouts"]
                .size(),
            1u);
  auto aborted = act("abort", {{"reason", "walk over"}});
  EXPECT_EQ(aborted["state"], "aborted");
  EXPECT_EQ(expect(c().get("/v1/channels/detections/releases/1", kAdmin), 200, "rel")["state"],
            "quarantined");

  // The timeline: every action an event with actor and reason.
  auto ev =
      expect(c().get("/v1/events?rollout=" + id + "&limit=100", kAdmin), 200, "events")["events"];
  std::set<std::string> kinds;
  for (const auto& e : ev) {
    kinds.insert(e["kind"]);
    EXPECT_FALSE(e["actor"].get<std::string>().empty());
    if (e["kind"] == "rollout_abort") {
      EXPECT_EQ(e["data"]["reason"], "walk over");
    }
  }
  for (const char* k : {"rollout_created", "rollout_start", "rollout_pause", "rollout_resume",
                        "rollout_approve", "rollout_abort"}) {
    EXPECT_TRUE(kinds.count(k)) << k;
  }
  auto after = expect(
      c().get("/v1/events?after=" + std::to_string(ev[0]["id"].get<std::int64_t>()) + "&limit=1",
              kAdmin),
      200, "paged");
  EXPECT_EQ(after["events"].size(), 1u);

  // A second release, quarantined by hand; emergency stop on and off; ring deleted.
  auto sha2 = upload(R"({"rules":[4]})");
  expect(c().post("/v1/channels/detections/releases", kAdmin, {{"sha256", sha2}}), 201,
         "release 2");
  auto q =
      expect(c().post("/v1/channels/detections/releases/2/quarantine", kAdmin, {{"reason", "bad"}}),
             200, "quarantine");
  EXPECT_EQ(q["state"], "quarantined");
  auto stop = expect(c().post("/v1/emergency-stop", kAdmin, {{"reason", "incident"}}), 200, "stop");
  EXPECT_EQ(stop["emergency_stop"], true);
  EXPECT_EQ(expect(c().get("/v1/emergency-stop", kAdmin), 200, "stop state")["emergency_stop"],
            true);
  EXPECT_EQ(
      expect(c().request("DELETE", "/v1/emergency-stop", kAdmin), 200, "lift")["emergency_stop"],
      false);
  EXPECT_EQ(c().del("/v1/rings/early", kAdmin).status, 204);
  EXPECT_EQ(c().get("/v1/rings/early", kAdmin).status, 404);

  // Tokens.
  auto viewer = token("viewer1", "viewer");
  EXPECT_EQ(c().get("/v1/rings", viewer).status, 200);
  EXPECT_EQ(expect(c().get("/v1/tokens", kAdmin), 200, "tokens")["tokens"].size(), 2u);
  EXPECT_EQ(c().del("/v1/tokens/viewer1", kAdmin).status, 204);
  EXPECT_EQ(c().get("/v1/rings", viewer).status, 401);  // a deleted token is gone at once
}

// ------------------------------------------------------------------ agents

TEST_F(Api, AgentRoutesAndHostManagement) {
  basic_setup();
  auto cred = enroll(kHost1, {{"os", "linux"}});
  ASSERT_EQ(cred.rfind(kHost1 + ".", 0), 0u);
  auto cred2 = enroll(kHost2, {{"os", "windows"}});

  auto d = c().get("/v1/agent/desired", cred);
  ASSERT_EQ(d.status, 200);
  auto dj = d.json();
  EXPECT_EQ(d.header("etag"), "\"" + dj["etag"].get<std::string>() + "\"");
  EXPECT_TRUE(dj["channels"].empty());
  EXPECT_GT(dj["heartbeat_s"].get<int>(), 0);
  EXPECT_EQ(c().get("/v1/agent/desired", cred, {{"If-None-Match", d.header("etag")}}).status, 304);
  EXPECT_EQ(
      c().request("POST", "/v1/agent/heartbeat", cred,
                  json{{"boot_id", "b1"}, {"uptime_s", 5}, {"channels", json::object()}}.dump())
          .status,
      204);
  auto rep = c().request(
      "POST", "/v1/agent/reports", cred,
      json::array({{{"kind", "crash"}, {"time", 1}, {"boot_id", "b1"}, {"detail", json::object()}}})
          .dump());
  EXPECT_EQ(rep.status, 202);
  EXPECT_EQ(rep.json(), (json{{"accepted", 1}, {"dropped", 0}}));
  // A report about a version this host was never sent is dropped, and the answer says so.
  rep = c().request("POST", "/v1/agent/reports", cred,
                    json::array({{{"kind", "crash"}, {"time", 2}, {"boot_id", "b1"}},
                                 {{"kind", "crash"},
                                  {"time", 3},
                                  {"boot_id", "b1"},
                                  {"channel", "det"},
                                  {"version", 99}}})
                        .dump());
  EXPECT_EQ(rep.status, 202);
  EXPECT_EQ(rep.json(), (json{{"accepted", 1}, {"dropped", 1}})) << rep.body;

  // Hosts: list with filters, get, patch (pin, labels move it between rings), delete.
  auto hosts =
      expect(c().get("/v1/hosts?label=os%3Dlinux&limit=10", kAdmin), 200, "hosts")["hosts"];
  ASSERT_EQ(hosts.size(), 1u);
  EXPECT_EQ(hosts[0]["host_id"], kHost1);
  EXPECT_EQ(hosts[0]["ring"], "canary");
  EXPECT_EQ(expect(c().get("/v1/hosts?ring=rest", kAdmin), 200, "by ring")["hosts"].size(), 1u);
  auto page = expect(c().get("/v1/hosts?limit=1", kAdmin), 200, "page");
  ASSERT_EQ(page["hosts"].size(), 1u);
  ASSERT_TRUE(page.contains("next"));
  auto page2 = expect(c().get("/v1/hosts?limit=1&after=" + page["next"].get<std::string>(), kAdmin),
                      200, "page 2");
  ASSERT_EQ(page2["hosts"].size(), 1u);
  EXPECT_NE(page2["hosts"][0]["host_id"], page["hosts"][0]["host_id"]);
  auto h = expect(c().get("/v1/hosts/" + kHost2, kAdmin), 200, "host");
  EXPECT_EQ(h["bucket"].get<int>() >= 0 && h["bucket"].get<int>() < 10000, true);
  auto patched =
      expect(c().patch("/v1/hosts/" + kHost2, kAdmin, {{"pinned", true}, {"tenant", "acme"}}), 200,
             "patch");
  EXPECT_EQ(patched["pinned"], true);
  EXPECT_EQ(patched["tenant"], "acme");
  EXPECT_EQ(expect(c().get("/v1/rings/canary/hosts", kAdmin), 200, "members")["hosts"].size(), 1u);

  // Blob download with a host credential.
  EXPECT_EQ(c().get("/v1/blobs/" + sha_, cred).status, 200);

  // Re-enrolling (with the current credential) rotates the credential.
  auto cred_new = enroll(kHost1, json::object(), cred);
  EXPECT_NE(cred_new, cred);
  EXPECT_EQ(c().get("/v1/agent/desired", cred).status, 401);
  EXPECT_EQ(c().get("/v1/agent/desired", cred_new).status, 200);

  EXPECT_EQ(c().del("/v1/hosts/" + kHost2, kAdmin).status, 204);
  EXPECT_EQ(c().get("/v1/hosts/" + kHost2, kAdmin).status, 404);
  EXPECT_EQ(c().get("/v1/agent/desired", cred2).status, 401);  // a forgotten host cannot poll
}

TEST_F(Api, AHeldLongPollIsAnsweredWhenTheRolloutStarts) {
  basic_setup();
  auto cred = enroll(kHost1);
  auto first = c().get("/v1/agent/desired", cred);
  ASSERT_EQ(first.status, 200);
  auto ro = expect(
      c().post("/v1/rollouts", kAdmin, {{"channel", "det"}, {"version", 1}, {"policy", "std"}}),
      201, "rollout");

  Connection poll(c().port());
  ASSERT_TRUE(
      poll.send("GET /v1/agent/desired?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                cred + "\r\nIf-None-Match: " + first.header("etag") + "\r\n\r\n"));
  // Parked: the server holds it (visible in /metrics), no answer yet.
  ASSERT_TRUE(testing::eventually([&] {
    return c().get("/metrics", "").body.find("ringfence_long_polls 1") != std::string::npos;
  })) << c().get("/metrics", "").body;
  EXPECT_TRUE(poll.received().empty());
  auto t0 = std::chrono::steady_clock::now();
  expect(c().post("/v1/rollouts/" + std::to_string(ro["id"].get<int>()) + "/start", kAdmin,
                  json::object()),
         200, "start");
  auto pushed = poll.read_response(5s);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(pushed.status, 200) << pushed.raw;
  EXPECT_LT(took, 2s);
  auto body = pushed.json();
  ASSERT_EQ(body["channels"].size(), 1u);
  EXPECT_EQ(body["channels"][0]["version"], 1);
  EXPECT_NE(pushed.header("etag"), first.header("etag"));
}

TEST_F(Api, TheEventStreamDeliversNewEvents) {
  Connection sse(c().port());
  ASSERT_TRUE(sse.send("GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                       kAdmin + "\r\n\r\n"));
  sse.read_until([](const std::string& s) { return s.find(": connected") != std::string::npos; },
                 5s);
  ASSERT_NE(sse.received().find(": connected"), std::string::npos) << sse.received();
  EXPECT_NE(sse.received().find("text/event-stream"), std::string::npos);
  expect(c().post("/v1/rings", kAdmin,
                  {{"name", "all"}, {"rank", 0}, {"selector", {{"buckets", {0, 10000}}}}}),
         201, "ring");
  sse.read_until(
      [](const std::string& s) { return s.find("event: ring_created") != std::string::npos; }, 5s);
  EXPECT_NE(sse.received().find("event: ring_created"), std::string::npos) << sse.received();
  // A client coming back with Last-Event-ID gets what it missed first, then the live stream.
  Connection back(c().port());
  ASSERT_TRUE(back.send("GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        kAdmin + "\r\nLast-Event-ID: 0\r\n\r\n"));
  back.read_until([](const std::string& s) { return s.find(": connected") != std::string::npos; },
                  5s);
  auto replayed = back.received().find("event: ring_created");
  ASSERT_NE(replayed, std::string::npos) << back.received();
  EXPECT_LT(replayed, back.received().find(": connected"));
  // Without a token the stream is refused.
  EXPECT_EQ(c().get("/v1/events/stream", "").status, 401);
}

TEST_F(Api, AnEventStreamOverTheSubscriberLimitIs429) {
  const std::string request =
      "GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kAdmin + "\r\n\r\n";
  auto connected = [](const std::string& s) { return s.find(": connected") != std::string::npos; };
  // Open streams until one is refused: every stream before it is a live subscription.
  std::vector<std::unique_ptr<Connection>> streams;
  HttpResponse refused;
  for (int i = 0; i < 2000 && refused.status == 0; ++i) {
    auto sse = std::make_unique<Connection>(c().port());
    ASSERT_TRUE(sse->send(request));
    sse->read_until([&](const std::string& s) { return connected(s) || response_complete(s); }, 5s);
    if (connected(sse->received())) {
      streams.push_back(std::move(sse));
    } else {
      refused = parse_response(sse->received());
    }
  }
  ASSERT_FALSE(streams.empty());
  ASSERT_EQ(refused.status, 429) << "after " << streams.size()
                                 << " streams: " << refused.raw.substr(0, 300);
  EXPECT_TRUE(refused.is_error_shape()) << refused.raw.substr(0, 300);
  EXPECT_EQ(refused.header("retry-after"), "1");
  EXPECT_EQ(refused.header("content-type"), "application/json");
  // The streams that were let in still get events.
  expect(c().post("/v1/rings", kAdmin,
                  {{"name", "all"}, {"rank", 0}, {"selector", {{"buckets", {0, 10000}}}}}),
         201, "ring");
  auto& last = *streams.back();
  last.read_until(
      [](const std::string& s) { return s.find("event: ring_created") != std::string::npos; }, 5s);
  EXPECT_NE(last.received().find("event: ring_created"), std::string::npos) << last.received();
  // A client that leaves frees its place (once an event shows the server it is gone).
  streams.front().reset();
  int n = 0;
  EXPECT_TRUE(testing::eventually([&] {
    c().put("/v1/rings/all", kAdmin,
            {{"rank", 0},
             {"selector", {{"buckets", {0, 10000}}}},
             {"description", std::to_string(++n)}});
    Connection again(c().port());
    again.send(request);
    again.read_until([&](const std::string& s) { return connected(s) || response_complete(s); },
                     5s);
    return connected(again.received());
  })) << "no place freed";
  // Full again; then three clients leave while nothing happens on the server: the next ones are
  // let in all the same (the server probes its streams when it is full).
  for (int i = 0; i < 2000; ++i) {
    auto sse = std::make_unique<Connection>(c().port());
    ASSERT_TRUE(sse->send(request));
    sse->read_until([&](const std::string& s) { return connected(s) || response_complete(s); }, 5s);
    if (!connected(sse->received())) break;
    streams.push_back(std::move(sse));
  }
  for (int i = 1; i <= 3; ++i) streams[static_cast<std::size_t>(i)].reset();
  std::vector<std::unique_ptr<Connection>> newcomers;
  EXPECT_TRUE(testing::eventually([&] {
    auto sse = std::make_unique<Connection>(c().port());
    sse->send(request);
    sse->read_until([&](const std::string& s) { return connected(s) || response_complete(s); }, 5s);
    if (connected(sse->received())) newcomers.push_back(std::move(sse));
    return newcomers.size() == 3;
  })) << "closed streams kept their places on a quiet server: "
      << newcomers.size() << " let in";
}

// ------------------------------------------------------------------ hostile input

TEST_F(Api, MalformedAndInvalidBodiesChangeNothing) {
  basic_setup();
  const json ok_sel = {{"buckets", {0, 1}}};
  auto post = [&](const std::string& path, const std::string& body,
                  const std::string& ct = "application/json") {
    return [this, path, body, ct] { return c().request("POST", path, kAdmin, body, ct); };
  };
  refused(400, "malformed JSON", post("/v1/rings", "{bad"));
  refused(400, "truncated JSON", post("/v1/rings", R"({"name":"x","rank":)"));
  refused(400, "JSON array body", post("/v1/rings", "[]"));
  refused(400, "JSON string body", post("/v1/rings", "\"ring\""));
  refused(400, "empty body", post("/v1/rings", ""));
  refused(400, "deep nesting", post("/v1/rings", std::string(5000, '[') + std::string(5000, ']')));
  refused(400, "invalid UTF-8", post("/v1/rings", "{\"name\":\"\xff\xfe\",\"rank\":0}"));
  refused(400, "wrong type: rank",
          post("/v1/rings", json{{"name", "x"}, {"rank", "zero"}, {"selector", ok_sel}}.dump()));
  refused(400, "wrong type: name",
          post("/v1/rings", json{{"name", 7}, {"rank", 0}, {"selector", ok_sel}}.dump()));
  refused(400, "wrong type: selector",
          post("/v1/rings", json{{"name", "x"}, {"rank", 0}, {"selector", "all"}}.dump()));
  refused(400, "float rank",
          post("/v1/rings", json{{"name", "x"}, {"rank", 1.5}, {"selector", ok_sel}}.dump()));
  refused(400, "negative rank",
          post("/v1/rings", json{{"name", "x"}, {"rank", -1}, {"selector", ok_sel}}.dump()));
  refused(400, "unknown field",
          post("/v1/rings",
               json{{"name", "x"}, {"rank", 0}, {"selector", ok_sel}, {"extra", 1}}.dump()));
  refused(400, "missing selector", post("/v1/rings", json{{"name", "x"}, {"rank", 0}}.dump()));
  refused(400, "empty bucket range",
          post("/v1/rings",
               json{{"name", "x"}, {"rank", 0}, {"selector", {{"buckets", {5, 5}}}}}.dump()));
  refused(400, "bucket range past 10000",
          post("/v1/rings",
               json{{"name", "x"}, {"rank", 0}, {"selector", {{"buckets", {0, 10001}}}}}.dump()));
  refused(
      400, "two selector kinds",
      post("/v1/rings",
           json{{"name", "x"}, {"rank", 0}, {"selector", {{"buckets", {0, 1}}, {"labels", "a=b"}}}}
               .dump()));
  refused(400, "unbalanced label expression",
          post("/v1/rings",
               json{{"name", "x"}, {"rank", 0}, {"selector", {{"labels", "os in (a"}}}}.dump()));
  refused(400, "host list with a bad id",
          post("/v1/rings",
               json{{"name", "x"}, {"rank", 0}, {"selector", {{"hosts", {"HOST-1"}}}}}.dump()));
  refused(400, "path-like ring name",
          post("/v1/rings", json{{"name", "../etc"}, {"rank", 0}, {"selector", ok_sel}}.dump()));
  refused(400, "upper-case ring name",
          post("/v1/rings", json{{"name", "Canary"}, {"rank", 0}, {"selector", ok_sel}}.dump()));
  refused(400, "overlong ring name",
          post("/v1/rings",
               json{{"name", std::string(100, 'a')}, {"rank", 0}, {"selector", ok_sel}}.dump()));
  refused(400, "ring name differs from the path", [&] {
    return c().put("/v1/rings/rest", kAdmin,
                   {{"name", "other"}, {"rank", 1}, {"selector", ok_sel}});
  });
  refused(409, "duplicate ring",
          post("/v1/rings", json{{"name", "canary"}, {"rank", 0}, {"selector", ok_sel}}.dump()));
  refused(415, "wrong content type",
          post("/v1/rings", json{{"name", "x"}, {"rank", 0}, {"selector", ok_sel}}.dump(),
               "text/plain"));
  refused(415, "form content type",
          post("/v1/policies", "name=x", "application/x-www-form-urlencoded"));

  refused(400, "channel: unknown field",
          post("/v1/channels", json{{"name", "c2"}, {"colour", "red"}}.dump()));
  refused(400, "channel: bad schema",
          post("/v1/channels", json{{"name", "c2"}, {"schema", {{"type", 5}}}}.dump()));
  refused(400, "channel: bad name", post("/v1/channels", json{{"name", "a/b"}}.dump()));
  refused(409, "channel: exists", post("/v1/channels", json{{"name", "det"}}.dump()));
  refused(400, "release: bad sha",
          post("/v1/channels/det/releases", json{{"sha256", "xyz"}}.dump()));
  refused(400, "release: sha as number",
          post("/v1/channels/det/releases", json{{"sha256", 12}}.dump()));
  refused(404, "release: unknown content",
          post("/v1/channels/det/releases", json{{"sha256", std::string(64, '0')}}.dump()));
  refused(404, "release: unknown channel",
          post("/v1/channels/nope/releases", json{{"sha256", sha_}}.dump()));
  refused(409, "release: same content twice",
          post("/v1/channels/det/releases", json{{"sha256", sha_}}.dump()));
  auto bad_sha = upload(R"({"nope":1})");
  {
    auto before = snapshot();
    auto r = c().post("/v1/channels/det/releases", kAdmin, {{"sha256", bad_sha}});
    EXPECT_EQ(r.status, 422) << r.body;
    EXPECT_TRUE(r.is_error_shape());
    EXPECT_NE(r.body.find("rules"), std::string::npos) << "findings name the field: " << r.body;
    EXPECT_EQ(snapshot(), before);
  }
  refused(400, "policy: no stages",
          post("/v1/policies", json{{"name", "p2"}, {"stages", json::array()}}.dump()));
  refused(400, "policy: stages not an array",
          post("/v1/policies", json{{"name", "p2"}, {"stages", "canary"}}.dump()));
  refused(
      400, "policy: bad approval",
      post("/v1/policies",
           json{{"name", "p2"}, {"stages", {{{"ring", "canary"}, {"approval", "maybe"}}}}}.dump()));
  refused(400, "policy: percent 0",
          post("/v1/policies",
               json{{"name", "p2"}, {"stages", {{{"ring", "canary"}, {"percent", 0}}}}}.dump()));
  refused(400, "policy: alpha out of range",
          post("/v1/policies",
               json{{"name", "p2"}, {"stages", {{{"ring", "canary"}, {"gate", {{"alpha", 0.9}}}}}}}
                   .dump()));
  refused(400, "policy: unknown stage field",
          post("/v1/policies",
               json{{"name", "p2"}, {"stages", {{{"ring", "canary"}, {"speed", "fast"}}}}}.dump()));
  refused(409, "policy: exists",
          post("/v1/policies", json{{"name", "std"}, {"stages", {{{"ring", "canary"}}}}}.dump()));
  refused(
      400, "rollout: version as string",
      post("/v1/rollouts", json{{"channel", "det"}, {"version", "1"}, {"policy", "std"}}.dump()));
  refused(400, "rollout: huge version",
          post("/v1/rollouts", R"({"channel":"det","version":1e300,"policy":"std"})"));
  refused(400, "rollout: policy and stages",
          post("/v1/rollouts", json{{"channel", "det"},
                                    {"version", 1},
                                    {"policy", "std"},
                                    {"stages", {{{"ring", "canary"}}}}}
                                   .dump()));
  refused(400, "rollout: stage ring unknown",
          post("/v1/rollouts",
               json{{"channel", "det"}, {"version", 1}, {"stages", {{{"ring", "ghost"}}}}}.dump()));
  refused(
      404, "rollout: unknown policy",
      post("/v1/rollouts", json{{"channel", "det"}, {"version", 1}, {"policy", "ghost"}}.dump()));
  refused(404, "rollout: unknown release",
          post("/v1/rollouts", json{{"channel", "det"}, {"version", 9}, {"policy", "std"}}.dump()));
  refused(400, "token: bad role", post("/v1/tokens", json{{"name", "t"}, {"role", "root"}}.dump()));
  refused(400, "token: unknown field",
          post("/v1/tokens", json{{"name", "t"}, {"role", "viewer"}, {"ttl", 5}}.dump()));
  refused(
      400, "enrollment token: bad label",
      post("/v1/enrollment-tokens", json{{"name", "e"}, {"labels", {{"Bad Key", "v"}}}}.dump()));
  refused(400, "emergency stop without reason", post("/v1/emergency-stop", "{}"));
  refused(400, "quarantine without reason", post("/v1/channels/det/releases/1/quarantine", "{}"));
  refused(404, "quarantine of an unknown release",
          post("/v1/channels/det/releases/7/quarantine", json{{"reason", "x"}}.dump()));
}

TEST_F(Api, BadIdsAndPathTricksChangeNothing) {
  basic_setup();
  auto get = [&](const std::string& path) {
    return [this, path] { return c().get(path, kAdmin); };
  };
  refused(400, "encoded dot-dot ring name", get("/v1/rings/..%2f.."));
  refused(400, "dot-dot ring name", get("/v1/rings/.."));
  refused(400, "encoded traversal in a channel", get("/v1/channels/..%2f..%2fetc/releases"));
  refused(400, "non-hex blob id", get("/v1/blobs/" + std::string(64, 'z')));
  refused(400, "upper-case blob id", get("/v1/blobs/" + std::string(64, 'A')));
  refused(400, "short blob id", get("/v1/blobs/abc"));
  refused(400, "encoded traversal as blob id", get("/v1/blobs/..%2f..%2fetc%2fpasswd"));
  refused(404, "unknown blob", get("/v1/blobs/" + std::string(64, '0')));
  {
    auto before = snapshot();
    auto r = c().get("/v1/blobs/../../etc/passwd", kAdmin);
    EXPECT_TRUE(r.status == 400 || r.status == 404) << r.status;
    EXPECT_EQ(r.body.find("root:"), std::string::npos);
    EXPECT_EQ(snapshot(), before);
  }
  refused(400, "bad host id", get("/v1/hosts/not-a-uuid"));
  refused(404, "unknown host", get("/v1/hosts/" + kHost2));
  refused(400, "bad rollout id", get("/v1/rollouts/abc"));
  refused(400, "negative rollout id", get("/v1/rollouts/-1"));
  refused(400, "rollout id too large", get("/v1/rollouts/99999999999999999999"));
  refused(404, "unknown rollout", get("/v1/rollouts/999"));
  refused(400, "bad release version", get("/v1/channels/det/releases/one"));
  refused(404, "unknown release", get("/v1/channels/det/releases/5"));
  refused(404, "unknown channel", get("/v1/channels/ghost"));
  refused(404, "unknown ring", get("/v1/rings/ghost"));
  refused(404, "unknown policy", get("/v1/policies/ghost"));
  refused(400, "negative limit", get("/v1/hosts?limit=-5"));
  refused(400, "limit too large", get("/v1/hosts?limit=100000"));
  refused(400, "bad label filter", get("/v1/hosts?label=BAD%20KEY"));
  refused(400, "bad event cursor", get("/v1/events?after=x"));
  refused(400, "bad rollout filter", get("/v1/rollouts?channel=..%2f"));
  refused(404, "unknown route", get("/v1/nothing"));
  refused(404, "unknown route under a known prefix", get("/v1/rings/canary/hosts/extra"));
  {
    auto before = snapshot();
    auto r = c().del("/v1/rings", kAdmin);
    EXPECT_EQ(r.status, 405);
    EXPECT_TRUE(r.is_error_shape());
    EXPECT_NE(r.header("allow").find("GET"), std::string::npos) << r.raw;
    EXPECT_NE(r.header("allow").find("POST"), std::string::npos) << r.raw;
    EXPECT_EQ(snapshot(), before);
  }
  refused(405, "PUT on a collection",
          [&] { return c().put("/v1/rollouts", kAdmin, json::object()); });
  refused(405, "GET on an action", get("/v1/rollouts/1/start"));
  refused(404, "delete an unknown token", [&] { return c().del("/v1/tokens/ghost", kAdmin); });
  refused(409, "delete the last admin token", [&] { return c().del("/v1/tokens/admin", kAdmin); });
}

TEST_F(Api, OversizedAndMalformedRequestsChangeNothing) {
  basic_setup();
  const std::string auth = "Authorization: Bearer " + kAdmin + "\r\n";
  {
    auto before = snapshot();
    auto r = c().raw("POST /v1/rings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
                     auth + "Content-Length: 2000000\r\n\r\n" + std::string(1000, '{'));
    EXPECT_EQ(r.status, 413) << r.raw.substr(0, 300);
    EXPECT_TRUE(r.is_error_shape());
    EXPECT_EQ(snapshot(), before);
  }
  {
    // A body just over 1 MiB, really sent.
    json big = {{"name", "big"},
                {"rank", 0},
                {"selector", {{"buckets", {0, 1}}}},
                {"description", std::string((1 << 20) + 10, 'a')}};
    auto before = snapshot();
    auto r = c().post("/v1/rings", kAdmin, big);
    EXPECT_EQ(r.status, 413) << r.raw.substr(0, 300);
    EXPECT_EQ(snapshot(), before);
  }
  {
    auto before = snapshot();
    auto r = c().raw("GET /v1/rings HTTP/1.1\r\nHost: x\r\n" + auth +
                     "X-Big: " + std::string(9000, 'a') + "\r\n\r\n");
    EXPECT_TRUE(r.status == 431 || r.status == 400) << r.raw.substr(0, 300);
    EXPECT_EQ(snapshot(), before);
  }
  {
    auto r = c().raw("POST /v1/rings HTTP/1.1\r\nHost: x\r\n" + auth + std::string(200, 'X') +
                     ": " + std::string(8000, 'b') + "\r\nContent-Length: 2\r\n\r\n{}");
    EXPECT_TRUE(r.status == 431 || r.status == 400) << r.raw.substr(0, 300);
  }
  EXPECT_EQ(c().raw("GARBAGE\r\n\r\n").status, 400);
  EXPECT_EQ(c().raw("GET /v1/rings HTTP/9.9\r\nHost: x\r\n\r\n").status, 400);
  {
    auto before = snapshot();
    auto r = c().raw("POST /v1/rings HTTP/1.1\r\nHost: x\r\n" + auth +
                     "Content-Type: application/json\r\nContent-Length: abc\r\n\r\n{}");
    EXPECT_EQ(r.status, 400) << r.raw.substr(0, 300);
    EXPECT_EQ(snapshot(), before);
  }
  // The server still serves after all that.
  EXPECT_EQ(c().get("/v1/rings", kAdmin).status, 200);
}

TEST_F(Api, AnUploadTheDiskCannotTakeIs503WithRetryAfter) {
  // The uploads folder replaced by a file: the server cannot store the body.
  std::filesystem::remove_all(data() + "/uploads");
  std::ofstream(data() + "/uploads") << "in the way";
  auto r =
      c().request("POST", "/v1/blobs", kAdmin, std::string(100, 'z'), "application/octet-stream");
  EXPECT_EQ(r.status, 503) << r.raw.substr(0, 300);
  EXPECT_TRUE(r.is_error_shape()) << r.raw.substr(0, 300);
  EXPECT_EQ(r.header("retry-after"), "5");
  // Other errors carry no Retry-After.
  EXPECT_EQ(c().get("/v1/rings/NOPE", kAdmin).header("retry-after"), "");
  EXPECT_EQ(c().get("/v1/tokens", "").header("retry-after"), "");
}

TEST_F(Api, OversizedUploadsAreRefusedAndLeaveNoFile) {
  boot({"--upload-limit", "1024"});
  auto before = snapshot();
  auto r =
      c().request("POST", "/v1/blobs", kAdmin, std::string(4096, 'x'), "application/octet-stream");
  EXPECT_EQ(r.status, 413) << r.raw.substr(0, 300);
  EXPECT_EQ(snapshot(), before);
  EXPECT_EQ(c().get("/v1/blobs/" + proto::sha256_hex(std::string(4096, 'x')), kAdmin).status, 404);
  ASSERT_TRUE(testing::eventually([&] { return std::filesystem::is_empty(data() + "/uploads"); }))
      << "a refused upload left a partial file";
  EXPECT_EQ(
      c().request("POST", "/v1/blobs", kAdmin, std::string(1000, 'y'), "application/octet-stream")
          .status,
      201);
}

TEST_F(Api, AgentRoutesRefuseBadInput) {
  basic_setup();
  auto cred = enroll(kHost1);
  auto etok = enroll_token_;
  auto agent_post = [&](const std::string& path, const std::string& tok, const std::string& body) {
    return [this, path, tok, body] { return c().request("POST", path, tok, body); };
  };
  refused(401, "enroll with a wrong token",
          agent_post("/v1/agent/enroll", "",
                     json{{"enrollment_token", "rfe_wrong"},
                          {"host_id", kHost2},
                          {"labels", json::object()},
                          {"agent_version", "t"}}
                         .dump()));
  refused(400, "enroll with a bad host id",
          agent_post("/v1/agent/enroll", "",
                     json{{"enrollment_token", etok},
                          {"host_id", "HOST; rm -rf /"},
                          {"labels", json::object()},
                          {"agent_version", "t"}}
                         .dump()));
  refused(400, "enroll with a bad label",
          agent_post("/v1/agent/enroll", "",
                     json{{"enrollment_token", etok},
                          {"host_id", kHost2},
                          {"labels", {{"os", "a,b"}}},
                          {"agent_version", "t"}}
                         .dump()));
  refused(400, "enroll: malformed JSON", agent_post("/v1/agent/enroll", "", "{"));
  refused(401, "desired with an operator token",
          [&] { return c().get("/v1/agent/desired", kAdmin); });
  refused(401, "desired without a credential", [&] { return c().get("/v1/agent/desired", ""); });
  refused(401, "forged host credential",
          [&] { return c().get("/v1/agent/desired", kHost1 + ".0000"); });
  refused(401, "another host's id with this secret",
          [&] { return c().get("/v1/agent/desired", kHost2 + cred.substr(kHost1.size())); });
  refused(400, "desired: bad wait",
          [&] { return c().get("/v1/agent/desired?wait=forever", cred); });
  refused(400, "heartbeat of the wrong shape",
          agent_post("/v1/agent/heartbeat", cred, json{{"boot_id", 5}}.dump()));
  refused(400, "heartbeat: malformed JSON",
          agent_post("/v1/agent/heartbeat", cred, "{\"boot_id\":"));
  refused(401, "heartbeat without a credential",
          agent_post("/v1/agent/heartbeat", "",
                     json{{"boot_id", "b"}, {"uptime_s", 1}, {"channels", json::object()}}.dump()));
  refused(400, "unknown report kind",
          agent_post("/v1/agent/reports", cred,
                     json::array({{{"kind", "reboot"}, {"time", 1}, {"boot_id", "b"}}}).dump()));
  refused(400, "reports not an array",
          agent_post("/v1/agent/reports", cred, json{{"kind", "crash"}}.dump()));
  json many = json::array();
  for (int i = 0; i < 300; ++i) many.push_back({{"kind", "crash"}, {"time", i}, {"boot_id", "b"}});
  {
    auto before = snapshot();
    auto r = c().request("POST", "/v1/agent/reports", cred, many.dump());
    EXPECT_TRUE(r.status == 413 || r.status == 400) << r.status;
    EXPECT_TRUE(r.is_error_shape());
    EXPECT_EQ(snapshot(), before);
  }
  refused(401, "operator route with a host credential", [&] { return c().get("/v1/rings", cred); });
}

// ------------------------------------------------------------------ enrollment trust

json enroll_body(const std::string& token, const std::string& host, json labels = json::object()) {
  return {
      {"enrollment_token", token}, {"host_id", host}, {"labels", labels}, {"agent_version", "t"}};
}

TEST_F(Api, EnrollmentTokensAreListedLimitedAndRevoked) {
  basic_setup();
  auto viewer = token("viewer1", "viewer");
  auto op = token("op1", "operator");
  auto created = expect(c().post("/v1/enrollment-tokens", op,
                                 {{"name", "lab"},
                                  {"max_uses", 1},
                                  {"tenant", "acme"},
                                  {"rate_per_min", 100},
                                  {"expires_in_s", 3600}}),
                        201, "create");
  std::string secret = created.value("token", "");
  ASSERT_FALSE(secret.empty());
  EXPECT_EQ(created["max_uses"], 1);
  EXPECT_EQ(created["tenant"], "acme");
  EXPECT_EQ(expect(c().post("/v1/agent/enroll", "", enroll_body(secret, kHost1)), 200, "enroll")
                .value("host_id", ""),
            kHost1);
  EXPECT_EQ(expect(c().get("/v1/hosts/" + kHost1, kAdmin), 200, "host")["tenant"], "acme");
  auto post = [&](const std::string& path, const std::string& tok, const json& body) {
    return [this, path, tok, body] { return c().post(path, tok, body); };
  };
  refused(403, "a used-up token", post("/v1/agent/enroll", "", enroll_body(secret, kHost2)));
  // The list: uses and limits, never the secret (nor its hash).
  auto list = c().get("/v1/enrollment-tokens", op);
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body.find(secret), std::string::npos);
  EXPECT_EQ(list.body.find(proto::sha256_hex(secret)), std::string::npos);
  auto lab = list.json()["enrollment_tokens"][0];
  EXPECT_EQ(lab["name"], "lab");
  EXPECT_EQ(lab["uses"], 1);
  EXPECT_EQ(lab["state"], "used_up");
  EXPECT_TRUE(lab["expires"].is_number());
  // Hostile input on the new routes.
  refused(403, "viewer cannot list enrollment tokens",
          [&] { return c().get("/v1/enrollment-tokens", viewer); });
  refused(401, "no token", [&] { return c().get("/v1/enrollment-tokens", ""); });
  refused(403, "viewer cannot revoke",
          [&] { return c().del("/v1/enrollment-tokens/lab", viewer); });
  refused(404, "revoke an unknown token",
          [&] { return c().del("/v1/enrollment-tokens/nope", op); });
  refused(400, "revoke a bad name",
          [&] { return c().del("/v1/enrollment-tokens/" + std::string(70, 'x'), op); });
  refused(400, "max_uses of the wrong type",
          post("/v1/enrollment-tokens", op, {{"name", "e2"}, {"max_uses", "lots"}}));
  refused(400, "max_uses 0", post("/v1/enrollment-tokens", op, {{"name", "e2"}, {"max_uses", 0}}));
  refused(400, "a tenant that is no label value",
          post("/v1/enrollment-tokens", op, {{"name", "e2"}, {"tenant", std::string(300, 't')}}));
  refused(400, "an unknown field",
          post("/v1/enrollment-tokens", op, {{"name", "e2"}, {"token", "choose-my-own"}}));
  refused(400, "malformed JSON",
          [&] { return c().request("POST", "/v1/enrollment-tokens", op, "{\"name\":"); });
  refused(409, "an existing name", post("/v1/enrollment-tokens", op, {{"name", "lab"}}));
  // Revoked: enrolls nobody; idempotent.
  auto fleet = expect(c().post("/v1/enrollment-tokens", op, {{"name", "fleet2"}}), 201, "fleet2")
                   .value("token", "");
  EXPECT_EQ(c().del("/v1/enrollment-tokens/fleet2", op).status, 204);
  EXPECT_EQ(c().del("/v1/enrollment-tokens/fleet2", op).status, 204);
  refused(401, "a revoked token", post("/v1/agent/enroll", "", enroll_body(fleet, kHost2)));
  // Revocation and every enrollment are in the audit log, with their token.
  auto ev = c().get("/v1/events?limit=1000", kAdmin).json()["events"];
  bool enrolled = false, revoked = false;
  for (const auto& e : ev) {
    if (e["kind"] == "host_enrolled" && e["data"]["token"] == "lab") enrolled = true;
    if (e["kind"] == "enrollment_token_revoked" && e["actor"] == "op1") revoked = true;
  }
  EXPECT_TRUE(enrolled);
  EXPECT_TRUE(revoked);
}

TEST_F(Api, EnrollmentIsRateLimitedPerTokenWithRetryAfter) {
  basic_setup();
  auto tok =
      expect(c().post("/v1/enrollment-tokens", kAdmin, {{"name", "slow"}, {"rate_per_min", 2}}),
             201, "create")
          .value("token", "");
  char id[37];
  for (int i = 0; i < 2; ++i) {
    std::snprintf(id, sizeof id, "0e3b7a2c-2222-4222-8333-%012d", i);
    EXPECT_EQ(c().post("/v1/agent/enroll", "", enroll_body(tok, id)).status, 200);
  }
  std::snprintf(id, sizeof id, "0e3b7a2c-2222-4222-8333-%012d", 9);
  auto before = snapshot();
  auto r = c().post("/v1/agent/enroll", "", enroll_body(tok, id));
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(r.is_error_shape());
  EXPECT_EQ(r.json()["error"]["code"], "rate_limited");
  auto wait = std::stoi(std::string(r.header("retry-after")));
  EXPECT_GE(wait, 1);
  EXPECT_LE(wait, 30);  // one enrollment comes back every 30 s at 2 a minute
  EXPECT_EQ(snapshot(), before);
  EXPECT_NE(c().get("/metrics", "")
                .body.find("ringfence_enroll_refused_total{reason=\"rate_limited\"} 1"),
            std::string::npos);
}

TEST_F(Api, AHostIsTakenOverOnlyWithItsCredentialOrAnOperatorsReset) {
  basic_setup();
  auto cred = enroll(kHost1, {{"os", "linux"}});
  auto viewer = token("viewer1", "viewer");
  auto op = token("op1", "operator");
  auto other = expect(c().post("/v1/enrollment-tokens", kAdmin, {{"name", "other"}}), 201, "other")
                   .value("token", "");
  auto post = [&](const std::string& path, const std::string& tok, const json& body) {
    return [this, path, tok, body] { return c().post(path, tok, body); };
  };
  refused(409, "another token takes an enrolled id over",
          post("/v1/agent/enroll", "", enroll_body(other, kHost1, {{"os", "evil"}})));
  refused(401, "a wrong credential",
          post("/v1/agent/enroll", kHost1 + ".00", enroll_body(other, kHost1)));
  refused(
      401, "another host's credential",
      post("/v1/agent/enroll", kHost2 + cred.substr(kHost1.size()), enroll_body(other, kHost1)));
  EXPECT_EQ(c().get("/v1/agent/desired", cred).status, 200);  // the real host is untouched
  // The reset route: roles and input.
  const std::string reset = "/v1/hosts/" + kHost1 + "/reset";
  refused(403, "viewer cannot reset", post(reset, viewer, {{"reason", "x"}}));
  refused(401, "a host cannot reset itself", post(reset, cred, {{"reason", "x"}}));
  refused(400, "reset without a reason", post(reset, op, json::object()));
  refused(400, "reset with an oversized reason",
          post(reset, op, {{"reason", std::string(5000, 'r')}}));
  refused(400, "reset: malformed JSON", [&] { return c().request("POST", reset, op, "{"); });
  refused(400, "reset: a bad host id", post("/v1/hosts/not-a-uuid/reset", op, {{"reason", "x"}}));
  refused(404, "reset: an unknown host",
          post("/v1/hosts/" + kHost2 + "/reset", op, {{"reason", "x"}}));
  auto after = expect(c().post(reset, op, {{"reason", "re-imaged"}}), 200, "reset");
  EXPECT_EQ(after["reset"], true);
  EXPECT_EQ(c().get("/v1/agent/desired", cred).status, 401);
  auto fresh = expect(c().post("/v1/agent/enroll", "", enroll_body(other, kHost1)), 200, "enroll");
  EXPECT_EQ(c().get("/v1/agent/desired", fresh.value("credential", "")).status, 200);
  bool audited = false;
  auto events = c().get("/v1/events?limit=1000", kAdmin).json();
  for (const auto& e : events["events"]) {
    if (e["kind"] == "host_reset" && e["actor"] == "op1" && e["data"]["reason"] == "re-imaged")
      audited = true;
  }
  EXPECT_TRUE(audited);
}

TEST_F(Api, EnrollmentLabelsAreBounded) {
  basic_setup();
  enroll(kHost1);  // makes the token
  json many = json::object();
  for (int i = 0; i < 33; ++i) many["k" + std::to_string(i)] = "v";
  auto post = [&](const json& body) {
    return [this, body] { return c().post("/v1/agent/enroll", "", body); };
  };
  refused(400, "33 labels", post(enroll_body(enroll_token_, kHost2, many)));
  refused(400, "a 200-byte label value",
          post(enroll_body(enroll_token_, kHost2, {{"os", std::string(200, 'v')}})));
  refused(400, "a 100-byte label key",
          post(enroll_body(enroll_token_, kHost2, {{std::string(100, 'k'), "v"}})));
}

TEST_F(Api, ReportBatchesAreLimitedAndMadeUpChannelsMakeNoSeries) {
  boot({"--reports-per-min", "256"});
  basic_setup();
  auto cred = enroll(kHost1);
  json batch = json::array();
  for (int i = 0; i < 256; ++i) batch.push_back({{"kind", "crash"}, {"time", i}, {"boot_id", "b"}});
  EXPECT_EQ(c().request("POST", "/v1/agent/reports", cred, batch.dump()).status, 202);
  auto r = c().request("POST", "/v1/agent/reports", cred,
                       json::array({{{"kind", "crash"}, {"time", 999}, {"boot_id", "b"}}}).dump());
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(r.is_error_shape());
  auto wait = std::stoi(std::string(r.header("retry-after")));
  EXPECT_GE(wait, 1);
  EXPECT_LE(wait, 60);
  // Heartbeats and reports naming channels that do not exist create no series.
  for (int i = 0; i < 20; ++i) {
    json hb = {
        {"boot_id", "b"},
        {"uptime_s", 5},
        {"channels", {{"zz-made-up-" + std::to_string(i), {{"version", 1}, {"state", "active"}}}}}};
    EXPECT_EQ(c().request("POST", "/v1/agent/heartbeat", cred, hb.dump()).status, 204);
  }
  auto m = c().get("/metrics", "").body;
  EXPECT_EQ(m.find("zz-made-up"), std::string::npos);
  EXPECT_NE(m.find("ringfence_reports_refused_total{reason=\"rate_limited\"} 1"),
            std::string::npos);
  EXPECT_NE(m.find("ringfence_heartbeat_channels_ignored_total{reason=\"unknown_channel\"} 20"),
            std::string::npos);
}

// ------------------------------------------------------------------ credentials and roles

TEST_F(Api, CredentialsAndRoles) {
  basic_setup();
  auto viewer = token("viewer1", "viewer");
  auto op = token("op1", "operator");
  auto rel = token("rel1", "release");
  const json ring = {{"name", "x"}, {"rank", 3}, {"selector", {{"buckets", {0, 1}}}}};
  auto post = [&](const std::string& path, const std::string& tok, const json& body) {
    return [this, path, tok, body] { return c().post(path, tok, body); };
  };
  refused(401, "no token", post("/v1/rings", "", ring));
  refused(401, "unknown token", post("/v1/rings", "rf_not-a-token", ring));
  refused(401, "unknown token on a read", [&] { return c().get("/v1/rings", "rf_not-a-token"); });
  refused(401, "Basic instead of Bearer", [&] {
    return c().request("GET", "/v1/rings", "", std::nullopt, "",
                       {{"Authorization", "Basic YWRtaW46YWRtaW4="}});
  });
  refused(401, "empty bearer", [&] {
    return c().request("GET", "/v1/rings", "", std::nullopt, "", {{"Authorization", "Bearer "}});
  });
  refused(401, "admin token with a suffix", [&] { return c().get("/v1/rings", kAdmin + "x"); });
  refused(403, "viewer cannot create rings", post("/v1/rings", viewer, ring));
  refused(403, "viewer cannot delete rings", [&] { return c().del("/v1/rings/rest", viewer); });
  refused(403, "viewer cannot enroll", post("/v1/enrollment-tokens", viewer, {{"name", "e"}}));
  refused(403, "viewer cannot start rollouts",
          post("/v1/rollouts/1/start", viewer, json::object()));
  refused(403, "operator cannot create releases",
          post("/v1/channels/det/releases", op, {{"sha256", sha_}}));
  refused(403, "operator cannot create channels", post("/v1/channels", op, {{"name", "c2"}}));
  refused(403, "operator cannot create policies",
          post("/v1/policies", op, {{"name", "p2"}, {"stages", {{{"ring", "rest"}}}}}));
  refused(403, "operator cannot create rollouts",
          post("/v1/rollouts", op, {{"channel", "det"}, {"version", 1}, {"policy", "std"}}));
  refused(403, "operator cannot stop everything",
          post("/v1/emergency-stop", op, {{"reason", "x"}}));
  refused(403, "operator cannot upload",
          [&] { return c().request("POST", "/v1/blobs", op, "abc", "application/octet-stream"); });
  refused(403, "release cannot create tokens",
          post("/v1/tokens", rel, {{"name", "t2"}, {"role", "admin"}}));
  refused(403, "release cannot list tokens", [&] { return c().get("/v1/tokens", rel); });
  refused(403, "release cannot delete tokens", [&] { return c().del("/v1/tokens/viewer1", rel); });
  refused(403, "release cannot set a validator command",
          post("/v1/channels", rel, {{"name", "c3"}, {"validator", {{"argv", {"/bin/true"}}}}}));
  // 403 names the role that is missing.
  auto r = c().post("/v1/rings", viewer, ring);
  EXPECT_NE(r.error_message().find("operator"), std::string::npos) << r.body;
  // What each role may do.
  EXPECT_EQ(c().get("/v1/rings", viewer).status, 200);
  EXPECT_EQ(c().post("/v1/rollouts/preview", viewer, {{"policy", "std"}}).status, 200);
  EXPECT_EQ(c().post("/v1/rings", op, ring).status, 201);
  EXPECT_EQ(c().post("/v1/enrollment-tokens", op, {{"name", "e1"}}).status, 201);
  EXPECT_EQ(c().post("/v1/channels", rel, {{"name", "c4"}}).status, 201);
  EXPECT_EQ(
      c().post("/v1/rollouts", rel, {{"channel", "det"}, {"version", 1}, {"policy", "std"}}).status,
      201);
  // Tokens are stored hashed: the database file never holds the secret.
  auto db = read_file(data() + "/ringfence.db") + read_file(data() + "/ringfence.db-wal");
  EXPECT_EQ(db.find(viewer), std::string::npos);
  EXPECT_EQ(db.find(kAdmin), std::string::npos);
}

// ------------------------------------------------------------------ state machine over HTTP

TEST_F(Api, InvalidTransitionsAre409NamingTheCurrentState) {
  basic_setup();
  auto ro = expect(
      c().post("/v1/rollouts", kAdmin, {{"channel", "det"}, {"version", 1}, {"policy", "std"}}),
      201, "rollout");
  auto id = std::to_string(ro["id"].get<int>());
  auto action = [&](const std::string& a, json body = json::object()) {
    return [this, id, a, body] { return c().post("/v1/rollouts/" + id + "/" + a, kAdmin, body); };
  };
  for (const char* a : {"pause", "resume", "approve"}) {
    refused(409, std::string(a) + " a pending rollout", action(a));
    EXPECT_NE(action(a)().error_message().find("pending"), std::string::npos) << a;
  }
  refused(409, "skip a pending rollout", action("skip", {{"to", 1}, {"reason", "urgent"}}));
  refused(409, "a second active rollout on the channel", [&] {
    return c().post("/v1/rollouts", kAdmin,
                    {{"channel", "det"}, {"version", 1}, {"policy", "std"}});
  });
  refused(404, "unknown action", action("explode"));
  refused(404, "action on an unknown rollout",
          [&] { return c().post("/v1/rollouts/999/start", kAdmin, json::object()); });
  refused(415, "action with a wrong content type", [&] {
    return c().request("POST", "/v1/rollouts/" + id + "/start", kAdmin, "x", "text/plain");
  });
  refused(400, "action with a non-object body",
          [&] { return c().request("POST", "/v1/rollouts/" + id + "/start", kAdmin, "[1]"); });

  auto started = expect(action("start")(), 200, "start");
  EXPECT_EQ(started["state"], "running");
  auto n = events_count();
  EXPECT_EQ(expect(action("start")(), 200, "start again")["state"], "running");  // idempotent
  EXPECT_EQ(events_count(), n);
  refused(400, "skip without a reason", action("skip", {{"to", 1}}));
  refused(409, "skip past a canary that has not passed",
          action("skip", {{"to", 1}, {"reason", "urgent"}}));
  refused(400, "skip to a stage that does not exist",
          action("skip", {{"to", 7}, {"reason", "urgent"}}));
  EXPECT_EQ(expect(action("pause")(), 200, "pause")["state"], "paused");
  n = events_count();
  EXPECT_EQ(expect(action("pause")(), 200, "pause again")["state"], "paused");
  EXPECT_EQ(events_count(), n);
  EXPECT_EQ(expect(action("abort", {{"reason", "test"}})(), 200, "abort")["state"], "aborted");
  n = events_count();
  EXPECT_EQ(expect(action("abort")(), 200, "abort again")["state"], "aborted");
  EXPECT_EQ(events_count(), n);
  for (const char* a : {"start", "pause", "resume", "approve"}) {
    refused(409, std::string(a) + " an aborted rollout", action(a));
    EXPECT_NE(action(a)().error_message().find("aborted"), std::string::npos) << a;
  }
  // The quarantined release cannot roll out again.
  refused(409, "rollout of a quarantined release", [&] {
    return c().post("/v1/rollouts", kAdmin,
                    {{"channel", "det"}, {"version", 1}, {"policy", "std"}});
  });
  // Emergency stop: a pending rollout may not start.
  auto sha2 = upload(R"({"rules":[9]})");
  expect(c().post("/v1/channels/det/releases", kAdmin, {{"sha256", sha2}}), 201, "release 2");
  auto ro2 = expect(
      c().post("/v1/rollouts", kAdmin, {{"channel", "det"}, {"version", 2}, {"policy", "std"}}),
      201, "rollout 2");
  expect(c().post("/v1/emergency-stop", kAdmin, {{"reason", "incident"}}), 200, "stop");
  refused(409, "start during an emergency stop", [&] {
    return c().post("/v1/rollouts/" + std::to_string(ro2["id"].get<int>()) + "/start", kAdmin,
                    json::object());
  });
}

// ------------------------------------------------------------------ process life

TEST_F(Api, SigtermExitsCleanlyAndARestartKeepsEverything) {
  basic_setup();
  auto viewer = token("viewer1", "viewer");
  auto cred = enroll(kHost1);
  auto ro = expect(
      c().post("/v1/rollouts", kAdmin, {{"channel", "det"}, {"version", 1}, {"policy", "std"}}),
      201, "rollout");
  auto id = std::to_string(ro["id"].get<int>());
  expect(c().post("/v1/rollouts/" + id + "/start", kAdmin, json::object()), 200, "start");
  expect(c().post("/v1/rollouts/" + id + "/pause", kAdmin, json::object()), 200, "pause");
  auto rings = c().get("/v1/rings", kAdmin).body;
  auto releases = c().get("/v1/channels/det/releases", kAdmin).body;
  auto policies = c().get("/v1/policies", kAdmin).body;
  auto key = c().get("/v1/signing-key", "").body;
  auto events = events_count();

  // A held long poll is answered at shutdown, and the process exits 0 promptly.
  auto first = c().get("/v1/agent/desired", cred);
  Connection poll(c().port());
  ASSERT_TRUE(
      poll.send("GET /v1/agent/desired?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                cred + "\r\nIf-None-Match: " + first.header("etag") + "\r\n\r\n"));
  ASSERT_TRUE(testing::eventually([&] {
    return c().get("/metrics", "").body.find("ringfence_long_polls 1") != std::string::npos;
  }));
  auto t0 = std::chrono::steady_clock::now();
  auto status = server_->terminate(8s);
  ASSERT_TRUE(status) << "no exit within 8 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 6s);
  EXPECT_EQ(poll.read_response(2s).status, 304);

  boot();
  EXPECT_EQ(c().get("/v1/rings", kAdmin).body, rings);
  EXPECT_EQ(c().get("/v1/channels/det/releases", kAdmin).body, releases);
  EXPECT_EQ(c().get("/v1/policies", kAdmin).body, policies);
  EXPECT_EQ(c().get("/v1/signing-key", "").body, key);
  EXPECT_EQ(c().get("/v1/rings", viewer).status, 200);        // tokens survive
  EXPECT_EQ(c().get("/v1/agent/desired", cred).status, 200);  // host credentials survive
  auto r = expect(c().get("/v1/rollouts/" + id, kAdmin), 200, "rollout after restart");
  EXPECT_EQ(r["state"], "paused");
  EXPECT_GE(events_count(), events);
}

TEST_F(Api, ReadyzIs503FromSigtermOnWhileTheGracePeriodServes) {
  boot({"--shutdown-grace-s", "30"});
  expect(c().get("/readyz", ""), 200, "readyz before");
  server_->process().signal(SIGTERM);
  ASSERT_TRUE(testing::eventually([&] { return c().get("/readyz", "").status == 503; }))
      << "readyz still " << c().get("/readyz", "").status;
  auto r = c().get("/readyz", "");
  EXPECT_TRUE(r.is_error_shape()) << r.raw.substr(0, 300);
  EXPECT_EQ(r.error_code(), "shutting_down");
  EXPECT_FALSE(r.header("retry-after").empty());
  // Everything else is still served during the grace period.
  expect(c().get("/healthz", ""), 200, "healthz while shutting down");
  expect(c().get("/v1/rings", kAdmin), 200, "rings while shutting down");
  // A second signal ends the wait: a clean exit well before the 30 s.
  auto status = server_->terminate(8s);
  ASSERT_TRUE(status) << "no exit within 8 s of the second SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

TEST(ApiProcess, RingfenceConfigNamesTheConfigFile) {
  testing::TempDir dir;
  auto conf = dir.path() + "/server.toml";
  std::ofstream(conf) << "upload-limit = 1024\n";
  auto data = dir.path() + "/data";
  {
    Server s(data, {{"RINGFENCE_ADMIN_TOKEN", kAdmin}, {"RINGFENCE_CONFIG", conf}});
    ASSERT_GT(s.port(), 0) << read_file(data + ".log");
    Client c(s.port());
    auto big =
        c.request("POST", "/v1/blobs", kAdmin, std::string(4096, 'x'), "application/octet-stream");
    EXPECT_EQ(big.status, 413) << "the config file's upload-limit is not in force";
    EXPECT_EQ(
        c.request("POST", "/v1/blobs", kAdmin, std::string(1000, 'x'), "application/octet-stream")
            .status,
        201);
  }
  // A file it names that is missing is a start-up error naming the file.
  auto missing = dir.path() + "/missing.toml";
  auto p = testing::Process::start(
      {testing::built_program("server/ringfence-server"), "--data-dir", dir.path() + "/d2",
       "--listen", "127.0.0.1:0"},
      {{"RINGFENCE_ADMIN_TOKEN", kAdmin}, {"RINGFENCE_CONFIG", missing}}, dir.path() + "/err.log");
  auto st = p.wait(10s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) != 0);
  EXPECT_NE(read_file(dir.path() + "/err.log").find(missing), std::string::npos)
      << read_file(dir.path() + "/err.log");
}

TEST(ApiProcess, WithoutAnEnvTokenTheAdminTokenIsWritten0600) {
  testing::TempDir dir;
  auto data = dir.path() + "/data";
  std::string tok;
  {
    Server s(data, {{"RINGFENCE_ADMIN_TOKEN", ""}});
    ASSERT_GT(s.port(), 0) << read_file(data + ".log");
    auto path = data + "/admin.token";
    EXPECT_EQ(file_mode(path), 0600u);
    EXPECT_EQ(file_mode(data + "/signing.key"), 0600u);
    tok = trim(read_file(path));
    ASSERT_GE(tok.size(), 16u);
    Client c(s.port());
    EXPECT_EQ(c.get("/v1/tokens", tok).status, 200);
    EXPECT_EQ(c.get("/v1/tokens", tok + "x").status, 401);
    auto st = s.terminate();
    ASSERT_TRUE(st);
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
  }
  // A restart keeps the token (it is not replaced by a new random one).
  Server again(data, {{"RINGFENCE_ADMIN_TOKEN", ""}});
  ASSERT_GT(again.port(), 0);
  EXPECT_EQ(Client(again.port()).get("/v1/tokens", tok).status, 200);
  EXPECT_EQ(trim(read_file(data + "/admin.token")), tok);
}

TEST(ApiProcess, TheDashboardServesItsFixedFilesOnlyWithAWebDir) {
  testing::TempDir dir;
  auto web = dir.path() + "/web";
  std::filesystem::create_directories(web + "/vendor");
  std::ofstream(web + "/index.html") << "<!doctype html><title>rf</title>";
  std::ofstream(web + "/app.js") << "console.log(1);";
  std::ofstream(web + "/app.css") << "body{}";
  std::ofstream(web + "/vendor/uPlot.iife.min.js") << "var uPlot;";
  // vendor/uPlot.min.css left out on purpose: a missing file is a 404, not a 500.
  std::ofstream(dir.path() + "/secret.txt") << "not served";
  auto data = dir.path() + "/data";
  Server s(data, {{"RINGFENCE_ADMIN_TOKEN", kAdmin}}, {"--web-dir", web});
  ASSERT_GT(s.port(), 0) << read_file(data + ".log");
  Client c(s.port());
  struct File {
    const char* route;
    const char* type_prefix;
    const char* body;
  };
  for (const File& f :
       {File{"/", "text/html", "<!doctype html><title>rf</title>"},
        File{"/app.js", "application/javascript", "console.log(1);"},
        File{"/app.css", "text/css", "body{}"},
        File{"/vendor/uPlot.iife.min.js", "application/javascript", "var uPlot;"}}) {
    auto r = c.get(f.route, "");
    EXPECT_EQ(r.status, 200) << f.route;
    EXPECT_EQ(r.body, f.body) << f.route;
    EXPECT_EQ(r.header("content-type").rfind(f.type_prefix, 0), 0u)
        << f.route << ": " << r.header("content-type");
  }
  auto missing = c.get("/vendor/uPlot.min.css", "");
  EXPECT_EQ(missing.status, 404);
  EXPECT_TRUE(missing.is_error_shape());
  // Only the fixed list: no path is built from the request.
  for (const char* p : {"/index.html", "/secret.txt", "/../secret.txt", "/%2e%2e/secret.txt",
                        "/vendor/../app.js"}) {
    auto r = c.get(p, "");
    EXPECT_TRUE(r.status == 404 || r.status == 400) << p << ": " << r.status;
    EXPECT_EQ(r.body.find("not served"), std::string::npos) << p;
  }
  // --no-web wins over --web-dir: "/" is not a route at all.
  testing::TempDir off;
  Server no_web(off.path() + "/data", {{"RINGFENCE_ADMIN_TOKEN", kAdmin}},
                {"--web-dir", web, "--no-web"});
  ASSERT_GT(no_web.port(), 0);
  EXPECT_EQ(Client(no_web.port()).get("/", "").status, 404);
  EXPECT_EQ(Client(no_web.port()).get("/app.js", "").status, 404);
}

TEST(ApiProcess, WithoutAWebDirTheRepoDashboardIsServedUnlessDisabled) {
  const std::string repo_web = RINGFENCE_SOURCE_DIR "/web";
  ASSERT_TRUE(std::filesystem::is_regular_file(repo_web + "/index.html")) << repo_web;
  // No --web-dir (the Api fixture's servers): the repo's web/ as it was at build time.
  testing::TempDir dir;
  Server plain(dir.path() + "/data", {{"RINGFENCE_ADMIN_TOKEN", kAdmin}});
  ASSERT_GT(plain.port(), 0);
  auto index = Client(plain.port()).get("/", "");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.body, read_file(repo_web + "/index.html"));
  EXPECT_EQ(Client(plain.port()).get("/app.js", "").body, read_file(repo_web + "/app.js"));
  // Disabled by an empty --web-dir, by --no-web, or by RINGFENCE_NO_WEB.
  const std::vector<std::pair<std::vector<std::string>, std::map<std::string, std::string>>> off = {
      {{"--web-dir", ""}, {}}, {{"--no-web"}, {}}, {{}, {{"RINGFENCE_NO_WEB", "1"}}}};
  for (const auto& [flags, env] : off) {
    testing::TempDir d;
    auto with_env = env;
    with_env["RINGFENCE_ADMIN_TOKEN"] = kAdmin;
    Server s(d.path() + "/data", with_env, flags);
    ASSERT_GT(s.port(), 0) << read_file(d.path() + "/data.log");
    EXPECT_EQ(Client(s.port()).get("/", "").status, 404) << (flags.empty() ? "env" : flags[0]);
    EXPECT_EQ(Client(s.port()).get("/v1/signing-key", "").status, 200);
  }
}

TEST(ApiProcess, BadStartUpIsOneClearLineAndExitCode1) {
  testing::TempDir dir;
  // A data dir that is a file cannot be used.
  std::ofstream(dir.path() + "/file") << "x";
  auto p = testing::Process::start({testing::built_program("server/ringfence-server"), "--data-dir",
                                    dir.path() + "/file", "--listen", "127.0.0.1:0"},
                                   {{"RINGFENCE_ADMIN_TOKEN", kAdmin}}, dir.path() + "/err.log");
  auto st = p.wait(10s);
  ASSERT_TRUE(st);
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) != 0);
  EXPECT_NE(read_file(dir.path() + "/err.log").find("ringfence-server:"), std::string::npos);
  // A malformed listen address too.
  auto q = testing::Process::start({testing::built_program("server/ringfence-server"), "--data-dir",
                                    dir.path() + "/d2", "--listen", "nonsense"},
                                   {{"RINGFENCE_ADMIN_TOKEN", kAdmin}}, dir.path() + "/err2.log");
  auto st2 = q.wait(10s);
  ASSERT_TRUE(st2);
  EXPECT_TRUE(WIFEXITED(*st2) && WEXITSTATUS(*st2) != 0);
}

}  // namespace
}  // namespace ringfence::apitest
