#pragma once
// The last line of every program: an exception nobody caught ends the process with one clear
// line on stderr and exit status 70 (EX_SOFTWARE), never abort()'s "terminate called..." and a
// core dump. main() catches what reaches it (so locals unwind); install_fatal_handler() covers
// the rest (exceptions escaping other threads, or thrown while unwinding).

#include <unistd.h>

#include <cstdio>
#include <exception>

namespace ringfence {

inline constexpr int kExitInternal = 70;

namespace detail {
inline const char*& fatal_program() {
  static const char* name = "ringfence";
  return name;
}
}  // namespace detail

// Prints "<program>: internal error: <what>" for the exception in flight (or an unknown one).
// Safe to call only from a catch block or a terminate handler.
inline void print_current_exception(const char* program) noexcept {
  try {
    if (auto e = std::current_exception()) std::rethrow_exception(e);
    std::fprintf(stderr, "%s: internal error: terminated without an exception\n", program);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", program, e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: internal error: unknown exception\n", program);
  }
  std::fflush(stderr);
}

// Installs the terminate handler; `program` must outlive the process (a string literal).
inline void install_fatal_handler(const char* program) noexcept {
  detail::fatal_program() = program;
  std::set_terminate([] {
    print_current_exception(detail::fatal_program());
    ::_exit(kExitInternal);
  });
}

}  // namespace ringfence
