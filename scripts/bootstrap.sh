#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what the project needs on a Debian machine, idempotently: Debian packages (only the
# missing ones, so a second run touches no network), then the npm dependencies, which bring the
# pinned Node.js 24 runtime (package "node") that every npm script runs on.
set -euo pipefail
cd "$(dirname "$0")/.."

# wrk, sockperf and nginx-light: the PERFORMANCE.md B.1 tools `npm run bench` measures the
# floor-bearing rows with (bench/README.md); the bench runs its own nginx in the foreground.
DEB_PACKAGES=(iproute2 iptables nftables containernetworking-plugins stunnel4 tcpdump conntrack gcc make procps protobuf-compiler wrk sockperf nginx-light)

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
  # Debian starts a package's service from its postinst (invoke-rc.d): nginx would listen on
  # port 80. No service is started during this install: a policy-rc.d that denies every start
  # (exit 101), only if the machine has none, removed right after (and on any failure).
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e $policy && ! -L $policy ]]; then
    printf '#!/bin/sh\n# scripts/bootstrap.sh: no service starts during its apt-get install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if ((own_policy)); then
    rm -f "$policy"
    trap - EXIT
  fi
  if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
    # Not at boot either, and stopped if a policy of the machine's own let it start anyway.
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now nginx.service >/dev/null 2>&1 || true
    else
      deb-systemd-helper disable nginx.service >/dev/null 2>&1 || true
      update-rc.d nginx disable >/dev/null 2>&1 || true
    fi
    if [[ -s /run/nginx.pid ]] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
      nginx -s stop || true
    fi
  fi
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
