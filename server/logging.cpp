#include "server/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

namespace ringfence::server::logging {
namespace {

// A line with fields reaches the formatter as one string: kMark json kMark text kMark message.
// kMark cannot occur inside the two rendered parts (both escape control characters).
constexpr char kMark = '\x1f';

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;  // UTF-8 passes through; invalid bytes are the log reader's problem
        }
    }
  }
  out += '"';
}

// Text values: as they are when they are one plain word, else quoted and escaped like JSON.
void append_text_value(std::string& out, std::string_view s) {
  bool plain = !s.empty();
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\') plain = false;
  }
  if (plain) {
    out += s;
  } else {
    append_json_string(out, s);
  }
}

struct Parts {
  std::string_view json, text, message;
};

Parts split(std::string_view payload) {
  if (payload.size() < 3 || payload.front() != kMark) return {{}, {}, payload};
  auto a = payload.find(kMark, 1);
  auto b = a == std::string_view::npos ? a : payload.find(kMark, a + 1);
  if (b == std::string_view::npos) return {{}, {}, payload};
  return {payload.substr(1, a - 1), payload.substr(a + 1, b - a - 1), payload.substr(b + 1)};
}

// %* in the text pattern: the message, then its fields as key=value.
class TextMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    auto p = split(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(p.message.data(), p.message.data() + p.message.size());
    if (!p.text.empty()) {
      dest.push_back(' ');
      dest.append(p.text.data(), p.text.data() + p.text.size());
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<TextMessage>();
  }
};

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    auto t = msg.time;
    auto secs = system_clock::to_time_t(t);
    auto millis = duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char stamp[40];
    std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(millis));
    line_.clear();
    line_ += "{\"time\":\"";
    line_ += stamp;
    line_ += "\",\"level\":\"";
    auto level = spdlog::level::to_string_view(msg.level);
    line_.append(level.data(), level.size());
    line_ += "\",\"message\":";
    auto p = split(std::string_view(msg.payload.data(), msg.payload.size()));
    append_json_string(line_, p.message);
    if (!p.json.empty()) {
      line_ += ',';
      line_ += p.json;
    }
    line_ += "}\n";
    dest.append(line_.data(), line_.data() + line_.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }

 private:
  std::string line_;
};

}  // namespace

Expected<Format> parse_format(std::string_view s) {
  if (s == "text") return Format::Text;
  if (s == "json") return Format::Json;
  return tl::unexpected(Error{Errc::InvalidArgument, "log format must be text or json"});
}

std::unique_ptr<spdlog::formatter> make_formatter(Format f) {
  if (f == Format::Json) return std::make_unique<JsonFormatter>();
  auto text = std::make_unique<spdlog::pattern_formatter>();
  text->add_flag<TextMessage>('*').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %*");
  return text;
}

Fields& Fields::add(std::string_view key, std::string_view value) {
  if (!json_.empty()) json_ += ',';
  append_json_string(json_, key);
  json_ += ':';
  append_json_string(json_, value);
  if (!text_.empty()) text_ += ' ';
  text_ += key;
  text_ += '=';
  append_text_value(text_, value);
  return *this;
}

Fields& Fields::add(std::string_view key, std::int64_t value) {
  auto v = std::to_string(value);
  if (!json_.empty()) json_ += ',';
  append_json_string(json_, key);
  json_ += ':';
  json_ += v;
  if (!text_.empty()) text_ += ' ';
  text_ += key;
  text_ += '=';
  text_ += v;
  return *this;
}

void Fields::log(spdlog::level::level_enum level, std::string_view message) const {
  if (!spdlog::should_log(level)) return;
  std::string payload;
  payload.reserve(json_.size() + text_.size() + message.size() + 3);
  payload += kMark;
  payload += json_;
  payload += kMark;
  payload += text_;
  payload += kMark;
  payload += message;
  spdlog::log(level, "{}", payload);
}

}  // namespace ringfence::server::logging
