"""`kaireon keys signing-key|log-key`: the public keys a verifier pins.

`signing-key` writes the provenance/DSAR/receipt signing key (ECDSA P-256,
PEM SubjectPublicKeyInfo) — what `openssl dgst -sha256 -verify FILE` and
tools/verify_*.py take. `log-key` writes the tenant's audit-log verifier key
(C2SP vkey, `<name>+<hash>+<base64>`) — what `kaireon verify audit
--log-vkey` takes. Only public keys ever leave the server. Without --out the
key goes to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization

from kaireon.audit.v1 import audit_pb2
from kaireon.provenance.v1 import provenance_pb2
from kaireon_client.cli.common import EXIT_RPC_ERROR, fail, print_json
from kaireon_client.client import KaireonClient


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys", help="write the server's public verification keys (signing key, audit-log key)"
    )
    commands = parser.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    signing = commands.add_parser(
        "signing-key",
        help="the ECDSA P-256 public key of provenance bundles, DSAR exports and receipts (PEM)",
    )
    signing.add_argument("--out", type=Path, metavar="FILE", help="write here (default stdout)")
    signing.set_defaults(func=_signing_key)
    log = commands.add_parser(
        "log-key", help="the tenant's audit-log verifier key (C2SP vkey; admin)"
    )
    log.add_argument("--out", type=Path, metavar="FILE", help="write here (default stdout)")
    log.set_defaults(func=_log_key)


def signing_key_id(pem: str) -> str:
    """The key id the server reports: sha256 of the DER SubjectPublicKeyInfo."""
    key = serialization.load_pem_public_key(pem.encode())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        out.write_text(text)


def _signing_key(args: argparse.Namespace, client: KaireonClient) -> int:
    pem = client.provenance.GetSigningKey(provenance_pb2.GetSigningKeyRequest()).public_key_pem
    if not pem:
        return fail(
            "the server has no signing key (COSIGN_KEY is unset): it signs nothing",
            EXIT_RPC_ERROR,
        )
    key_id = signing_key_id(pem)
    _emit(pem, args.out)
    info = sys.stdout if args.out is not None else sys.stderr
    if args.json:
        print_json({"keyId": key_id, "out": str(args.out) if args.out else None}, file=info)
    else:
        where = f" to {args.out}" if args.out else ""
        print(f"signing key (ECDSA P-256) {key_id} written{where}", file=info)
    return 0


def _log_key(args: argparse.Namespace, client: KaireonClient) -> int:
    try:
        checkpoint = client.audit.GetCheckpoint(audit_pb2.GetCheckpointRequest()).checkpoint
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return fail(
                "the tenant's audit log has no checkpoint yet, so no log key to show: "
                "the key is served with the first checkpoint (after the first audited change)",
                EXIT_RPC_ERROR,
            )
        raise
    if not checkpoint.log_vkey:
        return fail(
            "the server has no audit-log key (KAIREON_LOG_KEY is unset): checkpoints are unsigned",
            EXIT_RPC_ERROR,
        )
    _emit(checkpoint.log_vkey + "\n", args.out)
    info = sys.stdout if args.out is not None else sys.stderr
    name = checkpoint.log_vkey.split("+", 1)[0]
    if args.json:
        print_json(
            {"origin": checkpoint.origin, "name": name, "out": str(args.out) if args.out else None},
            file=info,
        )
    else:
        where = f" to {args.out}" if args.out else ""
        print(f"audit-log key {name} (origin {checkpoint.origin}) written{where}", file=info)
    return 0
