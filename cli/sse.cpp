#include "cli/sse.hpp"

namespace ringfence::cli {

std::vector<SseEvent> SseParser::feed(std::string_view piece) {
  std::vector<SseEvent> out;
  for (char ch : piece) {
    if (pending_cr_) {
      pending_cr_ = false;
      if (ch == '\n') continue;  // the '\n' of a "\r\n" already ended the line
    }
    if (ch == '\r' || ch == '\n') {
      line(buf_, out);
      buf_.clear();
      pending_cr_ = ch == '\r';
      continue;
    }
    buf_ += ch;
    if (buf_.size() > (1u << 20)) buf_.clear();  // a runaway line: drop it rather than grow
  }
  return out;
}

void SseParser::line(std::string_view l, std::vector<SseEvent>& out) {
  if (l.empty()) {  // blank line: dispatch
    if (has_data_) {
      out.push_back({last_id_, event_.empty() ? "message" : event_, data_});
    }
    event_.clear();
    data_.clear();
    has_data_ = false;
    return;
  }
  if (l.front() == ':') return;  // comment
  auto colon = l.find(':');
  std::string_view field = l.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = l.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) data_ += '\n';
    data_ += value;
    has_data_ = true;
  } else if (field == "event") {
    event_ = value;
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_ = value;
  }
}

}  // namespace ringfence::cli
