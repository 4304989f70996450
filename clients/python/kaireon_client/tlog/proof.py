"""C2SP tlog-proof (c2sp.org/tlog-proof@v1): one entry's offline proof of inclusion.

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional, unauthenticated)
    index <leaf index>
    <base64 inclusion proof hash>...
    <blank line>
    <signed checkpoint>

Evidence that points at an audit row (receipts, bundles, exports) carries one of
these; `verify_tlog_proof` checks it against the row's leaf and pinned keys.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kaireon_client.tlog.checkpoint import SignedCheckpoint, open_checkpoint
from kaireon_client.tlog.merkle import (
    ProofError,
    decode_hash,
    encode_hash,
    leaf_hash,
    verify_inclusion,
)
from kaireon_client.tlog.note import Verifier

__all__ = ["TlogProof", "format_tlog_proof", "parse_tlog_proof", "verify_tlog_proof"]

HEADER = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"index (0|[1-9][0-9]{0,18})")
MAX_PROOF_HASHES = 63


@dataclass(frozen=True, slots=True)
class TlogProof:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None


def format_tlog_proof(proof: TlogProof) -> str:
    lines = [HEADER]
    if proof.extra is not None:
        lines.append("extra " + base64.b64encode(proof.extra).decode("ascii"))
    lines.append(f"index {proof.index}")
    lines.extend(encode_hash(h) for h in proof.proof)
    return "\n".join(lines) + "\n\n" + proof.checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    head, sep, checkpoint = text.partition("\n\n")
    if not sep or not checkpoint:
        raise ProofError("a tlog proof has a blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise ProofError(f"a tlog proof starts with {HEADER!r}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        try:
            extra = base64.b64decode(rest[0][6:].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ProofError("the extra line is not base64") from exc
        rest = rest[1:]
    if not rest or not (match := _INDEX.fullmatch(rest[0])):
        raise ProofError("a tlog proof needs an 'index <decimal>' line")
    if len(rest) - 1 > MAX_PROOF_HASHES:
        raise ProofError("too many inclusion proof lines")
    hashes = tuple(decode_hash(line) for line in rest[1:])
    return TlogProof(int(match.group(1)), hashes, checkpoint, extra)


def verify_tlog_proof(
    text: str,
    leaf: bytes,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier] = (),
    *,
    quorum: int = 0,
    origin: str | None = None,
) -> SignedCheckpoint:
    """Check that `leaf` (the entry's bytes, e.g. AuditLeaf.canonical()) is in the log.

    The steps of the specification: the checkpoint is signed by a pinned log key
    for its origin and cosigned by `quorum` pinned witnesses, and the inclusion
    proof binds the leaf hash at `index` to its root. Raises ProofError or
    CheckpointError; returns the verified checkpoint."""
    proof = parse_tlog_proof(text)
    signed = open_checkpoint(proof.checkpoint, log_keys, witness_keys, quorum=quorum, origin=origin)
    cp = signed.checkpoint
    if proof.index >= cp.size:
        raise ProofError(f"index {proof.index} is outside the checkpointed tree of {cp.size}")
    verify_inclusion(leaf_hash(leaf), proof.index, cp.size, list(proof.proof), cp.root_hash)
    return signed
