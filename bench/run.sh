#!/usr/bin/env bash
# tether-bench's one command: builds or installs every subject, runs every scenario
# against each (server pinned to core 0, load generator to core 1, fresh server per
# run, interleaved rounds) and writes the tables into docs/BENCHMARKS.md.
#
#   bench/run.sh                 # the issue's sizes, 3 rounds (about an hour)
#   bench/run.sh --quick         # smaller sizes, shorter windows
#   bench/run.sh --quick --rounds 1 --only tether   # a subset (name contains the word)
#
# A peer that cannot be built or installed is skipped and named in the output; the
# tether subjects need only cargo. With --only, peers whose names do not contain the
# word are not built either. See bench/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '\n== %s\n' "$*" >&2; }

# --only WORD: the runner keeps the subjects whose name contains WORD; a group of peers
# none of whose names does is not built (the names are the runner's, bench/src/runner.rs).
only=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[i]}" = --only ] && only=${args[i + 1]:-}
done
wanted() {
  [ -z "$only" ] && return 0
  local name
  for name in "$@"; do
    [[ $name == *"$only"* ]] && return 0
  done
  return 1
}

say "tether-bench (load generator and tether subjects)"
cargo build --release -p tether-bench || exit 1

if ! wanted fastwebsockets tokio-tungstenite socketioxide; then
  echo "Rust peers not built (--only $only)" >&2
else
  say "Rust peers: fastwebsockets, tokio-tungstenite, socketioxide (bench/peers)"
  cargo build --release --manifest-path bench/peers/Cargo.toml \
    || echo "Rust peers not built: they will be skipped" >&2
fi

if ! wanted "uWebSockets.js (Node)" "ws (Node)" "socket.io (Node)"; then
  echo "Node peers not installed (--only $only)" >&2
elif command -v npm >/dev/null; then
  say "Node peers: ws, socket.io, uWebSockets.js (bench/node)"
  (cd bench/node && npm ci --no-audit --no-fund) || echo "Node peers not installed" >&2
  # uWebSockets.js's prebuilt binaries need glibc 2.38 (three C23 functions). On an
  # older glibc (Debian 12: 2.36), link them to a tiny shim instead; see bench/README.md.
  if [ -d bench/node/node_modules/uWebSockets.js ] \
    && ! (cd bench/node && node -e "require('uWebSockets.js')" >/dev/null 2>&1); then
    # The shim needs patchelf: install it where apt can (a fresh Debian machine as root).
    if ! command -v patchelf >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get install -y -q patchelf >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q patchelf >/dev/null 2>&1; }
    fi
    abi=$(node -p process.versions.modules)
    binary=$(ls bench/node/node_modules/uWebSockets.js/uws_linux_x64_"$abi".node 2>/dev/null)
    shim=$root/bench/node/node_modules/.libisoc23.so
    if [ -n "$binary" ] && command -v patchelf >/dev/null && command -v cc >/dev/null \
      && cc -O2 -shared -fPIC -o "$shim" bench/node/glibc-shim/isoc23.c; then
      for symbol in __isoc23_sscanf __isoc23_strtol __isoc23_strtoul; do
        patchelf --clear-symbol-version "$symbol" "$binary"
      done
      patchelf --add-needed "$shim" "$binary"
      python3 bench/node/glibc-shim/relabel_verneed.py "$binary"
    fi
    if ! (cd bench/node && node -e "require('uWebSockets.js')" >/dev/null 2>&1); then
      echo "uWebSockets.js does not load here (needs patchelf and cc for the shim): skipped" >&2
      rm -rf bench/node/node_modules/uWebSockets.js
    fi
  fi
else
  echo "no npm: Node peers skipped" >&2
fi

if ! wanted "websockets (Python)"; then
  echo "Python peer not installed (--only $only)" >&2
elif command -v python3 >/dev/null; then
  say "Python peer: websockets (bench/python)"
  (cd bench/python && { [ -x .venv/bin/python ] || python3 -m venv .venv; } \
    && .venv/bin/pip install -q -r requirements.txt) || echo "Python peer not installed" >&2
fi

if ! command -v taskset >/dev/null; then
  echo "taskset (util-linux) is needed to pin the server and the load generator" >&2
  exit 1
fi

say "running the scenarios"
exec target/release/tether-bench all "$@"
