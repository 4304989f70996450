"""C2SP signed-note, tlog-checkpoint and tlog-cosignature: the specifications' examples
byte for byte, the Go reference implementation's known answer, and strict parsing.

The example texts are copied from the C2SP specifications (reference copies in
shared/reference/c2sp, C2SP commit 5ba5ee8, CC BY 4.0); each literal names its section.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    origin_for_tenant,
    parse_checkpoint,
    tenant_log_signer,
    tenant_log_verifier,
)
from kaireon_client.tlog.cosignature import (
    CosignatureSigner,
    cosigned_message,
    parse_cosignature_vkey,
)
from kaireon_client.tlog.merkle import EMPTY_ROOT
from kaireon_client.tlog.note import (
    Ed25519Signer,
    Note,
    NoteError,
    Signature,
    format_note,
    format_private_key,
    key_id,
    parse_ed25519_vkey,
    parse_note,
    parse_private_key,
    sign_note,
    verified_keys,
    verify_note,
)

# signed-note.md, "Verifier keys" > "Example": this vkey verifies this note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n"
    "\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# signed-note.md, introduction: a note whose text holds an empty line.
QUASIMODO = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
# tlog-cosignature.md, introduction: a checkpoint with a log signature and a cosignature.
COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
# tlog-cosignature.md, "Ed25519 signed message": the message of that cosignature.
COSIGNED_MESSAGE = (
    "cosignature/v1\n"
    "time 1679315147\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
# golang.org/x/mod/sumdb/note package documentation, "Example": the reference
# implementation's key pair and signed note (Ed25519 is deterministic: a known answer).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_the_spec_example_vkey_verifies_the_spec_example_note() -> None:
    verifier = parse_ed25519_vkey(SPEC_VKEY)
    assert (verifier.name, verifier.key_id) == ("example.com/foo", 0x530D903A)
    assert verifier.vkey() == SPEC_VKEY
    note = parse_note(SPEC_NOTE.encode())
    assert note.text == "This is an example message.\n"
    assert verify_note(note, [verifier]) == [verifier]
    assert format_note(note).decode() == SPEC_NOTE
    # One changed byte of text, and the note no longer verifies.
    with pytest.raises(NoteError, match="does not verify"):
        verify_note(Note("This is an example message!\n", note.signatures), [verifier])


def test_the_go_reference_key_signs_the_reference_note_byte_for_byte() -> None:
    name, sig_type, key = parse_private_key(GO_SKEY)
    assert (name, sig_type) == ("PeterNeumann", 0x01)
    assert format_private_key(name, sig_type, key) == GO_SKEY
    signer = Ed25519Signer(name, key)
    assert signer.key_id == 0xC74F20A3
    assert signer.vkey() == GO_VKEY
    assert format_note(sign_note(GO_TEXT, [signer])).decode() == GO_NOTE
    assert verify_note(parse_note(GO_NOTE), [parse_ed25519_vkey(GO_VKEY)])


def test_a_note_text_may_hold_empty_lines_the_last_one_separates() -> None:
    note = parse_note(QUASIMODO)
    assert note.text.endswith("ed è subito sera.\n")
    assert note.text.count("\n\n") == 1
    [sig] = note.signatures
    assert sig.name == "quasimodo.example/salvatore" and len(sig.signature) == 64
    assert format_note(note).decode() == QUASIMODO


def test_the_spec_checkpoint_and_cosignature_parse_as_specified() -> None:
    note = parse_note(COSIGNED)
    checkpoint = parse_checkpoint(note.text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert base64.b64encode(checkpoint.root_hash).decode() == (
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    )
    assert checkpoint.body() == note.text
    log_sig, cosig = note.signatures
    assert (log_sig.key_id, len(log_sig.signature)) == (0x033DE0AE, 64)
    # timestamped_signature: u64 big-endian timestamp, then the Ed25519 signature.
    assert len(cosig.signature) == 8 + 64
    stamp = int.from_bytes(cosig.signature[:8], "big")
    assert stamp == 1679315147
    assert cosigned_message(note.text, stamp).decode() == COSIGNED_MESSAGE
    assert format_note(note).decode() == COSIGNED


def test_key_ids_follow_the_spec_derivation() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes_raw()
    expect = hashlib.sha256(b"w.example/w1\n\x04" + raw).digest()[:4]
    signer = CosignatureSigner("w.example/w1", key)
    assert signer.key_id == int.from_bytes(expect, "big")
    assert key_id("w.example/w1", 0x01, raw) != signer.key_id
    vkey = signer.vkey()
    assert vkey.startswith(f"w.example/w1+{expect.hex()}+")
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04


def test_cosignatures_round_trip_and_bind_the_checkpoint_and_time() -> None:
    log = Ed25519Signer("kaireon.example/audit/acme", Ed25519PrivateKey.generate())
    witness = CosignatureSigner("witness.example/w1", Ed25519PrivateKey.generate())
    body = Checkpoint("kaireon.example/audit/acme", 0, EMPTY_ROOT).body()
    cosig = witness.cosign(body, 1700000000)
    note = sign_note(body, [log], [cosig])
    verifier = parse_cosignature_vkey(witness.vkey())
    assert verifier.timestamp(cosig.signature) == 1700000000
    assert verified_keys(note, [verifier]) == [verifier]
    # Another time in the same signature bytes fails: the timestamp is signed.
    forged = Signature(
        cosig.name, cosig.key_id, (1700000001).to_bytes(8, "big") + cosig.signature[8:]
    )
    with pytest.raises(NoteError, match="does not verify"):
        verified_keys(Note(body, (forged,)), [verifier])
    # A witness key is not a log key, and a log vkey is not a witness vkey.
    with pytest.raises(NoteError, match="not Ed25519"):
        parse_ed25519_vkey(witness.vkey())
    with pytest.raises(NoteError, match="not an Ed25519 cosignature"):
        parse_cosignature_vkey(log.vkey())


def test_signature_policy_unknown_keys_are_ignored_known_bad_ones_reject() -> None:
    a = Ed25519Signer("a.example", Ed25519PrivateKey.generate())
    b = Ed25519Signer("b.example", Ed25519PrivateKey.generate())
    note = sign_note("hello\n", [a, b])
    assert [v.name for v in verify_note(note, [a.verifier()])] == ["a.example"]
    # Same name, other key (so another id): ignored, and then nothing known verifies.
    impostor = Ed25519Signer("a.example", Ed25519PrivateKey.generate()).verifier()
    with pytest.raises(NoteError, match="no signature from a known key"):
        verify_note(note, [impostor])
    # Same name and id as a known key but a bad signature: the whole note is refused.
    bad = Signature("a.example", a.key_id, bytes(64))
    with pytest.raises(NoteError, match="does not verify"):
        verify_note(Note("hello\n", (bad, *note.signatures)), [a.verifier(), b.verifier()])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"no newline at the end", "end in a newline"),
        (b"text\n\xe2\x80\x94 a AAAAAAA=\n", "no blank line"),
        (b"text\n\n", "no signatures"),
        (b"text\x01\n\n\xe2\x80\x94 a AAAAAAA=\n", "control character"),
        (b"text\t\n\n\xe2\x80\x94 a AAAAAAA=\n", "control character"),
        (b"text\r\n\n\xe2\x80\x94 a AAAAAAA=\n", "control character"),
        (b"text\n\n\xff\n", "UTF-8"),
        (b"text\n\n- a AAAAAAA=\n", "em dash"),
        (b"text\n\n\xe2\x80\x94 a+b AAAAAAA=\n", "space, '\\+'"),
        (b"text\n\n\xe2\x80\x94 \xc2\xa0a AAAAAAA=\n", "space"),
        (b"text\n\n\xe2\x80\x94 a AAAAAAA\n", "base64"),
        (b"text\n\n\xe2\x80\x94 a AAAAAAB=\n", "canonical"),
        (b"text\n\n\xe2\x80\x94 a AAAA\n", "too short"),
        (b"text\n\n\xe2\x80\x94 a\n", "key name"),
        (b"text\n\n\xe2\x80\x94 a AAAAAAA=\n\n", "no signatures"),
        (b"text\n\n" + b"\xe2\x80\x94 a AAAAAAA=\n" * 101, "more than 100"),
    ],
)
def test_malformed_notes_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(NoteError, match=error):
        parse_note(data)


def test_sixteen_signatures_are_accepted() -> None:
    signers = [Ed25519Signer(f"k{i}.example", Ed25519PrivateKey.generate()) for i in range(16)]
    note = parse_note(format_note(sign_note("x\n", signers)))
    assert len(verify_note(note, [s.verifier() for s in signers])) == 16


@pytest.mark.parametrize(
    ("vkey", "error"),
    [
        (SPEC_VKEY.replace("530d903a", "530d903b"), "does not match"),
        (SPEC_VKEY.replace("530d903a", "530D903A"), "8 lowercase hex"),
        (SPEC_VKEY + "+x", "base64"),
        ("example.com/foo+530d903a", "is '<name>"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "base64"),
        # From Go's note tests: a wrong-length key and an unknown algorithm, ids adjusted.
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "base64|32 bytes",
        ),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "not Ed25519"),
    ],
)
def test_malformed_vkeys_are_refused(vkey: str, error: str) -> None:
    with pytest.raises(NoteError, match=error):
        parse_ed25519_vkey(vkey)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("origin\n1\n", "at least three"),
        ("\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "origin line is empty"),
        ("o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "leading zeroes"),
        ("o\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "leading zeroes"),
        ("o\n\u0661\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "leading zeroes"),
        ("o\n9223372036854775808\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "decimal"),
        ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", "root hash"),
        ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n", "extension lines"),
        ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n", "root hash"),
        ("o\n0\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "empty tree"),
        ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", "ends in a newline"),
    ],
)
def test_malformed_checkpoints_are_refused(body: str, error: str) -> None:
    with pytest.raises(CheckpointError, match=error):
        parse_checkpoint(body)


def test_extension_lines_round_trip() -> None:
    body = "o.example\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next one\next two\n"
    checkpoint = parse_checkpoint(body)
    assert checkpoint.extensions == ("ext one", "ext two")
    assert checkpoint.body() == body


def test_origins_are_per_tenant_and_refuse_unsafe_tenant_ids() -> None:
    assert origin_for_tenant("kaireon.example", "acme-1") == "kaireon.example/audit/acme-1"
    for bad in ("", "a b", "a+b", "a/b", "..", "é", "x" * 129):
        with pytest.raises(CheckpointError):
            origin_for_tenant("kaireon.example", bad)
    with pytest.raises(CheckpointError):
        origin_for_tenant("https://kaireon.example", "acme")


def test_one_log_key_gives_each_tenant_its_own_vkey() -> None:
    key = Ed25519PrivateKey.generate()
    acme = tenant_log_signer(key, "kaireon.example", "acme")
    beta = tenant_log_signer(key, "kaireon.example", "beta")
    assert acme.name == "kaireon.example/audit/acme" and acme.key_id != beta.key_id
    pinned = tenant_log_verifier(key.public_key(), "kaireon.example", "acme")
    assert pinned.vkey() == acme.vkey()
    # A checkpoint of tenant beta does not open with tenant acme's pinned key.
    note = sign_note(Checkpoint("kaireon.example/audit/beta", 0, EMPTY_ROOT).body(), [beta])
    with pytest.raises(CheckpointError, match="no pinned log key"):
        open_checkpoint(format_note(note), [pinned])


def test_open_checkpoint_applies_the_witness_quorum() -> None:
    origin = "kaireon.example/audit/acme"
    log = Ed25519Signer(origin, Ed25519PrivateKey.generate())
    w = [CosignatureSigner(f"w{i}.example", Ed25519PrivateKey.generate()) for i in range(3)]
    body = Checkpoint(origin, 0, EMPTY_ROOT).body()
    note = sign_note(body, [log], [w[0].cosign(body), w[2].cosign(body)])
    keys = [s.verifier() for s in w]
    opened = open_checkpoint(format_note(note), [log.verifier()], keys, quorum=2)
    assert [v.name for v in opened.witnesses] == ["w0.example", "w2.example"]
    with pytest.raises(CheckpointError, match="only 2 of the required 3"):
        open_checkpoint(format_note(note), [log.verifier()], keys, quorum=3)
    with pytest.raises(CheckpointError, match="no pinned log key"):
        open_checkpoint(format_note(note), [Ed25519Signer("other", log.private_key).verifier()])
    with pytest.raises(CheckpointError, match="is not"):
        open_checkpoint(format_note(note), [log.verifier()], origin="kaireon.example/audit/x")
    # The right name but another key: the log signature is not from the pinned key.
    other = Ed25519Signer(origin, Ed25519PrivateKey.generate())
    with pytest.raises(CheckpointError, match="log signature"):
        open_checkpoint(format_note(note), [other.verifier()])
