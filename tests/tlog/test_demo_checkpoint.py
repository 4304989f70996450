"""The demo server signs its seeded log before it says it serves: an auditor who
follows docs/AUDIT.md right after starting it finds a checkpoint, not NOT_FOUND
("no checkpoint yet") for the few hundred milliseconds until the integrator's
first round."""

from __future__ import annotations

import grpc
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.support.keys import write_log_key
from tests.support.pg import create_database, drop_database
from tests.support.server import ServerProcess, base_env, metadata

pytestmark = pytest.mark.slow


async def test_the_demo_log_is_checkpointed_when_the_server_serves(
    pg_admin_dsn: str, key_dir
) -> None:
    log_key = write_log_key(key_dir / "log-demo-checkpoint.key")
    dsn = await create_database(pg_admin_dsn, "kaireon_demo_checkpoint")
    server = ServerProcess(base_env(dsn, KAIREON_LOG_KEY=str(log_key)), ["--demo"]).start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            reply = await audit_pb2_grpc.AuditServiceStub(channel).GetCheckpoint(
                audit_pb2.GetCheckpointRequest(), metadata=metadata("demo", "admin"), timeout=10
            )
        assert reply.checkpoint.tree_size > 0
        assert reply.checkpoint.signed  # by the log key
    finally:
        server.stop()
        await drop_database(pg_admin_dsn, dsn)
