"""The use cases of data-subject requests: create, read, list, and every
transition, each in one transaction with its audit row (appended last: it
takes the tenant's chain lock).

Approval executes the request through the existing use cases: an erasure
runs `erasure.eraser.erase_customer` and records the approval inside the
erasure's transaction; an access request queues its export with
`dsar.requests.create_in` in the approval's transaction and is completed by
the database when the export completes (migration 0150's trigger, in the
worker's transaction that writes `dsar_export_completed`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from kaireon_server.dsar.model import validate_create
from kaireon_server.dsar.requests import create_in
from kaireon_server.erasure.eraser import EraseCommand, erase_customer
from kaireon_server.erasure.model import ErasureOutcome, NotifiedRecipient
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import FailedPrecondition, InvalidArgument
from kaireon_server.platform.paging import decode_token, encode_token
from kaireon_server.platform.signing import Signer
from kaireon_server.requests import processors, repository
from kaireon_server.requests.deadlines import (
    DEFAULT_POLICIES,
    REGULATIONS,
    Policy,
    due_date,
    validate_policy,
    validate_regulation,
)
from kaireon_server.requests.model import (
    State,
    SubjectRequest,
    Verb,
    check_transition,
    not_found,
    parse_request_id,
    validate_kind,
    validate_state,
    validate_subject,
    validate_text,
)
from kaireon_server.requests.trail import audit

# A receipt time a little ahead of the server's clock is skew, not the future.
_CLOCK_SKEW = timedelta(minutes=5)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_OLDEST_RECEIPT = timedelta(days=3 * 366)


def today() -> date:
    """Due dates are UTC dates."""
    return datetime.now(UTC).date()


async def policy_for(con: asyncpg.Connection, tenant_id: str, regulation: str) -> Policy:
    """The tenant's override of the regulation's policy, or the default."""
    override = await repository.get_policy(con, tenant_id, regulation)
    if override is None:
        return DEFAULT_POLICIES[regulation]
    return replace(override, legal_reference=DEFAULT_POLICIES[regulation].legal_reference)


def _parse_receipt(value: datetime | None, now: datetime) -> datetime:
    if value is None:
        return now
    if value > now + _CLOCK_SKEW:
        raise InvalidArgument.field("receive_time", "must not be in the future")
    if value < now - _OLDEST_RECEIPT:
        raise InvalidArgument.field("receive_time", "must be within the last three years")
    return value


def _parse_due_before(value: str) -> date | None:
    if not value:
        return None
    try:
        # fromisoformat also reads 20261204 and 2026-W49-5: one spelling only.
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument.field("due_before", "must be a date YYYY-MM-DD") from None


@dataclass(frozen=True)
class Transition:
    """What a transition verb changes, computed from the locked row."""

    state: State
    changes: dict[str, Any]
    audit_changes: dict[str, Any]


class RequestLifecycle:
    """The use cases of one process."""

    def __init__(self, db: Database, signer: Signer, erasure_timeout: float) -> None:
        self._db = db
        self._signer = signer
        self._erasure_timeout = erasure_timeout

    # --- create, read, list -------------------------------------------------

    async def create(
        self,
        *,
        tenant_id: str,
        actor: str,
        kind: str,
        subject_id: str,
        regulation: str,
        received_at: datetime | None,
    ) -> SubjectRequest:
        kind = validate_kind(kind)
        subject = validate_subject(subject_id)
        regulation = validate_regulation(regulation)
        received = _parse_receipt(received_at, datetime.now(UTC))
        async with self._db.transaction(tenant_id) as con:
            policy = await policy_for(con, tenant_id, regulation)
            request = await repository.insert(
                con,
                tenant_id=tenant_id,
                kind=kind,
                subject_id=subject,
                regulation=regulation,
                state=State.RECEIVED,
                origin="lifecycle",
                received_at=received,
                due=due_date(received.astimezone(UTC).date(), policy),
                created_by=actor,
            )
            await audit(con, request, Verb.RECEIVED, actor, before=None)
        return request

    async def list_requests(
        self,
        *,
        tenant_id: str,
        state: str,
        due_before: str,
        overdue: bool,
        page_size: int,
        page_token: str,
    ) -> tuple[Sequence[SubjectRequest], str]:
        wanted = validate_state(state) if state else None
        before = _parse_due_before(due_before)
        if overdue:
            # Overdue: the due date (the last day to answer) is before today.
            before = min(before, today()) if before else today()
        position = decode_token(page_token)
        after: tuple[Any, uuid.UUID] | None = None
        if position:
            try:
                key = str(position["k"])
                parsed: Any = date.fromisoformat(key) if before else datetime.fromisoformat(key)
                after = (parsed, uuid.UUID(str(position["i"])))
            except (KeyError, ValueError):
                raise InvalidArgument.field("page_token", "malformed page token") from None
        sql, args = repository.list_query(
            tenant_id, state=wanted, due_before=before, after=after, limit=page_size + 1
        )
        async with self._db.transaction(tenant_id, readonly=True) as con:
            rows = await repository.list_requests(con, sql, args)
        page = rows[:page_size]
        token = ""
        if len(rows) > page_size:
            last = page[-1]
            key = last.due_date.isoformat() if before else last.received_at.isoformat()
            token = encode_token({"k": key, "i": str(last.id)})
        return page, token

    # --- transitions --------------------------------------------------------

    async def _transition(
        self,
        tenant_id: str,
        actor: str,
        request_id: str,
        verb: Verb,
        *,
        personal: Mapping[str, str],
        plan: Callable[[SubjectRequest, Policy], Transition],
    ) -> SubjectRequest:
        """Lock the row, check the verb is allowed from its state, apply what
        `plan(request, policy)` returns, and append the audit row."""
        rid = parse_request_id(request_id)
        async with self._db.transaction(tenant_id) as con:
            request = await repository.get(con, tenant_id, rid, lock=True)
            if request is None:
                raise not_found()
            check_transition(verb, request.state)
            policy = await policy_for(con, tenant_id, request.regulation)
            step = plan(request, policy)
            updated = await repository.update(
                con, tenant_id, rid, state=step.state.value, **step.changes
            )
            await audit(
                con,
                updated,
                verb,
                actor,
                before=request.state,
                changes=step.audit_changes,
                personal=personal,
            )
        return updated

    async def verify(
        self,
        *,
        tenant_id: str,
        actor: str,
        request_id: str,
        method: str,
        evidence_reference: str,
        result: str,
    ) -> SubjectRequest:
        method = validate_text(method, "method", required=True)
        reference = validate_text(evidence_reference, "evidence_reference", required=True)
        verbs = {
            "pending": (Verb.VERIFICATION_PENDING, State.IDENTITY_VERIFICATION),
            "verified": (Verb.VERIFIED, State.AWAITING_APPROVAL),
            "failed": (Verb.VERIFICATION_FAILED, State.DENIED),
        }
        if result not in verbs:
            raise InvalidArgument.field("result", "must be PENDING, VERIFIED or FAILED")
        verb, target = verbs[result]
        changes: dict[str, Any] = {
            "verification_method": method,
            "verification_reference": reference,
        }
        if verb is Verb.VERIFIED:
            changes["verified_at"] = datetime.now(UTC)
        return await self._transition(
            tenant_id,
            actor,
            request_id,
            verb,
            # The method is a category (in clear); the reference may point at a person.
            personal={"evidenceReference": reference},
            plan=lambda r, p: Transition(target, changes, {"method": method}),
        )

    async def deny(
        self, *, tenant_id: str, actor: str, request_id: str, reason: str
    ) -> SubjectRequest:
        reason = validate_text(reason, "reason", required=True)
        return await self._transition(
            tenant_id,
            actor,
            request_id,
            Verb.DENIED,
            personal={"reason": reason},
            plan=lambda r, p: Transition(State.DENIED, _unpause(r), {}),
        )

    async def cancel(
        self, *, tenant_id: str, actor: str, request_id: str, reason: str
    ) -> SubjectRequest:
        reason = validate_text(reason, "reason", required=True)
        return await self._transition(
            tenant_id,
            actor,
            request_id,
            Verb.CANCELLED,
            personal={"reason": reason},
            plan=lambda r, p: Transition(State.CANCELLED, _unpause(r), {}),
        )

    async def pause(
        self, *, tenant_id: str, actor: str, request_id: str, reason: str, requires_input: bool
    ) -> SubjectRequest:
        reason = validate_text(reason, "reason", required=True)
        target = State.REQUIRES_INPUT if requires_input else State.PAUSED

        def plan(r: SubjectRequest, p: Policy) -> Transition:
            return Transition(
                target, {"paused_at": datetime.now(UTC), "paused_from": r.state.value}, {}
            )

        return await self._transition(
            tenant_id, actor, request_id, Verb.PAUSED, personal={"reason": reason}, plan=plan
        )

    async def resume(
        self, *, tenant_id: str, actor: str, request_id: str, reason: str
    ) -> SubjectRequest:
        reason = validate_text(reason, "reason", required=False)

        def plan(r: SubjectRequest, p: Policy) -> Transition:
            assert r.paused_at is not None and r.paused_from is not None  # a STOPPED state
            changes = _unpause(r)
            return Transition(
                r.paused_from, changes, {"pausedDays": changes["paused_days"] - r.paused_days}
            )

        return await self._transition(
            tenant_id, actor, request_id, Verb.RESUMED, personal={"reason": reason}, plan=plan
        )

    async def extend(
        self,
        *,
        tenant_id: str,
        actor: str,
        request_id: str,
        reason: str,
        months: int,
        days: int,
    ) -> SubjectRequest:
        reason = validate_text(reason, "reason", required=True)
        if months < 0 or days < 0:
            raise InvalidArgument.field("months" if months < 0 else "days", "must not be negative")

        def plan(r: SubjectRequest, p: Policy) -> Transition:
            if p.months_based:
                if days:
                    raise InvalidArgument.field("days", f"{r.regulation} extends in months")
                left = p.max_extension_months - r.extension_months
                add = months or left
                total = {"extension_months": r.extension_months + add}
            else:
                if months:
                    raise InvalidArgument.field("months", f"{r.regulation} extends in days")
                left = p.max_extension_days - r.extension_days
                add = days or left
                total = {"extension_days": r.extension_days + add}
            if left <= 0 or add > left:
                raise FailedPrecondition(
                    f"the extension exceeds the {r.regulation} limit ({left} left)",
                    reason="EXTENSION_LIMIT",
                    metadata={"left": str(max(left, 0))},
                )
            due = due_date(
                r.received_at.astimezone(UTC).date(),
                p,
                extension_months=total.get("extension_months", r.extension_months),
                extension_days=total.get("extension_days", r.extension_days),
                paused_days=r.paused_days,
            )
            return Transition(r.state, {**total, "due_date": due}, {"added": add})

        return await self._transition(
            tenant_id, actor, request_id, Verb.EXTENDED, personal={"reason": reason}, plan=plan
        )

    # --- approval: execute the request ---------------------------------------

    async def approve(
        self, *, tenant_id: str, actor: str, request_id: str, reason: str
    ) -> SubjectRequest:
        reason = validate_text(reason, "reason", required=False)
        rid = parse_request_id(request_id)
        # Checked up front to fail fast; checked again under the row lock.
        async with self._db.transaction(tenant_id, readonly=True) as con:
            request = await repository.get(con, tenant_id, rid)
            if request is None:
                raise not_found()
            await _check_approvable(con, request)
        if request.kind == "access":
            return await self._approve_access(tenant_id, actor, rid, reason)
        return await self._approve_erasure(tenant_id, actor, request, reason)

    async def _approve_access(
        self, tenant_id: str, actor: str, rid: uuid.UUID, reason: str
    ) -> SubjectRequest:
        async with self._db.transaction(tenant_id) as con:
            request = await _locked_approvable(con, tenant_id, rid)
            command = validate_create("export", request.subject_id, False, "")
            dsar, _ = await create_in(
                con, tenant_id, actor, command, audit_changes={"subjectRequestId": str(rid)}
            )
            updated = await repository.update(
                con,
                tenant_id,
                rid,
                state=State.IN_PROGRESS.value,
                dsar_request_id=dsar.id,
            )
            await audit(
                con,
                updated,
                Verb.APPROVED,
                actor,
                before=request.state,
                changes={"dsarRequestId": str(dsar.id)},
                personal={"reason": reason},
            )
        return updated

    async def _approve_erasure(
        self, tenant_id: str, actor: str, request: SubjectRequest, reason: str
    ) -> SubjectRequest:
        done: list[SubjectRequest] = []

        async def record(
            con: asyncpg.Connection, outcome: ErasureOutcome
        ) -> Sequence[NotifiedRecipient]:
            locked = await _locked_approvable(con, tenant_id, request.id)
            # The processors' events first: with any, the request is in_progress
            # (propagating) until they settle; without, completed now. The
            # approval's row then records the state it really left.
            queued = await processors.erasure_completed_in(
                con,
                tenant_id=tenant_id,
                subject_id=request.subject_id,
                request_id=str(request.id),
                audit_id=outcome.audit_event_id,
            )
            if queued:  # erasure_completed_in moved it to in_progress
                propagating = await repository.get(con, tenant_id, request.id)
                assert propagating is not None
                updated = propagating
            else:
                updated = await repository.update(
                    con, tenant_id, request.id, state=State.COMPLETED.value
                )
            # The erasure redacted every earlier row about the subject: this
            # one names none (the gdpr_erasure row is the proof, in clear).
            await audit(
                con,
                updated,
                Verb.APPROVED,
                actor,
                before=locked.state,
                changes={"erasureAuditId": outcome.audit_event_id},
                # Kept without a subject id: a later erasure cannot redact it,
                # so the reason should be a case note (docs/REQUESTS.md).
                personal={"reason": reason},
                about_subject=False,
            )
            done.append(updated)
            return queued

        command = EraseCommand(
            tenant_id=tenant_id,
            actor=actor,
            customer_id=request.subject_id,
            dry_run=False,
            timeout=self._erasure_timeout,
        )
        await erase_customer(self._db, self._signer, command, within=record)
        return done[0]

    # --- policies ------------------------------------------------------------

    async def set_policy(self, *, tenant_id: str, actor: str, policy: Policy) -> Policy:
        checked = validate_policy(policy)
        async with self._db.transaction(tenant_id) as con:
            await repository.upsert_policy(con, tenant_id, checked, actor)
            await append_audit(
                con,
                tenant_id,
                action="subject_request_policy_set",
                entity_type="subject_request_policy",
                entity_id=checked.regulation,
                actor=actor,
                changes={
                    "periodMonths": checked.period_months,
                    "periodDays": checked.period_days,
                    "maxExtensionMonths": checked.max_extension_months,
                    "maxExtensionDays": checked.max_extension_days,
                    "requireVerification": checked.require_verification,
                },
            )
        return checked

    async def list_policies(self, *, tenant_id: str) -> list[Policy]:
        async with self._db.transaction(tenant_id, readonly=True) as con:
            return [await policy_for(con, tenant_id, r) for r in REGULATIONS]


def _unpause(r: SubjectRequest) -> dict[str, Any]:
    """Leaving a stopped state: the stopped calendar days move the due date."""
    if r.paused_at is None:
        return {}
    stopped = max(0, (today() - r.paused_at.astimezone(UTC).date()).days)
    return {
        "paused_at": None,
        "paused_from": None,
        "paused_days": r.paused_days + stopped,
        "due_date": r.due_date + timedelta(days=stopped),
    }


async def _check_approvable(con: asyncpg.Connection, request: SubjectRequest) -> None:
    check_transition(Verb.APPROVED, request.state)
    policy = await policy_for(con, request.tenant_id, request.regulation)
    if policy.require_verification and request.state is not State.AWAITING_APPROVAL:
        raise FailedPrecondition(
            f"the {request.regulation} policy requires a verified identity before execution",
            reason="VERIFICATION_REQUIRED",
            metadata={"state": request.state.value},
        )


async def _locked_approvable(
    con: asyncpg.Connection, tenant_id: str, rid: uuid.UUID
) -> SubjectRequest:
    request = await repository.get(con, tenant_id, rid, lock=True)
    if request is None:
        raise not_found()
    await _check_approvable(con, request)
    return request
