#pragma once
// Shared helpers of the fuzz targets. Each target defines LLVMFuzzerTestOneInput; in the fuzz
// build (RINGFENCE_FUZZ, clang) libFuzzer drives it, in every other build replay_main.cpp runs it
// over the seed corpus, so the corpus (with every input that once crashed) is a regression test.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

namespace ringfence::fuzz {

// A property the code under test promised and broke: report and abort so libFuzzer (or the
// replay test) records the input as a crash.
[[noreturn]] inline void violated(const char* what) {
  std::fprintf(stderr, "fuzz: property violated: %s\n", what);
  std::abort();
}

#define RF_FUZZ_CHECK(cond)                          \
  do {                                               \
    if (!(cond)) ::ringfence::fuzz::violated(#cond); \
  } while (0)

// Where a target keeps the files it must write per input: $TMPDIR when set, else /dev/shm when
// it is a writable directory (a RAM file system: a write per input costs no disk I/O and no
// journal), else /tmp.
inline std::string scratch_dir() {
  const char* tmp = std::getenv("TMPDIR");
  if (tmp && *tmp) return tmp;
  if (::access("/dev/shm", W_OK | X_OK) == 0) return "/dev/shm";
  return "/tmp";
}

// Splits an input into the part before the first `sep` and the part after (the whole input and
// "" when there is no separator): lets one corpus file carry two texts, e.g. schema and document.
inline std::pair<std::string_view, std::string_view> split(std::string_view in,
                                                           std::string_view sep) {
  auto at = in.find(sep);
  if (at == std::string_view::npos) return {in, {}};
  return {in.substr(0, at), in.substr(at + sep.size())};
}

// Takes fixed-size integers off the front of an input (zero once it runs out).
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  std::uint64_t take(std::size_t bytes) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < bytes; ++i) {
      v <<= 8;
      if (n_ > 0) {
        v |= *p_++;
        --n_;
      }
    }
    return v;
  }
  std::string_view rest() const { return {reinterpret_cast<const char*>(p_), n_}; }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

}  // namespace ringfence::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
