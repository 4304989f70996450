"""The tlog-tiles read API (c2sp.org/tlog-tiles) of each tenant's log (docs/AUDIT.md).

Resources are served at the tree size of the latest checkpoint, from what the
integrator stored: a level-L tile's hashes are the stored subtree hashes of
height 8L (level 0: the leaf hashes), an entry bundle holds the leaves of the
rows (rebuilt from the rows, as proofs' leaves are: a row edited in the database
no longer matches its leaf hash, which a client mirroring the log sees).
"""

from __future__ import annotations

from dataclasses import dataclass

from kaireon_client.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, format_entry_bundle, parse_tile_path
from kaireon_server.audit import tlog
from kaireon_server.audit import tlog_repository as repo
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import DataLoss, FailedPrecondition, NotFound

CHECKPOINT_PATH = "checkpoint"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
MAX_PATH_LENGTH = 200


@dataclass(frozen=True)
class LogResource:
    content_type: str
    data: bytes


def _missing(path: str) -> NotFound:
    return NotFound(f"no log resource {path!r} at the latest checkpoint", reason="NO_SUCH_RESOURCE")


async def log_resource(
    db: Database, settings: tlog.TlogSettings, *, tenant_id: str, path: str
) -> LogResource:
    if path == CHECKPOINT_PATH:
        view = await tlog.get_checkpoint(db, settings, tenant_id=tenant_id)
        return LogResource(TEXT, view.note.encode())
    try:
        if len(path) > MAX_PATH_LENGTH:
            raise ValueError(path)
        ref = parse_tile_path(path)
    except ValueError:
        raise _missing(path[:MAX_PATH_LENGTH]) from None
    first = ref.index * TILE_WIDTH
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        latest = await repo.latest_checkpoint(con, tenant_id)
        size = 0 if latest is None else int(latest["size"])
        if ref.level < 0:
            if first + ref.width > size:
                raise _missing(path)
            rows = await repo.rows_from(con, tenant_id, first, ref.width)
            if [int(r["seq"]) for r in rows] != list(range(first + 1, first + ref.width + 1)):
                raise DataLoss(f"audit rows of {path} are missing", reason="SEQUENCE_GAP")
            try:
                return LogResource(
                    BINARY, format_entry_bundle([tlog.leaf_of(r).canonical() for r in rows])
                )
            except ValueError as exc:
                raise FailedPrecondition(str(exc), reason="ENTRY_TOO_LARGE") from None
        height = TILE_HEIGHT * ref.level
        if first + ref.width > size >> height:
            raise _missing(path)
        keys = [(height, first + i) for i in range(ref.width)]
        nodes = await repo.fetch_nodes(con, tenant_id, keys)
    if len(nodes) != len(keys):
        raise DataLoss(f"the stored tree lacks hashes of {path}", reason="TREE_INCOMPLETE")
    return LogResource(BINARY, b"".join(nodes[k] for k in keys))
