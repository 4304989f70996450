"""The witness's HTTP server (`make_server`) against hostile clients, over a real
loopback socket: a client that stalls mid-request is cut off after the request
timeout instead of pinning a thread for ever, and a path with control
characters cannot forge or colour the witness's log lines."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.cosignature import CosignatureSigner
from kaireon_client.tlog.witness import Witness, WitnessState, make_server

TIMEOUT = 0.5


@pytest.fixture
def address(tmp_path: Path) -> Iterator[tuple[str, int]]:
    signer = CosignatureSigner("witness.example/hostile", Ed25519PrivateKey.generate())
    witness = Witness(signer, WitnessState(tmp_path / "state.json"), [])
    server = make_server(witness, "127.0.0.1", 0, timeout=TIMEOUT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "partial",
    [
        b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: 100\r\n\r\nold 0\n",  # body stalls
        b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n",  # headers stall
        b"",  # connects, says nothing
    ],
    ids=["body", "headers", "silent"],
)
def test_a_stalled_client_is_cut_off(address: tuple[str, int], partial: bytes) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(partial)
        began = time.monotonic()
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            pytest.fail("the witness kept a stalled connection open for 10 s")
        assert time.monotonic() - began < 10
    # And it still serves others.
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /nope HTTP/1.0\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.0 404")


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /x\x1b[2J\x08FAKE HTTP/1.0", b"404"),
        # Not a request line (four words): answered 400; the log line of the
        # refusal used to raise (no path yet) and the client got nothing.
        (b"GET /x\x1b[2J\rkaireon-witness: FAKE HTTP/1.0", b"400"),
    ],
    ids=["path", "bad-request-line"],
)
def test_a_hostile_path_cannot_forge_log_lines(
    address: tuple[str, int], capsys: pytest.CaptureFixture[str], request_line: bytes, status: bytes
) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request_line + b"\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.0 " + status)
    time.sleep(0.2)  # the handler thread logs after answering
    err = capsys.readouterr().err
    assert err.startswith("kaireon-witness: "), err
    assert not any(ch in err for ch in "\x1b\r\x08"), repr(err)


def test_a_flood_of_idle_connections_is_refused_not_threaded(tmp_path: Path) -> None:
    """Beyond max_connections, a connection gets 503 at once (no thread waits out
    its timeout for it), and the server serves again once the idle ones are gone."""
    signer = CosignatureSigner("witness.example/flood", Ed25519PrivateKey.generate())
    witness = Witness(signer, WitnessState(tmp_path / "state.json"), [])
    server = make_server(witness, "127.0.0.1", 0, timeout=30, max_connections=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = server.server_address[:2]
    idle = [socket.create_connection(address, timeout=10) for _ in range(4)]
    try:
        time.sleep(0.2)
        threads = threading.active_count()
        extra = [socket.create_connection(address, timeout=10) for _ in range(20)]
        for sock in extra:
            assert sock.recv(64).startswith(b"HTTP/1.0 503"), "not refused at once"
            sock.close()
        assert threading.active_count() <= threads
    finally:
        for sock in idle:
            sock.close()
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.create_connection(address, timeout=10) as sock:
                sock.sendall(b"GET /nope HTTP/1.0\r\n\r\n")
                answer = sock.recv(64)
            if answer.startswith(b"HTTP/1.0 404") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.0 404"), answer
    finally:
        server.shutdown()
        server.server_close()
