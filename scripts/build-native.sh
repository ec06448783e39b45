#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the Node-API socket addon (src/shared/native/mesh_native.c) into
# build/native/mesh_native.node with gcc against the node-api-headers package: no node-gyp,
# no Python (DESIGN.md decision 4). Idempotent: does nothing when the .node is newer than the
# C source and this script. Run as `npm run build:native` or `bash scripts/build-native.sh`;
# `--force` rebuilds regardless.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/src/shared/native/mesh_native.c"
headers="$root/node_modules/node-api-headers/include"
out_dir="$root/build/native"
out="$out_dir/mesh_native.node"
cc="${CC:-gcc}"

if [[ "$(uname -s)" != "Linux" ]]; then
  echo "build-native: the socket addon needs Linux (setns, SO_MARK, SO_ORIGINAL_DST); this is $(uname -s)" >&2
  exit 1
fi

if [[ "${1:-}" != "--force" && -f "$out" && "$out" -nt "$src" && "$out" -nt "${BASH_SOURCE[0]}" ]]; then
  echo "build-native: $out is up to date"
  exit 0
fi

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-native: C compiler '$cc' not found; install it with: apt-get install gcc" >&2
  exit 1
fi
if [[ ! -f "$headers/node_api.h" ]]; then
  echo "build-native: $headers/node_api.h missing; run npm ci (devDependency node-api-headers)" >&2
  exit 1
fi

mkdir -p "$out_dir"
# Build to a temporary name and rename, so a concurrent loader never sees a half-written file.
tmp="$(mktemp "$out_dir/.mesh_native.XXXXXX.node")"
trap 'rm -f "$tmp"' EXIT
# -shared without -Wl,--no-undefined: the napi_* symbols resolve against the node binary at
# dlopen time. -fvisibility=hidden keeps everything but the N-API entry points private.
"$cc" -std=gnu11 -O2 -g -Wall -Wextra -fPIC -fvisibility=hidden -shared \
  -I "$headers" -o "$tmp" "$src" -lm
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "build-native: built $out"
