# Continuous checks (issue 13): sanitizer and fuzzing configurations. Each is its own build
# directory (scripts/test.sh: build-asan, build-tsan, build-fuzz); the normal build is unchanged.
#
#   -DRINGFENCE_SANITIZE=address,undefined   the whole suite under ASan + UBSan (gcc or clang)
#   -DRINGFENCE_SANITIZE=thread              ThreadSanitizer (scripts/test.sh runs the threaded
#                                            server areas: http, server, api)
#   -DRINGFENCE_FUZZ=ON                      clang only: libFuzzer targets in tests/fuzz, built
#                                            with -fsanitize=fuzzer,address,undefined; every
#                                            library gets the fuzzer's coverage instrumentation
#
# The flags go on every target (add_compile_options/add_link_options), so the libraries the tests
# and fuzzers link are instrumented as well. The runtime options (halt_on_error, leak detection,
# suppressions) are written to <build>/sanitizer-env.sh, which scripts/test.sh and scripts/fuzz.sh
# source before ctest (by hand: `. build-asan/sanitizer-env.sh && ctest`); the tests' own child
# processes (server, agent, CLI) inherit them. Without it the sanitizers still halt on the first
# error (ASan's default; UBSan through -fno-sanitize-recover).

set(RINGFENCE_SANITIZE "" CACHE STRING
    "Build everything with -fsanitize=<list>: address,undefined or thread (empty: none)")
option(RINGFENCE_FUZZ "Build the libFuzzer targets in tests/fuzz (clang; implies ASan+UBSan)" OFF)

if(RINGFENCE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "RINGFENCE_FUZZ needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ in its own build directory")
  endif()
  if(RINGFENCE_SANITIZE AND NOT RINGFENCE_SANITIZE STREQUAL "address,undefined")
    message(FATAL_ERROR "RINGFENCE_FUZZ builds with address,undefined; leave RINGFENCE_SANITIZE empty")
  endif()
  set(RINGFENCE_SANITIZE "address,undefined")
  # The fuzz build directory holds the fuzz targets and their smoke tests only (no gtest suite,
  # no bench smoke runs of binaries it does not build).
  set(RINGFENCE_TESTS OFF CACHE BOOL "Build the test suite" FORCE)
  set(RINGFENCE_TESTS OFF)
  # Coverage instrumentation for everything; only the fuzz targets link libFuzzer's main.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

if(RINGFENCE_SANITIZE)
  string(REPLACE "," ";" _rf_sanitizers "${RINGFENCE_SANITIZE}")
  foreach(s ${_rf_sanitizers})
    if(NOT s MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "RINGFENCE_SANITIZE: unknown sanitizer '${s}' (address, undefined, thread, leak)")
    endif()
  endforeach()
  if("thread" IN_LIST _rf_sanitizers AND ("address" IN_LIST _rf_sanitizers OR "leak" IN_LIST _rf_sanitizers))
    message(FATAL_ERROR "RINGFENCE_SANITIZE: thread cannot be combined with address/leak")
  endif()
  message(STATUS "Sanitizers: ${RINGFENCE_SANITIZE}")
  # -fno-sanitize-recover: a UBSan finding aborts the test instead of printing and passing.
  # -O1 and line tables only (what sanitizer reports need to name file:line): these builds are
  # about a third cheaper to compile than RelWithDebInfo's -O2 -g on our 2-core machines, and
  # they come after CMAKE_CXX_FLAGS_<CONFIG> on the command line, so they win.
  add_compile_options(-fsanitize=${RINGFENCE_SANITIZE} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -fno-optimize-sibling-calls -O1)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    add_compile_options(-gline-tables-only)
  else()
    add_compile_options(-g1)
  endif()
  add_link_options(-fsanitize=${RINGFENCE_SANITIZE})
  if("undefined" IN_LIST _rf_sanitizers)
    # The vptr check alone may print and go on, but halt_on_error=1 (sanitizer-env.sh) still stops
    # on it everywhere. The exception is one test: UBSan probes an object's vtable through pipe(2)
    # on a type-cache miss, so in a process with every fd in use the probe fails and a live object
    # is reported as "invalid vptr". http.ServerProcess.AtTheFdLimitAcceptBacksOffAndRecovers
    # exhausts the server's fds on purpose and runs it with halt_on_error=0, then checks that
    # every report it printed is that one.
    add_compile_options(-fsanitize-recover=vptr)
  endif()
  if("undefined" IN_LIST _rf_sanitizers AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # gcc leaves this out of "undefined" (clang includes it): a double out of an int's range
    # converted to it, e.g. a JSON number 1e300 read as an integer field.
    add_compile_options(-fsanitize=float-cast-overflow)
    add_link_options(-fsanitize=float-cast-overflow)
  endif()
  # Sanitized binaries are bigger and slower; the agent's static libstdc++/libsodium link is a
  # footprint measure that does not apply (ASan interposes malloc and wants the shared runtime).
  set(RINGFENCE_AGENT_STATIC_CXX OFF CACHE BOOL "" FORCE)

  set(_rf_supp ${CMAKE_SOURCE_DIR}/cmake/sanitizers)
  # Reports go to files (log_path, one per process: report.<pid>) instead of stderr, so that a
  # finding in a child the test started (the server under api_test, an agent) fails the phase even
  # when the test does not look at that child's exit status: scripts/test.sh prints and counts
  # them. The fuzz build keeps them on stderr, where libFuzzer's own report goes.
  set(_rf_log ${CMAKE_BINARY_DIR}/sanitizer-reports/report)
  file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/sanitizer-reports)
  if(RINGFENCE_FUZZ)
    set(_rf_log stderr)
  endif()
  string(CONCAT _rf_env
         "# Written by cmake/sanitizers.cmake: the runtime options of this build's sanitizers.\n"
         "export RINGFENCE_SANITIZER_REPORTS=${CMAKE_BINARY_DIR}/sanitizer-reports\n")
  if("address" IN_LIST _rf_sanitizers)
    string(APPEND _rf_env
           "export ASAN_OPTIONS=log_path=${_rf_log}:halt_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1\n"
           "export LSAN_OPTIONS=suppressions=${_rf_supp}/lsan.supp:print_suppressions=0\n")
  endif()
  if("undefined" IN_LIST _rf_sanitizers)
    string(APPEND _rf_env
           "export UBSAN_OPTIONS=log_path=${_rf_log}:halt_on_error=1:print_stacktrace=1:suppressions=${_rf_supp}/ubsan.supp\n")
  endif()
  if("thread" IN_LIST _rf_sanitizers)
    string(APPEND _rf_env
           "export TSAN_OPTIONS=log_path=${_rf_log}:halt_on_error=1:second_deadlock_stack=1:suppressions=${_rf_supp}/tsan.supp\n")
  endif()
  file(WRITE ${CMAKE_BINARY_DIR}/sanitizer-env.sh "${_rf_env}")
else()
  file(WRITE ${CMAKE_BINARY_DIR}/sanitizer-env.sh "# No sanitizers in this build.\n")
endif()
