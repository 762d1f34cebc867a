// Log lines for machines (server/logging.*) and request ids (the transport): the formatters on
// their own, then a real ringfence-server with --log-format json and --access-log.
#include "server/logging.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "tests/http/http_client.hpp"
#include "tests/http/server_process.hpp"

namespace ringfence::testing {
namespace {
using namespace std::chrono_literals;
namespace logging = server::logging;

// Runs fn with a default logger that writes to a string in the given format, and returns it.
template <class Fn>
std::string captured(logging::Format format, Fn fn) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
  auto logger = std::make_shared<spdlog::logger>("ringfence", sink);
  logger->set_formatter(logging::make_formatter(format));
  auto before = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  fn();
  spdlog::set_default_logger(before);
  return out.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

TEST(Logging, JsonLinesEscapeWhatAMessageCarries) {
  auto text = captured(logging::Format::Json, [] {
    spdlog::warn("host \"{}\" said:\n{}", "h\\1", std::string("tab\there\x01"));
  });
  auto lines = lines_of(text);
  ASSERT_EQ(lines.size(), 1u) << text;
  auto j = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["message"], "host \"h\\1\" said:\ntab\there\x01");
  EXPECT_TRUE(std::regex_match(j["time"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << j["time"];
}

TEST(Logging, FieldsAreMembersInJsonAndKeyValuesInText) {
  auto emit = [] {
    logging::Fields()
        .add("request_id", "4f1c0a9e-2a")
        .add("status", 503)
        .add("path", "/v1/a b\"c")
        .log(spdlog::level::info, "GET /v1/x 503");
  };
  auto json = captured(logging::Format::Json, emit);
  auto j = nlohmann::json::parse(lines_of(json).at(0));
  EXPECT_EQ(j["message"], "GET /v1/x 503");
  EXPECT_EQ(j["request_id"], "4f1c0a9e-2a");
  EXPECT_EQ(j["status"], 503);
  EXPECT_EQ(j["path"], "/v1/a b\"c");
  auto text = captured(logging::Format::Text, emit);
  EXPECT_NE(text.find("] GET /v1/x 503 request_id=4f1c0a9e-2a status=503 path=\"/v1/a b\\\"c\""),
            std::string::npos)
      << text;
  // A plain message in text is as before: no marker bytes, nothing appended.
  auto plain = captured(logging::Format::Text, [] { spdlog::info("plain line"); });
  EXPECT_TRUE(plain.size() > 11 && plain.compare(plain.size() - 11, 11, "plain line\n") == 0)
      << plain;
  EXPECT_EQ(plain.find('\x1f'), std::string::npos);
}

TEST(Logging, ParseFormatNamesTheChoices) {
  EXPECT_EQ(*logging::parse_format("json"), logging::Format::Json);
  EXPECT_EQ(*logging::parse_format("text"), logging::Format::Text);
  auto bad = logging::parse_format("xml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("text or json"), std::string::npos);
}

std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + "\r\n";
}

TEST(RequestIds, EchoedInTheHeaderTheErrorBodyAndTheJsonAccessLog) {
  ServerProcess s({"--log-format", "json", "--access-log"});
  ASSERT_NE(s.port(), 0) << s.log();
  // Made by the server when the client sends none.
  auto made = request_once(s.port(), get("/healthz"));
  ASSERT_TRUE(made);
  std::string id = made->header("x-request-id");
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9A-Za-z]{4}\\.[0-9A-Za-z]+"))) << id;
  auto again = request_once(s.port(), get("/healthz"));
  ASSERT_TRUE(again);
  EXPECT_NE(again->header("x-request-id"), id);
  // The client's own, when it is plain and short; an error body names it.
  auto given = request_once(s.port(), get("/v1/rings", "X-Request-Id: trace-42.a:b_c\r\n"));
  ASSERT_TRUE(given);
  EXPECT_EQ(given->status, 401);
  EXPECT_EQ(given->header("x-request-id"), "trace-42.a:b_c");
  auto body = nlohmann::json::parse(given->body);
  EXPECT_EQ(body["error"]["request_id"], "trace-42.a:b_c") << given->body;
  EXPECT_EQ(body["error"]["code"], "unauthenticated") << given->body;
  // A hostile one (quotes, too long) is replaced, never echoed.
  for (const std::string& bad : {std::string("a\"b"), std::string(65, 'x'), std::string("a b")}) {
    auto r = request_once(s.port(), get("/nope", "X-Request-Id: " + bad + "\r\n"));
    ASSERT_TRUE(r);
    EXPECT_NE(r->header("x-request-id"), bad);
    EXPECT_TRUE(
        std::regex_match(r->header("x-request-id"), std::regex("[0-9A-Za-z]{4}\\.[0-9A-Za-z]+")));
    EXPECT_EQ(nlohmann::json::parse(r->body)["error"]["request_id"], r->header("x-request-id"));
  }
  // Every line the server logged is one JSON object; the access lines carry the fields.
  bool saw_made = false, saw_given = false;
  ASSERT_TRUE(eventually(
      [&] {
        saw_made = saw_given = false;
        for (const auto& line : lines_of(s.log())) {
          if (line.empty() || line[0] != '{') continue;  // stdout's "listening on" line
          auto j = nlohmann::json::parse(line, nullptr, false);
          if (j.is_discarded()) {
            ADD_FAILURE() << "not JSON: " << line;
            return true;
          }
          if (j.value("request_id", "") == id) {
            saw_made = j["status"] == 200 && j["method"] == "GET" && j["path"] == "/healthz" &&
                       j["duration_us"].is_number() && j["message"] == "GET /healthz 200";
          }
          if (j.value("request_id", "") == "trace-42.a:b_c") saw_given = j["status"] == 401;
        }
        return saw_made && saw_given;
      },
      10s))
      << s.log();
}

}  // namespace
}  // namespace ringfence::testing
