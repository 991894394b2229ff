#!/usr/bin/env bash
# Builds release binaries and runs the kernel-capacity benchmark (root): sprays within one
# drain interval, their totals, and what a neighbour keeps. Prints figures; not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --bins
exec python3 tests/bench/overflow.py "$@"
