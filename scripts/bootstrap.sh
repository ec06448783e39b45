#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what the project needs on a Debian machine, idempotently: Debian packages (only the
# missing ones, so a second run touches no network), then the npm dependencies, which bring the
# pinned Node.js 24 runtime (package "node") that every npm script runs on.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(iproute2 iptables nftables containernetworking-plugins stunnel4 tcpdump conntrack gcc make procps protobuf-compiler)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: run as root, or install them with: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm dependencies (including the pinned Node 24 runtime), only when the lockfile changed.
stamp=node_modules/.bootstrap-stamp
if [[ ! -f $stamp || package-lock.json -nt $stamp ]]; then
  echo "bootstrap: installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  # tap ships built with its TypeScript loader plugin; .taprc removes it (Node 24 strips types
  # natively). Rebuild now, or the first run would still load the plugin.
  PATH="$PWD/node_modules/.bin:$PATH" node_modules/.bin/tap build >/dev/null
  touch "$stamp"
fi

node_bin=node_modules/.bin/node
if ! "$node_bin" -e 'process.exit(process.versions.node.startsWith("24.") ? 0 : 1)'; then
  echo "bootstrap: node_modules/.bin/node is not Node 24; remove node_modules and run again" >&2
  exit 1
fi
