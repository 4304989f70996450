"""A signed artefact on disk: FILE plus its sidecars FILE.sha256 and FILE.sig.

`kaireon provenance --out FILE` and `kaireon dsar export --out FILE` write this
package: the body bytes exactly as served, the sha256 hex of those bytes, the
base64 signature (or "unsigned"). The digest sidecar is read in either form:
the bare hex, or `sha256sum`'s `<hex>  <name>` (so `sha256sum -c FILE.sha256`
works beside it); checksum.parse_checksum reads it and refuses a name that is
not FILE's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PackageError", "SignedFile", "load_package"]


class PackageError(ValueError):
    """A sidecar cannot be read (missing file, empty)."""


@dataclass(frozen=True)
class SignedFile:
    body: bytes
    digest: str
    signature: str | None  # None: no .sig beside the file


def load_package(
    path: Path, *, digest_path: Path | None = None, signature_path: Path | None = None
) -> SignedFile:
    """Read FILE and its sidecars (FILE.sha256 required, FILE.sig optional)."""
    digest_path = digest_path or Path(f"{path}.sha256")
    signature_path = signature_path or Path(f"{path}.sig")
    try:
        body = path.read_bytes()
        digest_text = digest_path.read_text()
    except OSError as exc:
        raise PackageError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    try:
        signature: str | None = signature_path.read_text().strip()
    except FileNotFoundError:
        signature = None
    except OSError as exc:
        raise PackageError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    return SignedFile(body, digest_text, signature)
