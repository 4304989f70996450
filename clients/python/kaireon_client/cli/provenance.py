"""`kaireon provenance DECISION_ID [--verify] [--out FILE]`: a decision's signed bundle.

Without --out the bundle bytes go to stdout unchanged (pipe them; the digest is
over exactly those bytes) and the summary to stderr. With --out FILE the bundle
is written to FILE, its signature to FILE.sig and its sha256 to FILE.sha256
(`<hex>  <name>`, the format `sha256sum -c` checks),
the inputs of tools/verify_provenance.py and of `openssl dgst -sha256 -verify`.
--verify fetches the signing key (GetSigningKey) and checks digest, signature,
canonical form and audit-log links here, offline; a failure exits with 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kaireon.provenance.v1 import provenance_pb2
from kaireon_client.checksum import write_checksum_file
from kaireon_client.cli.common import EXIT_VERIFY_FAILED, print_json
from kaireon_client.client import KaireonClient
from kaireon_client.verify import Report, verify_bundle


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "provenance",
        help="fetch the signed provenance bundle of one decision (admin)",
        description="Fetch the canonical, digested and signed provenance bundle of one "
        "decision. Without --out the bundle bytes are written to stdout unchanged.",
    )
    parser.add_argument("decision_id", metavar="DECISION_ID", help="the decision (trace) id")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check digest, signature (key from GetSigningKey) and audit-log links; exit 3 "
        "when any check fails",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the bundle to FILE, its signature to FILE.sig and its sha256 to FILE.sha256",
    )
    parser.set_defaults(func=_provenance)


def _write(out: Path, reply: provenance_pb2.GetDecisionProvenanceResponse) -> None:
    out.write_bytes(reply.bundle.data)
    Path(f"{out}.sig").write_text(reply.signature + "\n")
    write_checksum_file(out, reply.digest_sha256)


def _verify(client: KaireonClient, body: bytes, digest: str, signature: str) -> Report:
    key = client.provenance.GetSigningKey(provenance_pb2.GetSigningKeyRequest())
    return verify_bundle(
        body,
        digest=digest,
        signature=signature,
        # An unsigned deployment serves no key: the signature check then fails.
        public_key_pem=key.public_key_pem or None,
    )


def _provenance(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.provenance.GetDecisionProvenance(
        provenance_pb2.GetDecisionProvenanceRequest(decision_id=args.decision_id)
    )
    body = reply.bundle.data
    report = _verify(client, body, reply.digest_sha256, reply.signature) if args.verify else None
    if args.out is not None:
        _write(args.out, reply)
    if args.json:
        summary: dict[str, Any] = {
            "decisionId": args.decision_id,
            "schema": reply.schema,
            "digestSha256": reply.digest_sha256,
            "signature": reply.signature,
            "out": str(args.out) if args.out else None,
            "verification": report.as_dict() if report else None,
        }
        if args.out is None:
            summary["bundle"] = json.loads(body)
        print_json(summary)
    else:
        if args.out is None:
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
        info = sys.stderr if args.out is None else sys.stdout
        signed = reply.signature != "unsigned"
        lines = [
            f"{reply.schema} bundle of {args.decision_id}: {len(body)} bytes"
            + (f" written to {args.out} (+ .sig, .sha256)" if args.out else ""),
            f"sha256 {reply.digest_sha256}",
            "signature: " + ("ECDSA P-256 SHA-256" if signed else "UNSIGNED"),
        ]
        if report is not None:
            lines += [f"{'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in report.checks]
            lines.append("verified" if report.ok else "NOT verified")
        print("\n".join(lines), file=info)
    if report is not None and not report.ok:
        return EXIT_VERIFY_FAILED
    return 0
