#include "cli/progress.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/output.hpp"

namespace ringfence::cli {
using nlohmann::json;

namespace {
constexpr const char* kReset = "\x1b[0m";
constexpr const char* kGreen = "\x1b[32m";
constexpr const char* kCyan = "\x1b[36m";
constexpr const char* kRed = "\x1b[31m";
constexpr const char* kDim = "\x1b[2m";
constexpr const char* kBold = "\x1b[1m";
constexpr const char* kYellow = "\x1b[33m";

std::int64_t count(const json& s, const char* key) {
  auto it = s.find(key);
  return it != s.end() && it->is_number() ? it->get<std::int64_t>() : 0;
}
double number(const json& s, const char* key) {
  auto it = s.find(key);
  return it != s.end() && it->is_number() ? it->get<double>() : 0.0;
}
std::string str(const json& s, const char* key) {
  auto it = s.find(key);
  return it != s.end() && it->is_string() ? it->get<std::string>() : std::string();
}
std::string fmt(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}
std::string pct(double rate) { return fmt("%.1f%%", rate * 100.0); }
std::string paint(const std::string& s, const char* code, bool color) {
  return color ? std::string(code) + s + kReset : s;
}
std::string pad(std::string s, std::size_t n) {
  if (s.size() < n) s += std::string(n - s.size(), ' ');
  return s;
}
const json& gate_of(const json& stage) {
  static const json kEmpty = json::object();
  auto it = stage.find("gate");
  return it != stage.end() && it->is_object() ? *it : kEmpty;
}
std::string state_text(const json& r) {
  std::string state = str(r, "state"), phase = str(r, "phase");
  return phase.empty() || phase == state ? state : state + " (" + phase + ")";
}
}  // namespace

std::string stage_bar(const json& stage, int width, bool color) {
  auto exposed = count(stage, "exposed");
  auto failed = std::min(count(stage, "failed"), exposed);
  auto healthy = std::min(count(stage, "healthy"), exposed - failed);
  auto applied = std::clamp(count(stage, "applied") - failed - healthy, std::int64_t{0},
                            exposed - failed - healthy);
  if (exposed <= 0 || width <= 0)
    return paint(std::string(static_cast<size_t>(std::max(width, 0)), '.'), kDim, color);
  // Cells per segment, rounding so that any non-zero count shows at least one cell.
  auto cells = [&](std::int64_t n) {
    if (n <= 0) return 0;
    return std::max(1, static_cast<int>(std::lround(static_cast<double>(n) * width /
                                                    static_cast<double>(exposed))));
  };
  int f = cells(failed), h = cells(healthy), a = cells(applied);
  while (f + h + a > width) {  // give back the rounding surplus from the largest segment
    int& m = h >= a && h >= f ? h : (a >= f ? a : f);
    --m;
  }
  int rest = width - f - h - a;
  auto rep = [](const char* glyph, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += glyph;
    return s;
  };
  std::string out;
  if (h) out += paint(rep("█", h), kGreen, color);
  if (a) out += paint(rep("▓", a), kCyan, color);
  if (f) out += paint(rep("✗", f), kRed, color);
  if (rest) out += paint(rep("░", rest), kDim, color);
  return out;
}

std::string summary_line(const json& r) {
  auto stages = r.value("stages", json::array());
  std::string s = "rollout " + cell(r.value("id", json())) + " " + str(r, "channel") + " v" +
                  cell(r.value("version", json())) + ": " + state_text(r);
  if (!stages.empty()) {
    s += ", stage " + std::to_string(count(r, "stage")) + " of " + std::to_string(stages.size());
  }
  if (r.contains("halt_reason")) s += " - " + str(r, "halt_reason");
  if (r.value("frozen_by_emergency_stop", false)) s += " [EMERGENCY STOP]";
  if (auto b = blocked_text(r); !b.empty()) s += " - " + b;
  return s;
}

std::string blocked_text(const json& r) {
  auto b = r.find("blocked");
  if (b == r.end() || !b->is_object()) return "";
  return "blocked (" + str(*b, "code") + "): " + str(*b, "message");
}

std::string pacing_text(const json& stage) {
  auto p = stage.find("pacing");
  if (p == stage.end() || !p->is_object() || !p->contains("window")) return "";
  return "wave " + cell(p->value("window", json())) + "/" + cell(p->value("ranked_hosts", json())) +
         " (" + cell(p->value("confirmed", json())) + " confirmed)";
}

std::vector<std::string> stage_lines(const json& r) {
  std::vector<std::string> out;
  auto stages = r.value("stages", json::array());
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const auto& s = stages[i];
    const auto& g = gate_of(s);
    auto params = g.value("params", json::object());
    std::string line = "stage " + std::to_string(i) + " " + str(s, "ring") + " " +
                       cell(s.value("percent", json())) + "% " + str(s, "state") +
                       " exposed=" + std::to_string(count(s, "exposed")) +
                       " applied=" + std::to_string(count(s, "applied")) +
                       " healthy=" + std::to_string(count(s, "healthy")) +
                       " failed=" + std::to_string(count(s, "failed")) +
                       " silent=" + std::to_string(count(s, "silent")) +
                       " gate=" + str(g, "verdict") +
                       " statistic=" + fmt("%.2f", number(g, "statistic")) + "/" +
                       fmt("%.2f", number(g, "upper")) + " rate=" + pct(number(g, "failure_rate")) +
                       "/" + pct(number(params, "max_failure_rate"));
    if (auto p = pacing_text(s); !p.empty()) line += " pacing=" + p.substr(5, p.find(' ', 5) - 5);
    out.push_back(std::move(line));
  }
  return out;
}

std::vector<std::string> render_rollout(const json& r, const RenderOptions& o) {
  std::vector<std::string> lines;
  std::string state = str(r, "state");
  const char* state_color = state == "completed" ? kGreen
                            : (state == "halted" || state == "rolled_back" || state == "aborted")
                                ? kRed
                            : state == "paused" ? kYellow
                                                : kBold;
  lines.push_back(
      paint("rollout " + cell(r.value("id", json())), kBold, o.color) + "  " + str(r, "channel") +
      " v" + cell(r.value("version", json())) + "  " + paint(state_text(r), state_color, o.color) +
      (r.contains("halt_reason") ? "  " + str(r, "halt_reason") : "") +
      (r.value("frozen_by_emergency_stop", false) ? paint("  EMERGENCY STOP", kRed, o.color) : ""));
  // A stage that cannot progress says why, right under the header.
  if (auto b = blocked_text(r); !b.empty()) lines.push_back(paint("  " + b, kYellow, o.color));
  auto stages = r.value("stages", json::array());
  auto current = static_cast<std::size_t>(count(r, "stage"));
  bool started = state != "pending";
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const auto& s = stages[i];
    const auto& g = gate_of(s);
    auto params = g.value("params", json::object());
    bool here = started && i == current && !rollout_ended(state);
    std::string marker = here ? paint("▶", kBold, o.color) : " ";
    std::string head = marker + " " + std::to_string(i) + " " + pad(str(s, "ring"), 10) + " " +
                       pad(cell(s.value("percent", json())) + "%", 5) + " " +
                       pad(str(s, "state").empty() ? "-" : str(s, "state"), 17);
    lines.push_back(
        head + " " + stage_bar(s, o.bar_width, o.color) + "  exposed " +
        std::to_string(count(s, "exposed")) + "  applied " + std::to_string(count(s, "applied")) +
        "  healthy " + paint(std::to_string(count(s, "healthy")), kGreen, o.color) + "  failed " +
        (count(s, "failed") ? paint(std::to_string(count(s, "failed")), kRed, o.color) : "0") +
        "  silent " + std::to_string(count(s, "silent")) +
        (here && !pacing_text(s).empty() ? "  " + pacing_text(s) : ""));
    std::string verdict = str(g, "verdict");
    const char* vcolor = verdict == "pass" ? kGreen : verdict == "fail" ? kRed : kDim;
    std::string gate =
        "      gate " + paint(pad(verdict.empty() ? "-" : verdict, 7), vcolor, o.color) +
        " statistic " + fmt("%.2f", number(g, "statistic")) + " / " +
        fmt("%.2f", number(g, "upper")) + "  failure rate " + pct(number(g, "failure_rate")) +
        " (limit " + pct(number(params, "max_failure_rate")) + ", baseline " +
        pct(number(g, "baseline")) + ")";
    std::string reason = str(g, "reason");
    if (!reason.empty()) gate += paint("  " + reason, kDim, o.color);
    lines.push_back(gate);
  }
  for (auto& l : lines) l = fit(l, o.columns);
  return lines;
}

std::string event_line(const json& ev) {
  std::string t = timestamp(ev.value("time", json()));
  if (t.size() >= 20) t = t.substr(11, 8);  // HH:MM:SS
  std::string s = t + " #" + cell(ev.value("id", json())) + " " + str(ev, "kind");
  if (auto a = str(ev, "actor"); !a.empty()) s += " by " + a;
  std::vector<std::string> parts;
  auto data = ev.value("data", json::object());
  if (data.is_object()) {
    if (data.contains("from") && data.contains("to")) {
      parts.push_back(cell(data["from"]) + " -> " + cell(data["to"]));
    }
    if (data.contains("stage")) parts.push_back("stage " + cell(data["stage"]));
    if (data.contains("to_stage")) parts.push_back("to stage " + cell(data["to_stage"]));
    if (auto c = data.find("counts"); c != data.end() && c->is_object()) {
      parts.push_back("applied " + cell(c->value("applied", json(0))) + " healthy " +
                      cell(c->value("healthy", json(0))) + " failed " +
                      cell(c->value("failed", json(0))));
    }
    if (auto g = data.find("gate"); g != data.end() && g->is_object()) {
      parts.push_back("gate " + str(*g, "verdict") + " statistic " +
                      fmt("%.2f", number(*g, "statistic")));
    }
    if (data.contains("channel") && data.contains("version")) {
      parts.push_back(cell(data["channel"]) + " v" + cell(data["version"]));
    }
    if (auto n = str(data, "name"); !n.empty()) parts.push_back(n);
    if (auto rs = str(data, "reason"); !rs.empty()) parts.push_back(rs);
  }
  if (ev.contains("rollout") && !ev["rollout"].is_null())
    s += " [rollout " + cell(ev["rollout"]) + "]";
  for (std::size_t i = 0; i < parts.size(); ++i) s += (i == 0 ? ": " : ", ") + parts[i];
  return s;
}

bool rollout_ended(const std::string& state) {
  return state == "completed" || state == "halted" || state == "rolled_back" || state == "aborted";
}

Exit exit_for_state(const std::string& state) {
  return state == "halted" || state == "rolled_back" || state == "aborted" ? Exit::RolloutFailed
                                                                           : Exit::Ok;
}

std::string fit(const std::string& line, int columns) {
  if (columns <= 0) return line;
  std::string out;
  int visible = 0;
  bool colored = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    if (c == 0x1b) {  // copy an escape sequence whole; it takes no room
      auto end = line.find('m', i);
      if (end == std::string::npos) break;
      out.append(line, i, end - i + 1);
      colored = true;
      i = end;
      continue;
    }
    if ((c & 0xC0) != 0x80) {  // the first byte of a character
      if (visible == columns) {
        if (colored) out += kReset;
        return out;
      }
      ++visible;
    }
    out += static_cast<char>(c);
  }
  return out;
}

}  // namespace ringfence::cli
