"""`kaireon dsar export|status|list|decrypt`: data-subject exports.

`export SUBJECT` queues an export, shows a live progress bar fed by the watch
stream (on stderr), then downloads the document. With --out FILE the document
goes to FILE (written beside it and moved into place once its digest checks),
its signature to FILE.sig and its sha256 to FILE.sha256 (`sha256sum -c`
format) — the inputs of `kaireon verify export FILE`; without --out the bytes
go to stdout unchanged.
--verify also checks digest, signature (key from GetSigningKey) and canonical
form here; a failed check exits with 3.

`decrypt FILE` opens an encrypted envelope offline with the keys of
KAIREON_ENCRYPTION_KEYS (or --keys-file); tampered input exits with 3 and
leaves no output.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from kaireon.dsar.v1 import dsar_pb2
from kaireon.provenance.v1 import provenance_pb2
from kaireon_client.checksum import write_checksum_file
from kaireon_client.cli import requests as requests_cli
from kaireon_client.cli.common import (
    EXIT_RPC_ERROR,
    EXIT_VERIFY_FAILED,
    message_to_dict,
    print_json,
)
from kaireon_client.client import KaireonClient
from kaireon_client.envelope import AuthenticationFailed, EnvelopeError, KeyRing, decrypt_file
from kaireon_client.verify import verify_artifact

EXIT_USAGE = 2
_BAR = 30


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dsar", help="data-subject access exports (operator)")
    commands = parser.add_subparsers(dest="dsar_command", metavar="SUBCOMMAND", required=True)

    export = commands.add_parser(
        "export", help="export one subject's data (portable JSON, or --encrypt)"
    )
    export.add_argument("subject", metavar="SUBJECT", help="the data subject (customer id)")
    export.add_argument("--encrypt", action="store_true", help="AES-256-GCM envelope")
    export.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the export to FILE, its signature to FILE.sig, its sha256 to FILE.sha256",
    )
    export.add_argument("--idempotency-key", default="", help="reuse the request of a retry")
    export.add_argument(
        "--verify", action="store_true", help="check digest, signature and canonical form"
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(func=_export)

    status = commands.add_parser("status", help="show one request")
    status.add_argument("id", metavar="REQUEST_ID")
    status.set_defaults(func=_status)

    listing = commands.add_parser("list", help="list requests, newest first")
    listing.add_argument("--status", default="", help="pending, processing, completed or failed")
    listing.add_argument("--limit", type=int, default=50, help="requests to print (default 50)")
    listing.add_argument(
        "--overdue",
        action="store_true",
        help="the lifecycle's open requests past their due date (kaireon requests list --overdue)",
    )
    listing.set_defaults(func=_list)

    decrypt = commands.add_parser(
        "decrypt", help="decrypt an encrypted export offline (keys from KAIREON_ENCRYPTION_KEYS)"
    )
    decrypt.add_argument("file", type=Path, metavar="FILE", help="the encrypted export")
    decrypt.add_argument("--out", type=Path, metavar="OUT", help="plaintext file (default stdout)")
    decrypt.add_argument(
        "--keys-file", type=Path, help='file holding "v1:<base64>,v2:<base64>" key versions'
    )
    decrypt.add_argument("--request-id", help="refuse an envelope of another request")
    decrypt.add_argument("--tenant-id", help="refuse an envelope of another tenant")
    decrypt.set_defaults(func=_decrypt, offline=True)


class _Progress:
    """One status line on stderr, redrawn in place on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._tty = sys.stderr.isatty()
        self._last = ""

    def show(self, request: dsar_pb2.DsarRequest) -> None:
        if not self._enabled:
            return
        filled = _BAR * request.progress // 100
        bar = "#" * filled + "-" * (_BAR - filled)
        line = f"[{bar}] {request.progress:3d}% {request.status}"
        if request.attempts > 1:
            line += f" (attempt {request.attempts})"
        if request.error and request.status != "completed":
            line += f" - {request.error}"
        if line == self._last:
            return
        self._last = line
        if self._tty:
            sys.stderr.write("\r" + line.ljust(72))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._enabled and self._tty and self._last:
            sys.stderr.write("\n")


def _watch(client: KaireonClient, request_id: str, progress: _Progress) -> dsar_pb2.DsarRequest:
    last: dsar_pb2.DsarRequest | None = None
    while True:
        after = last.version if last is not None else 0
        call = client.dsar.WatchDsarRequest(
            dsar_pb2.WatchDsarRequestRequest(id=request_id, after_version=after)
        )
        for item in call:
            last = item.request
            progress.show(last)
        # The stream ends at a terminal state; anything else was a dropped stream: resume.
        if last is not None and last.status in ("completed", "failed"):
            progress.done()
            return last


def _download(client: KaireonClient, request_id: str, sink: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for item in client.dsar.StreamDsarExport(dsar_pb2.StreamDsarExportRequest(id=request_id)):
        sink.write(item.chunk.data)
        digest.update(item.chunk.data)
        size += len(item.chunk.data)
    return digest.hexdigest(), size


def _export(args: argparse.Namespace, client: KaireonClient) -> int:
    if args.verify and args.out is None:
        print("kaireon: --verify needs --out", file=sys.stderr)
        return EXIT_USAGE
    created = client.dsar.CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(
            request_type="export",
            subject_id=args.subject,
            encrypt=args.encrypt,
            idempotency_key=args.idempotency_key,
        )
    ).request
    done = _watch(client, created.id, _Progress(not args.quiet and not args.json))
    if done.status != "completed":
        print(f"kaireon: export {done.id} failed: {done.error}", file=sys.stderr)
        return EXIT_RPC_ERROR
    out: Path | None = args.out
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    # Into a temporary file first: FILE only ever holds a complete, digest-checked export.
    fd, name = tempfile.mkstemp(dir=out.parent if out else None, prefix=".kaireon-dsar-")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb+") as target:
            digest, size = _download(client, done.id, target)
            if digest != done.export_digest_sha256 or size != done.export_size_bytes:
                print("kaireon: the downloaded export does not match its digest", file=sys.stderr)
                return EXIT_VERIFY_FAILED
            if out is None:
                target.seek(0)
                shutil.copyfileobj(target, sys.stdout.buffer)
                sys.stdout.flush()
        if out is not None:
            os.replace(partial, out)
            Path(f"{out}.sig").write_text(done.export_signature + "\n")
            write_checksum_file(out, done.export_digest_sha256)
    finally:
        partial.unlink(missing_ok=True)
    report = _verify(client, out, done) if args.verify and out is not None else None
    info = sys.stdout if out is not None else sys.stderr
    if args.json:
        summary = message_to_dict(done)
        summary["out"] = str(out) if out else None
        summary["verification"] = report.as_dict() if report else None
        print_json(summary, file=info)
    else:
        kind = f"encrypted ({done.export_key_version})" if done.encrypt else "portable JSON"
        lines = [
            f"export {done.id} of {args.subject}: {kind}, {size} bytes"
            + (f" written to {out} (+ .sig, .sha256)" if out else ""),
            f"sha256 {done.export_digest_sha256}",
            "signature: "
            + ("UNSIGNED" if done.export_signature == "unsigned" else "ECDSA P-256 SHA-256"),
        ]
        if report is not None:
            lines += [f"{'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in report.checks]
            lines.append("verified" if report.ok else "NOT verified")
        print("\n".join(lines), file=info)
    return EXIT_VERIFY_FAILED if report is not None and not report.ok else 0


def _verify(client: KaireonClient, out: Path, done: dsar_pb2.DsarRequest) -> Any:
    key = client.provenance.GetSigningKey(provenance_pb2.GetSigningKeyRequest())
    return verify_artifact(
        out.read_bytes(),
        digest=done.export_digest_sha256,
        signature=done.export_signature,
        public_key_pem=key.public_key_pem or None,
    )


def _print_requests(requests: Iterable[dsar_pb2.DsarRequest]) -> None:
    for r in requests:
        created = r.create_time.ToJsonString()
        print(f"{r.id}  {created}  {r.status:<10} {r.progress:3d}%  {r.subject_id}")


def _status(args: argparse.Namespace, client: KaireonClient) -> int:
    request = client.dsar.GetDsarRequest(dsar_pb2.GetDsarRequestRequest(id=args.id)).request
    request.ClearField("exported_data")  # the document itself: use `export` / the download
    if args.json:
        print_json(request)
    else:
        _print_requests([request])
        if request.error:
            print(f"error: {request.error}")
    return 0


def _list(args: argparse.Namespace, client: KaireonClient) -> int:
    if args.overdue:
        # Deadlines belong to the request lifecycle, not to the export jobs.
        args.due_before = ""
        return requests_cli.list_requests(args, client)
    found: list[dsar_pb2.DsarRequest] = []
    token = ""
    while len(found) < args.limit:
        page = client.dsar.ListDsarRequests(
            dsar_pb2.ListDsarRequestsRequest(
                status=args.status, page_size=min(500, args.limit - len(found)), page_token=token
            )
        )
        for request in page.requests:
            request.ClearField("exported_data")
            found.append(request)
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print_json({"requests": [message_to_dict(r) for r in found]})
    else:
        _print_requests(found)
    return 0


def envelope_problem(path: Path) -> str | None:
    """Why FILE cannot be an encrypted envelope, checked before any key is needed."""
    try:
        with open(path, "rb") as source:
            head = source.read(64 * 1024)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if re.search(rb'"ciphertext"\s*:\s*"', head):
        return None
    if head.lstrip().startswith(b"{"):
        return (
            f"{path} is not encrypted (a plaintext export?): there is nothing to decrypt; "
            "read it as it is"
        )
    return f"{path} is not an encrypted export (not JSON)"


def _decrypt(args: argparse.Namespace, _client: None) -> int:
    problem = envelope_problem(args.file)
    if problem is not None:
        print(f"kaireon: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.keys_file is not None:
            keyring: KeyRing | None = KeyRing.parse(args.keys_file.read_text())
        else:
            keyring = KeyRing.from_env()
        if keyring is None:
            print(
                "kaireon: no keys: set KAIREON_ENCRYPTION_KEYS or pass --keys-file",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if args.out is not None:
            info = decrypt_file(
                args.file, args.out, keyring, tenant_id=args.tenant_id, request_id=args.request_id
            )
        else:
            with tempfile.TemporaryDirectory() as tmp:
                plain = Path(tmp) / "plain.json"
                info = decrypt_file(
                    args.file, plain, keyring, tenant_id=args.tenant_id, request_id=args.request_id
                )
                with open(plain, "rb") as source:
                    shutil.copyfileobj(source, sys.stdout.buffer)
                sys.stdout.flush()
    except AuthenticationFailed as exc:
        print(f"kaireon: {exc}", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    except (EnvelopeError, OSError) as exc:
        print(f"kaireon: cannot decrypt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is not None:
        print(
            f"decrypted {args.file} (key {info.key_version}, request {info.request_id}) "
            f"to {args.out}"
        )
    return 0
