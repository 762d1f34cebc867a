// The CLI's pure parts: no server, no terminal.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli/api.hpp"
#include "cli/commands.hpp"
#include "cli/http_client.hpp"
#include "cli/progress.hpp"
#include "cli/sse.hpp"

namespace ringfence::cli {
namespace {
using nlohmann::json;

TEST(SseParser, FramesSplitAnywhereAndMixedLineEnds) {
  const std::string body =
      ": connected\n\nid: 7\nevent: rollout_start\ndata: {\"id\":7}\n\n"
      "id: 8\r\nevent: gate_waiting\r\ndata: a\r\ndata: b\r\n\r\n";
  for (std::size_t cut = 0; cut <= body.size(); ++cut) {
    SseParser p;
    auto first = p.feed(std::string_view(body).substr(0, cut));
    auto rest = p.feed(std::string_view(body).substr(cut));
    first.insert(first.end(), rest.begin(), rest.end());
    ASSERT_EQ(first.size(), 2u) << "cut at " << cut;
    EXPECT_EQ(first[0].id, "7");
    EXPECT_EQ(first[0].event, "rollout_start");
    EXPECT_EQ(first[0].data, "{\"id\":7}");
    EXPECT_EQ(first[1].id, "8");
    EXPECT_EQ(first[1].data, "a\nb");
    EXPECT_EQ(p.last_event_id(), "8");
  }
}

TEST(SseParser, CommentsAndFramesWithoutDataDispatchNothing) {
  SseParser p;
  EXPECT_TRUE(p.feed(": keep-alive\n\nevent: x\n\n").empty());
  auto evs = p.feed("data:no space\n\n");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].event, "message");
  EXPECT_EQ(evs[0].data, "no space");
}

TEST(ServerUrl, TheCliUsesTheSharedParser) {
  auto u = parse_server_url("http://127.0.0.1:8080/");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port_text(), "8080");
  EXPECT_EQ(u->prefix, "");
  auto v = parse_server_url("http://[::1]:9/rf");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->host, "::1");
  EXPECT_EQ(v->prefix, "/rf");
  EXPECT_EQ(parse_server_url("http://example")->port, 80);
  EXPECT_EQ(parse_server_url("https://example")->port, 443);
  EXPECT_FALSE(parse_server_url("ftp://x"));
  EXPECT_FALSE(parse_server_url("http://x:99999"));
  EXPECT_FALSE(parse_server_url("http://:80"));
}

json stage(int exposed, int applied, int healthy, int failed) {
  return {{"ring", "canary"},
          {"percent", 1},
          {"state", "baking"},
          {"exposed", exposed},
          {"applied", applied},
          {"healthy", healthy},
          {"failed", failed},
          {"silent", 0},
          {"gate",
           {{"verdict", "waiting"},
            {"statistic", 0.5},
            {"upper", 6.86},
            {"failure_rate", 0.1},
            {"baseline", 0.01},
            {"params", {{"max_failure_rate", 0.2}}},
            {"reason", "baking"}}}};
}

std::size_t glyphs(const std::string& s, const std::string& g) {
  std::size_t n = 0;
  for (auto p = s.find(g); p != std::string::npos; p = s.find(g, p + g.size())) ++n;
  return n;
}

TEST(Progress, BarSegmentsFillTheWidth) {
  auto bar = stage_bar(stage(10, 8, 5, 1), 20, false);
  EXPECT_EQ(glyphs(bar, "█"), 10u);  // healthy 5/10
  EXPECT_EQ(glyphs(bar, "▓"), 4u);   // applied, not yet healthy: 2/10
  EXPECT_EQ(glyphs(bar, "✗"), 2u);   // failed 1/10
  EXPECT_EQ(glyphs(bar, "░"), 4u);   // exposed, not applied: 2/10
  // A single failure among many still shows.
  EXPECT_EQ(glyphs(stage_bar(stage(1000, 1000, 999, 1), 10, false), "✗"), 1u);
  EXPECT_EQ(stage_bar(stage(0, 0, 0, 0), 5, false), ".....");
}

TEST(Progress, StageLinesCarryCountsAndGate) {
  json r = {{"id", 3},
            {"channel", "detections"},
            {"version", 7},
            {"state", "running"},
            {"phase", "baking"},
            {"stage", 0},
            {"stages", json::array({stage(4, 3, 2, 1)})}};
  auto lines = stage_lines(r);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("exposed=4 applied=3 healthy=2 failed=1 silent=0"), std::string::npos);
  EXPECT_NE(lines[0].find("gate=waiting statistic=0.50/6.86 rate=10.0%/20.0%"), std::string::npos);
  EXPECT_EQ(summary_line(r), "rollout 3 detections v7: running (baking), stage 0 of 1");
  RenderOptions o;
  o.columns = 40;
  o.color = true;
  for (const auto& l : render_rollout(r, o)) {
    std::string plain;  // visible characters only
    for (std::size_t i = 0; i < l.size(); ++i) {
      if (l[i] == '\x1b') {
        i = l.find('m', i);
        continue;
      }
      if ((static_cast<unsigned char>(l[i]) & 0xC0) != 0x80) plain += '.';
    }
    EXPECT_LE(plain.size(), 40u) << l;
  }
}

TEST(Progress, ABlockedStageSaysWhyAndAPacedStageShowsItsWave) {
  json st = stage(8, 8, 0, 0);
  st["pacing"] = {
      {"initial", 8}, {"growth", 2}, {"confirmed", 3}, {"window", 14}, {"ranked_hosts", 300}};
  json r = {{"id", 3},
            {"channel", "detections"},
            {"version", 7},
            {"state", "running"},
            {"phase", "baking"},
            {"stage", 0},
            {"blocked",
             {{"code", "waiting_for_budget"}, {"message", "3 live hosts wait for the budget"}}},
            {"stages", json::array({st})}};
  EXPECT_EQ(summary_line(r),
            "rollout 3 detections v7: running (baking), stage 0 of 1 - blocked "
            "(waiting_for_budget): 3 live hosts wait for the budget");
  EXPECT_EQ(pacing_text(st), "wave 14/300 (3 confirmed)");
  EXPECT_NE(stage_lines(r)[0].find("pacing=14/300"), std::string::npos) << stage_lines(r)[0];
  RenderOptions o;
  o.columns = 200;
  auto lines = render_rollout(r, o);
  ASSERT_GE(lines.size(), 2u);
  EXPECT_NE(lines[1].find("blocked (waiting_for_budget)"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("wave 14/300"), std::string::npos) << lines[2];
  r.erase("blocked");
  EXPECT_EQ(blocked_text(r), "");
}

TEST(Progress, EventLinesAndEndStates) {
  json ev = {{"id", 42},        {"time", 1'700'000'000'000LL},
             {"actor", "gate"}, {"kind", "rollout_advance"},
             {"rollout", 3},    {"data", {{"from", "baking"}, {"to", "baking"}, {"stage", 1}}}};
  EXPECT_EQ(event_line(ev),
            "22:13:20 #42 rollout_advance by gate [rollout 3]: baking -> baking, stage 1");
  EXPECT_EQ(exit_for_state("completed"), Exit::Ok);
  EXPECT_EQ(exit_for_state("aborted"), Exit::RolloutFailed);
  EXPECT_EQ(exit_for_state("rolled_back"), Exit::RolloutFailed);
  EXPECT_TRUE(rollout_ended("halted"));
  EXPECT_FALSE(rollout_ended("paused"));
}

TEST(Commands, StageFlags) {
  auto s = parse_stage_flag("canary:1.5:60:10:manual");
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["ring"], "canary");
  EXPECT_DOUBLE_EQ((*s)["percent"].get<double>(), 1.5);
  EXPECT_EQ((*s)["bake_s"], 60);
  EXPECT_EQ((*s)["min_hosts"], 10);
  EXPECT_EQ((*s)["approval"], "manual");
  EXPECT_FALSE(parse_stage_flag("canary"));
  EXPECT_FALSE(parse_stage_flag("canary:x"));
  EXPECT_FALSE(parse_stage_flag("canary:1:2:3:sometimes"));
  EXPECT_EQ(parse_stage_flag("canary").error().exit, Exit::Usage);
}

TEST(Api, RefusalKeepsTheServersMessageOnOneLine) {
  HttpResponse r{
      409, "application/json",
      R"({"error":{"code":"invalid_state","message":"cannot pause a rollout\nthat is completed"}})"};
  auto e = refusal(r);
  EXPECT_EQ(e.exit, Exit::Refused);
  EXPECT_EQ(e.message, "cannot pause a rollout that is completed (HTTP 409, invalid_state)");
  HttpResponse v{
      422, "application/json",
      R"({"error":{"code":"validation_failed","message":"content fails the channel schema",)"
      R"("details":{"findings":[{"path":"/rules/0","message":"missing field 'id'"}]}}})"};
  EXPECT_EQ(refusal(v).details, "  - /rules/0: missing field 'id'\n");
  EXPECT_EQ(refusal(HttpResponse{503, "", "busy"}).exit, Exit::Unreachable);
  EXPECT_EQ(url_encode("os=windows,a b"), "os%3Dwindows%2Ca%20b");
}

}  // namespace
}  // namespace ringfence::cli
