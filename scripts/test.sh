#!/usr/bin/env bash
# Installs what is missing, then runs every test: unit tests and the end-to-end tests, which load
# the real eBPF programs into this kernel (root required).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The end-to-end tests run the sockscope binary next to their peer binary. Default members
# only: the eBPF crate builds for the BPF target, through exporter/build.rs.
cargo build --bins
cargo test -- --test-threads="$(nproc)"
