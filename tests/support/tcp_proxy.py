"""A TCP proxy for fault injection between the server and PostgreSQL.

It listens on 127.0.0.1 and forwards to a TCP address or a unix socket (the
embedded PostgreSQL listens on one). Faults on every connection:
- `drop()`: close every open connection now (a network cut / a database crash);
- `refuse()`: close new connections as soon as they arrive (database down);
- `stall()`: keep connections but forward nothing (a hung network or server);
- `heal()`: back to normal forwarding (held bytes are delivered).

Targeted faults (`arm(Fault(...))`) read the PostgreSQL frontend protocol on
the client side of each connection and fire on the N-th round trip counted
from arming: the request is lost (the server never sees round trip N) or its
response is lost (the server executed it, the client never hears back), by a
cut connection or a stall. A round trip ends with Sync, Flush, a simple Query,
CopyDone or CopyFail: what asyncpg sends before it waits for an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlparse

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
# Frontend messages after which the client waits for the server.
_BOUNDARIES = frozenset(b"SHQcf")


class FrontendParser:
    """Splits the client's byte stream into PostgreSQL messages, across chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._startup = True  # untyped messages until the StartupMessage
        self.parameters: dict[str, str] = {}

    def feed(self, data: bytes) -> list[tuple[int | None, int]]:
        """(message type or None for startup messages, end offset in `data`) of
        every message completed by `data`."""
        done: list[tuple[int | None, int]] = []
        start = len(self._buffer)
        self._buffer += data
        offset = 0
        while True:
            if self._startup:
                if len(self._buffer) - offset < 8:
                    break
                length, code = struct.unpack_from("!ii", self._buffer, offset)
                if len(self._buffer) - offset < length:
                    break
                if code not in (_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST):
                    self._startup = False
                    self._read_parameters(bytes(self._buffer[offset + 8 : offset + length]))
                kind: int | None = None
            else:
                if len(self._buffer) - offset < 5:
                    break
                kind = self._buffer[offset]
                (length,) = struct.unpack_from("!i", self._buffer, offset + 1)
                length += 1
                if len(self._buffer) - offset < length:
                    break
            offset += length
            done.append((kind, offset - start))
        del self._buffer[:offset]
        return done

    def _read_parameters(self, payload: bytes) -> None:
        items = payload.split(b"\0")
        for key, value in zip(items[::2], items[1::2], strict=False):
            if key:
                self.parameters[key.decode(errors="replace")] = value.decode(errors="replace")


@dataclass(eq=False)
class Fault:
    """Fire on the `round_trip`-th round trip (from arming) of a connection whose
    application_name is `application_name` (any connection if None)."""

    round_trip: int
    action: Literal["drop", "stall"] = "drop"
    lose: Literal["request", "response"] = "request"
    application_name: str | None = None
    seen: int = 0
    fired: asyncio.Event = field(default_factory=asyncio.Event)

    def applies_to(self, link: _Link) -> bool:
        return self.application_name is None or link.application_name == self.application_name


@dataclass(eq=False)
class _Link:
    """One proxied connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    parser: FrontendParser = field(default_factory=FrontendParser)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    held: bytearray = field(default_factory=bytearray)  # request bytes kept back
    doomed: Fault | None = None  # its next response is lost

    @property
    def application_name(self) -> str:
        return self.parser.parameters.get("application_name", "")

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


@dataclass
class TcpProxy:
    target_host: str | None = None
    target_port: int | None = None
    target_unix: str | None = None
    port: int = 0
    _server: asyncio.Server | None = None
    _links: set[_Link] = field(default_factory=set)
    _refusing: bool = False
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _fault: Fault | None = None
    _last_activity: float = 0.0
    connections_seen: int = 0
    # Round trips (see the module docstring) of every connection, for tests that count them.
    round_trips: int = 0

    @classmethod
    def for_dsn(cls, dsn: str) -> TcpProxy:
        """A proxy to the server of a `postgresql://` DSN (TCP or `?host=/socket/dir`)."""
        url = urlparse(dsn)
        socket_dir = parse_qs(url.query).get("host", [None])[0]
        if socket_dir:
            return cls(target_unix=f"{socket_dir}/.s.PGSQL.{url.port or 5432}")
        return cls(target_host=url.hostname, target_port=url.port or 5432)

    def dsn(self, dsn: str) -> str:
        """`dsn` (same user and database) reached through this proxy, without TLS
        so the protocol stays readable."""
        url = urlparse(dsn)
        user = url.username or "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}{url.path}?sslmode=disable"

    async def start(self) -> TcpProxy:
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target_unix:
            return await asyncio.open_unix_connection(self.target_unix)
        assert self.target_host and self.target_port
        return await asyncio.open_connection(self.target_host, self.target_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        if self._refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await self._open_target()
        except OSError:
            writer.close()
            return
        link = _Link(writer, up_writer)
        link.flowing.set()
        self._links.add(link)
        try:
            await asyncio.gather(self._requests(link, reader), self._responses(link, up_reader))
        finally:
            self._links.discard(link)
            for w in (writer, up_writer):
                w.close()

    async def _wait_flowing(self, link: _Link) -> None:
        await self._flowing.wait()
        await link.flowing.wait()

    async def _requests(self, link: _Link, reader: asyncio.StreamReader) -> None:
        writer = link.upstream
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.read(65536):
                self._touch()
                await self._wait_flowing(link)
                out = self._filter_request(link, data)
                if out is None:
                    return
                if out:
                    writer.write(out)
                    await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()

    def _filter_request(self, link: _Link, data: bytes) -> bytes | None:
        """The bytes to forward now; None once the connection was cut."""
        fault = self._fault
        messages = link.parser.feed(data)
        self.round_trips += sum(
            1 for kind, _ in messages if kind is not None and kind in _BOUNDARIES
        )
        if fault is None or not fault.applies_to(link) or fault.fired.is_set():
            return data
        out = bytearray()
        start = 0
        for kind, end in messages:
            segment = data[start:end]
            start = end
            holding = fault.lose == "request" and fault.seen == fault.round_trip - 1
            (link.held if holding else out).extend(segment)
            if kind is None or kind not in _BOUNDARIES:
                continue
            fault.seen += 1
            if fault.seen < fault.round_trip:
                continue
            if fault.lose == "response":
                link.doomed = fault
            else:
                fault.fired.set()
                if fault.action == "drop":
                    link.abort()
                    return None
                link.flowing.clear()
            link.held.extend(data[start:])
            return bytes(out)
        holding = fault.lose == "request" and fault.seen == fault.round_trip - 1
        (link.held if holding else out).extend(data[start:])
        return bytes(out)

    async def _responses(self, link: _Link, reader: asyncio.StreamReader) -> None:
        writer = link.client
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.read(65536):
                self._touch()
                if link.doomed is not None:
                    fault, link.doomed = link.doomed, None
                    fault.fired.set()
                    if fault.action == "drop":
                        link.abort()
                        return
                    link.flowing.clear()
                await self._wait_flowing(link)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()

    def _touch(self) -> None:
        self._last_activity = asyncio.get_running_loop().time()

    async def quiet(self, period: float = 0.3, timeout: float = 15.0) -> None:
        """Return once nothing crossed the proxy for `period` seconds (background
        work of a freshly started server has settled)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while (idle := loop.time() - self._last_activity) < period:
                await asyncio.sleep(period - idle)

    def arm(self, fault: Fault) -> Fault:
        """Inject `fault` (replacing an armed one); round trips count from now."""
        self._fault = fault
        return fault

    def disarm(self) -> None:
        self._fault = None

    def drop(self, application_name: str | None = None) -> int:
        """Cut every open connection (of `application_name`); returns how many."""
        cut = [
            link
            for link in self._links
            if application_name is None or link.application_name == application_name
        ]
        for link in cut:
            link.abort()
            self._links.discard(link)
        return len(cut)

    def refuse(self) -> None:
        self._refusing = True
        self.drop()

    def stall(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        """Normal forwarding again; bytes held by a stall are delivered."""
        self._refusing = False
        self._fault = None
        for link in list(self._links):
            if link.held:
                with contextlib.suppress(OSError, RuntimeError):
                    link.upstream.write(bytes(link.held))
                link.held.clear()
            link.doomed = None
            link.flowing.set()
        self._flowing.set()

    def open_connections(self, application_name: str | None = None) -> int:
        return sum(
            1
            for link in self._links
            if application_name is None or link.application_name == application_name
        )

    async def close(self) -> None:
        self.heal()
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
