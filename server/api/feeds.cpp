#include "server/api/feeds.hpp"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

namespace ringfence::server::api {
namespace {
using nlohmann::json;

// Text for XML content and attribute values. Characters XML 1.0 cannot carry at all (control
// characters other than tab and newline) are dropped: release notes are operator text.
void append_xml(std::string& out, std::string_view s) {
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        if (c < 0x20 && ch != '\t' && ch != '\n') break;
        out += ch;
    }
  }
}

void element(std::string& out, std::string_view indent, std::string_view name,
             std::string_view text) {
  out += indent;
  out += '<';
  out += name;
  out += '>';
  append_xml(out, text);
  out += "</";
  out += name;
  out += ">\n";
}

std::string describe(const json& r) {
  std::string state = r.value("state", "");
  std::string text;
  if (state == "quarantined") {
    text =
        "Withdrawn: this release is on the channel's known-bad list and is no longer offered.\n\n";
  }
  text += "State: " + state + "\n";
  text += "Size: " + std::to_string(r.value("size", std::int64_t{0})) + " bytes\n";
  text += "SHA-256: " + r.value("sha256", std::string()) + "\n";
  std::string notes = r.value("notes", std::string());
  if (!notes.empty()) text += "\n" + notes + "\n";
  return text;
}

}  // namespace

std::string rfc3339(std::int64_t unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string atom_feed(const FeedSource& feed, std::vector<json> releases, std::size_t limit) {
  auto updated_of = [](const json& r) {
    return std::max(r.value("updated", std::int64_t{0}), r.value("created", std::int64_t{0}));
  };
  std::stable_sort(releases.begin(), releases.end(),
                   [&](const json& a, const json& b) { return updated_of(a) > updated_of(b); });
  if (releases.size() > limit) releases.resize(limit);
  std::int64_t newest = releases.empty() ? 0 : updated_of(releases.front());

  std::string out = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";
  out += "<feed xmlns=\"http://www.w3.org/2005/Atom\">\n";
  element(out, "  ", "id", feed.id);
  element(out, "  ", "title", feed.title);
  element(out, "  ", "updated", rfc3339(newest));
  out += "  <link rel=\"self\" type=\"application/atom+xml\" href=\"";
  append_xml(out, feed.self_path);
  out += "\"/>\n";
  out += "  <author><name>Ringfence</name></author>\n";
  out += "  <generator>Ringfence</generator>\n";
  for (const auto& r : releases) {
    std::string channel = r.value("channel", std::string());
    std::string version = std::to_string(r.value("version", std::int64_t{0}));
    std::string state = r.value("state", std::string());
    out += "  <entry>\n";
    // Permanent and the same in every feed that lists it: channel, version and the content's
    // digest (another server's release of the same name and version has other content).
    element(out, "    ", "id",
            "tag:ringfence,2026:release/" + channel + "/" + version + "/" +
                r.value("sha256", std::string()).substr(0, 16));
    element(
        out, "    ", "title",
        channel + " " + version + (state == "quarantined" ? " (withdrawn)" : " (" + state + ")"));
    element(out, "    ", "published", rfc3339(r.value("created", std::int64_t{0})));
    element(out, "    ", "updated", rfc3339(updated_of(r)));
    out += "    <link rel=\"alternate\" type=\"application/json\" href=\"/v1/channels/";
    append_xml(out, channel);
    out += "/releases/" + version + "\"/>\n";
    out += "    <category term=\"";
    append_xml(out, state);
    out += "\"/>\n";
    out += "    <content type=\"text\">";
    append_xml(out, describe(r));
    out += "</content>\n";
    out += "  </entry>\n";
  }
  out += "</feed>\n";
  return out;
}

}  // namespace ringfence::server::api
