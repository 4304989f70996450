"""Domain records <-> protobuf messages."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from kaireon.dsar.v1 import dsar_pb2
from kaireon_server.dsar.model import COMPLETED, DsarRecord

EXPORT_ROUTE = "/api/v1/dsar/{id}/export"


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def export_url(record: DsarRecord) -> str:
    return EXPORT_ROUTE.format(id=record.id)


def request_message(
    record: DsarRecord, *, exported: dsar_pb2.DsarExport | None = None
) -> dsar_pb2.DsarRequest:
    message = dsar_pb2.DsarRequest(
        id=str(record.id),
        request_type=record.request_type,
        subject_id=record.subject_id,
        status=record.status,
        encrypt=record.encrypt,
        progress=record.progress,
        error=record.error or "",
        version=record.version,
        idempotency_key=record.idempotency_key or "",
        attempts=record.attempts,
    )
    message.create_time.CopyFrom(_timestamp(record.created_at))
    message.update_time.CopyFrom(_timestamp(record.updated_at))
    if record.status == COMPLETED:
        if record.completed_at is not None:
            message.complete_time.CopyFrom(_timestamp(record.completed_at))
        message.export_digest_sha256 = record.export_digest or ""
        message.export_signature = record.export_signature or ""
        message.export_size_bytes = record.export_size or 0
        message.export_key_version = record.export_key_version or ""
        message.export_signing_key_id = record.export_signing_key_id or ""
        message.export_available = record.export_available
        if record.export_available:
            message.export_url = export_url(record)
    if exported is not None:
        message.exported_data.CopyFrom(exported)
    return message


def export_message(document: bytes) -> dsar_pb2.DsarExport:
    """The typed form of a stored export document (plain or envelope)."""
    value: dict[str, Any] = json.loads(document)
    message = dsar_pb2.DsarExport(
        customer_id=value.get("customerId", ""),
        exported_at=value.get("exportedAt", ""),
        encrypted=bool(value.get("encrypted", False)),
        request_id=value.get("requestId", ""),
    )
    message.data.update(value.get("data", {}))
    for key, count in value.get("counts", {}).items():
        message.counts[key] = int(count)
    return message
