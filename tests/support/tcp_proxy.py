"""A TCP proxy for fault injection between the server and PostgreSQL.

It listens on 127.0.0.1 and forwards to a TCP address or a unix socket (the
embedded PostgreSQL listens on one). Faults:
- `drop()`: close every open connection now (a network cut / a database crash);
- `refuse()`: close new connections as soon as they arrive (database down);
- `stall()`: keep connections but forward nothing (a hung network);
- `heal()`: back to normal forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    target_host: str | None = None
    target_port: int | None = None
    target_unix: str | None = None
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _refusing: bool = False
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    connections_seen: int = 0

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
        self._writers.update({writer, up_writer})
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()

    def drop(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def refuse(self) -> None:
        self._refusing = True
        self.drop()

    def stall(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._refusing = False
        self._flowing.set()

    async def close(self) -> None:
        self.heal()
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
