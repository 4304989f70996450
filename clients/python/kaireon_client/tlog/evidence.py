"""Evidence proofs: an erasure receipt, provenance bundle or DSAR export, checked
offline against the transparency log (docs/AUDIT.md, "Evidence carries proofs").

Each artefact names (or digests into) one audit row of its own: the erasure row,
the bundle's emission row, the export's completion row. Its *evidence proof* is a
C2SP tlog-proof of that row whose `extra` line carries the row's leaf (the RFC
8785 bytes of `AuditLeaf`), so one text file travels beside the artefact and its
signed bytes stay untouched:

    c2sp.org/tlog-proof@v1
    extra <base64 of the leaf's canonical JSON>
    index <leaf index>
    <inclusion proof hashes>

    <signed checkpoint, with witness cosignatures>

Verification, trusting only the pinned log key (and witness keys):

1. `proof`: the checkpoint is signed by the log key for the origin, cosigned by
   `quorum` pinned witnesses, and the leaf is included at its index;
2. `leaf`: the leaf is well formed, canonical, of the origin's tenant, at index
   seq - 1;
3. `binding`: the leaf is the artefact's own row (per kind, below).

A failure raises nothing: the `EvidenceVerdict` names the step and the reason.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaireon_client import strict_json
from kaireon_client.tlog.checkpoint import CheckpointError, SignedCheckpoint
from kaireon_client.tlog.cosignature import parse_cosignature_vkey
from kaireon_client.tlog.leaf import AuditLeaf, LeafError
from kaireon_client.tlog.merkle import ProofError
from kaireon_client.tlog.note import NoteError, Verifier, parse_ed25519_vkey
from kaireon_client.tlog.proof import (
    TlogProof,
    format_tlog_proof,
    parse_tlog_proof,
    verify_tlog_proof,
)

__all__ = [
    "ARTEFACT_KINDS",
    "EvidenceError",
    "EvidenceVerdict",
    "add_proof_options",
    "attach_leaf",
    "build_parser",
    "check_proof",
    "evidence_leaf",
    "main",
    "receipt_parts",
    "run",
    "verify_artefact_proof",
    "verify_bundle_proof",
    "verify_export_proof",
    "verify_receipt_proof",
]

# The audit rows each artefact is bound to (server: erasure/model.py,
# provenance/repository.py, dsar/jobs.py).
ERASURE_ACTION = "gdpr_erasure"
EMISSION_ACTION = "decision_provenance_emit"
EXPORT_ACTION = "dsar_export_completed"
ARTEFACT_KINDS = ("receipt", "bundle", "export")


@dataclass(frozen=True, slots=True)
class EvidenceVerdict:
    """`ok`, or the step that failed (`proof`, `leaf`, `binding`, `artefact`) and why."""

    kind: str
    ok: bool
    step: str = ""
    reason: str = ""
    leaf: AuditLeaf | None = None
    checkpoint: SignedCheckpoint | None = None

    def __str__(self) -> str:
        if self.ok:
            assert self.leaf is not None and self.checkpoint is not None
            cp = self.checkpoint.checkpoint
            return (
                f"{self.kind}: audit row seq {self.leaf.seq} is in {cp.origin} "
                f"at tree size {cp.size} ({len(self.checkpoint.witnesses)} witness cosignatures)"
            )
        return f"{self.kind}: {self.step}: {self.reason}"


class EvidenceError(ValueError):
    """An evidence proof refused at `step` (what `EvidenceVerdict` reports)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


def attach_leaf(tlog_proof: str, leaf: bytes | str) -> str:
    """A tlog-proof fetched without its leaf (e.g. by index), with the leaf put in `extra`."""
    parsed = parse_tlog_proof(tlog_proof)
    data = leaf.encode() if isinstance(leaf, str) else leaf
    return format_tlog_proof(TlogProof(parsed.index, parsed.proof, parsed.checkpoint, data))


def evidence_leaf(tlog_proof: str) -> AuditLeaf:
    """The leaf an evidence proof carries (unverified: see the verify_* functions)."""
    return _leaf(parse_tlog_proof(tlog_proof).extra)


def _leaf(extra: bytes | None) -> AuditLeaf:
    if extra is None:
        raise EvidenceError("leaf", "the proof carries no leaf (extra line)")
    try:
        leaf = AuditLeaf.from_json(strict_json.loads(extra))
    except (ValueError, LeafError) as exc:
        raise EvidenceError("leaf", f"not an audit leaf: {exc}") from None
    # The hashed bytes must be exactly the leaf read (no duplicate keys, no spacing).
    if leaf.canonical() != extra:
        raise EvidenceError("leaf", "the leaf is not in RFC 8785 canonical form")
    return leaf


def _open(
    tlog_proof: str | bytes,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier],
    quorum: int,
) -> tuple[AuditLeaf, SignedCheckpoint]:
    text = tlog_proof.decode("utf-8", "strict") if isinstance(tlog_proof, bytes) else tlog_proof
    try:
        parsed = parse_tlog_proof(text)
    except ProofError as exc:
        raise EvidenceError("proof", str(exc)) from None
    leaf = _leaf(parsed.extra)
    assert parsed.extra is not None
    try:
        signed = verify_tlog_proof(text, parsed.extra, log_keys, witness_keys, quorum=quorum)
    except (ProofError, CheckpointError) as exc:
        raise EvidenceError("proof", str(exc)) from None
    origin = signed.checkpoint.origin
    if not origin.endswith("/audit/" + leaf.tenant_id):
        raise EvidenceError("leaf", f"tenant {leaf.tenant_id!r} is not the log's ({origin})")
    if leaf.index != parsed.index:
        raise EvidenceError("leaf", f"seq {leaf.seq} is not at index {parsed.index}")
    return leaf, signed


def _expect(what: str, found: Any, wanted: Any) -> None:
    if found != wanted:
        raise EvidenceError(
            "binding", f"the audit row's {what} is {found!r}, the artefact's {wanted!r}"
        )


def _verdict(
    kind: str,
    tlog_proof: str | bytes,
    *,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier],
    quorum: int,
    bind: Callable[[AuditLeaf], None],
) -> EvidenceVerdict:
    try:
        leaf, signed = _open(tlog_proof, log_keys, witness_keys, quorum)
        bind(leaf)
    except EvidenceError as refused:
        return EvidenceVerdict(kind, False, refused.step, refused.reason)
    except UnicodeDecodeError:
        return EvidenceVerdict(kind, False, "proof", "not UTF-8 text")
    return EvidenceVerdict(kind, True, leaf=leaf, checkpoint=signed)


def _json_object(data: bytes | str, what: str) -> Mapping[str, Any]:
    try:
        value = strict_json.loads(data)
    except ValueError as exc:
        raise EvidenceError("artefact", f"the {what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EvidenceError("artefact", f"the {what} is not a JSON object")
    return value


def verify_receipt_proof(
    canonical_payload: bytes | str,
    tlog_proof: str | bytes,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier] = (),
    *,
    quorum: int = 0,
) -> EvidenceVerdict:
    """An erasure receipt's payload against the proof of its erasure row.

    The row must be the one the payload names (auditEventId, auditSeq), of the
    same tenant, customer (the erasure row keeps the customer id in clear),
    counts (the row's `changes`) and time."""

    def bind(leaf: AuditLeaf) -> None:
        payload = _json_object(canonical_payload, "receipt payload")
        _expect("action", leaf.action, ERASURE_ACTION)
        _expect("id", leaf.id, payload.get("auditEventId"))
        _expect("seq", leaf.seq, payload.get("auditSeq"))
        _expect("tenant", leaf.tenant_id, payload.get("tenantId"))
        _expect("entity id", leaf.entity_id, payload.get("customerId"))
        _expect("changes", dict(leaf.changes), payload.get("deletedCounts"))
        _expect("timestamp", leaf.timestamp, payload.get("erasedAt"))

    return _verdict(
        "receipt",
        tlog_proof,
        log_keys=log_keys,
        witness_keys=witness_keys,
        quorum=quorum,
        bind=bind,
    )


def verify_bundle_proof(
    bundle: bytes,
    tlog_proof: str | bytes,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier] = (),
    *,
    quorum: int = 0,
) -> EvidenceVerdict:
    """A provenance bundle (its exact bytes) against the proof of its emission row,
    which records the decision id and the bundle's sha256."""

    def bind(leaf: AuditLeaf) -> None:
        document = _json_object(bundle, "bundle")
        trace = document.get("decisionTrace")
        decision_id = trace.get("id") if isinstance(trace, dict) else None
        _expect("action", leaf.action, EMISSION_ACTION)
        _expect("entity id", leaf.entity_id, decision_id)
        _expect(
            "digestSha256", leaf.changes.get("digestSha256"), hashlib.sha256(bundle).hexdigest()
        )

    return _verdict(
        "bundle", tlog_proof, log_keys=log_keys, witness_keys=witness_keys, quorum=quorum, bind=bind
    )


def verify_export_proof(
    export: bytes,
    tlog_proof: str | bytes,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier] = (),
    *,
    quorum: int = 0,
) -> EvidenceVerdict:
    """A DSAR export package, as downloaded (encrypted or not), against the proof of
    its completion row, which records the sha256 of exactly those bytes; a plain
    export's requestId must be the row's request too."""

    def bind(leaf: AuditLeaf) -> None:
        _expect("action", leaf.action, EXPORT_ACTION)
        _expect(
            "digestSha256", leaf.changes.get("digestSha256"), hashlib.sha256(export).hexdigest()
        )
        if not leaf.changes.get("encrypted"):
            document = _json_object(export, "export")
            _expect("entity id", leaf.entity_id, document.get("requestId"))

    return _verdict(
        "export", tlog_proof, log_keys=log_keys, witness_keys=witness_keys, quorum=quorum, bind=bind
    )


_BY_KIND = {
    "receipt": verify_receipt_proof,
    "bundle": verify_bundle_proof,
    "export": verify_export_proof,
}


def verify_artefact_proof(
    kind: str,
    artefact: bytes,
    tlog_proof: str | bytes,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier] = (),
    *,
    quorum: int = 0,
) -> EvidenceVerdict:
    """One entry point for `kaireon verify receipt|bundle|export --log-key`: `artefact`
    is the receipt's canonical payload, the bundle's bytes or the export's bytes."""
    if kind not in _BY_KIND:
        raise ValueError(f"kind must be one of {ARTEFACT_KINDS}")
    return _BY_KIND[kind](artefact, tlog_proof, log_keys, witness_keys, quorum=quorum)


# --- command line: python -m kaireon_client.tlog.evidence KIND ARTEFACT ---------------


def receipt_parts(data: bytes) -> tuple[bytes, str]:
    """A receipt file: the canonical payload itself, or the receipt object of an
    EraseCustomer answer (`{"receipt": {...}}` or the receipt alone, REST or
    protobuf field names), whose proof comes along ("" when pending)."""
    try:
        value = strict_json.loads(data)
    except ValueError:
        return data, ""
    if isinstance(value, dict) and isinstance(value.get("receipt"), dict):
        value = value["receipt"]
    if isinstance(value, dict):
        payload = value.get("canonicalPayload", value.get("canonical_payload"))
        if isinstance(payload, str):
            proof = value.get("tlogProof", value.get("tlog_proof", ""))
            return payload.encode(), proof if isinstance(proof, str) else ""
    return data, ""


def add_proof_options(parser: argparse.ArgumentParser) -> None:
    """The options of a proof check, for `kaireon verify receipt|bundle|export` too."""
    parser.add_argument("--proof", help="the evidence proof file (a receipt may carry its own)")
    parser.add_argument(
        "--log-key", action="append", default=[], help="file of pinned log vkeys, one a line"
    )
    parser.add_argument("--log-vkey", action="append", default=[], help="a pinned log vkey")
    parser.add_argument(
        "--witness-vkey", action="append", default=[], help="pinned witness vkey (repeat)"
    )
    parser.add_argument(
        "--quorum", type=int, default=None, help="witness cosignatures required (default: all)"
    )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m kaireon_client.tlog.evidence",
        description="Verify an artefact with the evidence proof of its audit row, offline.",
    )
    parser.add_argument("kind", choices=ARTEFACT_KINDS)
    parser.add_argument(
        "artefact",
        help="receipt (canonical payload, or the receipt JSON with its tlogProof), "
        "bundle bytes, or export bytes as downloaded",
    )
    add_proof_options(parser)
    return parser


def _verifiers(texts: Sequence[str], parse: Callable[[str], Verifier]) -> list[Verifier]:
    return [parse(t.strip()) for t in texts if t.strip()]


def check_proof(
    args: argparse.Namespace, kind: str, artefact: bytes, carried_proof: str = ""
) -> int:
    """The proof check of one artefact with `add_proof_options`' arguments: exit 0
    verified (verdict on stdout), 1 refused or no proof, 2 bad keys or options (on
    stderr). `artefact`: the receipt's canonical payload, a bundle's or an export's
    bytes; `carried_proof`: the receipt's own `tlogProof`, used without --proof."""
    name = f"kaireon verify {kind}"
    try:
        vkeys = list(args.log_vkey)
        for path in args.log_key:
            vkeys += Path(path).read_text().splitlines()
        log_keys = _verifiers(vkeys, parse_ed25519_vkey)
        witness_keys = _verifiers(args.witness_vkey, parse_cosignature_vkey)
        proof = Path(args.proof).read_text() if args.proof else carried_proof
    except (OSError, NoteError) as exc:
        print(f"{name}: bad key or proof file: {exc}", file=sys.stderr)
        return 2
    quorum = len(witness_keys) if args.quorum is None else args.quorum
    if not log_keys or not 0 <= quorum <= len(witness_keys):
        print(
            f"{name}: give --log-key or --log-vkey, and --quorum 0..{len(witness_keys)}",
            file=sys.stderr,
        )
        return 2
    if not proof:
        print(
            f"{name}: NOT verified: no evidence proof (pending? fetch it with "
            "GetInclusionProof by the audit event id)",
            file=sys.stderr,
        )
        return 1
    verdict = verify_artefact_proof(kind, artefact, proof, log_keys, witness_keys, quorum=quorum)
    if not verdict.ok:
        print(f"{name}: NOT verified: {verdict}", file=sys.stderr)
        return 1
    print(f"verified: {verdict}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Exit 0 verified, 1 refused (the step and reason on stderr), 2 bad keys or options."""
    try:
        artefact = Path(args.artefact).read_bytes()
    except OSError as exc:
        print(f"kaireon verify {args.kind}: {exc}", file=sys.stderr)
        return 2
    carried = ""
    if args.kind == "receipt":
        artefact, carried = receipt_parts(artefact)
    return check_proof(args, args.kind, artefact, carried)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
