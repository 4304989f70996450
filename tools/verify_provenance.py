"""Verify a provenance bundle, or any signed canonical JSON artifact, offline.

    # a bundle saved by `kaireon provenance DEC --out bundle.json` (writes .sig/.sha256 too)
    python tools/verify_provenance.py --body bundle.json \\
        --digest "$(cat bundle.json.sha256)" --signature-file bundle.json.sig \\
        --public-key signing-key.pub

    # a DSAR export package, or any other signed canonical JSON document
    python tools/verify_provenance.py --body export.json --digest HEX \\
        --signature B64 --public-key pub.pem

Checks (see kaireon_client/verify.py for exactly what each covers):
  digest       sha256 of the body bytes equals --digest (when given)
  signature    ECDSA P-256 SHA-256 over the body verifies with --public-key;
               "unsigned" fails unless --allow-unsigned
  canonical    the body is RFC 8785 canonical JSON
  schema       (bundles) schemaVersion is kaireon.provenance.v1
  audit-links  (bundles) auditLog entries are well formed and neighbouring
               entries (seq n, n+1) are linked prevHash -> integrityHash

Exit status: 0 every check passed, 1 a check failed, 2 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kaireon_client.verify import BUNDLE_SCHEMA, Report, verify_artifact, verify_bundle


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify_provenance.py",
        description="Verify digest, signature and audit links of a provenance bundle, "
        "or digest and signature of any signed canonical JSON artifact, offline.",
    )
    parser.add_argument("--body", required=True, type=Path, help="the artifact bytes (JSON)")
    parser.add_argument("--digest", help="expected sha256 hex of the body (X-Provenance-Digest)")
    signature = parser.add_mutually_exclusive_group()
    signature.add_argument(
        "--signature", help='base64 signature (X-Provenance-Signature) or "unsigned"'
    )
    signature.add_argument("--signature-file", type=Path, help="file holding the base64 signature")
    parser.add_argument("--public-key", type=Path, help="PEM public key of the signer")
    parser.add_argument(
        "--kind",
        choices=["auto", "bundle", "artifact"],
        default="auto",
        help="bundle adds the schema and audit-link checks; auto picks by schemaVersion",
    )
    parser.add_argument(
        "--allow-unsigned", action="store_true", help='accept an "unsigned" artifact'
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _is_bundle(body: bytes) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("schemaVersion") == BUNDLE_SCHEMA


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    for check in report.checks:
        print(f"{'PASS' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    print("verified" if report.ok else "NOT verified")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        body = args.body.read_bytes()
        signature = (
            args.signature_file.read_text().strip() if args.signature_file else args.signature
        )
        public_key = args.public_key.read_bytes() if args.public_key else None
    except OSError as exc:
        print(f"verify_provenance.py: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    bundle = args.kind == "bundle" or (args.kind == "auto" and _is_bundle(body))
    verify = verify_bundle if bundle else verify_artifact
    report = verify(
        body,
        digest=args.digest,
        signature=signature,
        public_key_pem=public_key,
        allow_unsigned=args.allow_unsigned,
    )
    _print(report, args.json)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
