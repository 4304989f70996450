#!/usr/bin/env bash
# Sets up (idempotent) and runs the test suite against a real PostgreSQL:
# the embedded one (pgserver), and — when a PostgreSQL answers on
# 127.0.0.1:5432 (KAIREON_TEST_PG15_URL overrides) — that one too.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/dev/setup.sh
BIN=.venv/bin

echo "== tests on the embedded PostgreSQL"
"$BIN/python" -m pytest -q -p no:cacheprovider "$@"

# The TypeScript client against a live demo server it starts (embedded
# PostgreSQL); node --test prints its summary and exits non-zero on a failure.
if [ "${KAIREON_SKIP_NODE:-0}" != "1" ]; then
  echo "== TypeScript client (node --test)"
  npm --prefix clients/typescript test --silent
fi

EXTERNAL=${KAIREON_TEST_PG15_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
if "$BIN/python" - "$EXTERNAL" <<'PY'
import asyncio, sys
import asyncpg
async def main() -> None:
    con = await asyncio.wait_for(asyncpg.connect(sys.argv[1]), 3)
    print("== tests on", await con.fetchval("SHOW server_version"), "at", sys.argv[1].split("@")[-1])
    await con.close()
try:
    asyncio.run(main())
except Exception:
    sys.exit(1)
PY
then
  # The second server proves version compatibility: the tests that reach a
  # PostgreSQL (marker db, derived from their fixtures); the rest and the
  # process-level (slow) tests ran above and would only repeat themselves.
  KAIREON_TEST_DATABASE_URL="$EXTERNAL" "$BIN/python" -m pytest -q -p no:cacheprovider -m "db and not slow" "$@"
else
  echo "== no PostgreSQL on ${EXTERNAL##*@}: second-server pass skipped"
fi
