#include "cli/watch.hpp"

#include <algorithm>
#include <deque>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/progress.hpp"
#include "cli/sse.hpp"

namespace ringfence::cli {
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// The event stream with reconnection: remembers the last id and resumes after it.
class LiveEvents {
 public:
  LiveEvents(Api& api, std::int64_t after) : api_(api), last_id_(after) {}

  // Waits up to `wait` for events. A refused stream (4xx) is an error; a lost one is retried
  // with backoff (the caller notices silence through its own polling).
  Result<std::vector<json>> poll(milliseconds wait) {
    std::vector<json> out;
    if (!stream_) {
      if (Clock::now() < retry_at_) {
        std::this_thread::sleep_for(std::min(wait, milliseconds(200)));
        return out;
      }
      auto s = api_.event_stream(last_id_);
      if (!s) {
        if (s.error().exit == Exit::Refused) return tl::unexpected(s.error());
        backoff();
        return out;
      }
      stream_ = std::move(*s);
      parser_ = SseParser{};
      backoff_ = milliseconds(250);
    }
    auto piece = stream_->read(wait);
    if (!piece) {
      stream_.reset();
      backoff();
      return out;
    }
    for (auto& ev : parser_.feed(*piece)) {
      auto j = json::parse(ev.data, nullptr, false);
      if (!j.is_object()) continue;
      if (auto id = j.find("id"); id != j.end() && id->is_number_integer()) {
        last_id_ = std::max(last_id_, id->get<std::int64_t>());
      }
      out.push_back(std::move(j));
    }
    return out;
  }

 private:
  void backoff() {
    retry_at_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, milliseconds(5000));
  }
  Api& api_;
  std::int64_t last_id_;
  std::unique_ptr<EventStream> stream_;
  SseParser parser_;
  Clock::time_point retry_at_{};
  milliseconds backoff_{250};
};

bool belongs_to(const json& ev, std::int64_t rollout) {
  auto r = ev.find("rollout");
  return r != ev.end() && r->is_number_integer() && r->get<std::int64_t>() == rollout;
}

}  // namespace

Result<Exit> watch_rollout(Api& api, std::int64_t id, const WatchOptions& o, std::ostream& out) {
  const std::string path = "/v1/rollouts/" + std::to_string(id);
  auto rollout = api.get(path);
  if (!rollout) return tl::unexpected(rollout.error());

  // The rollout's history so far (the last few lines), and where the live stream resumes.
  std::deque<std::string> recent;
  std::int64_t after = 0;
  for (int page = 0; page < 100; ++page) {
    auto evs = api.get("/v1/events?rollout=" + std::to_string(id) +
                       "&limit=1000&after=" + std::to_string(after));
    if (!evs) return tl::unexpected(evs.error());
    auto list = evs->value("events", json::array());
    for (const auto& ev : list) {
      if (o.tty) {
        recent.push_back(event_line(ev));
        if (recent.size() > o.event_lines) recent.pop_front();
      } else {
        out << event_line(ev) << '\n';
      }
    }
    if (!evs->contains("next_after") || list.size() < 1000) {
      if (evs->contains("next_after")) after = (*evs)["next_after"].get<std::int64_t>();
      break;
    }
    after = (*evs)["next_after"].get<std::int64_t>();
  }
  LiveEvents live(api, after);

  std::size_t drawn = 0;                // lines of the last TTY frame
  std::vector<std::string> last_plain;  // the last plain stage lines, to print only changes
  std::string last_summary;
  auto draw = [&](const json& r) {
    if (o.tty) {
      RenderOptions ro;
      ro.color = o.color;
      ro.columns = o.columns;
      auto lines = render_rollout(r, ro);
      lines.emplace_back("");
      for (const auto& e : recent) lines.push_back(fit(e, o.columns));
      if (drawn) out << "\x1b[" << drawn << "F\x1b[J";
      for (const auto& l : lines) out << l << '\n';
      drawn = lines.size();
    } else {
      auto summary = summary_line(r);
      if (summary != last_summary) out << summary << '\n';
      last_summary = summary;
      auto lines = stage_lines(r);
      for (std::size_t i = 0; i < lines.size(); ++i) {
        if (i >= last_plain.size() || last_plain[i] != lines[i]) out << lines[i] << '\n';
      }
      last_plain = lines;
    }
    out.flush();
  };

  json current = *rollout;
  draw(current);
  auto next_poll = Clock::now() + o.poll;
  auto last_contact = Clock::now();
  while (!rollout_ended(current.value("state", ""))) {
    auto evs = live.poll(milliseconds(250));
    if (!evs) return tl::unexpected(evs.error());
    bool refetch = Clock::now() >= next_poll;
    bool changed = false;
    for (const auto& ev : *evs) {
      if (!belongs_to(ev, id)) continue;
      refetch = true;
      if (o.tty) {
        recent.push_back(event_line(ev));
        if (recent.size() > o.event_lines) recent.pop_front();
        changed = true;
      } else {
        out << event_line(ev) << '\n';
      }
    }
    if (refetch) {
      next_poll = Clock::now() + o.poll;
      auto r = api.get(path);
      if (r) {
        last_contact = Clock::now();
        if (*r != current) changed = true;
        current = std::move(*r);
      } else if (r.error().exit == Exit::Refused) {
        return tl::unexpected(r.error());
      } else if (Clock::now() - last_contact > o.unreachable_after) {
        return tl::unexpected(r.error());
      }
    }
    if (changed) draw(current);
  }
  std::string state = current.value("state", "");
  out << "rollout " << id << " ended " << state
      << (current.contains("halt_reason") ? ": " + current["halt_reason"].get<std::string>() : "")
      << '\n';
  return exit_for_state(state);
}

Result<Exit> follow_events(Api& api, std::int64_t after, std::int64_t rollout, bool as_json,
                           std::ostream& out) {
  // Check the credential once so that a bad token fails at once rather than retrying forever.
  auto probe =
      api.get("/v1/events?limit=1&after=" + std::to_string(std::max<std::int64_t>(after, 0)));
  if (!probe) return tl::unexpected(probe.error());
  LiveEvents live(api, after);
  while (true) {
    auto evs = live.poll(milliseconds(1000));
    if (!evs) return tl::unexpected(evs.error());
    for (const auto& ev : *evs) {
      if (rollout > 0 && !belongs_to(ev, rollout)) continue;
      out << (as_json ? ev.dump() : event_line(ev)) << '\n';
    }
    out.flush();
  }
}

}  // namespace ringfence::cli
