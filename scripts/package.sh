#!/usr/bin/env bash
# Builds sockscope's Debian packages for plain hosts into target/debian/: for each architecture,
# the static release binary scripts/image.sh built (target/<musl triple>/release/sockscope, not
# rebuilt, not stripped: the package holds the image's binary byte for byte), the hardened
# systemd unit and an example config (deploy/systemd/; metadata in exporter/Cargo.toml,
# [package.metadata.deb]). Prints the packages' paths, space-separated, as its last line.
#
#   bash scripts/image.sh            # the binaries (and the images)
#   bash scripts/package.sh [--arch amd64,arm64] [--deb-version VERSION]
#
# Default: every architecture whose binary exists (amd64 and arm64 after image.sh), version
# <workspace version>-1. cargo-deb replaces the package of other versions of the same
# architecture in target/debian/. Needs cargo-deb (scripts/setup.sh installs it).
set -euo pipefail

arches=
deb_version=()
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arches=${2:?--arch needs a value}; shift 2 ;;
    --deb-version) deb_version=(--deb-version "${2:?--deb-version needs a value}"); shift 2 ;;
    *) echo "package.sh: usage: package.sh [--arch amd64,arm64] [--deb-version VERSION]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: cargo-deb is missing: run bash scripts/setup.sh" >&2
  exit 1
fi

triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) echo "package.sh: unknown architecture $1 (amd64, arm64)" >&2; exit 2 ;;
  esac
}

explicit=1
if [ -z "$arches" ]; then
  explicit=0
  arches=amd64,arm64
fi
out=target/debian
mkdir -p "$out"
debs=()
for arch in ${arches//,/ }; do
  triple=$(triple_of "$arch")
  bin="target/$triple/release/sockscope"
  if [ ! -x "$bin" ]; then
    if [ "$explicit" = 1 ]; then
      echo "package.sh: $bin missing: run bash scripts/image.sh" >&2
      exit 1
    fi
    echo "package.sh: no $arch binary ($bin), no $arch package" >&2
    continue
  fi
  echo "package.sh: packaging $bin" >&2
  # --no-build: the binary as image.sh built it (one release build per architecture, shared
  # with the image); --no-strip: those exact bytes.
  deb=$(cargo deb -p sockscope --no-build --no-strip --target "$triple" "${deb_version[@]}" \
    --output "$out/" | tail -n 1)
  if [ ! -f "$deb" ]; then
    echo "package.sh: cargo deb did not report a package for $arch (got: $deb)" >&2
    exit 1
  fi
  echo "package.sh: $deb $(du -h "$deb" | cut -f1)" >&2
  debs+=("$deb")
done
if [ "${#debs[@]}" -eq 0 ]; then
  echo "package.sh: no binary to package: run bash scripts/image.sh" >&2
  exit 1
fi
echo "${debs[*]}"
