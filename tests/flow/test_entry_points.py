"""Custom node types arrive through the `kaireon.flow.nodes` entry-point group."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kaireon_server.flow import ENTRY_POINT_GROUP, NodeRegistry, default_registry
from kaireon_server.flow.nodes.base import Config, NodeContext, NodeSetup, NodeType, records_of
from tests.flow.conftest import make_plugin_dir

GROUP = "kaireon.flow.nodes.testing"


class Shout(NodeType[str]):
    """A custom node type: upper-cases one field."""

    name = "acme.shout"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> str:
        return str(Config(config, {"field"}).text("field"))

    async def run(self, ctx: NodeContext, config: str, inputs: Mapping[str, Any]) -> Any:
        dep = next(iter(inputs))
        return [{**r, config: str(r[config]).upper()} for r in records_of(inputs, dep)]


SHOUT_INSTANCE = Shout()


class Misnamed(Shout):
    name = "acme.other"


class Shadow(Shout):
    name = "transform.filter"


@pytest.fixture
def plugin_path() -> Iterator[Path]:
    entry_points = (
        f"[{GROUP}]\n"
        "acme.shout = tests.flow.test_entry_points:Shout\n"
        "acme.instance = tests.flow.test_entry_points:SHOUT_INSTANCE\n"
        "acme.broken = tests.flow.no_such_module:Node\n"
        "acme.misnamed = tests.flow.test_entry_points:Misnamed\n"
        "transform.filter = tests.flow.test_entry_points:Shadow\n"
    )
    root = make_plugin_dir(entry_points, name="acme_flow_nodes")
    sys.path.append(str(root))
    importlib.invalidate_caches()
    yield root
    sys.path.remove(str(root))


def test_entry_points_register_custom_types(
    plugin_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = default_registry(entry_points=False)
    with caplog.at_level(logging.ERROR):
        added = registry.load_entry_points(GROUP)
    # The class loads; the instance is refused (its name differs from the entry
    # point's); the broken module, the misnamed class and the built-in's
    # shadow are logged and left out.
    assert added == ["acme.shout"]
    shout = registry.get("acme.shout")
    assert isinstance(shout, Shout)
    messages = [r.getMessage() for r in caplog.records]
    assert "flow node plugin failed to load" in messages
    assert messages.count("flow node plugin name mismatch") == 2
    assert "flow node plugin shadows a registered type" in messages
    assert registry.get("transform.filter") is not None
    assert type(registry.get("transform.filter")).__name__ == "Filter"


async def test_custom_type_runs(plugin_path: Path) -> None:
    from kaireon_server.flow import (
        FlowRunner,
        InMemoryCheckpointStore,
        definition_from_json,
        validate,
    )

    registry = NodeRegistry()
    registry.load_entry_points(GROUP)
    registry.register(default_registry(entry_points=False).get("source.inline"))  # type: ignore[arg-type]
    plan = validate(
        definition_from_json(
            {
                "nodes": [
                    {"id": "s", "type": "source.inline", "config": {"records": [{"n": "ada"}]}},
                    {"id": "x", "type": "acme.shout", "config": {"field": "n"}, "dependsOn": ["s"]},
                ]
            }
        ),
        registry,
    )
    result = await FlowRunner(InMemoryCheckpointStore()).run(plan, tenant_id="t", run_id="r")
    assert result.outputs["x"] == [{"n": "ADA"}]


def test_the_server_registry_loads_installed_plugins(registry: NodeRegistry) -> None:
    # tests/flow/conftest.py installs test.step as an entry point of ENTRY_POINT_GROUP.
    assert ENTRY_POINT_GROUP == "kaireon.flow.nodes"
    assert registry.get("test.step") is not None
    assert {
        "source.inline",
        "source.sql",
        "transform.filter",
        "transform.rename",
        "transform.cast",
        "transform.derive",
        "transform.dedupe",
        "transform.join",
        "transform.mask",
        "sink.table",
    } <= set(registry.names())
