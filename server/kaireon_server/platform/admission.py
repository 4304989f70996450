"""Admission: who may start a call now, and who is refused at once.

Three budgets, none of which can starve another:

- **Public calls** (grpc.health.v1 Watch, reflection: the streaming methods with
  no `min_role`) have their own small limits, per process and per peer address.
  They never count against the authenticated budget, so a thousand anonymous
  Health/Watch streams cannot lock callers out (or flip /healthz). Public unary
  calls (health Check: the Kubernetes probes) answer at once and take no slot.
- **Authenticated calls**: at most `KAIREON_GRPC_MAX_CONCURRENT_RPCS` in flight
  per process, and one tenant at most `max(1, floor(share * limit))` of them
  (`KAIREON_TENANT_MAX_INFLIGHT_SHARE`), so one tenant cannot take every slot.
- **Pool waiters**: a request whose database acquire would have to queue behind
  `KAIREON_DB_POOL_MAX_WAITERS` others is refused at once (platform/db) instead
  of waiting out `KAIREON_DB_ACQUIRE_TIMEOUT`.

A refusal is RESOURCE_EXHAUSTED with a google.rpc.RetryInfo detail (REST: 429
and `Retry-After`). The interceptor runs after the identity interceptor, so an
authenticated call is counted under its verified tenant; a call with bad
credentials is refused before it reaches this module and costs no slot.
"""

from __future__ import annotations

import collections
import inspect
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
from google.rpc import status_pb2

from kaireon_server.platform.auth.identity import current_identity
from kaireon_server.platform.db.database import fail_fast_scope
from kaireon_server.platform.env import EnvReader
from kaireon_server.platform.errors import ResourceExhausted
from kaireon_server.platform.observability import metrics
from kaireon_server.platform.rpc.status import abort_with, status_for

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


# The most seconds a gRPC connection-management option holds (int32 milliseconds).
MAX_OPTION_SECONDS = (2**31 - 1) // 1000


def retry_after_from_env(env: Mapping[str, str]) -> float:
    """KAIREON_RETRY_AFTER_SECONDS, the one retry hint of admission and flow refusals."""
    return EnvReader(env).number("KAIREON_RETRY_AFTER_SECONDS", 1.0, exclusive_minimum=0)


@dataclass(frozen=True)
class AdmissionSettings:
    """Read from Settings.env; every name is in the README configuration table."""

    # Authenticated calls in flight per process (0 = no limit) and a tenant's share.
    max_inflight: int = 1000
    tenant_share: float = 0.5
    # Public (unauthenticated) calls in flight per process and per peer address.
    public_max_inflight: int = 64
    public_max_inflight_per_peer: int = 8
    # The RetryInfo / Retry-After hint of every admission refusal.
    retry_after_seconds: float = 1.0
    # gRPC connection management (seconds; 0 = off).
    keepalive_time: float = 60.0
    keepalive_timeout: float = 20.0
    max_connection_idle: float = 300.0
    max_connection_age: float = 0.0
    max_connection_age_grace: float = 30.0
    handshake_timeout: float = 20.0

    @property
    def tenant_max_inflight(self) -> int:
        """The most calls one tenant may have in flight: max(1, floor(share * limit))."""
        if not self.max_inflight:
            return 0
        return max(1, math.floor(self.tenant_share * self.max_inflight))

    @classmethod
    def from_env(cls, env: Mapping[str, str], max_inflight: int = 1000) -> AdmissionSettings:
        read = EnvReader(env)

        def seconds(name: str, default: float) -> float:
            # grpc-core takes these as int32 milliseconds: a larger value was an
            # OverflowError traceback at start-up instead of an error naming it.
            return read.number(name, default, minimum=0, maximum=MAX_OPTION_SECONDS)

        return cls(
            max_inflight=max_inflight,
            tenant_share=read.number(
                "KAIREON_TENANT_MAX_INFLIGHT_SHARE", 0.5, minimum=0, maximum=1.0
            ),
            public_max_inflight=read.integer("KAIREON_PUBLIC_MAX_INFLIGHT", 64, minimum=1),
            public_max_inflight_per_peer=read.integer(
                "KAIREON_PUBLIC_MAX_INFLIGHT_PER_PEER", 8, minimum=1
            ),
            retry_after_seconds=retry_after_from_env(env),
            keepalive_time=seconds("KAIREON_GRPC_KEEPALIVE_TIME_SECONDS", 60.0),
            keepalive_timeout=seconds("KAIREON_GRPC_KEEPALIVE_TIMEOUT_SECONDS", 20.0),
            max_connection_idle=seconds("KAIREON_GRPC_MAX_CONNECTION_IDLE_SECONDS", 300.0),
            max_connection_age=seconds("KAIREON_GRPC_MAX_CONNECTION_AGE_SECONDS", 0.0),
            max_connection_age_grace=seconds("KAIREON_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 30.0),
            handshake_timeout=seconds("KAIREON_GRPC_HANDSHAKE_TIMEOUT_SECONDS", 20.0),
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """grpc.aio server options that cut idle, old and half-open connections."""

        def ms(seconds: float) -> int:
            return max(1, round(seconds * 1000))

        options = [
            ("grpc.keepalive_time_ms", ms(self.keepalive_time)),
            ("grpc.keepalive_timeout_ms", ms(self.keepalive_timeout)),
            # A client that never finishes the HTTP/2 (or TLS) handshake.
            ("grpc.server_handshake_timeout_ms", ms(self.handshake_timeout)),
        ]
        if self.max_connection_idle:
            options.append(("grpc.max_connection_idle_ms", ms(self.max_connection_idle)))
        if self.max_connection_age:
            options.append(("grpc.max_connection_age_ms", ms(self.max_connection_age)))
            options.append(("grpc.max_connection_age_grace_ms", ms(self.max_connection_age_grace)))
        return options


_PEER = re.compile(r"(?:ipv4:(?P<v4>[0-9.]+):\d+|ipv6:\[(?P<v6>[0-9A-Fa-f:.%a-z]+)\]:\d+)\Z")


def peer_address(peer: str) -> str:
    """The IP address of a gRPC peer string ("ipv4:1.2.3.4:5678", "ipv6:[::1]:5678");
    anything else (unix sockets) is one bucket of its own kind."""
    match = _PEER.fullmatch(unquote(peer or ""))  # "ipv6:%5B::1%5D:5" as grpc-core writes it
    if match is None:
        return (peer or "unknown").split(":", 1)[0]
    return match.group("v4") or match.group("v6")


class _Counter:
    """In-flight counts per key, with a bound on the total and on each key."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self.inflight = 0
        self.by_key: collections.Counter[str] = collections.Counter()

    def try_take(self, key: str) -> str | None:
        """None when taken, else which bound refused it ("total" or "key")."""
        if self.total and self.inflight >= self.total:
            return "total"
        if self.per_key and self.by_key[key] >= self.per_key:
            return "key"
        self.inflight += 1
        self.by_key[key] += 1
        return None

    def give_back(self, key: str) -> None:
        self.inflight -= 1
        self.by_key[key] -= 1
        if self.by_key[key] <= 0:
            del self.by_key[key]


class Admission:
    """The process's budgets; `AdmissionInterceptor` applies them to every call."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.calls = _Counter(settings.max_inflight, settings.tenant_max_inflight)
        self.public = _Counter(settings.public_max_inflight, settings.public_max_inflight_per_peer)

    @contextmanager
    def call_slot(self, tenant_id: str) -> Any:
        refused = self.calls.try_take(tenant_id)
        if refused == "total":
            metrics.ADMISSION_REFUSED.labels("RPCS_EXHAUSTED").inc()
            raise ResourceExhausted(
                "this server has its maximum number of calls in flight; retry later",
                reason="RPCS_EXHAUSTED",
                retry_after=self.settings.retry_after_seconds,
            )
        if refused == "key":
            metrics.ADMISSION_REFUSED.labels("TENANT_RPCS_EXHAUSTED").inc()
            raise ResourceExhausted(
                "this tenant has its share of the server's calls in flight; retry later",
                reason="TENANT_RPCS_EXHAUSTED",
                retry_after=self.settings.retry_after_seconds,
            )
        try:
            yield
        finally:
            self.calls.give_back(tenant_id)

    def refuse_public(self, peer: str) -> status_pb2.Status | None:
        """Takes a public slot for `peer` (None) or says why not."""
        refused = self.public.try_take(peer)
        if refused is None:
            return None
        reason = "PUBLIC_RPCS_EXHAUSTED" if refused == "total" else "PEER_RPCS_EXHAUSTED"
        metrics.ADMISSION_REFUSED.labels(reason).inc()
        return status_for(
            ResourceExhausted(
                "too many unauthenticated calls in flight; retry later",
                reason=reason,
                retry_after=self.settings.retry_after_seconds,
            )
        )


class AdmissionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Placed after KaireonInterceptor in the server's list: that one authenticates
    and then calls the handler this one wrapped, so `current_identity()` is set
    here for every method with a role; methods without one are public."""

    def __init__(self, admission: Admission, authenticated: Collection[str]) -> None:
        self._admission = admission
        self._authenticated = frozenset(authenticated)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None
        public = str(handler_call_details.method) not in self._authenticated
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
        )
        for attribute, make, streams in kinds:
            inner = getattr(handler, attribute)
            if inner is None:
                continue
            # Servicers stream by async generator or by context.write() in a coroutine.
            generator = streams and inspect.isasyncgenfunction(inner)
            if public and attribute == "unary_unary":
                # A public unary call (health Check) answers from memory at once
                # and holds nothing: it takes no slot, so anonymous streams that
                # fill the public budget cannot fail the kubelet's gRPC liveness
                # and readiness probes (and have every replica restarted).
                return handler
            if public:
                wrapped = self._public_stream(inner) if generator else self._public_unary(inner)
            else:
                wrapped = self._stream(inner) if generator else self._unary(inner)
            return make(
                wrapped,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _refuse_public(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        peer = peer_address(context.peer())
        status = self._admission.refuse_public(peer)
        if status is not None:
            await abort_with(context, status)
        return peer

    def _public_unary(self, inner: Behavior) -> Behavior:
        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            peer = await self._refuse_public(context)
            try:
                return await inner(request, context)
            finally:
                self._admission.public.give_back(peer)

        return behavior

    def _public_stream(self, inner: Behavior) -> Behavior:
        async def behavior(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            peer = await self._refuse_public(context)
            try:
                async for item in inner(request, context):
                    yield item
            finally:
                self._admission.public.give_back(peer)

        return behavior

    def _unary(self, inner: Behavior) -> Behavior:
        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with self._admission.call_slot(current_identity().tenant_id), fail_fast_scope():
                return await inner(request, context)

        return behavior

    def _stream(self, inner: Behavior) -> Behavior:
        async def behavior(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            # No fail-fast here: a watch or an export in progress waits for the pool.
            with self._admission.call_slot(current_identity().tenant_id):
                async for item in inner(request, context):
                    yield item

        return behavior
