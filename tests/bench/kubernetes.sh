#!/usr/bin/env bash
# Builds release binaries and runs the Kubernetes benchmark (root). Prints figures; not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --bins
exec python3 tests/bench/kubernetes.py "$@"
