#!/usr/bin/env bash
# Lints the release supply chain with the pinned binaries from .venv (dev group
# of uv.lock): actionlint over .github/workflows (with shellcheck on every run:
# script) and hadolint over the Dockerfile. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=.venv/bin
for tool in actionlint shellcheck hadolint; do
  if [ ! -x "$BIN/$tool" ]; then
    echo "lint_supply_chain: $BIN/$tool is missing; run bash tools/dev/setup.sh" >&2
    exit 2
  fi
done

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ ${#workflows[@]} -eq 0 ]; then
  echo "lint_supply_chain: no workflow under .github/workflows" >&2
  exit 2
fi

status=0
"$BIN/actionlint" -shellcheck "$BIN/shellcheck" "${workflows[@]}" || status=1
# Default failure threshold: any finding, even a style one, fails.
"$BIN/hadolint" Dockerfile || status=1
if [ "$status" -eq 0 ]; then
  echo "supply chain lint: ${#workflows[@]} workflow(s) and the Dockerfile are clean"
fi
exit "$status"
