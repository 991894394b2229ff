#!/usr/bin/env bash
# Installs what is missing, then runs every test: unit tests and the end-to-end tests, which load
# the real eBPF programs into this kernel (root required).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The image for both architectures first: the podman, image and package tests run what it
# built (and its binaries), as users would get them.
bash scripts/image.sh >/dev/null
# The end-to-end tests run the sockscope binary next to their peer binary. Default members
# only: the eBPF crate builds for the BPF target, through exporter/build.rs.
cargo build --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# --no-fail-fast: every test binary runs, so one failure cannot hide another.
cargo test --no-fail-fast -- --test-threads="$(nproc)" 2>&1 | tee "$log" || status=$?
# Every fuzz target for a few seconds (and every input that ever crashed one); long runs are
# `bash scripts/fuzz.sh [seconds]`.
bash scripts/fuzz.sh 3 --quick 2>&1 | tee -a "$log" || status=$?
# One closing line for the whole run (cargo prints one "test result" per test binary, the last
# of which is the doc-tests' often empty one).
# Tests that could not run on this kernel say so on a "skipped: <test>: <why>" line; they are
# counted apart, with their reasons listed.
grep '^skipped: ' "$log" | sort -u >&2 || true
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^skipped: / { if (!seen[$0]++) s++ }
     /^fuzz [a-z_]+ / { fp++ } /^fuzz\.sh: [a-z_]+ (crashed|fails)/ { ff++ }
     END { printf "%d passed (%d of them skipped on this kernel), %d failed; fuzz targets: %d passed, %d failed\n", p, s, f, fp, ff }' "$log"
exit "$status"
