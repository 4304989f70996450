#!/usr/bin/env bash
# Sets up everything the server, the tests and the linters need, from the lock
# files only: a bootstrap venv with a pinned uv, .venv from uv.lock, buf from
# package-lock.json, the TypeScript client's dev tools from
# clients/typescript/package-lock.json. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

UV_VERSION=0.13.9
if [ ! -x .tools/bootstrap/bin/uv ] || ! .tools/bootstrap/bin/uv --version | grep -q "$UV_VERSION"; then
  python3 -m venv .tools/bootstrap
  .tools/bootstrap/bin/python -m pip install --quiet "uv==$UV_VERSION"
fi
UV=.tools/bootstrap/bin/uv

# Debian's prometheus + promtool: tests/observability scrapes a running server
# with the real Prometheus and checks deploy/observability with promtool.
# Installed once, only when missing and when we may (root or sudo -n, apt); in CI
# a missing tool is an error here, and the tests fail (never skip) without it.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  # As root, or through password-less sudo (GitHub's runners run as `runner`).
  as_root=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
  fi
  if { [ "$(id -u)" = "0" ] || [ -n "$as_root" ]; } && command -v apt-get >/dev/null; then
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package starts a service on :9090 where systemd runs; tests start their own.
  elif [ "${CI:-}" = "true" ]; then
    echo "setup: prometheus/promtool missing and cannot be installed (need root and apt-get)" >&2
    exit 1
  else
    echo "setup: note: prometheus/promtool missing; run as root (apt-get install prometheus)" \
      "or the tests/observability checks fail" >&2
  fi
fi

# jq: the documented commands use it (tests/docs runs them; CONTRIBUTING.md).
if ! command -v jq >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq >/dev/null
  elif [ "${CI:-}" = "true" ]; then
    echo "setup: jq missing and cannot be installed (need root and apt-get)" >&2
    exit 1
  else
    echo "setup: note: jq missing; install it (apt-get install jq) or tests/docs fails" >&2
  fi
fi

# --locked: fail instead of silently re-resolving when uv.lock is stale.
"$UV" sync --locked --quiet "$@"

if [ "${KAIREON_SKIP_NODE:-0}" != "1" ]; then
  if [ ! -x node_modules/.bin/buf ] || [ package-lock.json -nt node_modules/.bin/buf ]; then
    # npm ci trips over the lock's other-platform optional packages (npm 11);
    # install honours the exact pin and the lock's integrity hashes.
    npm install --no-audit --no-fund --loglevel=error
  fi
  # The TypeScript client has its own lock (it is a publishable package); npm ci
  # installs exactly that, and only when the lock changed since the last install.
  TS=clients/typescript
  if [ ! -f "$TS/node_modules/.package-lock.json" ] || [ "$TS/package-lock.json" -nt "$TS/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$TS" --no-audit --no-fund --loglevel=error
  fi
fi

# The multi-host tests (tests/multihost: network namespaces, nft, nginx in front;
# docs/SCALING.md) need nginx and nftables, perf/run's closed-loop rows h2load
# (nghttp2-client). Installed only when running as root on a Debian-like system and
# missing; elsewhere those tests fail naming what is missing, and perf/run notes
# the rows it could not measure.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
  if [ "${#missing[@]}" -gt 0 ]; then
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
  fi
fi
