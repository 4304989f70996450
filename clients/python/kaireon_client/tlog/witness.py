"""`kaireon-witness`: a small offline witness for the audit log's checkpoints.

It cosigns a tenant's checkpoint only after checking that it is signed by the
pinned log key and consistent with the last checkpoint it cosigned for that
origin, then records the new one. So once it has cosigned size N with root R, no
checkpoint that rewrites, drops or forks those N entries ever gets its signature.

    kaireon-witness keygen --key witness.key --name witness.example/w1
    kaireon-witness vkey --key witness.key
    kaireon-witness cosign --key witness.key --state witness.state \\
        --log-vkey 'kaireon.example/audit/acme+...' request.txt
    kaireon-witness latest --state witness.state --origin kaireon.example/audit/acme

The cosign request is the body of the C2SP tlog-witness `add-checkpoint` call
(`old <size>`, consistency proof lines, a blank line, the signed checkpoint); the
answer on stdout is the cosignature line(s) that call returns. Refusals exit
non-zero with the reason on stderr; exit codes map the protocol's HTTP statuses:

    0 cosigned (200)         2 malformed request (400)   3 bad signature (403)
    4 unknown origin (404)   5 old size conflict (409; the witness's size on stdout)
    6 inconsistent checkpoint: fork or rollback (422)

The state file (JSON, one entry per origin: size, root, cosigned checkpoint) is
locked during the check-and-update and replaced atomically. Refused checkpoints
that carry a valid log signature are kept in `<state>.refused/` as evidence.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client import strict_json
from kaireon_client.tlog.checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from kaireon_client.tlog.cosignature import CosignatureSigner
from kaireon_client.tlog.merkle import (
    EMPTY_ROOT,
    ProofError,
    decode_hash,
    encode_hash,
    verify_consistency,
)
from kaireon_client.tlog.note import (
    SIG_ED25519_COSIGNATURE,
    Ed25519Verifier,
    Note,
    NoteError,
    Signature,
    format_note,
    format_private_key,
    parse_ed25519_vkey,
    parse_note,
    parse_private_key,
    verified_keys,
)

__all__ = ["STATE_VERSION", "Refusal", "Witness", "WitnessState", "main"]

STATE_VERSION = 1
# The witness protocol's cap on consistency proof lines.
MAX_PROOF_LINES = 63
EXIT_BAD_REQUEST, EXIT_FORBIDDEN, EXIT_UNKNOWN_ORIGIN, EXIT_CONFLICT, EXIT_INCONSISTENT = (
    2,
    3,
    4,
    5,
    6,
)


class Refusal(Exception):
    """The witness will not cosign; `code` is the exit code (HTTP status in the protocol)."""

    def __init__(self, code: int, message: str, body: str = "", evidence: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.body = body
        self.evidence = evidence


@dataclass(frozen=True, slots=True)
class LogRecord:
    size: int
    root: bytes
    checkpoint: str


class WitnessState:
    """The JSON state file: {"version": 1, "logs": {origin: {size, root, checkpoint}}}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, LogRecord]]:
        """Hold an exclusive lock while reading, checking and replacing the state.

        Checking the old size and recording the new checkpoint must be atomic, or
        two concurrent requests could roll the witness back (tlog-witness)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self.read()
        finally:
            os.close(fd)

    def read(self) -> dict[str, LogRecord]:
        try:
            raw = strict_json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise Refusal(
                EXIT_BAD_REQUEST, f"cannot read the state file {self.path}: {exc}"
            ) from exc
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise Refusal(EXIT_BAD_REQUEST, f"{self.path} is not a version {STATE_VERSION} state")
        logs: dict[str, LogRecord] = {}
        for origin, entry in (raw.get("logs") or {}).items():
            try:
                cp = parse_checkpoint(parse_note(entry["checkpoint"]).text)
                record = LogRecord(
                    int(entry["size"]), decode_hash(entry["root"]), entry["checkpoint"]
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise Refusal(EXIT_BAD_REQUEST, f"corrupt state for {origin!r}: {exc}") from exc
            if (cp.origin, cp.size, cp.root_hash) != (origin, record.size, record.root):
                raise Refusal(EXIT_BAD_REQUEST, f"corrupt state for {origin!r}")
            logs[origin] = record
        return logs

    def write(self, logs: dict[str, LogRecord]) -> None:
        """Replace the state file atomically (temp file, fsync, rename, fsync dir)."""
        document = {
            "version": STATE_VERSION,
            "logs": {
                origin: {"size": r.size, "root": encode_hash(r.root), "checkpoint": r.checkpoint}
                for origin, r in sorted(logs.items())
            },
        }
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(document, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class Request:
    old_size: int
    proof: list[bytes]
    note_text: str


def parse_request(data: bytes) -> Request:
    """An add-checkpoint body: `old N`, proof lines, blank line, signed checkpoint."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(EXIT_BAD_REQUEST, "request is not UTF-8") from exc
    head, sep, note_text = text.partition("\n\n")
    if not sep:
        raise Refusal(EXIT_BAD_REQUEST, "request lacks the blank line before the checkpoint")
    lines = head.split("\n")
    old = lines[0]
    digits = old.removeprefix("old ")
    if (
        old == digits
        or not digits.isascii()
        or not digits.isdigit()
        or (digits != "0" and digits.startswith("0"))
        or len(digits) > 19
    ):
        raise Refusal(EXIT_BAD_REQUEST, "the first line must be 'old <size>' (decimal)")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise Refusal(EXIT_BAD_REQUEST, f"more than {MAX_PROOF_LINES} consistency proof lines")
    try:
        proof = [decode_hash(line) for line in lines[1:]]
    except ProofError as exc:
        raise Refusal(EXIT_BAD_REQUEST, f"consistency proof: {exc}") from exc
    return Request(int(digits), proof, note_text)


class Witness:
    def __init__(
        self, signer: CosignatureSigner, state: WitnessState, log_keys: Sequence[Ed25519Verifier]
    ) -> None:
        self.signer = signer
        self.state = state
        self.log_keys = list(log_keys)

    def add_checkpoint(self, request: Request, now: int | None = None) -> Signature:
        """Check a request as tlog-witness's add-checkpoint does; cosign and record it."""
        try:
            note = parse_note(request.note_text)
            checkpoint = parse_checkpoint(note.text)
        except (NoteError, CheckpointError) as exc:
            raise Refusal(EXIT_BAD_REQUEST, f"malformed checkpoint: {exc}") from exc
        keys = [k for k in self.log_keys if k.name == checkpoint.origin]
        if not keys:
            raise Refusal(EXIT_UNKNOWN_ORIGIN, f"unknown log origin {checkpoint.origin!r}")
        try:
            if not verified_keys(note, keys):
                raise Refusal(
                    EXIT_FORBIDDEN,
                    f"checkpoint is not signed by the log key of {checkpoint.origin!r}",
                )
        except NoteError as exc:
            raise Refusal(EXIT_FORBIDDEN, f"log signature: {exc}") from exc
        with self.state.locked() as logs:
            previous = logs.get(checkpoint.origin)
            self._check(request, checkpoint, previous)
            cosignature = self.signer.cosign(note.text, int(time.time()) if now is None else now)
            mine = tuple(s for s in note.signatures if s.name != self.signer.name)
            stored = format_note(Note(note.text, (*mine, cosignature))).decode()
            logs[checkpoint.origin] = LogRecord(checkpoint.size, checkpoint.root_hash, stored)
            self.state.write(logs)
        return cosignature

    def _check(self, request: Request, cp: Checkpoint, previous: LogRecord | None) -> None:
        known = previous.size if previous else 0
        if request.old_size > cp.size:
            rollback = previous is not None and cp.size < previous.size
            raise Refusal(
                EXIT_BAD_REQUEST,
                f"old size {request.old_size} is larger than the checkpoint size {cp.size}"
                + (f" (ROLLBACK REFUSED: this witness cosigned size {known})" if rollback else ""),
                evidence=rollback,
            )
        if request.old_size != known:
            rollback = previous is not None and cp.size < previous.size
            raise Refusal(
                EXIT_CONFLICT,
                (
                    f"ROLLBACK REFUSED: {cp.origin} size {cp.size} is older than size "
                    f"{known} this witness already cosigned"
                    if rollback
                    else f"old size {request.old_size} does not match the size {known} "
                    f"this witness last cosigned for {cp.origin}"
                ),
                body=f"{known}\n",
                evidence=rollback,
            )
        if cp.size == 0 and cp.root_hash != EMPTY_ROOT:
            raise Refusal(EXIT_INCONSISTENT, "a checkpoint of size 0 must have the empty root")
        if previous is None or request.old_size == 0:
            if request.proof:
                raise Refusal(EXIT_INCONSISTENT, "a consistency proof from size 0 must be empty")
            return
        try:
            verify_consistency(previous.size, cp.size, request.proof, previous.root, cp.root_hash)
        except ProofError as exc:
            fork = cp.size == previous.size
            raise Refusal(
                EXIT_INCONSISTENT,
                (
                    f"FORK DETECTED: {cp.origin} size {cp.size} has root "
                    f"{encode_hash(cp.root_hash)} but this witness cosigned root "
                    f"{encode_hash(previous.root)}"
                    if fork
                    else f"INCONSISTENT CHECKPOINT REFUSED: {cp.origin} size {cp.size} is not an "
                    f"extension of size {previous.size} this witness cosigned: {exc}"
                ),
                evidence=True,
            ) from exc


def _keep_evidence(state_path: Path, data: bytes) -> Path:
    folder = state_path.with_name(state_path.name + ".refused")
    folder.mkdir(mode=0o700, exist_ok=True)
    name = (
        f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{hashlib.sha256(data).hexdigest()[:16]}"
    )
    path = folder / f"{name}.txt"
    path.write_bytes(data)
    return path


def load_signer(path: Path) -> CosignatureSigner:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise Refusal(EXIT_BAD_REQUEST, f"{path} is readable by others: chmod 600 it")
        name, sig_type, key = parse_private_key(path.read_text())
    except (OSError, NoteError) as exc:
        raise Refusal(EXIT_BAD_REQUEST, f"cannot load the witness key {path}: {exc}") from exc
    if sig_type != SIG_ED25519_COSIGNATURE:
        raise Refusal(EXIT_BAD_REQUEST, f"{path} is not a witness (cosignature) key")
    return CosignatureSigner(name, key)


def _keygen(args: argparse.Namespace) -> int:
    name = args.name
    key = Ed25519PrivateKey.generate()
    try:
        text = format_private_key(name, SIG_ED25519_COSIGNATURE, key)
    except NoteError as exc:
        raise Refusal(EXIT_BAD_REQUEST, str(exc)) from exc
    try:
        fd = os.open(args.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise Refusal(EXIT_BAD_REQUEST, f"{args.key} exists; not overwriting a key") from exc
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    print(CosignatureSigner(name, key).vkey())
    return 0


def _vkey(args: argparse.Namespace) -> int:
    print(load_signer(args.key).vkey())
    return 0


def _log_keys(args: argparse.Namespace) -> list[Ed25519Verifier]:
    values = list(args.log_vkey)
    if args.logs:
        values += [
            line.strip()
            for line in args.logs.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    if not values:
        raise Refusal(EXIT_BAD_REQUEST, "no log key: give --log-vkey or --logs")
    try:
        return [parse_ed25519_vkey(v) for v in values]
    except NoteError as exc:
        raise Refusal(EXIT_BAD_REQUEST, f"bad log vkey: {exc}") from exc


def handle_request(witness: Witness, data: bytes) -> Signature:
    """One add-checkpoint request body: cosign it, or refuse (keeping the evidence)."""
    try:
        return witness.add_checkpoint(parse_request(data))
    except Refusal as refusal:
        if refusal.evidence:
            kept = _keep_evidence(witness.state.path, data)
            refusal.args = (f"{refusal.args[0]} (request kept in {kept})",)
        raise


def _cosign(args: argparse.Namespace) -> int:
    signer = load_signer(args.key)
    log_keys = _log_keys(args)
    data = sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
    witness = Witness(signer, WitnessState(args.state), log_keys)
    sys.stdout.write(handle_request(witness, data).line())
    return 0


# Exit codes back to the HTTP statuses of c2sp.org/tlog-witness.
HTTP_STATUS = {
    EXIT_BAD_REQUEST: 400,
    EXIT_FORBIDDEN: 403,
    EXIT_UNKNOWN_ORIGIN: 404,
    EXIT_CONFLICT: 409,
    EXIT_INCONSISTENT: 422,
}
MAX_REQUEST_BYTES = 64 * 1024
# Seconds a connection may take to send its request (and be idle between reads):
# without a bound, a client that sends headers but not its body pinned a thread
# for ever, and a few thousand of them exhausted the witness.
REQUEST_TIMEOUT = 30.0
# Connections served at once (one thread each); one more is answered 503 at once
# instead of starting a thread: a flood of idle connections cannot exhaust the
# process's threads while each waits out its timeout.
MAX_CONNECTIONS = 64
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `slots` connections in their threads."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], slots: int):
        self._slots = threading.BoundedSemaphore(slots)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


_ORIGIN_HASH_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")


def make_server(
    witness: Witness,
    host: str,
    port: int,
    *,
    timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> ThreadingHTTPServer:
    """The tlog-witness HTTP interface: POST /add-checkpoint, GET /<origin hash>/checkpoint.

    Submission and monitoring prefixes are both the root. Concurrent requests are
    safe: each check-and-update holds the state file's lock."""

    request_timeout = timeout

    class Handler(BaseHTTPRequestHandler):
        server_version = "kaireon-witness"
        # StreamRequestHandler puts this on the socket: a stalled read ends the connection.
        timeout = request_timeout

        def _answer(self, status: int, body: str, content_type: str = "text/plain") -> None:
            raw = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            if self.path != "/add-checkpoint":
                self._answer(404, "not found\n")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, "Content-Length required\n")
                return
            if not 0 <= length <= MAX_REQUEST_BYTES:
                self._answer(413, "request too large\n")
                return
            try:
                data = self.rfile.read(length)
            except TimeoutError:  # the body stalled: drop the connection, no answer
                self.close_connection = True
                return
            try:
                cosignature = handle_request(witness, data)
            except Refusal as refusal:
                if refusal.code == EXIT_CONFLICT:
                    self._answer(409, refusal.body, "text/x.tlog.size")
                else:
                    self._answer(HTTP_STATUS.get(refusal.code, 400), f"{refusal}\n")
                return
            self._answer(200, cosignature.line())

        def do_GET(self) -> None:
            match = _ORIGIN_HASH_PATH.fullmatch(self.path)
            if match is None:
                self._answer(404, "not found\n")
                return
            for origin, record in witness.state.read().items():
                if hashlib.sha256(origin.encode()).hexdigest() == match.group(1):
                    self._answer(200, record.checkpoint)
                    return
            self._answer(404, "never cosigned a checkpoint of this log\n")

        def log_message(self, format: str, *args: object) -> None:
            # One line per request on stderr, without bodies. Method, path and
            # message are the client's: escaped, so they cannot forge log lines
            # or send terminal control sequences to whoever reads the log.
            status = args[1] if len(args) > 1 else "-"
            method, path, status_text = (
                str(text or "-").encode("unicode_escape").decode("ascii")[:300]
                for text in (self.command, getattr(self, "path", None), status)
            )
            sys.stderr.write(f"kaireon-witness: {method} {path} {status_text}\n")

    return _BoundedServer((host, port), Handler, max_connections)


def _serve(args: argparse.Namespace) -> int:
    witness = Witness(load_signer(args.key), WitnessState(args.state), _log_keys(args))
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise Refusal(EXIT_BAD_REQUEST, "--listen is HOST:PORT")
    server = make_server(witness, host.strip("[]"), int(port))
    bound_host, bound_port = server.server_address[:2]
    if isinstance(bound_host, bytes):
        bound_host = bound_host.decode()
    print(f"kaireon-witness: listening on http://{bound_host}:{bound_port}", file=sys.stderr)
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _latest(args: argparse.Namespace) -> int:
    record = WitnessState(args.state).read().get(args.origin)
    if record is None:
        raise Refusal(EXIT_UNKNOWN_ORIGIN, f"never cosigned a checkpoint of {args.origin!r}")
    sys.stdout.write(record.checkpoint)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaireon-witness",
        description="Cosign audit-log checkpoints after checking them (C2SP tlog-witness).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keygen = commands.add_parser("keygen", help="write a new witness key (0600), print its vkey")
    keygen.add_argument("--key", type=Path, required=True, help="key file to create")
    keygen.add_argument("--name", required=True, help="witness name, e.g. witness.example/w1")
    keygen.set_defaults(func=_keygen)
    vkey = commands.add_parser("vkey", help="print the vkey of a witness key")
    vkey.add_argument("--key", type=Path, required=True)
    vkey.set_defaults(func=_vkey)
    cosign = commands.add_parser("cosign", help="check and cosign an add-checkpoint request")
    cosign.add_argument("--key", type=Path, required=True, help="witness key file")
    cosign.add_argument("--state", type=Path, required=True, help="witness state file")
    cosign.add_argument("--log-vkey", action="append", default=[], help="trusted log vkey")
    cosign.add_argument("--logs", type=Path, help="file of trusted log vkeys, one a line")
    cosign.add_argument("request", nargs="?", default="-", help="request file ('-': stdin)")
    cosign.set_defaults(func=_cosign)
    serve = commands.add_parser("serve", help="serve the tlog-witness HTTP protocol")
    serve.add_argument("--key", type=Path, required=True, help="witness key file")
    serve.add_argument("--state", type=Path, required=True, help="witness state file")
    serve.add_argument("--log-vkey", action="append", default=[], help="trusted log vkey")
    serve.add_argument("--logs", type=Path, help="file of trusted log vkeys, one a line")
    serve.add_argument(
        "--listen", default="127.0.0.1:7380", help="HOST:PORT (default 127.0.0.1:7380)"
    )
    serve.set_defaults(func=_serve)
    latest = commands.add_parser("latest", help="print the last cosigned checkpoint of a log")
    latest.add_argument("--state", type=Path, required=True)
    latest.add_argument("--origin", required=True)
    latest.set_defaults(func=_latest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Refusal as refusal:
        if refusal.body:
            sys.stdout.write(refusal.body)
        print(f"kaireon-witness: {refusal}", file=sys.stderr)
        return refusal.code
    except OSError as exc:
        print(f"kaireon-witness: {exc}", file=sys.stderr)
        return EXIT_BAD_REQUEST


if __name__ == "__main__":
    sys.exit(main())
