#!/usr/bin/env bash
# Builds release binaries and runs the many-series benchmark and the render benchmark (root).
# Prints figures; not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --bins --example render_bench
./target/release/examples/render_bench
exec python3 tests/bench/series.py "$@"
