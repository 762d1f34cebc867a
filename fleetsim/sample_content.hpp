#pragma once
// The sample content format and its consumer: the July 2024 incident in miniature.
//
// A content file is a template that declares how many input fields its instances carry, and the
// instances themselves:
//
//   {"format": "ringfence-sample/1",
//    "template": {"name": "pipe-rules", "fields": 20},
//    "instances": [{"id": "r1", "values": ["...", ... 20 strings ...], "uses_field": 7}, ...]}
//
// The consumer (the "sensor") reads, for every instance, values[uses_field - 1] — the field the
// template says the instance uses. It trusts `uses_field`, not `values.size()`: an instance that
// uses field 21 of a 20-value array reads past the end of the array (in the real incident, in
// kernel mode). evaluate_consumer() is exactly that consumer's parser run as a check, shared by
// `sample-sensor --check`, `sample-sensor --run` and `fleetsim --model-from-content`, so the
// validator and the thing it protects can never disagree.
//
// Everything here is pure and thread-safe.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ringfence::fleetsim {

inline constexpr std::string_view kSampleFormat = "ringfence-sample/1";
inline constexpr std::size_t kMaxSampleInstances = 100000;
inline constexpr std::size_t kMaxSampleValues = 1024;

struct SampleInstance {
  std::string id;
  std::vector<std::string> values;
  long long uses_field = 0;  // 1-based index into values, as the template defines it
};

struct SampleContent {
  std::string template_name;
  long long fields = 0;  // what the template declares
  std::vector<SampleInstance> instances;
};

// What the consumer does with a file.
enum class ConsumerVerdict {
  Loads,    // consistent: every instance's field is inside the values it supplies
  Refuses,  // not parseable as the format: the consumer rejects it cleanly (no crash)
  Crashes,  // parses, but an instance reads past the values it supplies: out-of-bounds read
};

struct ConsumerResult {
  ConsumerVerdict verdict = ConsumerVerdict::Loads;
  std::vector<std::string> findings;  // human sentences, one per problem; empty when Loads
  SampleContent content;              // what was parsed (partial when Refuses)
};

// Parses `text` the way the consumer does and reports every problem (not just the first).
// `supplied`: the number of input values this consumer build supplies to every instance (its
// version: sample-sensor 20 supplies 20, sample-sensor 21 supplies 21); an instance that uses a
// field beyond them reads past the end of the consumer's input array. 0 = the values the
// instance itself carries (the format's own rule).
ConsumerResult evaluate_consumer(std::string_view text, long long supplied = 0);

// A consumer version as the sample sensor understands it: the number of values it supplies,
// 1..kMaxSampleValues; 0 when `version` is not such a number.
long long supplied_values(std::string_view version);

std::string_view to_string(ConsumerVerdict v) noexcept;

}  // namespace ringfence::fleetsim
