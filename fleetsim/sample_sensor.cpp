// sample-sensor: the consumer of the sample content format (fleetsim/sample_content.hpp).
//   [--consumer-version N]       act as consumer version N: it supplies N input values to every
//                                instance (a channel validator runs it once per version in the
//                                field: "--consumer-version", "{consumer_version}")
//   sample-sensor --check FILE   exit 0 when the consumer would load FILE; otherwise print the
//                                findings on stdout and exit 1 (a validator command for a channel)
//   sample-sensor --run FILE     load FILE like the real sensor: abort() (a crash) on content that
//                                reads past its values, exit 2 on content it refuses, otherwise
//                                run until killed (a consumer for ringfence-agent --consumer)
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "fleetsim/sample_content.hpp"
#include "proto/fatal.hpp"

namespace {
using ringfence::fleetsim::ConsumerVerdict;

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int usage() {
  std::fprintf(stderr, "usage: sample-sensor [--consumer-version N] --check FILE | --run FILE\n");
  return 64;
}
}  // namespace

int main(int argc, char** argv) try {
  ringfence::install_fatal_handler("sample-sensor");
  long long supplied = 0;
  if (argc == 5 && std::strcmp(argv[1], "--consumer-version") == 0) {
    supplied = ringfence::fleetsim::supplied_values(argv[2]);
    if (supplied == 0) {
      std::printf("REFUSED: unknown consumer version '%.64s' (a number of values, 1..1024)\n",
                  argv[2]);
      return 64;
    }
    argv += 2;
    argc -= 2;
  }
  if (argc != 3) return usage();
  std::string mode = argv[1];
  if (mode != "--check" && mode != "--run") return usage();
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::printf("cannot read %s\n", argv[2]);
    return 2;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto result = ringfence::fleetsim::evaluate_consumer(text, supplied);
  if (mode == "--check") {
    if (result.verdict == ConsumerVerdict::Loads) {
      std::printf("ok: template '%s', %zu instances\n", result.content.template_name.c_str(),
                  result.content.instances.size());
      return 0;
    }
    std::printf("%s\n", result.verdict == ConsumerVerdict::Crashes
                            ? "REFUSED: the sensor would crash on this content"
                            : "REFUSED: the sensor cannot parse this content");
    for (const auto& f : result.findings) std::printf("- %s\n", f.c_str());
    return 1;
  }
  // --run
  if (result.verdict == ConsumerVerdict::Refuses) {
    std::fprintf(stderr, "sample-sensor: refusing content: %s\n",
                 result.findings.empty() ? "?" : result.findings.front().c_str());
    return 2;
  }
  if (result.verdict == ConsumerVerdict::Crashes) {
    std::fprintf(stderr, "sample-sensor: %s\n", result.findings.front().c_str());
    std::fflush(stderr);
    std::abort();  // the out-of-bounds read, made deterministic
  }
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::fprintf(stderr, "sample-sensor: running template '%s' with %zu instances\n",
               result.content.template_name.c_str(), result.content.instances.size());
  while (!g_stop) pause();
  return 0;
} catch (...) {
  ringfence::print_current_exception("sample-sensor");
  return ringfence::kExitInternal;
}
