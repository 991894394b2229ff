#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60), starting from
# the committed seeds (fuzz/corpus/<target>) and every input that ever crashed a target
# (fuzz/regressions/<target>, replayed first). New interesting inputs go to fuzz/scratch
# (not committed). Prints the executions of each target; exits non-zero on a crash, leaving
# the input in fuzz/artifacts/<target>/ (fix the bug, then move the input to regressions/).
#
#   bash scripts/fuzz.sh [SECONDS] [--quick]
#   SOCKSCOPE_FUZZ_TARGETS="dns_answer qname" bash scripts/fuzz.sh 600   # some targets only
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
# The targets run as built here, so editing the sources meanwhile cannot trigger a rebuild.
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
if [ "${BUILD[0]}" = "--dev" ]; then profile=debug; else profile=release; fi
bin="fuzz/target/$triple/$profile"
TARGETS=${SOCKSCOPE_FUZZ_TARGETS:-$(cargo +nightly fuzz list --fuzz-dir fuzz)}
status=0
for t in $TARGETS; do
  mkdir -p "fuzz/scratch/$t" "fuzz/regressions/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  # Regressions replayed once each (a crash there fails at once), then the timed run.
  if [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
    if ! "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -runs=0 "fuzz/regressions/$t" >"$log" 2>&1; then
      echo "fuzz.sh: $t fails on a regression input:" >&2
      tail -30 "$log" >&2
      status=1
      continue
    fi
  fi
  if "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$SECONDS_EACH" \
      -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
      "fuzz/scratch/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" >"$log" 2>&1; then
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
