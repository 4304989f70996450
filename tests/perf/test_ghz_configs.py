"""The ghz configurations in perf/ghz/ are valid ghz input and valid calls.

ghz itself cannot be installed on this machine (a Go binary: the Go module
proxy is unreachable and npm's `ghz` is an empty placeholder), so each file is
checked the way ghz reads it — its option names and durations (ghz's
runner.Config), its call name, its `data` rendered like ghz's templates and
decoded into the method's request type with unknown fields refused — and the
rendered call is then replayed with the real grpcurl against a live server,
with the file's metadata: a config that ghz would send must be answered OK.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, symbol_database

from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.db import Database
from tests.support.grpcurl import grpcurl as _grpcurl
from tests.support.keys import free_port
from tests.support.server import ROOT

GHZ_DIR = ROOT / "perf" / "ghz"
CONFIGS = sorted(GHZ_DIR.glob("*.json"))

# Option names of ghz's JSON config (runner.Config / cmd/ghz), as documented.
GHZ_OPTIONS = {
    "proto", "protoset", "call", "import-paths", "cacert", "cert", "key", "cname",
    "skipTLS", "skip-verify", "insecure", "authority", "async", "rps", "load-schedule",
    "load-start", "load-end", "load-step", "load-step-duration", "load-max-duration",
    "concurrency", "concurrency-schedule", "concurrency-start", "concurrency-end",
    "concurrency-step", "concurrency-step-duration", "concurrency-max-duration", "total",
    "connections", "duration", "duration-stop", "max-duration", "timeout", "connect-timeout",
    "keepalive", "data", "data-file", "binary-file", "metadata", "metadata-file",
    "reflect-metadata", "stream-interval", "output", "format", "cpus", "name", "tags",
    "debug", "host", "enable-compression", "count-errors", "skipFirst", "lb-strategy",
}  # fmt: skip
DURATION_OPTIONS = {k for k in GHZ_OPTIONS if "duration" in k or k in {"timeout", "keepalive"}}
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
# The template forms the configs use: printf of randomInt's lower bound or of
# the request number (0 for the first request), exactly as ghz renders them.
TEMPLATE = re.compile(r'\{\{printf "%0(\d+)d" (?:\(randomInt (\d+) \d+\)|\.RequestNumber)\}\}')


def _config(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


# The configs of Kaireon's own calls (the others name perf/k6/proto/echo.proto).
KAIREON_CONFIGS = [p for p in CONFIGS if "proto" not in _config(p)]


def _render(value: Any) -> Any:
    if isinstance(value, str):
        rendered = TEMPLATE.sub(lambda m: f"{int(m.group(2) or 0):0{int(m.group(1))}d}", value)
        assert "{{" not in rendered, f"template form not covered by this test: {value!r}"
        return rendered
    if isinstance(value, list):
        return [_render(v) for v in value]
    if isinstance(value, dict):
        return {k: _render(v) for k, v in value.items()}
    return value


def _method(call: str) -> tuple[str, str]:
    service, _, method = call.replace("/", ".").rpartition(".")
    return service, method


def test_every_config_is_covered() -> None:
    assert {p.stem for p in CONFIGS} == {
        "dsar_create",
        "echo",
        "erasure",
        "flow_start",
        "lookup",
        "provenance",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_options_are_ghz_options(path: Path) -> None:
    config = _config(path)
    assert set(config) <= GHZ_OPTIONS, set(config) - GHZ_OPTIONS
    assert {"call", "host", "data"} <= set(config)
    for option in DURATION_OPTIONS & set(config):
        assert GO_DURATION.match(config[option]), (option, config[option])
    assert config.get("load-schedule", "const") in {"const", "step", "line"}
    assert isinstance(config["data"], dict | list)
    for option in ("rps", "concurrency", "connections", "total"):
        if option in config:
            assert isinstance(config[option], int) and config[option] > 0, option
    if "proto" in config:
        assert (path.parent / config["proto"]).is_file()


@pytest.mark.parametrize("path", KAIREON_CONFIGS, ids=lambda p: p.stem)
def test_data_decodes_into_the_request_type(app: App, path: Path) -> None:
    """Kaireon calls: the rendered data is a valid request (unknown fields refused)."""
    config = _config(path)
    service_name, method_name = _method(config["call"])
    service = next(c.descriptor for c in app.capabilities if c.descriptor.full_name == service_name)
    method = service.methods_by_name[method_name]
    request_class = symbol_database.Default().GetSymbol(method.input_type.full_name)
    message = json_format.ParseDict(_render(config["data"]), request_class())
    assert message.ByteSize() > 0


def _headers(config: dict[str, Any], tenant: str) -> list[str]:
    out: list[str] = []
    for key, value in (config.get("metadata") or {}).items():
        out += ["-H", f"{key}: {tenant if key == 'x-tenant-id' else value}"]
    return out


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    await seed_tenant(db, tenant, SeedSize(customers=2, interactions_per_customer=2))
    return tenant


@pytest.mark.parametrize("path", KAIREON_CONFIGS, ids=lambda p: p.stem)
async def test_the_rendered_call_is_answered_ok(
    app: App, grpc_target: str, seeded: str, path: Path
) -> None:
    config = _config(path)
    data = json.dumps(_render(config["data"]))
    service, method = _method(config["call"])
    result = await _grpcurl(
        *_headers(config, seeded), "-d", data, grpc_target, f"{service}/{method}"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)  # a non-empty response message


async def test_the_ceiling_configs_call_the_echo_server(database_url: str, seeded: str) -> None:
    """echo.json and lookup.json name perf/k6/proto/echo.proto: replayed through it."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "harness.echo_server", "--port", str(port)],
        *["--dsn", database_url, "--tenant", seeded],
        cwd=ROOT / "perf",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 30)
        assert b"echo serving" in line
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
        for name in ("echo", "lookup"):
            config = _config(GHZ_DIR / f"{name}.json")
            proto = (GHZ_DIR / config["proto"]).resolve()
            service, method = _method(config["call"])
            result = await _grpcurl(
                *["-import-path", str(proto.parent), "-proto", proto.name],
                *["-d", json.dumps(_render(config["data"]))],
                *[f"127.0.0.1:{port}", f"{service}/{method}"],
            )
            assert result.returncode == 0, (name, result.stderr)
            assert json.loads(result.stdout), name
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
