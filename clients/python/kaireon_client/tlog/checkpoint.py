"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint@v1.0.0): the signed tree head.

Body: origin line, decimal tree size (no leading zeroes), base64 root hash, then
optional non-empty extension lines; every line ends in a newline. The body is the
text of a signed note (note.py) whose signatures are the log's and the witnesses'.

Origins of this log are per tenant: `<log name>/audit/<tenant id>` (see
`origin_for_tenant`; docs/AUDIT.md records the scheme). The log signs each
tenant's checkpoints with one Ed25519 key under the key name equal to the origin,
as the specification recommends, so each tenant has its own vkey.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from kaireon_client.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_TREE_SIZE,
    ProofError,
    decode_hash,
    encode_hash,
)
from kaireon_client.tlog.note import (
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    NoteError,
    Verifier,
    parse_note,
    verified_keys,
    verify_note,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "SignedCheckpoint",
    "open_checkpoint",
    "origin_for_tenant",
    "parse_checkpoint",
    "tenant_log_signer",
    "tenant_log_verifier",
]

_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
# URL-unreserved characters only: an origin must hold no space, '+' or '/' from a tenant.
_TENANT = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_LOG_NAME = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]+)*")


class CheckpointError(ValueError):
    """A malformed checkpoint body, or a signed checkpoint that fails the trust policy."""


def origin_for_tenant(log_name: str, tenant_id: str) -> str:
    """The origin line (and log key name) of a tenant's tree: `<log name>/audit/<tenant>`."""
    if not _LOG_NAME.fullmatch(log_name):
        raise CheckpointError(f"log name {log_name!r} is not a schema-less URL")
    if not _TENANT.fullmatch(tenant_id) or tenant_id in (".", ".."):
        raise CheckpointError(
            f"tenant id {tenant_id!r} cannot be part of an origin "
            "(allowed: 1-128 of A-Z a-z 0-9 . _ ~ -)"
        )
    return f"{log_name}/audit/{tenant_id}"


def tenant_log_signer(
    private_key: Ed25519PrivateKey, log_name: str, tenant_id: str
) -> Ed25519Signer:
    """The log key (KAIREON_LOG_KEY) as it signs one tenant's checkpoints: named by origin."""
    return Ed25519Signer(origin_for_tenant(log_name, tenant_id), private_key)


def tenant_log_verifier(
    public_key: Ed25519PublicKey, log_name: str, tenant_id: str
) -> Ed25519Verifier:
    """What an auditor pins for one tenant: `tenant_log_verifier(...).vkey()`."""
    return Ed25519Verifier(origin_for_tenant(log_name, tenant_id), public_key)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("the origin line must be non-empty")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size {self.size} is out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"the root hash must be {HASH_SIZE} bytes")
        if self.size == 0 and self.root_hash != EMPTY_ROOT:
            raise CheckpointError("an empty tree's root hash must be SHA-256 of nothing")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError("extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text: origin, size, root hash, extensions, each newline-terminated."""
        lines = [self.origin, str(self.size), encode_hash(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse a checkpoint body (the note text), strictly."""
    if not body.endswith("\n"):
        raise CheckpointError("a checkpoint body ends in a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has at least three lines")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise CheckpointError("the origin line is empty")
    if not _SIZE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise CheckpointError(f"tree size {size_text!r} is not a decimal without leading zeroes")
    try:
        root = decode_hash(root_text)
    except ProofError as exc:
        raise CheckpointError(f"root hash: {exc}") from exc
    if any(not line for line in extensions):
        raise CheckpointError("extension lines must be non-empty")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose log signature and witness cosignatures have been verified."""

    checkpoint: Checkpoint
    note: Note
    log_key: Verifier
    witnesses: tuple[Verifier, ...]


def open_checkpoint(
    data: bytes | str | Note,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[Verifier] = (),
    *,
    quorum: int = 0,
    origin: str | None = None,
) -> SignedCheckpoint:
    """Verify a signed checkpoint against pinned keys; return it with who vouched.

    `log_keys` are the log's vkeys (key name = origin). At least `quorum` of the
    distinct `witness_keys` must have cosigned (k-of-n). A signature line that names
    a pinned key but does not verify rejects the checkpoint (signed-note rule)."""
    if quorum < 0 or quorum > len(witness_keys):
        raise CheckpointError(f"a quorum of {quorum} of {len(witness_keys)} witnesses")
    try:
        note = data if isinstance(data, Note) else parse_note(data)
    except NoteError as exc:
        raise CheckpointError(f"malformed signed note: {exc}") from exc
    checkpoint = parse_checkpoint(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    own_log_keys = [k for k in log_keys if k.name == checkpoint.origin]
    if not own_log_keys:
        raise CheckpointError(f"no pinned log key for origin {checkpoint.origin!r}")
    try:
        [log_key, *_] = verify_note(note, own_log_keys)
    except NoteError as exc:
        raise CheckpointError(f"log signature: {exc}") from exc
    try:
        witnesses = tuple(verified_keys(note, witness_keys))
    except NoteError as exc:
        raise CheckpointError(f"witness cosignature: {exc}") from exc
    if len(witnesses) < quorum:
        raise CheckpointError(
            f"only {len(witnesses)} of the required {quorum} witness cosignatures"
        )
    return SignedCheckpoint(checkpoint, note, log_key, witnesses)
