"""C2SP signed-note (c2sp.org/signed-note@v1.0.0): notes, signatures, key ids and vkeys.

A note is UTF-8 text ending in a newline, a blank line, then one or more lines
`— <key name> base64(key id || signature)`. Parsing is strict: anything the
specification does not allow is refused with `NoteError`, never repaired.

Key ids are SHA-256(key name || 0x0A || signature type || public key)[:4], the
specification's derivation, which this module requires (as Go's
golang.org/x/mod/sumdb/note does). Signature types used here:

- 0x01 Ed25519 over the note text (the log's checkpoint signature);
- 0x04 timestamped Ed25519 cosignature (see cosignature.py).

Verifier keys ("vkeys") are `<name>+<hex key id>+base64(type || public key)`.
Private keys are stored as `PRIVATE+KEY+<name>+<hex key id>+base64(type || seed)`,
the format of Go's note package, so a key works with its tools too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = [
    "SIG_ED25519",
    "SIG_ED25519_COSIGNATURE",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Note",
    "NoteError",
    "Signature",
    "Signer",
    "Verifier",
    "check_key_name",
    "format_note",
    "key_id",
    "parse_note",
    "verified_keys",
    "verify_note",
]

SIG_ED25519 = 0x01
SIG_ED25519_COSIGNATURE = 0x04
_EM_DASH = "\u2014"
# The specification asks verifiers to accept at least 16; more than this is abuse.
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
_HEX_ID = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """A malformed note, signature line, key or vkey, or a note that does not verify."""


def _is_space(ch: str) -> bool:
    # "Unicode spaces": White_Space characters (Go's unicode.IsSpace); Zs covers the rest.
    return ch.isspace() or unicodedata.category(ch) == "Zs"


def check_key_name(name: object) -> str:
    """A key name is non-empty, without Unicode spaces, '+' or control characters."""
    if not isinstance(name, str) or not name:
        raise NoteError("a key name must be a non-empty string")
    for ch in name:
        if ch == "+" or _is_space(ch) or ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise NoteError(f"key name {name!r} contains a space, '+' or control character")
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type || public key)[:4], as a big-endian uint32."""
    check_key_name(name)
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key id, and the signature bytes after the id."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_EM_DASH} {self.name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """Note text (ending in a newline) and its signature lines, in order."""

    text: str
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        return format_note(self)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    for ch in text:
        if (ord(ch) < 0x20 and ch != "\n") or ord(ch) == 0x7F:
            raise NoteError(f"note contains the control character U+{ord(ch):04X}")


def format_note(note: Note) -> bytes:
    """The note's bytes: text, blank line, signature lines (at least one)."""
    _check_text(note.text)
    if not note.signatures:
        raise NoteError("a signed note needs at least one signature")
    for sig in note.signatures:
        check_key_name(sig.name)
    return (note.text + "\n" + "".join(s.line() for s in note.signatures)).encode()


def parse_signature_line(line: str) -> Signature:
    """One `— <name> <base64>` line, without its newline."""
    prefix = _EM_DASH + " "
    if not line.startswith(prefix):
        raise NoteError("a signature line starts with an em dash and a space")
    name, sep, blob = line[len(prefix) :].partition(" ")
    if not sep:
        raise NoteError("a signature line is '— <key name> <base64 signature>'")
    check_key_name(name)
    raw = _b64decode(blob, f"signature of {name!r}")
    if len(raw) < 5:
        raise NoteError(f"signature of {name!r} is too short")
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note, refusing anything the specification does not allow."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise NoteError("note is too large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
    else:
        text = data
        if len(text.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
            raise NoteError("note is too large")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
    _check_text(text)
    # The text is separated from the signatures by the last empty line.
    split = text.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not sig_block:
        raise NoteError("note has no signatures")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    signatures = tuple(parse_signature_line(line) for line in lines)
    return Note(body, signatures)


class Verifier(Protocol):
    """A known key: its name and id select its signature lines; `verify` checks one."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool: ...

    def vkey(self) -> str: ...


class Signer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, text: bytes) -> bytes: ...


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def format_vkey(name: str, sig_type: int, public_key: bytes) -> str:
    kid = key_id(name, sig_type, public_key)
    material = base64.b64encode(bytes([sig_type]) + public_key).decode("ascii")
    return f"{name}+{kid:08x}+{material}"


class Ed25519Verifier:
    """An Ed25519 note key (type 0x01): the signature is Ed25519 over the note text."""

    sig_type = SIG_ED25519

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        self._name = check_key_name(name)
        self.public_key = public_key
        self._key_id = key_id(name, self.sig_type, _raw_public(public_key))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True

    def vkey(self) -> str:
        return format_vkey(self._name, self.sig_type, _raw_public(self.public_key))


class Ed25519Signer:
    """An Ed25519 note key that signs note text (type 0x01)."""

    sig_type = SIG_ED25519

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._name = check_key_name(name)
        self.private_key = private_key
        self._key_id = key_id(name, self.sig_type, _raw_public(private_key.public_key()))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def sign(self, text: bytes) -> bytes:
        return self.private_key.sign(text)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self._name, self.private_key.public_key())

    def vkey(self) -> str:
        return self.verifier().vkey()


def sign_note(text: str, signers: Iterable[Signer], existing: Sequence[Signature] = ()) -> Note:
    """Sign `text` with each signer, after any signatures it already carries."""
    _check_text(text)
    raw = text.encode()
    new = tuple(Signature(s.name, s.key_id, s.sign(raw)) for s in signers)
    return Note(text, tuple(existing) + new)


def parse_vkey_parts(vkey: str) -> tuple[str, int, int, bytes]:
    """Split a vkey into (name, key id, signature type, public key), checking the id."""
    if not isinstance(vkey, str):
        raise NoteError("a vkey is a string")
    # The name holds no '+', the hex id none either; the base64 key material may.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise NoteError("a vkey is '<name>+<hex key id>+<base64 type and key>'")
    name, hex_id, material = parts
    check_key_name(name)
    if not _HEX_ID.fullmatch(hex_id):
        raise NoteError("a vkey's key id is 8 lowercase hex digits")
    raw = _b64decode(material, "vkey key material")
    if len(raw) < 2:
        raise NoteError("vkey key material is empty")
    sig_type, public = raw[0], raw[1:]
    if key_id(name, sig_type, public) != int(hex_id, 16):
        raise NoteError(f"vkey key id {hex_id} does not match its name and key")
    return name, int(hex_id, 16), sig_type, public


def parse_ed25519_vkey(vkey: str) -> Ed25519Verifier:
    """A type-0x01 vkey (a log's checkpoint key)."""
    name, _, sig_type, public = parse_vkey_parts(vkey)
    if sig_type != SIG_ED25519:
        raise NoteError(f"vkey of {name!r} is of type 0x{sig_type:02x}, not Ed25519 (0x01)")
    if len(public) != 32:
        raise NoteError("an Ed25519 public key is 32 bytes")
    return Ed25519Verifier(name, Ed25519PublicKey.from_public_bytes(public))


def format_private_key(name: str, sig_type: int, private_key: Ed25519PrivateKey) -> str:
    """`PRIVATE+KEY+<name>+<hex id>+base64(type || 32-byte seed)` (Go note's format)."""
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    kid = key_id(name, sig_type, _raw_public(private_key.public_key()))
    material = base64.b64encode(bytes([sig_type]) + seed).decode("ascii")
    return f"PRIVATE+KEY+{name}+{kid:08x}+{material}"


def parse_private_key(text: str) -> tuple[str, int, Ed25519PrivateKey]:
    """Parse `format_private_key` output: (name, signature type, key); checks the id."""
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("a private key is 'PRIVATE+KEY+<name>+<hex key id>+<base64>'")
    name, hex_id, material = parts[2:]
    check_key_name(name)
    if not _HEX_ID.fullmatch(hex_id):
        raise NoteError("a private key's key id is 8 lowercase hex digits")
    raw = _b64decode(material, "private key material")
    if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_ED25519_COSIGNATURE):
        raise NoteError("private key material is type 0x01 or 0x04 and a 32-byte seed")
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    if key_id(name, raw[0], _raw_public(key.public_key())) != int(hex_id, 16):
        raise NoteError("private key id does not match its name and key")
    return name, raw[0], key


def verified_keys(note: Note, verifiers: Iterable[Verifier]) -> list[Verifier]:
    """The known keys whose signatures on `note` verify (possibly none).

    Lines whose (name, key id) match no known key are ignored; a line that matches
    a known key but fails to verify rejects the whole note (NoteError)."""
    known = {(v.name, v.key_id): v for v in verifiers}
    text = note.text.encode()
    verified: list[Verifier] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(text, sig.signature):
            raise NoteError(f"signature of {sig.name!r} ({sig.key_id:08x}) does not verify")
        if verifier not in verified:
            verified.append(verifier)
    return verified


def verify_note(note: Note, verifiers: Iterable[Verifier]) -> list[Verifier]:
    """`verified_keys`, but a note with no verified known signature is rejected too."""
    verified = verified_keys(note, verifiers)
    if not verified:
        raise NoteError("note carries no signature from a known key")
    return verified
