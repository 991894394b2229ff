#!/usr/bin/env bash
# podman or buildah on sockscope's own container storage, with the settings this machine kind
# needs; scripts/image.sh, the podman end-to-end test and you share it:
#
#   bash scripts/containers.sh podman images
#   bash scripts/containers.sh buildah manifest inspect ghcr.io/sockscope/sockscope:0.1.0
#
# vfs storage (needs no overlay filesystem), runc (crun refuses a hybrid cgroup v1/v2 layout)
# and the cgroupfs manager (no systemd as PID 1 needed); explicit ulimits (containers.conf). A root of its own keeps these settings
# from clashing with the host's own podman storage. SOCKSCOPE_CONTAINERS moves it.
set -euo pipefail
root=${SOCKSCOPE_CONTAINERS:-/var/lib/sockscope/containers}
export CONTAINERS_CONF="$(cd "$(dirname "$0")" && pwd)/containers.conf"
storage=(--root "$root/storage" --runroot "$root/run" --storage-driver vfs)
tool=${1:-}
shift || true
case "$tool" in
  podman) exec podman "${storage[@]}" --runtime runc --cgroup-manager cgroupfs "$@" ;;
  buildah) exec buildah "${storage[@]}" "$@" ;;
  *) echo "usage: containers.sh podman|buildah ARGS..." >&2; exit 2 ;;
esac
