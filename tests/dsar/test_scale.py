"""A subject with 1,000,000 interaction rows: bounded server memory, bounded messages.

Speed is measured by perf/run (group single: COPY, export, download), not here; this test checks the memory
and message-size bounds of the real server process.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon_server.platform.db import Database
from tests.dsar.conftest import add_interactions, create, wait_done
from tests.support.server import ServerProcess, metadata

pytestmark = pytest.mark.slow

ROWS = 1_000_000
CHUNK = 1024 * 1024
MB = 1024 * 1024


def _memory(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak since start) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.mark.timeout(900)
async def test_a_million_row_subject_exports_and_downloads_in_bounded_memory(
    stub, tenant, db: Database, server_env, no_session_workers
):
    await add_interactions(db, tenant, "big-subject", ROWS)
    server = ServerProcess({**server_env, "KAIREON_DSAR_CHUNK_BYTES": str(CHUNK)})
    await asyncio.to_thread(server.start)
    assert server.proc is not None
    pid = server.proc.pid
    # A client that refuses any message larger than one chunk plus framing.
    channel = grpc.aio.insecure_channel(
        server.target, options=[("grpc.max_receive_message_length", CHUNK + 64 * 1024)]
    )
    try:
        big = dsar_pb2_grpc.DsarServiceStub(channel)
        await asyncio.sleep(1)
        baseline = _memory(pid, "VmRSS")
        request = await create(big, tenant, "big-subject")
        done = await wait_done(big, tenant, request.id, timeout=600)
        assert done.status == "completed", done.error
        assert done.export_size_bytes > 150 * MB

        # Too large to attach: Get and List link to the download instead.
        md = metadata(tenant, "operator")
        got = await big.GetDsarRequest(dsar_pb2.GetDsarRequestRequest(id=done.id), metadata=md)
        assert not got.request.HasField("exported_data") and got.request.export_url
        listed = await big.ListDsarRequests(dsar_pb2.ListDsarRequestsRequest(), metadata=md)
        assert not listed.requests[0].HasField("exported_data")

        digest, size, largest, tail = hashlib.sha256(), 0, 0, b""
        async for item in big.StreamDsarExport(
            dsar_pb2.StreamDsarExportRequest(id=done.id), metadata=md, timeout=600
        ):
            data = item.chunk.data
            assert item.offset == size
            digest.update(data)
            size += len(data)
            largest = max(largest, len(data))
            tail = (tail + data)[-64:]
        peak = _memory(pid, "VmHWM")
    finally:
        await channel.close()
        server.stop()
    assert size == done.export_size_bytes and largest <= CHUNK
    assert digest.hexdigest() == done.export_digest_sha256
    assert tail.endswith(f'"requestId":"{done.id}"}}'.encode())
    growth = peak - baseline
    print(
        f"server RSS {baseline / MB:.0f} MB, peak {peak / MB:.0f} MB, growth {growth / MB:.0f} MB"
    )
    assert growth < 200 * MB
