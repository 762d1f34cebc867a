#!/usr/bin/env bash
# Long fuzz runs of every libFuzzer target (tests/fuzz), one after another, in the fuzz build
# (build-fuzz: clang, -fsanitize=fuzzer,address,undefined). Prints executions, executions per
# second, coverage and the corpus size per target; a crash stops that target, its input is in
# build-fuzz/fuzz-artifacts/<target>/ and the script exits non-zero at the end.
#   scripts/fuzz.sh                        # every target to 10 000 000 executions
#   scripts/fuzz.sh --runs 1000000         # another count
#   scripts/fuzz.sh --time 600             # 600 s per target instead of a count
#   scripts/fuzz.sh --time 60 json_schema selector   # some targets only
#   scripts/fuzz.sh --no-build ...         # use the binaries already in the build dir
# Inputs that found new coverage accumulate in build-fuzz/fuzz-corpus/<target>/ (not in the
# repository; copy the interesting ones to tests/fuzz/corpus/<target>/ by hand).
# Env: RINGFENCE_FUZZ_BUILD (default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

limit=(-runs=10000000)
what="10000000 executions"
targets=()
build_first=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) limit=(-runs="$2"); what="$2 executions"; shift 2 ;;
    --time) limit=(-max_total_time="$2"); what="$2 s"; shift 2 ;;
    --no-build) build_first=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "scripts/fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

build="${RINGFENCE_FUZZ_BUILD:-build-fuzz}"
if [ $build_first = 1 ]; then
  bash scripts/install-deps.sh test
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGFENCE_WERROR=OFF \
    -DCMAKE_CXX_COMPILER=clang++ -DRINGFENCE_FUZZ=ON >/dev/null
  cmake --build "$build" -j 2 --target fuzz
fi
# shellcheck disable=SC1091
. "$build/sanitizer-env.sh"

if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/*_fuzz.cpp; do
    t="$(basename "$f" _fuzz.cpp)"
    [ -x "$build/tests/fuzz/fuzz_$t" ] && targets+=("$t")
  done
fi

logs="$build/fuzz-logs"
mkdir -p "$logs"
failed=0
declare -A execs rate cov ft corpus secs cpu status
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  work="$build/fuzz-corpus/$t"
  art="$build/fuzz-artifacts/$t/"
  mkdir -p "$work" "$art"
  # Per-target flags from the build (tests/fuzz/CMakeLists.txt): the input size bound and ASan
  # options, the same the fuzz.<target> smoke tests use.
  max_len=()
  asan="${ASAN_OPTIONS:-}"
  if [ -f "$bin.flags" ]; then
    ml=$(sed -n 's/^max_len=//p' "$bin.flags")
    extra=$(sed -n 's/^asan_extra=//p' "$bin.flags")
    [ -n "$ml" ] && max_len=(-max_len="$ml")
    read -r -a more <<<"$(sed -n 's/^flags=//p' "$bin.flags")"
    max_len+=("${more[@]}")
    [ -n "$extra" ] && asan="$asan:$extra"
  fi
  echo "=== fuzz_$t: $what ${max_len[*]} ==="
  t0=$(date +%s)
  set +e
  # CPU seconds beside the wall time: on a shared machine the wall-clock rate says more about
  # the neighbours than about the target.
  TIMEFORMAT='%U %S'
  { time ASAN_OPTIONS="$asan" "$bin" "${limit[@]}" "${max_len[@]}" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$art" "$work" "$root/tests/fuzz/corpus/$t" >"$logs/$t.log" 2>&1 ; } \
    2>"$logs/$t.cpu"
  rc=$?
  set -e
  secs[$t]=$(( $(date +%s) - t0 ))
  cpu[$t]=$(awk '{printf "%d", $1 + $2}' "$logs/$t.cpu")
  execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
  rate[$t]=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -n 1)
  cov[$t]=$(grep -oE 'cov: [0-9]+' "$logs/$t.log" | tail -n 1 | cut -d' ' -f2)
  ft[$t]=$(grep -oE 'ft: [0-9]+' "$logs/$t.log" | tail -n 1 | cut -d' ' -f2)
  corpus[$t]=$(find "$work" -type f | wc -l)
  if [ $rc -ne 0 ]; then
    status[$t]="CRASH (rc $rc)"
    failed=1
    grep -E 'ERROR|SUMMARY|property violated|Test unit written' "$logs/$t.log" | head -n 20 || true
  else
    status[$t]=ok
  fi
  echo "fuzz_$t: ${status[$t]}, ${execs[$t]:-?} executions in ${secs[$t]} s wall, ${cpu[$t]} s CPU"
done

echo
echo "=== fuzz runs: $what per target (log: $logs/<target>.log) ==="
printf '%-16s %-14s %12s %8s %8s %10s %12s %7s %7s %7s\n' target result executions wall_s cpu_s \
  exec/s exec/cpu_s cov ft corpus
for t in "${targets[@]}"; do
  per_cpu='?'
  if [ -n "${execs[$t]:-}" ] && [ "${cpu[$t]:-0}" -gt 0 ]; then per_cpu=$(( execs[$t] / cpu[$t] )); fi
  printf '%-16s %-14s %12s %8s %8s %10s %12s %7s %7s %7s\n' "$t" "${status[$t]}" "${execs[$t]:-?}" \
    "${secs[$t]}" "${cpu[$t]:-?}" "${rate[$t]:-?}" "$per_cpu" "${cov[$t]:-?}" "${ft[$t]:-?}" \
    "${corpus[$t]}"
done
exit $failed
