#!/usr/bin/env bash
# Deep fuzzing: runs every cargo-fuzz target of fuzz/ (or the ones named) for RUNS
# executions each, one after another, and prints per target the executions, the wall
# time and the CPU time, exec/s (per wall second, and per CPU second: on a shared
# machine the wall figure says more about the neighbours), coverage and features, and
# whether it crashed.
#
#   scripts/fuzz-deep.sh [RUNS] [TARGET...]        RUNS defaults to 10000000
#
# Each target fuzzes into a scratch copy of its seed corpus under target/fuzz-deep/
# (like .ci/run's smoke runs), so the committed corpus in fuzz/corpus/ does not grow.
# Logs: target/fuzz-deep/<target>.log; summary: target/fuzz-deep/summary.tsv.
# A crash stops that target (libFuzzer writes the input to fuzz/artifacts/<target>/),
# the script goes on with the next one and exits 1 at the end.
#
# Environment:
#   FUZZ_SANITIZER  the sanitizer the targets are built with (default: none). The
#                   crates fuzzed forbid unsafe code, so AddressSanitizer only watches
#                   the dependencies' unsafe code, and it costs 3-5x in speed; .ci/run's
#                   smoke runs keep it on. FUZZ_SANITIZER=address for the ASan build.
#   FUZZ_ARGS       extra libFuzzer flags for every target (e.g. "-max_len=1024").
#
# The two engine targets (engine, client_engine) decode operation sequences with
# `arbitrary`, so libFuzzer's comparison tracing finds little there and costs about
# about 70% of their instructions: they are built with --no-trace-compares and run
# with -max_len=256 (up to 64 operations an input; their seed corpora hold longer
# inputs, which are cut). The parsers keep comparison tracing and the default length.
#
# Needs nightly and cargo-fuzz (cargo install cargo-fuzz --locked). On a shared
# machine: nice -n 10 scripts/fuzz-deep.sh > target/fuzz-deep.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${1:-10000000}
[ $# -gt 0 ] && shift
sanitizer=${FUZZ_SANITIZER:-none}
out="$root/target/fuzz-deep"
mkdir -p "$out"
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked"; exit 2; }

cd fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- "$root" | grep -qv '^??' && echo "+changes" || true)
echo "fuzz-deep: ${runs} runs per target, sanitizer ${sanitizer}, commit ${commit}${dirty}, $(date -u +%Y-%m-%dT%H:%MZ)"
summary="$out/summary.tsv"
printf 'target\texecutions\tseconds\tcpu_seconds\texec_per_s\texec_per_cpu_s\tcov\tft\tcorpus\tcrash\n' >"$summary"
failed=0
for target in "${targets[@]}"; do
  scratch="$out/corpus/$target"
  rm -rf "$scratch"
  mkdir -p "$scratch"
  cp -r "corpus/$target/." "$scratch/"
  log="$out/$target.log"
  build_flags=(-s "$sanitizer")
  run_flags=()
  # Kept out of fuzz/target so that the ASan build of .ci/run is not rebuilt each
  # time; one directory per set of build flags, so that no target rebuilds another's.
  target_dir="$root/target/fuzz-deep/build-$sanitizer"
  case "$target" in
    engine | client_engine)
      build_flags+=(--no-trace-compares)
      run_flags+=(-max_len=256)
      target_dir+="-notc"
      ;;
  esac
  cargo +nightly fuzz build "${build_flags[@]}" --target-dir "$target_dir" "$target" >"$log" 2>&1 \
    || { tail -n 30 "$log"; echo "$target: build failed"; exit 1; }
  start=$(date +%s.%N)
  status=0
  # /usr/bin/time counts the CPU time of the fuzzer (a child cargo waits for).
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  /usr/bin/time -f '%U %S' -o "$out/$target.cpu" \
    cargo +nightly fuzz run "${build_flags[@]}" --target-dir "$target_dir" "$target" "$scratch" -- \
    -runs="$runs" -rss_limit_mb=2048 -print_final_stats=1 "${run_flags[@]}" ${FUZZ_ARGS:-} >>"$log" 2>&1 || status=$?
  end=$(date +%s.%N)
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
  cpu=$(awk '/^[0-9.]+ [0-9.]+$/ { printf "%.0f", $1 + $2 }' "$out/$target.cpu")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  # The last status line libFuzzer printed (DONE at the end, or the line before a crash).
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")
  cov=$(grep -Eo 'cov: [0-9]+' <<<"$last" | awk '{print $2}')
  ft=$(grep -Eo 'ft: [0-9]+' <<<"$last" | awk '{print $2}')
  corp=$(grep -Eo 'corp: [0-9]+' <<<"$last" | awk '{print $2}')
  rate=$(awk -v n="${execs:-0}" -v s="$seconds" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
  cpu_rate=$(awk -v n="${execs:-0}" -v s="${cpu:-0}" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
  crash=no
  if [ "$status" != 0 ]; then
    failed=1
    crash=$(grep -Eo 'artifacts/[^ ]+' "$log" | tail -n 1 || true)
    crash=${crash:-"exit $status (see $log)"}
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "${execs:-?}" "$seconds" "${cpu:-?}" \
    "$rate" "$cpu_rate" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crash" >>"$summary"
  printf '%-26s %10s execs %6ss wall %6ss cpu %6s exec/s %6s exec/cpu-s  cov %-5s ft %-6s corpus %-5s crash: %s\n' \
    "$target" "${execs:-?}" "$seconds" "${cpu:-?}" "$rate" "$cpu_rate" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crash"
done
exit "$failed"
