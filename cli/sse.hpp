#pragma once
// A parser for text/event-stream bodies (the server-sent events wire format): fed the body in
// arbitrary pieces, it returns each complete event. Pure, no I/O; not thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringfence::cli {

struct SseEvent {
  std::string id;     // the last "id:" seen (sticky across events, as in the spec)
  std::string event;  // "message" when the frame named none
  std::string data;   // "data:" lines joined with '\n'
};

class SseParser {
 public:
  // Appends a piece of the body; returns the events it completed, in order. Comment lines
  // (": ...") and unknown fields are skipped; lines end in \n, \r\n or \r.
  std::vector<SseEvent> feed(std::string_view piece);
  // The id of the last complete event (for Last-Event-ID when reconnecting).
  const std::string& last_event_id() const noexcept { return last_id_; }

 private:
  void line(std::string_view l, std::vector<SseEvent>& out);
  std::string buf_;
  std::string last_id_;
  std::string event_, data_;
  bool has_data_ = false;
  bool pending_cr_ = false;  // the previous piece ended in '\r' (a "\r\n" may be split)
};

}  // namespace ringfence::cli
