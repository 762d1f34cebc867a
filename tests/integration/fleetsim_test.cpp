// The pieces the scenarios rely on, without processes: the sample consumer's verdicts (shared by
// sample-sensor and fleetsim --model-from-content) and the --model grammar.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "fleetsim/model.hpp"
#include "fleetsim/sample_content.hpp"

namespace ringfence::fleetsim {
namespace {

std::string sample(const std::string& name) {
  std::ifstream in(std::string(RINGFENCE_SOURCE_DIR) + "/fleetsim/samples/" + name);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(SampleConsumer, GoodSamplesLoad) {
  for (const char* name : {"v1-good.json", "v2-good.json"}) {
    auto r = evaluate_consumer(sample(name));
    EXPECT_EQ(r.verdict, ConsumerVerdict::Loads) << name;
    EXPECT_TRUE(r.findings.empty()) << name;
    EXPECT_EQ(r.content.fields, 20);
  }
}

TEST(SampleConsumer, TwentyOneFieldSampleCrashesAndSaysWhy) {
  auto r = evaluate_consumer(sample("v3-bad-21-fields.json"));
  EXPECT_EQ(r.verdict, ConsumerVerdict::Crashes);
  ASSERT_FALSE(r.findings.empty());
  EXPECT_NE(r.findings[0].find("uses field 21 but supplies only 20 values"), std::string::npos);
}

TEST(SampleConsumer, FieldCountIsWhatTheInstanceSuppliesNotWhatTheTemplateSays) {
  // The template may declare 21 fields: what matters is the read the consumer does.
  auto ok = evaluate_consumer(
      R"({"format":"ringfence-sample/1","template":{"name":"t","fields":21},
          "instances":[{"id":"a","values":["x","y"],"uses_field":2}]})");
  EXPECT_EQ(ok.verdict, ConsumerVerdict::Loads);
  auto bad = evaluate_consumer(
      R"({"format":"ringfence-sample/1","template":{"name":"t","fields":2},
          "instances":[{"id":"a","values":["x","y"],"uses_field":3}]})");
  EXPECT_EQ(bad.verdict, ConsumerVerdict::Crashes);
}

TEST(SampleConsumer, MalformedContentIsRefusedNotCrashedOn) {
  for (
      const char* text :
      {"", "not json", "[]", R"({"format":"other"})",
       R"({"format":"ringfence-sample/1","template":{"name":"t","fields":0},"instances":[]})",
       R"({"format":"ringfence-sample/1","template":{"name":"t","fields":2},"instances":[{"id":"a","values":[1],"uses_field":1}]})",
       R"({"format":"ringfence-sample/1","template":{"name":"t","fields":2},"instances":[{"id":"a","values":["x"],"uses_field":0}]})"}) {
    auto r = evaluate_consumer(text);
    EXPECT_EQ(r.verdict, ConsumerVerdict::Refuses) << text;
    EXPECT_FALSE(r.findings.empty()) << text;
  }
}

TEST(ModelSpec, ParsesEveryKind) {
  auto m = parse_model_spec("detections@3=crash:0.25");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->first, (ModelKey{"detections", 3}));
  EXPECT_EQ(m->second.kind, ModelKind::Crash);
  EXPECT_DOUBLE_EQ(m->second.value, 0.25);
  EXPECT_EQ(parse_model_spec("c@1=healthy")->second.kind, ModelKind::Healthy);
  EXPECT_EQ(parse_model_spec("c@1=silent:1")->second.kind, ModelKind::Silent);
  EXPECT_EQ(parse_model_spec("c@1=apply-fail:0.5")->second.kind, ModelKind::ApplyFail);
  auto rate = parse_model_spec("c@1=crash-rate:14.4");
  ASSERT_TRUE(rate);
  EXPECT_EQ(rate->second.kind, ModelKind::CrashRate);
  EXPECT_DOUBLE_EQ(rate->second.value, 14.4);
  EXPECT_EQ(to_string(rate->second), "crash-rate:14.4");
}

TEST(ModelSpec, RefusesNonsense) {
  for (const char* spec : {"", "c", "c@1", "c=crash:1", "c@0=healthy", "c@x=healthy", "C@1=healthy",
                           "c@1=crash", "c@1=crash:1.5", "c@1=crash:-1", "c@1=crash:nan",
                           "c@1=healthy:1", "c@1=explode:1", "c@1=crash:0.5x"}) {
    auto m = parse_model_spec(spec);
    EXPECT_FALSE(m) << spec;
    if (!m) {
      EXPECT_EQ(m.error().errc, Errc::InvalidArgument);
    }
  }
}

}  // namespace
}  // namespace ringfence::fleetsim
