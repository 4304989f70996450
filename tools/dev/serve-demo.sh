#!/usr/bin/env bash
# Sets up (idempotent) and runs the server on the embedded PostgreSQL with the
# demo tenant seeded: gRPC on :50051, REST on :8080. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
KAIREON_SKIP_NODE=1 bash tools/dev/setup.sh
exec .venv/bin/kaireon-server --demo "$@"
