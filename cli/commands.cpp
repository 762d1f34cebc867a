#include "cli/commands.hpp"

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace ringfence::cli {
using nlohmann::json;

void Context::emit(const json& doc,
                   const std::function<void(std::ostream&, const json&)>& human) const {
  if (as_json) {
    *out << doc.dump(2) << '\n';
  } else {
    human(*out, doc);
  }
}

void on_run(CLI::App* sub, Context& ctx, std::function<Result<Exit>(Context&)> fn) {
  sub->callback([&ctx, fn = std::move(fn)] { ctx.action = fn; });
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return usage_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return usage_error("cannot read " + path);
  return ss.str();
}

Result<json> read_json_file(const std::string& path) {
  auto text = read_file(path);
  if (!text) return tl::unexpected(text.error());
  auto j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) return usage_error(path + " is not valid JSON");
  return j;
}

Result<json> parse_stage_flag(const std::string& spec) {
  std::vector<std::string> parts;
  std::stringstream ss(spec);
  for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  if (parts.size() < 2 || parts.size() > 5 || parts[0].empty()) {
    return usage_error("--stage wants ring:percent[:bake_s[:min_hosts[:manual]]], not '" + spec +
                       "'");
  }
  json st = {{"ring", parts[0]}};
  try {
    std::size_t used = 0;
    double pct = std::stod(parts[1], &used);
    if (used != parts[1].size()) throw std::invalid_argument("percent");
    st["percent"] = pct;
    if (parts.size() > 2) st["bake_s"] = std::stoll(parts[2]);
    if (parts.size() > 3) st["min_hosts"] = std::stoll(parts[3]);
  } catch (const std::exception&) {
    return usage_error("--stage '" + spec + "': percent, bake_s and min_hosts must be numbers");
  }
  if (parts.size() > 4) {
    if (parts[4] != "manual" && parts[4] != "auto") {
      return usage_error("--stage '" + spec + "': approval is 'manual' or 'auto'");
    }
    st["approval"] = parts[4];
  }
  return st;
}

Result<json> stages_from(const std::string& file, const std::vector<std::string>& flags) {
  if (!file.empty() && !flags.empty())
    return usage_error("give --stages-file or --stage, not both");
  if (!file.empty()) {
    auto j = read_json_file(file);
    if (!j) return j;
    if (j->is_object() && j->contains("stages")) return (*j)["stages"];
    if (j->is_array()) return *j;
    return usage_error(file + " must hold a JSON array of stages or an object with \"stages\"");
  }
  json stages = json::array();
  for (const auto& f : flags) {
    auto st = parse_stage_flag(f);
    if (!st) return st;
    stages.push_back(*st);
  }
  return stages;
}

}  // namespace ringfence::cli
