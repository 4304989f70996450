"""GetNodeOutput: a node's output, read back from its checkpoint.

The output is returned as canonical JSON (RFC 8785), the form its
`output_digest` is taken over. The size contract: outputs up to `max_bytes`
(default 1 MiB, at most 8 MiB: well under the 16 MiB gRPC message limit) are
returned whole; a larger one is not cut (a prefix of JSON is not JSON) but
reported as truncated, with its size and digest, and no text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kaireon_server.flow import repository
from kaireon_server.platform.canonical import canonical_json, sha256_hex
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import FailedPrecondition, InvalidArgument, NotFound

DEFAULT_MAX_BYTES = 1024 * 1024
LIMIT_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class NodeOutput:
    run_id: str
    node_id: str
    node_type: str
    digest: str
    size_bytes: int
    # None when the output is larger than the caller's max_bytes.
    canonical: bytes | None
    checkpoint_time: datetime

    @property
    def truncated(self) -> bool:
        return self.canonical is None


def output_limit(max_bytes: int) -> int:
    """The caller's max_bytes (0 = the default), refused outside 1..LIMIT_MAX_BYTES."""
    if max_bytes == 0:
        return DEFAULT_MAX_BYTES
    if not 0 < max_bytes <= LIMIT_MAX_BYTES:
        raise InvalidArgument.field("max_bytes", f"must be between 1 and {LIMIT_MAX_BYTES}")
    return max_bytes


async def read_node_output(
    db: Database, tenant_id: str, run_id: str, node_id: str, *, max_bytes: int
) -> NodeOutput:
    limit = output_limit(max_bytes)
    async with db.transaction(tenant_id, readonly=True) as con:
        run = await repository.get_run(con, tenant_id, run_id)
        if run is None:  # also another tenant's run: it does not exist for this caller
            raise NotFound(f"run '{run_id}' not found", reason="RUN_NOT_FOUND")
        node = next((n for n in run.nodes if n.node_id == node_id), None)
        if node is None:
            raise NotFound(f"run '{run_id}' has no node '{node_id}'", reason="NODE_NOT_FOUND")
        row = await repository.checkpoint_output(con, tenant_id, run_id, node_id)
    if row is None:
        raise FailedPrecondition(
            f"node '{node_id}' has no stored output (state {node.state.value}): outputs exist "
            "once a node has completed, until its run's checkpoints are cleared or expire",
            reason="NO_NODE_OUTPUT",
        )
    data = canonical_json(row["output"])
    return NodeOutput(
        run_id=run_id,
        node_id=node_id,
        node_type=node.node_type,
        digest=sha256_hex(data),
        size_bytes=len(data),
        canonical=data if len(data) <= limit else None,
        checkpoint_time=row["created_at"],
    )
