"""`kaireon verify audit EXPORT`: check an audit export offline (docs/AUDIT.md).

Trusts only the pinned keys given on the command line: the log's vkey for the
tenant's origin and the witnesses' vkeys (`--quorum` of them must have cosigned).
Reports the first bad leaf index; exit 0 verified, 1 not verified, 2 bad usage.
"""

from __future__ import annotations

import argparse
from typing import Any

from kaireon_client.tlog import verify as tlog_verify


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("verify", help="verify evidence offline, trusting pinned keys")
    commands = parser.add_subparsers(dest="evidence", required=True, metavar="EVIDENCE")
    audit = commands.add_parser(
        "audit", help="an exported range of audit entries against a signed checkpoint"
    )
    tlog_verify.build_parser(audit)
    audit.set_defaults(func=_audit, offline=True)


def _audit(args: argparse.Namespace, _client: object) -> int:
    return tlog_verify.run(args)
