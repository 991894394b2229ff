#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60), starting from
# the committed seeds (fuzz/corpus/<target>) and every input that ever crashed a target
# (fuzz/regressions/<target>, replayed first). New interesting inputs go to fuzz/scratch
# (not committed). Prints the executions of each target; exits non-zero on a crash, leaving
# the input in fuzz/artifacts/<target>/ (fix the bug, then move the input to regressions/).
#
#   bash scripts/fuzz.sh [SECONDS] [--quick]
#
# --quick builds without optimisation and sanitizer (a few minutes less to build; what the test
# command runs); the default build is optimised with AddressSanitizer, for long runs.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=60
BUILD=(-O)
for a in "$@"; do
  case "$a" in
    --quick) BUILD=(--dev -s none) ;;
    *[!0-9]*) echo "fuzz.sh: usage: fuzz.sh [SECONDS] [--quick]" >&2; exit 2 ;;
    *) SECONDS_EACH="$a" ;;
  esac
done

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing (bash scripts/setup.sh installs it)" >&2
  exit 1
fi

cargo +nightly fuzz build --fuzz-dir fuzz "${BUILD[@]}" >/dev/null
status=0
for t in $(cargo +nightly fuzz list --fuzz-dir fuzz); do
  mkdir -p "fuzz/scratch/$t" "fuzz/regressions/$t" "fuzz/corpus/$t"
  log=$(mktemp)
  # Regressions replayed once each (a crash there fails at once), then the timed run.
  if [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "${BUILD[@]}" "$t" "fuzz/regressions/$t" -- -runs=0 >"$log" 2>&1; then
      echo "fuzz.sh: $t fails on a regression input:" >&2
      tail -30 "$log" >&2
      status=1
      continue
    fi
  fi
  if cargo +nightly fuzz run --fuzz-dir fuzz "${BUILD[@]}" "$t" "fuzz/scratch/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
      -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    printf 'fuzz %-14s %12s executions in %ss, coverage %s\n' "$t" "${runs:-?}" "$SECONDS_EACH" "${cov:-?}"
  else
    echo "fuzz.sh: $t crashed:" >&2
    grep -E 'panicked|SUMMARY|Test unit written' "$log" >&2 || tail -30 "$log" >&2
    status=1
  fi
  rm -f "$log"
done
exit "$status"
