#!/usr/bin/env bash
# Builds sockscope's container image offline: for each architecture a static release binary
# (musl: no libc in the image; arm64 cross-built, see .cargo/config.toml) in an image FROM
# scratch (deploy/Containerfile) with OCI labels, then a manifest list over them. The images go
# to sockscope's container storage (scripts/containers.sh). Prints the image reference as its
# last line (also written to target/image/ref).
#
#   bash scripts/image.sh [--arch amd64,arm64] [--image REPOSITORY]
#
# Defaults: both architectures, repository ghcr.io/sockscope/sockscope, tag = the workspace
# version. Push with e.g.
#   bash scripts/containers.sh buildah manifest push --all ghcr.io/sockscope/sockscope:0.1.0 \
#     docker://registry.example.com/sockscope:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."

arches=amd64,arm64
repo=${SOCKSCOPE_IMAGE:-ghcr.io/sockscope/sockscope}
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arches=${2:?--arch needs a value}; shift 2 ;;
    --image) repo=${2:?--image needs a value}; shift 2 ;;
    *) echo "image.sh: usage: image.sh [--arch amd64,arm64] [--image REPOSITORY]" >&2; exit 2 ;;
  esac
done

export PATH="$HOME/.cargo/bin:$PATH"
# One value each, from where it is defined: Cargo.toml and git.
meta=$(cargo metadata --no-deps --format-version 1 --locked)
field() { python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['packages'] if p['name']=='sockscope'][0]; print(p['$1'] or '')" <<<"$meta"; }
version=$(field version)
licenses=$(field license)
source=$(field repository)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then revision="$revision-dirty"; fi
# The commit's time, not the build's: the same commit gives the same image config.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
ref="$repo:$version"

out=target/image
mkdir -p "$out/context"
cp deploy/Containerfile "$out/context/Containerfile"
triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) echo "image.sh: unknown architecture $1 (amd64, arm64)" >&2; exit 2 ;;
  esac
}
targets=()
for arch in ${arches//,/ }; do
  triple=$(triple_of "$arch")
  rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >&2
  targets+=(--target "$triple")
done
# One cargo run for every architecture: the build scripts and procedural macros, which run on
# this machine, are built once for all of them, and the targets build side by side.
echo "image.sh: building the binaries (${arches})" >&2
cargo build --release --locked "${targets[@]}" -p sockscope --bin sockscope >&2
images=()
for arch in ${arches//,/ }; do
  triple=$(triple_of "$arch")
  cp "target/$triple/release/sockscope" "$out/context/sockscope-$arch"
  if [ "${SOCKSCOPE_PRUNE_BUILD:-0}" = 1 ]; then
    # CI: the intermediate files of this build (about 0.7 GB) go; the binary stays for the
    # package (scripts/package.sh). A later build of this target starts from scratch.
    rm -rf "target/$triple/release/"{build,deps,.fingerprint,incremental,examples}
  fi
  echo "image.sh: building $ref-$arch" >&2
  bash scripts/containers.sh buildah bud --quiet --layers=false \
    --arch "$arch" --os linux --timestamp "$epoch" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" --build-arg "SOURCE=$source" \
    --build-arg "LICENSES=$licenses" \
    -f "$out/context/Containerfile" -t "$ref-$arch" "$out/context" >&2
  images+=("$ref-$arch")
done
# The manifest list under the plain tag: a runtime picks its own architecture from it.
bash scripts/containers.sh buildah manifest rm "$ref" >/dev/null 2>&1 || true
bash scripts/containers.sh buildah manifest create "$ref" >/dev/null
for img in "${images[@]}"; do
  bash scripts/containers.sh buildah manifest add "$ref" "containers-storage:$img" >/dev/null
done
for img in "${images[@]}"; do
  size=$(bash scripts/containers.sh podman image inspect --format '{{.Size}}' "$img")
  echo "image.sh: $img $((size / 1024 / 1024)) MiB" >&2
done
# The images these tags pointed to before, now untagged.
bash scripts/containers.sh podman image prune -f >/dev/null
echo "$ref" >"$out/ref"
echo "$ref"
