#!/usr/bin/env bash
# Installs what is missing, builds sockscope and runs it on this host (as root), attached to the
# whole cgroup v2 tree. Extra arguments are passed to sockscope, e.g. --label-process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p sockscope
exec ./target/release/sockscope "$@"
