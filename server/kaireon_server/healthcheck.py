"""Container health probe: ``kaireon-healthcheck`` (the Dockerfile's HEALTHCHECK).

Asks the gRPC health service on 127.0.0.1:$KAIREON_GRPC_PORT (default 50051)
for the overall status (empty service name) and exits 0 only on SERVING, 1
otherwise. A probe, not a client: it must not hang, so the call has a 3 s
deadline, and it prints one line for ``docker inspect`` to show.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon_server.platform.env import ConfigurationError, EnvReader, process_environment

DEFAULT_PORT = 50051
DEADLINE_SECONDS = 3.0


def check(port: int, *, timeout: float = DEADLINE_SECONDS) -> str:
    """The status name reported for the server as a whole, or the RPC error code name."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            # The raised error is also a grpc.Call; the stubs cannot express that.
            code = getattr(exc, "code", None)
            return str(code().name) if callable(code) else "UNAVAILABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main() -> None:
    try:
        port = EnvReader(process_environment()).port("KAIREON_GRPC_PORT", DEFAULT_PORT)
    except ConfigurationError as exc:
        print(f"unhealthy: {exc}")
        sys.exit(1)
    status = check(port)
    print(f"{'healthy' if status == 'SERVING' else 'unhealthy'}: {status}")
    sys.exit(0 if status == "SERVING" else 1)


if __name__ == "__main__":
    main()
