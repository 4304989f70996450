#!/usr/bin/env bash
# Known-vulnerability audit of the runtime lock (uv.lock without the dev group)
# with a pinned pip-audit in a throwaway venv. Needs the vulnerability service
# (PyPI's JSON API per version, or OSV): the GitHub workflow runs it; a machine
# that cannot reach it gets exit code 3 and says so, never a silent pass.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP_AUDIT_VERSION=2.10.1
bash tools/dev/setup.sh >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.tools/bootstrap/bin/uv export --frozen --no-dev --no-emit-workspace --no-header \
  --format requirements-txt >"$work/requirements.txt"
# The service is probed first so "unreachable" is not mistaken for "vulnerable"
# (and, there, without first spending half a minute installing pip-audit).
if ! python3 - <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen("https://pypi.org/pypi/grpcio/1.76.0/json", timeout=10).read(1)
except Exception as exc:
    print(f"audit: PyPI's per-version JSON API is unreachable here ({exc})", file=sys.stderr)
    sys.exit(1)
PY
then
  echo "audit: NOT RUN: no vulnerability service reachable from this machine" >&2
  exit 3
fi
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -qq "pip-audit==$PIP_AUDIT_VERSION"
echo "audit: $(grep -c '==' "$work/requirements.txt") pinned runtime packages"
"$work/venv/bin/pip-audit" --strict --require-hashes --disable-pip --progress-spinner off \
  -r "$work/requirements.txt" "$@"
