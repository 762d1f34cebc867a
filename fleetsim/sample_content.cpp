#include "fleetsim/sample_content.hpp"

#include <nlohmann/json.hpp>

namespace ringfence::fleetsim {
namespace {
using nlohmann::json;

constexpr std::size_t kMaxFindings = 50;

void add(ConsumerResult& r, std::string finding) {
  if (r.findings.size() < kMaxFindings) r.findings.push_back(std::move(finding));
}

ConsumerResult refuse(ConsumerResult r, std::string why) {
  r.verdict = ConsumerVerdict::Refuses;
  add(r, std::move(why));
  return r;
}
}  // namespace

std::string_view to_string(ConsumerVerdict v) noexcept {
  switch (v) {
    case ConsumerVerdict::Loads:
      return "loads";
    case ConsumerVerdict::Refuses:
      return "refuses";
    case ConsumerVerdict::Crashes:
      return "crashes";
  }
  return "refuses";
}

long long supplied_values(std::string_view version) {
  if (version.empty() || version.size() > 4) return 0;
  long long n = 0;
  for (char c : version) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + (c - '0');
  }
  return n >= 1 && n <= static_cast<long long>(kMaxSampleValues) ? n : 0;
}

ConsumerResult evaluate_consumer(std::string_view text, long long supplied) {
  ConsumerResult r;
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return refuse(std::move(r), "content is not valid JSON");
  if (!doc.is_object()) return refuse(std::move(r), "content must be a JSON object");
  auto fmt = doc.find("format");
  if (fmt == doc.end() || !fmt->is_string() || fmt->get<std::string>() != kSampleFormat) {
    return refuse(std::move(r), "format must be \"" + std::string(kSampleFormat) + "\"");
  }
  auto tpl = doc.find("template");
  if (tpl == doc.end() || !tpl->is_object())
    return refuse(std::move(r), "template must be an object");
  auto name = tpl->find("name");
  auto fields = tpl->find("fields");
  if (name == tpl->end() || !name->is_string())
    return refuse(std::move(r), "template.name must be a string");
  if (fields == tpl->end() || !fields->is_number_integer() || fields->get<long long>() < 1 ||
      fields->get<long long>() > static_cast<long long>(kMaxSampleValues)) {
    return refuse(std::move(r), "template.fields must be an integer in [1, 1024]");
  }
  r.content.template_name = name->get<std::string>();
  r.content.fields = fields->get<long long>();
  auto inst = doc.find("instances");
  if (inst == doc.end() || !inst->is_array())
    return refuse(std::move(r), "instances must be an array");
  if (inst->size() > kMaxSampleInstances) return refuse(std::move(r), "too many instances");
  std::size_t index = 0;
  for (const auto& i : *inst) {
    std::string where = "instances[" + std::to_string(index++) + "]";
    if (!i.is_object()) return refuse(std::move(r), where + " must be an object");
    SampleInstance si;
    auto id = i.find("id");
    auto values = i.find("values");
    auto uses = i.find("uses_field");
    if (id == i.end() || !id->is_string())
      return refuse(std::move(r), where + ".id must be a string");
    si.id = id->get<std::string>();
    if (values == i.end() || !values->is_array() || values->size() > kMaxSampleValues) {
      return refuse(std::move(r), where + ".values must be an array of at most 1024 strings");
    }
    for (const auto& v : *values) {
      if (!v.is_string()) return refuse(std::move(r), where + ".values must hold strings only");
      si.values.push_back(v.get<std::string>());
    }
    if (uses == i.end() || !uses->is_number_integer() || uses->get<long long>() < 1) {
      return refuse(std::move(r), where + ".uses_field must be a positive integer");
    }
    si.uses_field = uses->get<long long>();
    // The consumer's read: values[uses_field - 1]. It is out of bounds when the instance uses a
    // field beyond the values supplied — whatever the template declares.
    if (supplied > 0 && si.uses_field > supplied) {
      r.verdict = ConsumerVerdict::Crashes;
      add(r, where + " (id '" + si.id + "') uses field " + std::to_string(si.uses_field) +
                 " but consumer version " + std::to_string(supplied) + " supplies only " +
                 std::to_string(supplied) +
                 " values: it would read past the end of its input array");
    } else if (supplied == 0 && si.uses_field > static_cast<long long>(si.values.size())) {
      r.verdict = ConsumerVerdict::Crashes;
      add(r, where + " (id '" + si.id + "') uses field " + std::to_string(si.uses_field) +
                 " but supplies only " + std::to_string(si.values.size()) +
                 " values: the consumer would read past the end of its input array");
    }
    r.content.instances.push_back(std::move(si));
  }
  if (r.verdict == ConsumerVerdict::Crashes && r.content.fields > 0) {
    add(r, "template '" + r.content.template_name + "' declares " +
               std::to_string(r.content.fields) + " fields");
  }
  return r;
}

}  // namespace ringfence::fleetsim
