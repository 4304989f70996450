"""kaireon-healthcheck against a real gRPC health service on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kaireon_server.healthcheck import check

from ._support import BIN, run

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None)


def _probe(port: int | str) -> tuple[int, str]:
    env = dict(os.environ) | {"KAIREON_GRPC_PORT": str(port)}
    result = run([BIN / "kaireon-healthcheck"], env=env)
    return result.returncode, result.stdout.strip()


def test_exit_0_only_when_serving(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", SERVING)
    assert check(port) == "SERVING"
    assert _probe(port) == (0, "healthy: SERVING")
    servicer.set("", NOT_SERVING)
    assert _probe(port) == (1, "unhealthy: NOT_SERVING")


def test_graceful_shutdown_and_unknown_status_are_unhealthy(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
    assert _probe(port) == (1, "unhealthy: SERVICE_UNKNOWN")
    servicer.set("", SERVING)
    servicer.enter_graceful_shutdown()  # what a draining server reports
    assert _probe(port) == (1, "unhealthy: NOT_SERVING")


def test_nothing_listening_is_unhealthy(health_server: tuple[int, health.HealthServicer]) -> None:
    port, _ = health_server
    # The fixture's port is ours; a stopped server's port refuses connections.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    closed = server.add_insecure_port("127.0.0.1:0")
    server.start()
    server.stop(grace=None).wait()
    assert closed != port
    assert check(closed, timeout=1.0) == "UNAVAILABLE"
    assert _probe(closed) == (1, "unhealthy: UNAVAILABLE")


def test_a_bad_port_setting_is_unhealthy() -> None:
    code, out = _probe("not-a-port")
    assert code == 1
    assert "KAIREON_GRPC_PORT" in out
