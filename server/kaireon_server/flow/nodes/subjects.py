"""Sinks that act on data subjects through the DSAR and erasure domain code.

`sink.dsar_export` queues one DSAR export request per distinct subject (the DSAR
workers produce the exports). It calls the DSAR use case CreateDsarRequest
uses (dsar/requests.py `create_in`), in the node's checkpoint transaction,
with an idempotency key derived from (run, node, subject): a retried node
finds its earlier requests instead of queueing new ones. One
`dsar_request_created` audit row per new request (with the flow run id).

`sink.erasure` erases each distinct subject with ErasureService's
`erase_customer` (its own transaction per subject, its audit row and signed
receipt). Erasing an erased subject again deletes nothing, so a retried node
is safe. It needs the ADMIN role, like EraseCustomer: starting or retrying a
run that contains it with a lower role answers PERMISSION_DENIED.

Outputs hold counts and request / audit ids, never the subjects themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaireon_server.dsar.model import validate_create
from kaireon_server.dsar.requests import create_in
from kaireon_server.erasure.eraser import EraseCommand, erase_customer
from kaireon_server.flow.nodes.base import (
    Config,
    ConfigError,
    NodeContext,
    NodeError,
    NodeSetup,
    NodeType,
    input_option,
    records_of,
)
from kaireon_server.platform.auth.identity import Role
from kaireon_server.platform.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KaireonError,
)


@dataclass(frozen=True)
class SubjectConfig:
    input: str
    subject_field: str
    dry_run: bool = False
    on_legal_hold: str = "fail"
    timeout_seconds: float = 30.0


def _subjects(inputs: Mapping[str, Any], config: SubjectConfig) -> list[str]:
    """Distinct subject ids in first-seen order; errors name the record, not the value."""
    seen: dict[str, None] = {}
    for index, record in enumerate(records_of(inputs, config.input)):
        value = record.get(config.subject_field)
        if not isinstance(value, str) or not value.strip():
            raise NodeError(f"record {index}: '{config.subject_field}' is not a non-empty string")
        seen.setdefault(value, None)
    return list(seen)


class DsarExportSink(NodeType[SubjectConfig]):
    """`sink.dsar_export`: {subject_field?: "customer_id", input?}."""

    name = "sink.dsar_export"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> SubjectConfig:
        cfg = Config(config, {"subject_field", "input"})
        return SubjectConfig(input_option(cfg, setup), cfg.text("subject_field", "customer_id"))

    async def run(self, ctx: NodeContext, config: SubjectConfig, inputs: Mapping[str, Any]) -> Any:
        subjects = _subjects(inputs, config)
        con = await ctx.transaction()
        created, existing, ids = 0, 0, []
        for index, subject in enumerate(subjects):
            key = hashlib.sha256(f"{ctx.run_id}\x00{ctx.node_id}\x00{subject}".encode()).hexdigest()
            try:
                cmd = validate_create("export", subject, False, f"flow-{key}")
            except InvalidArgument as exc:
                raise NodeError(f"subject {index}: {exc.message}") from None
            try:
                record, is_new = await create_in(
                    con, ctx.tenant_id, ctx.actor, cmd, audit_changes={"flowRunId": ctx.run_id}
                )
            except AlreadyExists as exc:  # the derived key was taken by another request
                raise NodeError(f"subject {index}: {exc.reason.lower()}") from None
            ids.append(str(record.id))
            if is_new:
                created += 1
            else:
                existing += 1
        return {"created": created, "existing": existing, "requestIds": ids}


class ErasureSink(NodeType[SubjectConfig]):
    """`sink.erasure`: {subject_field?: "customer_id", dry_run?: false,
    on_legal_hold?: "fail" | "skip", timeout_seconds?: 30, input?}."""

    name = "sink.erasure"
    min_role = Role.ADMIN

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> SubjectConfig:
        cfg = Config(
            config, {"subject_field", "dry_run", "on_legal_hold", "timeout_seconds", "input"}
        )
        timeout = cfg.number("timeout_seconds", 30.0)
        if not 0 < timeout <= 300:
            raise ConfigError("timeout_seconds", "must be > 0 and at most 300")
        return SubjectConfig(
            input_option(cfg, setup),
            cfg.text("subject_field", "customer_id"),
            dry_run=cfg.flag("dry_run", False),
            on_legal_hold=cfg.text("on_legal_hold", "fail", choices=("fail", "skip")),
            timeout_seconds=float(timeout),
        )

    async def run(self, ctx: NodeContext, config: SubjectConfig, inputs: Mapping[str, Any]) -> Any:
        db, signer = ctx.services.db, ctx.services.signer
        if db is None or signer is None:
            raise NodeError("sink.erasure needs the database and the signer")
        deleted, erased, held, audit_ids = 0, 0, 0, []
        for index, subject in enumerate(_subjects(inputs, config)):
            command = EraseCommand(
                ctx.tenant_id, ctx.actor, subject, config.dry_run, config.timeout_seconds
            )
            try:
                outcome = await erase_customer(db, signer, command)
            except FailedPrecondition as exc:
                if exc.reason == "LEGAL_HOLD" and config.on_legal_hold == "skip":
                    held += 1
                    continue
                raise NodeError(f"subject {index}: {exc.reason.lower()}") from None
            except KaireonError as exc:
                retryable = exc.code.value in ("UNAVAILABLE", "ABORTED", "DEADLINE_EXCEEDED")
                raise NodeError(
                    f"subject {index}: {exc.reason.lower()}", retryable=retryable
                ) from None
            erased += 1
            deleted += outcome.total_deleted
            audit_ids.append(outcome.audit_event_id)
        return {
            "erased": erased,
            "dryRun": config.dry_run,
            "deletedRows": deleted,
            "heldSkipped": held,
            "auditEventIds": audit_ids,
        }


SUBJECT_NODE_TYPES: list[NodeType[Any]] = [DsarExportSink(), ErasureSink()]
