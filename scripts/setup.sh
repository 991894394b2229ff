#!/usr/bin/env bash
# Installs what building and testing sockscope needs on a Debian bookworm machine.
# Idempotent: each step checks first, so a second run takes a few seconds.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (apt-get, cgroups and BPF need it)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
LLVM_MAJOR=22
BPF_LINKER_VERSION=0.13.0
APT_PACKAGES=(
  "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" zlib1g-dev libzstd-dev
  iproute2 util-linux bpftool iperf3 wrk prometheus curl procps
  unbound knot-dnsutils dnsperf python3-venv openssl prometheus-alertmanager
  # The image (scripts/image.sh) and the tests that run it: static musl binaries (musl-gcc for
  # ring on amd64, clang for it on arm64), buildah and podman with runc (crun refuses hybrid
  # cgroup layouts) and catatonit (a pod's infra container), qemu to run the arm64 binary.
  musl-tools "clang-${LLVM_MAJOR}" buildah podman runc catatonit qemu-user-static
  # Packet drops by a filter rule in a test namespace (the drop-reason tests).
  nftables
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  apt-get update -qq
  # libpolly is only needed by some llvm builds; skip it when the archive lacks it.
  avail=()
  for p in "${missing[@]}"; do
    if apt-cache show "$p" >/dev/null 2>&1; then avail+=("$p"); else log "not in archive, skipped: $p"; fi
  done
  apt-get install -y -qq --no-install-recommends "${avail[@]}" >/dev/null
  # The DNS tests run their own unbound in a network namespace; the packaged service that
  # installing it may have started is not needed.
  for svc in unbound prometheus-alertmanager; do
    if [[ " ${avail[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null \
      && systemctl is-active --quiet "$svc" 2>/dev/null; then
      log "stopping the packaged $svc service (tests start their own)"
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "setup: the nightly Rust toolchain is missing (it builds the eBPF programs); install it with rustup" >&2
  exit 1
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

if ! bpf-linker --version 2>/dev/null | grep -q "${BPF_LINKER_VERSION}"; then
  log "building bpf-linker ${BPF_LINKER_VERSION} against llvm-${LLVM_MAJOR} (several minutes, once)"
  LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" \
    cargo install "bpf-linker@${BPF_LINKER_VERSION}" --locked --no-default-features --features "llvm-${LLVM_MAJOR}"
fi
# Static binaries for the image, one per architecture it is built for.
for triple in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$triple"; then
    log "adding the Rust target $triple"
    rustup target add "$triple" >/dev/null
  fi
done
# The fuzz targets (scripts/fuzz.sh, run briefly by the test command) build with cargo-fuzz on
# the nightly toolchain.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "${CARGO_FUZZ_VERSION}"; then
  log "installing cargo-fuzz ${CARGO_FUZZ_VERSION}"
  cargo install "cargo-fuzz@${CARGO_FUZZ_VERSION}" --locked
fi
# kubectl renders the kustomize base in the deploy test; Debian's kubernetes-client has it
# when no newer kubectl is installed.
if ! command -v kubectl >/dev/null; then
  log "installing kubernetes-client (kubectl)"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

# Offline schema validation of the rendered manifests (kubernetes-validate from PyPI), in a
# virtualenv of its own.
KUBERNETES_VALIDATE_VERSION=1.37.0
VENV="${SOCKSCOPE_VENV:-/var/cache/sockscope/venv}"
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "${KUBERNETES_VALIDATE_VERSION}"; then
  log "installing kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} into $VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
fi
# rotel (PyPI): an OTLP collector independent of sockscope, for the OTLP end-to-end tests.
ROTEL_VERSION=0.0.1a15
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('rotel') != '${ROTEL_VERSION}')" 2>/dev/null; then
  log "installing rotel ${ROTEL_VERSION} into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "rotel==${ROTEL_VERSION}"
fi
# helm-python-sdk (PyPI): the Helm v4 SDK through its C library, no helm binary. It lints and
# renders the chart (deploy/generate.py, the deploy tests) offline.
HELM_PYTHON_SDK_VERSION=0.2.2
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('helm-python-sdk') != '${HELM_PYTHON_SDK_VERSION}')" 2>/dev/null; then
  log "installing helm-python-sdk ${HELM_PYTHON_SDK_VERSION} into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "helm-python-sdk==${HELM_PYTHON_SDK_VERSION}"
fi
# The dashboards' type check (tests/tests/e2e/dashboards.rs): Grafana's published dashboard
# types (@grafana/schema) and tsc, pinned in dashboards/typecheck/package-lock.json, installed by
# npm ci into a directory of their own. Node.js 18 or newer (Debian's will do).
NODE_DIR="${SOCKSCOPE_NODE_DIR:-/var/cache/sockscope/node}"
TYPECHECK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/dashboards/typecheck"
node_missing=()
command -v node >/dev/null || node_missing+=(nodejs)
command -v npm >/dev/null || node_missing+=(npm)
if [ "${#node_missing[@]}" -gt 0 ]; then
  log "installing ${node_missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${node_missing[@]}" >/dev/null
fi
# Installed when a pinned package is missing or at another version, or tsc does not run.
if ! node -e 'const [pins, dir] = process.argv.slice(1);
    for (const [n, v] of Object.entries(require(pins).dependencies))
      if (require(`${dir}/node_modules/${n}/package.json`).version !== v) process.exit(1);' \
    "$TYPECHECK/package.json" "$NODE_DIR" 2>/dev/null \
  || ! "$NODE_DIR/node_modules/.bin/tsc" --version >/dev/null 2>&1; then
  log "installing $(node -p 'Object.entries(require(process.argv[1]).dependencies).map(e => e.join("@")).join(" ")' "$TYPECHECK/package.json") into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$TYPECHECK/package.json" "$TYPECHECK/package-lock.json" "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# The Debian package for plain hosts (scripts/package.sh and its test): cargo-deb, pinned;
# systemd-analyze (package systemd; it needs no running systemd) verifies and scores the unit.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb ${CARGO_DEB_VERSION}"; then
  log "installing cargo-deb ${CARGO_DEB_VERSION}"
  cargo install "cargo-deb@${CARGO_DEB_VERSION}" --locked
fi
if ! command -v systemd-analyze >/dev/null; then
  log "installing systemd (systemd-analyze)"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
log "ready"
