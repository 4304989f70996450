#!/usr/bin/env bash
# Every static check CI runs: formatting, lint, types, proto style, generated-code
# freshness, workflow/Dockerfile lint. Run tools/dev/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin

echo "== ruff format --check";  "$BIN/ruff" format --check .
echo "== ruff check";           "$BIN/ruff" check .
echo "== mypy (strict)";        "$BIN/mypy"
echo "== buf lint";             node_modules/.bin/buf lint
echo "== generated code";       "$BIN/python" tools/gen_protos.py --check 2>/dev/null
echo "== generated code (TypeScript)"; node clients/typescript/scripts/generate.mjs --check
echo "== tsc (TypeScript client)";     clients/typescript/node_modules/.bin/tsc -p clients/typescript/tsconfig.json --noEmit
echo "== promtool (alert rules)"; (cd deploy/observability && promtool check rules alerts.yml >/dev/null && promtool test rules alerts_test.yml >/dev/null)
echo "== supply chain";         bash tools/dev/lint_supply_chain.sh
