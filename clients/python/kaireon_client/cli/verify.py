"""`kaireon verify receipt|bundle|export|audit FILE`: check an artefact offline.

Nothing is fetched from the service: every check trusts only the keys pinned
on the command line (`--key` PEM file for signed artefacts, `--log-vkey` /
`--witness-vkey` for a transparency-log export). One verdict line on stdout.
With a pinned log key (`--log-key VKEYFILE` or `--log-vkey`), receipt, bundle
and export also need the evidence proof of their own audit row (the receipt's
`tlogProof`, `--proof`, or FILE.tlog-proof; docs/AUDIT.md), checked after the
signature; its verdict is a second line (a refusal exits 1).

Exit status (docs/VERIFYING.md):
  0  verified
  1  the content does not verify (hash chain, proofs, canonical form, schema,
     fields that differ from the signed ones)
  2  bad usage or unreadable input (missing file or sidecar, not JSON, bad key)
  3  the digest does not match the bytes
  4  the signature does not verify (wrong key, altered bytes, or "unsigned")
When several checks fail, the lowest-level one decides: digest, then signature.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kaireon_client import strict_json
from kaireon_client.audit_chain import (
    GENESIS_HASH,
    events_of,
    normalise_event,
    verify_rows,
)
from kaireon_client.checksum import parse_checksum
from kaireon_client.package import PackageError, load_package
from kaireon_client.receipt import verify_receipt
from kaireon_client.signing import load_public_key
from kaireon_client.tlog import evidence
from kaireon_client.tlog import verify as tlog_verify
from kaireon_client.verify import Check, Report, verify_artifact, verify_bundle

EXIT_VERIFIED = 0
EXIT_CONTENT = 1
EXIT_USAGE = 2
EXIT_DIGEST = 3
EXIT_SIGNATURE = 4


class _Unusable(Exception):
    """Input that cannot be checked at all (exit 2)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="verify an artefact offline, trusting pinned keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="evidence", required=True, metavar="ARTEFACT")

    receipt = commands.add_parser(
        "receipt", help="an erasure receipt (EraseCustomerResponse JSON, or the receipt alone)"
    )
    receipt.add_argument("file", help="JSON file ('-' for stdin)")
    _key_options(receipt)
    evidence.add_proof_options(receipt)
    receipt.set_defaults(func=_receipt, offline=True)

    for name, helptext, func in (
        ("bundle", "a provenance bundle saved with --out (FILE, FILE.sha256, FILE.sig)", _bundle),
        ("export", "a DSAR export package (FILE, FILE.sha256, FILE.sig)", _export),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("file", type=Path, help="the artefact bytes as served")
        sub.add_argument("--sha256", type=Path, help="digest sidecar (default FILE.sha256)")
        sub.add_argument("--sig", type=Path, help="signature sidecar (default FILE.sig)")
        sub.add_argument("-v", "--verbose", action="store_true", help="print every check")
        _key_options(sub)
        evidence.add_proof_options(sub)
        sub.set_defaults(func=func, offline=True)

    audit = commands.add_parser(
        "audit",
        help="a ListAuditEvents dump (hash chain recomputed) or a transparency-log export",
    )
    tlog_verify.build_parser(audit, require_log_key=False)
    audit.add_argument(
        "--after",
        metavar="SEQ:HASH",
        help="a dump not starting at seq 1 continues the row SEQ whose integrity hash is HASH",
    )
    audit.add_argument(
        "--head", metavar="SEQ:HASH", help="the chain head the dump must end at (e.g. VerifyChain)"
    )
    audit.set_defaults(func=_audit, offline=True)


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, help="PEM public key of the service (pinned)")
    parser.add_argument(
        "--allow-unsigned", action="store_true", help='accept an "unsigned" artefact'
    )


def _read_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        pem = path.read_bytes()
        load_public_key(pem)
    except OSError as exc:
        raise _Unusable(f"cannot read {exc.filename}: {exc.strerror}") from exc
    except ValueError as exc:
        raise _Unusable(f"{path}: not an ECDSA P-256 public key PEM ({exc})") from exc
    return pem


def _read_json(name: str) -> Any:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise _Unusable(f"cannot read {exc.filename}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise _Unusable(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        return strict_json.loads(text)
    except ValueError as exc:
        raise _Unusable(f"{name}: not JSON ({exc})") from exc


_Command = Callable[[argparse.Namespace], int]


def _guarded(func: _Command) -> Callable[[argparse.Namespace, object], int]:
    def run(args: argparse.Namespace, _client: object) -> int:
        try:
            return func(args)
        except _Unusable as exc:
            print(f"kaireon verify {args.evidence}: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


@_guarded
def _receipt(args: argparse.Namespace) -> int:
    pem = _read_key(args.key)
    document = _read_json(args.file)
    if not isinstance(document, dict):
        raise _Unusable("the input is not a JSON object")
    report = verify_receipt(document, pem, allow_unsigned=args.allow_unsigned)
    if not report.ok:
        for problem in report.problems:
            print(f"FAIL {problem.kind}: {problem.message}")
        print("erasure receipt does NOT verify")
        if report.failed("digest"):
            return EXIT_DIGEST
        return EXIT_SIGNATURE if report.failed("signature") else EXIT_CONTENT
    payload = report.payload
    # No customer id: verdicts may end up in logs.
    print(
        f"erasure receipt verified: tenant {payload['tenantId']} (audit event "
        f"{payload['auditEventId']}, seq {payload.get('auditSeq')}, "
        f"{payload['totalDeleted']} rows, erased at {payload['erasedAt']})"
    )
    canonical, carried = evidence.receipt_parts(json.dumps(document).encode())
    return _with_proof(args, "receipt", canonical, carried)


def _with_proof(args: argparse.Namespace, kind: str, artefact: bytes, carried: str = "") -> int:
    """With a pinned log key (--log-key / --log-vkey), the artefact's own audit row
    must be proven by its evidence proof too (docs/AUDIT.md, "Evidence carries
    proofs"): --proof, the receipt's tlogProof, or the FILE.tlog-proof sidecar."""
    if not (args.log_key or args.log_vkey):
        return EXIT_VERIFIED
    if args.proof is None and kind != "receipt":
        sidecar = Path(f"{args.file}.tlog-proof")
        args.proof = str(sidecar) if sidecar.exists() else None
    result = evidence.check_proof(args, kind, artefact, carried)
    return {0: EXIT_VERIFIED, 2: EXIT_USAGE}.get(result, EXIT_CONTENT)


def _signed_file(args: argparse.Namespace, what: str, verify: Callable[..., Report]) -> int:
    pem = _read_key(args.key)
    try:
        package = load_package(args.file, digest_path=args.sha256, signature_path=args.sig)
    except PackageError as exc:
        raise _Unusable(str(exc)) from exc
    try:
        digest = parse_checksum(package.digest, args.file.name)
    except ValueError as exc:
        report = Report((Check("digest", False, str(exc)),))
    else:
        signature = package.signature
        if signature is None and pem is not None:
            raise _Unusable(f"no signature: {args.sig or str(args.file) + '.sig'} is missing")
        if signature is not None and pem is None and signature != "unsigned":
            raise _Unusable("a signed artefact needs the signer's public key (--key)")
        report = verify(
            package.body,
            digest=digest,
            signature=signature,
            public_key_pem=pem,
            allow_unsigned=args.allow_unsigned,
        )
    if getattr(args, "json", False):
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for check in report.checks:
            if args.verbose or not check.ok:
                print(f"{'PASS' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        if report.ok:
            print(f"{what} verified ({', '.join(c.name for c in report.checks)})")
        else:
            print(f"{what} does NOT verify")
    if report.ok:
        return _with_proof(args, what, package.body)
    if report.failed("digest"):
        return EXIT_DIGEST
    return EXIT_SIGNATURE if report.failed("signature") else EXIT_CONTENT


@_guarded
def _bundle(args: argparse.Namespace) -> int:
    return _signed_file(args, "bundle", verify_bundle)


@_guarded
def _export(args: argparse.Namespace) -> int:
    return _signed_file(args, "export", verify_artifact)


def _position(value: str | None, option: str) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit():
        raise _Unusable(f"{option} takes SEQ:HASH, e.g. 6:{'0' * 8}…")
    return int(seq), digest


@_guarded
def _audit(args: argparse.Namespace) -> int:
    document = _read_json(args.export)
    if isinstance(document, dict) and "format" in document:
        if not args.log_vkey:
            raise _Unusable("a transparency-log export needs the pinned --log-vkey")
        return tlog_verify.run_on(args, document)
    return _audit_chain(args, document)


def _audit_chain(args: argparse.Namespace, document: Any) -> int:
    try:
        rows = sorted((normalise_event(e) for e in events_of(document)), key=lambda r: r["seq"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Unusable(f"not a ListAuditEvents dump ({type(exc).__name__}: {exc})") from exc
    if not rows:
        raise _Unusable("the dump holds no audit events")
    start = _position(args.after, "--after")
    first = rows[0]
    if start is None:
        # A range from mid-chain links to whatever its first row names; say so.
        start = (0, GENESIS_HASH) if first["seq"] == 1 else (first["seq"] - 1, first["prevHash"])
        if first["seq"] != 1:
            print(
                f"note: rows before seq {first['seq']} are not in the dump; the first row's "
                "prevHash is taken as given (pin it with --after SEQ:HASH)",
                file=sys.stderr,
            )
    result = verify_rows(rows, _position(args.head, "--head"), start=start)
    if result.valid:
        print(
            f"audit chain verified: {result.rows_checked} rows "
            f"(seq {first['seq']}..{rows[-1]['seq']}, head {result.head_hash or '-'})"
        )
        return EXIT_VERIFIED
    where = f"seq {result.first_invalid_seq}" + (
        f" (id {result.first_invalid_id})" if result.first_invalid_id else ""
    )
    print(f"audit chain does NOT verify at {where}: {result.reason}")
    return EXIT_CONTENT
