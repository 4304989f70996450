"""Tracing fixtures: an in-memory span exporter and a server started with tracing on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kaireon_server.app import App
from kaireon_server.platform.config import Settings
from kaireon_server.platform.observability import tracing


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider, set_global=False)
    try:
        yield memory
    finally:
        tracing.uninstall()


@pytest.fixture
async def traced_app(
    server_env: dict[str, str], exporter: InMemorySpanExporter
) -> AsyncIterator[App]:
    """A server started with tracing on (the interceptor is installed at start)."""
    application = App(Settings.from_env(server_env))
    await application.start()
    try:
        yield application
    finally:
        await application.stop(grace=1)
