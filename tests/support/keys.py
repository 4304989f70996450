"""Throwaway keys and ports for servers started by tests and by perf/."""

from __future__ import annotations

import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def write_signing_key(path: Path) -> Path:
    """A fresh ECDSA P-256 key (PKCS#8 PEM, mode 0600) for COSIGN_KEY: bundles,
    receipts and exports are signed as in production, and signing costs CPU."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def log_key_pem() -> bytes:
    """A fresh Ed25519 key (PKCS#8 PEM) for KAIREON_LOG_KEY: the audit log's
    checkpoints are signed with it."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_log_key(path: Path) -> Path:
    """`log_key_pem()` in a file (mode 0600); in the session's key_dir the log scan
    looks for its bytes."""
    path.write_bytes(log_key_pem())
    path.chmod(0o600)
    return path


def free_port() -> int:
    """A loopback port free right now (another process may take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
