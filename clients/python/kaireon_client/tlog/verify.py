"""Offline verification of an exported range of audit entries against a signed checkpoint.

An export (JSON, `format` "kaireon-audit-export/v1") holds:

    checkpoint  the signed checkpoint note (log signature and witness cosignatures)
    start       leaf index of the first entry (0 for a whole log)
    prefix      optional compact range of leaves [0, start) ({"size", "hashes"})
    entries     [{"leaf": <leaf JSON, see leaf.py>, "inclusionProof": [base64, ...]}]

Verification, trusting only pinned keys:

1. the checkpoint is signed by the pinned log key for its origin and cosigned by
   at least `quorum` pinned witnesses;
2. every leaf is well formed, belongs to the origin's tenant, and entry i has
   seq = start + i + 1 (a deleted row or a reordered pair breaks this here);
3. every entry with an inclusion proof is in the checkpointed tree at its index
   (a modified row fails here, at its index);
4. the entries end at the checkpoint's tree size, unless a shorter range is
   asked for explicitly (a truncated tail fails here);
5. when `prefix` is given (or start is 0), the prefix plus every leaf hash to the
   tree size gives the checkpoint's root (a rewrite of the whole range fails here,
   as it fails the signature check if the root was changed).

The first failure raises `VerificationError` naming the leaf index where one applies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaireon_client import strict_json
from kaireon_client.tlog.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from kaireon_client.tlog.cosignature import parse_cosignature_vkey
from kaireon_client.tlog.leaf import AuditLeaf, LeafError
from kaireon_client.tlog.merkle import (
    CompactRange,
    ProofError,
    decode_hash,
    encode_hash,
    verify_inclusion,
)
from kaireon_client.tlog.note import NoteError, Verifier, parse_ed25519_vkey

__all__ = ["EXPORT_FORMAT", "ExportReport", "VerificationError", "main", "verify_export"]

EXPORT_FORMAT = "kaireon-audit-export/v1"
_EXPORT_KEYS = {"format", "checkpoint", "start", "prefix", "entries"}


class VerificationError(ValueError):
    """The export does not verify; `index` is the first bad leaf index, when known."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message if index is None else f"leaf index {index}: {message}")
        self.index = index
        self.reason = message


@dataclass(frozen=True, slots=True)
class ExportReport:
    origin: str
    tree_size: int
    root_hash: str
    start: int
    end: int
    proofs_checked: int
    root_recomputed: bool
    witnesses: tuple[str, ...]


def _tenant_of(origin: str) -> str:
    return origin.rsplit("/audit/", 1)[1] if "/audit/" in origin else ""


def _proof(value: Any, index: int) -> list[bytes] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise VerificationError("inclusionProof must be a list of base64 hashes", index)
    try:
        return [decode_hash(h) for h in value]
    except ProofError as exc:
        raise VerificationError(f"inclusionProof: {exc}", index) from exc


def verify_export(
    document: object,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier] = (),
    *,
    quorum: int = 0,
    origin: str | None = None,
    end: int | None = None,
) -> ExportReport:
    """Verify an export (see the module doc); `end` allows a range short of the tree size."""
    if not isinstance(document, Mapping) or document.get("format") != EXPORT_FORMAT:
        raise VerificationError(f"not a {EXPORT_FORMAT} document")
    if unknown := set(document) - _EXPORT_KEYS:
        raise VerificationError(f"unknown export fields {sorted(unknown)}")
    note_text = document.get("checkpoint")
    if not isinstance(note_text, str):
        raise VerificationError("checkpoint must be the signed checkpoint text")
    try:
        signed: SignedCheckpoint = open_checkpoint(
            note_text, log_keys, witness_keys, quorum=quorum, origin=origin
        )
    except CheckpointError as exc:
        raise VerificationError(f"checkpoint: {exc}") from exc
    cp = signed.checkpoint
    start = document.get("start")
    if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= cp.size:
        raise VerificationError(f"start must be a leaf index within the tree (size {cp.size})")
    want_end = cp.size if end is None else end
    if not start <= want_end <= cp.size:
        raise VerificationError(f"range end {want_end} is outside [{start}, {cp.size}]")
    entries = document.get("entries")
    if not isinstance(entries, list):
        raise VerificationError("entries must be a list")
    prefix: CompactRange | None = None
    if document.get("prefix") is not None:
        try:
            prefix = CompactRange.from_json(document["prefix"])
        except ProofError as exc:
            raise VerificationError(f"prefix: {exc}") from exc
        if prefix.size != start:
            raise VerificationError(f"prefix covers {prefix.size} leaves, not start={start}")
    elif start == 0:
        prefix = CompactRange()
    tenant = _tenant_of(cp.origin)
    proofs_checked = 0
    for position, item in enumerate(entries):
        index = start + position
        if index >= want_end:
            raise VerificationError(f"entries go past the range end {want_end}", index)
        if not isinstance(item, Mapping) or not set(item) <= {"leaf", "inclusionProof"}:
            raise VerificationError("an entry is {'leaf': ..., 'inclusionProof': [...]}", index)
        try:
            leaf = AuditLeaf.from_json(item.get("leaf"))
        except LeafError as exc:
            raise VerificationError(f"malformed leaf: {exc}", index) from exc
        if leaf.index != index:
            # A deleted row leaves a gap; a reordered pair puts a later seq first.
            raise VerificationError(
                f"expected the row with seq {index + 1}, found seq {leaf.seq} "
                f"(a row is missing or rows are out of order)",
                index,
            )
        if leaf.tenant_id != tenant:
            raise VerificationError(f"row of tenant {leaf.tenant_id!r} in {cp.origin!r}", index)
        hashed = leaf.leaf_hash()
        proof = _proof(item.get("inclusionProof"), index)
        if proof is not None:
            try:
                verify_inclusion(hashed, index, cp.size, proof, cp.root_hash)
            except ProofError as exc:
                raise VerificationError(
                    f"row or its inclusion proof does not match the checkpoint: {exc}", index
                ) from exc
            proofs_checked += 1
        if prefix is not None:
            prefix.append(hashed)
    got_end = start + len(entries)
    if got_end < want_end:
        raise VerificationError(
            f"entries stop at index {got_end - 1} but the range ends at {want_end - 1} "
            f"({want_end - got_end} rows missing at the end)",
            got_end,
        )
    recomputed = prefix is not None and want_end == cp.size
    if recomputed and prefix is not None and prefix.root() != cp.root_hash:
        raise VerificationError(
            "the entries do not hash to the checkpoint's root "
            + ("(every inclusion proof verified: the prefix is wrong)" if proofs_checked else "")
        )
    if not recomputed and proofs_checked < len(entries):
        raise VerificationError(
            "entries without inclusion proofs can only be checked against the root with a "
            "prefix, to the tree size"
        )
    return ExportReport(
        origin=cp.origin,
        tree_size=cp.size,
        root_hash=encode_hash(cp.root_hash),
        start=start,
        end=got_end,
        proofs_checked=proofs_checked,
        root_recomputed=recomputed,
        witnesses=tuple(w.name for w in signed.witnesses),
    )


class _UsageError(Exception):
    pass


def _keys(values: Sequence[str], parse: Any, what: str) -> list[Verifier]:
    keys: list[Verifier] = []
    for value in values:
        try:
            keys.append(parse(value))
        except NoteError as exc:
            raise _UsageError(f"bad {what} {value!r}: {exc}") from exc
    return keys


def build_parser(
    parser: argparse.ArgumentParser | None = None, *, require_log_key: bool = True
) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m kaireon_client.tlog.verify",
        description="Verify an exported range of audit entries against a signed checkpoint.",
    )
    parser.add_argument("export", help="export JSON file ('-' for stdin)")
    parser.add_argument(
        "--log-vkey",
        action="append",
        required=require_log_key,
        default=[],
        help="pinned log vkey",
    )
    parser.add_argument(
        "--witness-vkey", action="append", default=[], help="pinned witness vkey (repeat)"
    )
    parser.add_argument(
        "--quorum", type=int, default=None, help="witness cosignatures required (default: all)"
    )
    parser.add_argument("--origin", help="the origin the checkpoint must have")
    parser.add_argument("--end", type=int, help="verify only up to this leaf index (exclusive)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the export verifies, 1 when it does not, 2 on bad keys or options."""
    try:
        text = sys.stdin.read() if args.export == "-" else Path(args.export).read_text()
        document = strict_json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"audit export does NOT verify: {exc}", file=sys.stderr)
        return 1
    return run_on(args, document)


def run_on(args: argparse.Namespace, document: Any) -> int:
    """`run` on an export already read."""
    try:
        log_keys = _keys(args.log_vkey, parse_ed25519_vkey, "log vkey")
        witness_keys = _keys(args.witness_vkey, parse_cosignature_vkey, "witness vkey")
    except _UsageError as exc:
        print(f"kaireon verify audit: {exc}", file=sys.stderr)
        return 2
    quorum = len(witness_keys) if args.quorum is None else args.quorum
    if not 0 <= quorum <= len(witness_keys):
        print(f"kaireon verify audit: --quorum must be 0..{len(witness_keys)}", file=sys.stderr)
        return 2
    try:
        report = verify_export(
            document, log_keys, witness_keys, quorum=quorum, origin=args.origin, end=args.end
        )
    except ValueError as exc:
        # VerificationError is a ValueError.
        print(f"audit export does NOT verify: {exc}", file=sys.stderr)
        return 1
    print(
        f"audit export verified: {report.origin} entries [{report.start}, {report.end}) "
        f"of tree size {report.tree_size}, root {report.root_hash}; "
        f"{report.proofs_checked} inclusion proofs"
        f"{', root recomputed' if report.root_recomputed else ''}; "
        f"cosigned by {', '.join(report.witnesses) or 'no witness'}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
