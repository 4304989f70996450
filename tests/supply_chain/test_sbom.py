"""CycloneDX 1.5 SBOM: schema-valid, and it lists exactly the locked runtime closure.

The expected closure is computed independently of tools/generate_sbom.py, by
``uv export --no-dev`` over the same uv.lock.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from ._support import run, uv_binary

# The image (Dockerfile base): CPython 3.11 on linux/amd64.
# Runs tools/generate_sbom.py over the environment as a subprocess (slow tier).
pytestmark = pytest.mark.slow
IMAGE_MARKERS = {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
DEV_ONLY = {"pytest", "mypy", "ruff", "cyclonedx-python-lib", "hypothesis", "grpcio-tools"}


@dataclass(frozen=True)
class Exported:
    third_party: dict[str, tuple[str, frozenset[str]]]  # name -> (version, sha256 hashes)
    editable: frozenset[str]


def _generate(out: Path, **env: str) -> tuple[str, bytes]:
    child_env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"} | env
    result = run([sys.executable, "tools/generate_sbom.py", "--output", out], env=child_env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), out.read_bytes()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    return _generate(tmp_path_factory.mktemp("sbom") / "sbom.json")


@pytest.fixture(scope="module")
def sbom(generated: tuple[str, bytes]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(generated[1])
    return document


@pytest.fixture(scope="module")
def exported() -> Exported:
    export = ["export", "--no-dev", "--frozen", "--format", "requirements-txt"]
    result = run([uv_binary(), *export, "--no-header", "--no-annotate"])
    assert result.returncode == 0, result.stderr
    logical = result.stdout.replace("\\\n", " ").splitlines()
    third_party: dict[str, tuple[str, frozenset[str]]] = {}
    editable: set[str] = set()
    for line in filter(None, (raw.strip() for raw in logical)):
        if line.startswith("-e "):
            editable.add(line[3:].strip())
            continue
        requirement, _, rest = line.partition(" --hash=")
        spec, _, marker = requirement.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(IMAGE_MARKERS):
            continue
        name, _, version = spec.strip().partition("==")
        hashes = frozenset(re.findall(r"sha256:([0-9a-f]{64})", "--hash=" + rest))
        third_party[canonicalize_name(name)] = (version, hashes)
    return Exported(third_party, frozenset(editable))


def _by_name(sbom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {canonicalize_name(c["name"]): c for c in sbom["components"]}


def test_valid_against_the_cyclonedx_1_5_json_schema(sbom: dict[str, Any]) -> None:
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["specVersion"] == "1.5"
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(sbom))
    assert error is None, str(error)


def test_the_validator_used_above_does_reject_invalid_documents(sbom: dict[str, Any]) -> None:
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    for mutate in (
        lambda d: d["components"][0].pop("name"),
        lambda d: d["components"][0]["hashes"][0].update(alg="SHA-257"),
        lambda d: d.update(serialNumber="not-a-urn"),
        lambda d: d["components"][0].update(unexpected=True),
    ):
        broken = copy.deepcopy(sbom)
        mutate(broken)
        assert validator.validate_str(json.dumps(broken)) is not None


def test_printed_digest_is_the_sha256_of_the_file(generated: tuple[str, bytes]) -> None:
    digest, data = generated
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hashlib.sha256(data).hexdigest()


def test_lists_every_locked_runtime_dependency_and_nothing_else(
    sbom: dict[str, Any], exported: Exported
) -> None:
    components = _by_name(sbom)
    from_registry = {n: c["version"] for n, c in components.items() if "purl" in c}
    assert from_registry == {n: v for n, (v, _) in exported.third_party.items()}
    assert len(from_registry) >= 25  # a real closure, not an empty intersection
    # The workspace: the root project is the SBOM's subject, the client a component.
    assert exported.editable == {".", "./clients/python"}
    assert sbom["metadata"]["component"]["name"] == "kaireon-server"
    assert {n for n, c in components.items() if "purl" not in c} == {"kaireon-client"}
    assert not DEV_ONLY & set(components)


def test_each_component_has_purl_and_the_locked_hash_of_what_the_image_installs(
    sbom: dict[str, Any], exported: Exported
) -> None:
    for name, component in _by_name(sbom).items():
        if name == "kaireon-client":
            continue
        version, locked_hashes = exported.third_party[name]
        assert component["purl"] == f"pkg:pypi/{name}@{version}"
        assert [h["alg"] for h in component["hashes"]] == ["SHA-256"]
        digest = component["hashes"][0]["content"]
        assert digest in locked_hashes, f"{name}: {digest} is not a locked file of {name}"
        (reference,) = component["externalReferences"]
        assert reference["type"] == "distribution"
        assert reference["hashes"] == component["hashes"]
        filename = reference["url"].rsplit("/", 1)[-1]
        if filename.endswith(".whl"):
            # A wheel the image's interpreter can load: pure, abi3 or cp311, linux x86_64.
            tags = filename[:-4].split("-")[-3:]
            assert tags[0] in {"py3", "py2.py3", "cp311"} or tags[1] == "abi3", filename
            assert tags[2] == "any" or ("linux" in tags[2] and "x86_64" in tags[2]), filename


def test_licenses_are_recorded_when_the_distribution_declares_them(sbom: dict[str, Any]) -> None:
    components = _by_name(sbom)
    assert components["grpcio"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert components["cryptography"]["licenses"] == [{"expression": "Apache-2.0 OR BSD-3-Clause"}]
    with_license = [c for c in components.values() if c.get("licenses")]
    assert len(with_license) >= len(components) - 2


def test_dependency_graph_starts_at_the_server(sbom: dict[str, Any]) -> None:
    graph = {d["ref"]: set(d.get("dependsOn", [])) for d in sbom["dependencies"]}
    root = graph[sbom["metadata"]["component"]["bom-ref"]]
    assert {"kaireon-client@0.1.0", "pkg:pypi/grpcio@1.85.1", "pkg:pypi/pgserver@0.1.4"} <= root
    assert "pkg:pypi/cffi@2.1.1" in graph["pkg:pypi/cryptography@48.0.0"]
    refs = {c["bom-ref"] for c in sbom["components"]}
    assert set().union(*graph.values()) <= refs


def test_reproducible_with_source_date_epoch(tmp_path: Path) -> None:
    first = _generate(tmp_path / "a.json", SOURCE_DATE_EPOCH="1790000000")
    second = _generate(tmp_path / "b.json", SOURCE_DATE_EPOCH="1790000000")
    assert first == second
    document = json.loads(first[1])
    assert document["metadata"]["timestamp"].startswith("2026-09-21T")
    fresh = json.loads(_generate(tmp_path / "c.json")[1])
    assert fresh["serialNumber"] != document["serialNumber"]
