#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each and prints what
# each did: executions, coverage (libFuzzer's edges and features), corpus
# size, and crashes.
#
#   tools/fuzz.sh SECONDS [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (installed if missing). The
# working corpus grows in fuzz/corpus/TARGET (not committed); the seeds in
# fuzz/seeds/TARGET are read too. A crash is saved in fuzz/artifacts/TARGET:
# minimise it (cargo +nightly fuzz tmin TARGET FILE), fix the bug, and copy
# the input to fuzz/seeds/TARGET/crash-WHAT, where `cargo test` replays it.
set -euo pipefail
secs=${1:?usage: tools/fuzz.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")/../fuzz"

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O 2>&1 | grep -E "^(error|warning: unused)" && exit 1

targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cargo +nightly fuzz list)

mkdir -p logs
failed=0
printf '%-14s %12s %10s %7s %7s %7s  %s\n' target executions per-sec edges features corpus result
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="logs/$t.log"
  if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/$log, fuzz/artifacts/$t)"
    failed=1
  fi
  execs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" | tail -1 || true)
  rate=$(grep -oP 'stat::average_exec_per_sec:\s*\K\d+' "$log" | tail -1 || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(grep -oP 'cov: \K\d+' <<<"$last" || true)
  ft=$(grep -oP 'ft: \K\d+' <<<"$last" || true)
  corp=$(grep -oP 'corp: \K\d+' <<<"$last" || true)
  printf '%-14s %12s %10s %7s %7s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
    "${ft:-?}" "${corp:-?}" "$result"
done
exit $failed
