#!/usr/bin/env bash
# Sets up (idempotent) and runs the test suite against a real PostgreSQL:
# the embedded one (pgserver), and — when a PostgreSQL answers on
# 127.0.0.1:5432 (KAIREON_TEST_PG15_URL overrides) — that one too.
# Extra arguments go to pytest (each pass).
#
# The passes run at the same time, each in worker processes (pytest-xdist):
# the tests mostly wait on servers, sockets and subprocesses, so even 2 cores
# keep several workers busy. KAIREON_TEST_WORKERS sets the embedded pass's
# workers (default 4; 0 = no xdist, one process; the PostgreSQL 15 pass takes
# at most 2). Work units and their order:
# tests/support/work_units.py. The second-server pass and the TypeScript client
# write to logs that are printed, whole, when they finish.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/dev/setup.sh
BIN=.venv/bin
WORKERS=${KAIREON_TEST_WORKERS:-4}
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }
logs=$(mktemp -d "${TMPDIR:-/tmp}/kaireon-test-logs.XXXXXX")
trap 'rm -rf "$logs"' EXIT

xdist() {  # pytest-xdist arguments for N workers (none for 0)
  if [ "$1" -gt 0 ]; then echo "-n $1 --dist loadgroup"; fi
}

# The second server proves version compatibility: the tests that reach a
# PostgreSQL (marker db, derived from their fixtures); the rest and the
# process-level (slow) tests run on the embedded one and would only repeat
# themselves. Exit 5 (nothing selected, e.g. arguments naming only non-db tests) is fine.
# It also runs on the standard library's event loop (KAIREON_EVENT_LOOP=asyncio),
# the fallback, while the other passes run on the default, uvloop.
EXTERNAL=${KAIREON_TEST_PG15_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
second_pass=
if "$BIN/python" - "$EXTERNAL" >"$logs/second.version" 2>/dev/null <<'PY'
import asyncio, sys
import asyncpg
async def main() -> None:
    con = await asyncio.wait_for(asyncpg.connect(sys.argv[1]), 3)
    print(await con.fetchval("SHOW server_version"))
    await con.close()
try:
    asyncio.run(main())
except Exception:
    sys.exit(1)
PY
then
  second_pass="PostgreSQL $(cat "$logs/second.version") at ${EXTERNAL##*@}"
  echo "== started: tests on $second_pass (-m \"db and not slow\"), log printed when done"
  # shellcheck disable=SC2046  # xdist's words are meant to split
  (
    rc=0
    KAIREON_TEST_DATABASE_URL="$EXTERNAL" KAIREON_EVENT_LOOP=asyncio "$BIN/python" -m pytest -q -p no:cacheprovider \
      $(xdist $((WORKERS < 2 ? WORKERS : 2))) -m "db and not slow" "$@" >"$logs/second.log" 2>&1 || rc=$?
    if [ "$rc" -eq 5 ]; then rc=0; fi
    echo "$rc" >"$logs/second.rc"
    elapsed >"$logs/second.time"
  ) &
else
  echo "== no PostgreSQL on ${EXTERNAL##*@}: second-server pass skipped"
fi

# The TypeScript client against a live demo server it starts (embedded
# PostgreSQL); node --test prints its summary and exits non-zero on a failure.
if [ "${KAIREON_SKIP_NODE:-0}" != "1" ]; then
  echo "== started: TypeScript client (node --test), log printed when done"
  (
    rc=0
    npm --prefix clients/typescript test --silent >"$logs/node.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/node.rc"
    elapsed >"$logs/node.time"
  ) &
fi

echo "== tests on the embedded PostgreSQL (KAIREON_TEST_WORKERS=$WORKERS)"
embedded=0
# The 15 slowest tests are listed: where the time goes, for the next one tuning the order.
# shellcheck disable=SC2046
KAIREON_TEST_EXCLUSIVE=skip "$BIN/python" -m pytest -q -p no:cacheprovider --durations=15 \
  $(xdist "$WORKERS") "$@" || embedded=$?
echo "== embedded PostgreSQL pass: exit $embedded after $(elapsed)"
wait

# tests/multihost (network namespaces, nginx, several PostgreSQL and servers,
# deadlines under injected latency) alone on the machine, two files at a time:
# beside the busy workers their timings starved (GROUPED_FOLDERS in work_units.py).
echo "== tests that need the machine to themselves (tests/multihost), two at a time"
exclusive=0
# shellcheck disable=SC2046
KAIREON_TEST_EXCLUSIVE=only "$BIN/python" -m pytest -q -p no:cacheprovider \
  $(xdist $((WORKERS < 2 ? WORKERS : 2))) "$@" || exclusive=$?
echo "== exclusive tests: exit $exclusive after $(elapsed)"
# Exit 5 (none selected) in one of the two is fine when the other ran tests.
if [ "$embedded" -eq 5 ] && [ "$exclusive" -ne 5 ]; then embedded=0; fi
if [ "$exclusive" -eq 5 ] && [ "$embedded" -ne 5 ]; then exclusive=0; fi
if [ "$exclusive" -ne 0 ]; then embedded=$exclusive; fi

failed=$embedded
if [ "${KAIREON_SKIP_NODE:-0}" != "1" ]; then
  echo "== TypeScript client (node --test): exit $(cat "$logs/node.rc") after $(cat "$logs/node.time")"
  cat "$logs/node.log"
  if [ "$(cat "$logs/node.rc")" -ne 0 ]; then failed=1; fi
fi
if [ -n "$second_pass" ]; then
  echo "== tests on $second_pass: exit $(cat "$logs/second.rc") after $(cat "$logs/second.time")"
  cat "$logs/second.log"
  if [ "$(cat "$logs/second.rc")" -ne 0 ]; then failed=1; fi
fi
if [ "$failed" -ne 0 ]; then
  echo "== tests failed (embedded exit $embedded)"
  exit 1
fi
echo "== all test passes green in $(elapsed)"
