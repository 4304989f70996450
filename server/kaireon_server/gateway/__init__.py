"""REST adapter: HTTP/JSON routes transcoded to gRPC from google.api.http options.

Embed it in a process that serves gRPC::

    gateway = GatewayServer("127.0.0.1:50051", DEFAULT_SERVICES, GatewaySettings.from_env())
    port = await gateway.start("0.0.0.0", 8080)
    ...
    await gateway.stop()
"""

from kaireon_server.gateway.openapi import build_openapi
from kaireon_server.gateway.routes import DEFAULT_SERVICES, Route, RouteTable, build_routes
from kaireon_server.gateway.server import GatewayServer
from kaireon_server.gateway.settings import GatewaySettings

__all__ = [
    "DEFAULT_SERVICES",
    "GatewayServer",
    "GatewaySettings",
    "Route",
    "RouteTable",
    "build_openapi",
    "build_routes",
]
