"""CycloneDX 1.5 JSON SBOM of the Python packages the container image ships.

    python tools/generate_sbom.py --output sbom.json

Reads uv.lock only (never the network): the runtime closure of kaireon-server
and its workspace member kaireon-client, following their ``dependencies`` and
never a dependency group, with environment markers evaluated for the image
(linux/amd64, CPython 3.11, glibc 2.36: the Dockerfile's base). Each
third-party component carries name, version, purl, the sha256 of the exact
artifact the image installs (the best-ranked locked wheel for that platform,
else the sdist) with its download URL, and its licence when the installed
distribution of the same version declares one.

Prints the file's sha256 (hex) on stdout: the SBOM_DIGEST_SHA256 build arg.
With SOURCE_DATE_EPOCH set the output is reproducible (timestamp from it,
serial number derived from the lock); otherwise each run gets a fresh serial.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import sys
import tomllib
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.contrib.this.builders import this_component
from cyclonedx.model import (
    ExternalReference,
    ExternalReferenceType,
    HashAlgorithm,
    HashType,
    Property,
    XsUri,
)
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL
from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
ROOT_PACKAGE = "kaireon-server"

# The image: python:3.11.14-slim-bookworm on linux/amd64 (Debian 12, glibc 2.36).
TARGET_PYTHON = (3, 11)
TARGET_GLIBC_MINOR = 36
TARGET_ARCH = "x86_64"
TARGET_MARKERS: dict[str, str] = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.14",
    "os_name": "posix",
    "platform_machine": TARGET_ARCH,
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.14",
    "python_version": "3.11",
    "sys_platform": "linux",
}
# manylinux aliases from PEP 600: legacy tag -> glibc minor it stands for.
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


@dataclass(frozen=True)
class Artifact:
    url: str
    sha256: str
    kind: str  # "wheel" or "sdist"


@dataclass
class LockedPackage:
    name: str
    version: str
    source: Mapping[str, Any]
    raw: Mapping[str, Any]
    depends_on: list[str] = field(default_factory=list)

    @property
    def from_registry(self) -> bool:
        return "registry" in self.source


def _platform_tags() -> list[str]:
    tags: list[str] = []
    for minor in range(TARGET_GLIBC_MINOR, 4, -1):
        tags.append(f"manylinux_2_{minor}_{TARGET_ARCH}")
        if minor in _LEGACY_MANYLINUX:
            tags.append(f"{_LEGACY_MANYLINUX[minor]}_{TARGET_ARCH}")
    tags.append(f"linux_{TARGET_ARCH}")
    return tags


def target_tag_priority() -> dict[Tag, int]:
    """Install preference of the image's interpreter: lower is preferred (as pip/uv rank)."""
    platforms = _platform_tags()
    ordered = [
        *cpython_tags(TARGET_PYTHON, abis=["cp311"], platforms=platforms),
        *compatible_tags(TARGET_PYTHON, "cp311", platforms),
    ]
    priority: dict[Tag, int] = {}
    for rank, tag in enumerate(ordered):
        priority.setdefault(tag, rank)
    return priority


def _hex(hash_field: str) -> str:
    alg, _, value = hash_field.partition(":")
    if alg != "sha256" or not value:
        raise ValueError(f"unexpected hash in uv.lock: {hash_field!r}")
    return value


def select_artifact(package: Mapping[str, Any], priority: Mapping[Tag, int]) -> Artifact | None:
    """The locked file the image installs: the best-ranked compatible wheel, else the sdist."""
    best: tuple[int, Artifact] | None = None
    for wheel in package.get("wheels", []):
        filename = unquote(PurePosixPath(urlparse(wheel["url"]).path).name)
        _, _, _, tags = parse_wheel_filename(filename)
        ranks = [priority[tag] for tag in tags if tag in priority]
        if ranks and (best is None or min(ranks) < best[0]):
            best = (min(ranks), Artifact(wheel["url"], _hex(wheel["hash"]), "wheel"))
    if best is not None:
        return best[1]
    sdist = package.get("sdist")
    if sdist and "url" in sdist:
        return Artifact(sdist["url"], _hex(sdist["hash"]), "sdist")
    return None


def _applies(dep: Mapping[str, Any]) -> bool:
    marker = dep.get("marker")
    return marker is None or Marker(marker).evaluate(dict(TARGET_MARKERS))


def runtime_closure(lock: Mapping[str, Any], root: str = ROOT_PACKAGE) -> dict[str, LockedPackage]:
    """Packages reachable from ``root`` through runtime dependencies on the target platform.

    Keyed by canonical name. Dev groups are never followed; an extra requested by
    a dependency edge pulls in that package's ``optional-dependencies[extra]``.
    """
    index: dict[str, list[Mapping[str, Any]]] = {}
    for entry in lock["package"]:
        index.setdefault(canonicalize_name(entry["name"]), []).append(entry)

    def resolve(dep: Mapping[str, Any]) -> Mapping[str, Any]:
        candidates = index[canonicalize_name(dep["name"])]
        if "version" in dep:  # the lock names the version when several are locked
            candidates = [c for c in candidates if c.get("version") == dep["version"]]
        if len(candidates) != 1:
            raise ValueError(f"cannot resolve {dep['name']!r} unambiguously in uv.lock")
        return candidates[0]

    closure: dict[str, LockedPackage] = {}
    queue: deque[tuple[Mapping[str, Any], tuple[str, ...]]] = deque([(resolve({"name": root}), ())])
    while queue:
        entry, extras = queue.popleft()
        key = canonicalize_name(entry["name"])
        package = closure.get(key)
        if package is None:
            package = LockedPackage(entry["name"], entry["version"], entry["source"], entry)
            closure[key] = package
        edges = [d for d in entry.get("dependencies", []) if _applies(d)]
        for extra in extras:
            edges += [
                d for d in entry.get("optional-dependencies", {}).get(extra, []) if _applies(d)
            ]
        for dep in edges:
            target = resolve(dep)
            target_key = canonicalize_name(target["name"])
            if target_key not in package.depends_on:
                package.depends_on.append(target_key)
            wanted = tuple(dep.get("extra", ()))
            if target_key not in closure or wanted:
                queue.append((target, wanted))
    return closure


def _licenses(name: str, version: str) -> list[LicenseExpression | DisjunctiveLicense]:
    """Declared licence of the installed distribution, only when it is the locked version."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return []
    if dist.version != version:
        return []
    factory = LicenseFactory()
    meta = dist.metadata
    expression = (meta.get_all("License-Expression") or [""])[0].strip()
    if expression:
        return [factory.make_from_string(expression)]
    declared = (meta.get_all("License") or [""])[0].strip()
    if declared and "\n" not in declared and len(declared) <= 100:
        return [factory.make_from_string(declared)]
    classifiers = [
        c.split(" :: ")[-1]
        for c in meta.get_all("Classifier") or []
        if c.startswith("License :: ") and c.count(" :: ") >= 2
    ]
    return [factory.make_from_string(c) for c in sorted(set(classifiers))]


def _component(package: LockedPackage, priority: Mapping[Tag, int]) -> Component:
    licenses = _licenses(package.name, package.version)
    if not package.from_registry:
        # A workspace member built from this repository: no registry purl, no file hash.
        where = str(next(iter(package.source.values())))
        return Component(
            type=ComponentType.LIBRARY,
            name=package.name,
            version=package.version,
            bom_ref=f"{package.name}@{package.version}",
            licenses=licenses,
            properties=[Property(name="kaireon:source", value=f"workspace:{where}")],
        )
    artifact = select_artifact(package.raw, priority)
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)] if artifact else []
    references = (
        [
            ExternalReference(
                type=ExternalReferenceType.DISTRIBUTION,
                url=XsUri(artifact.url),
                comment=f"{artifact.kind} installed in the image",
                hashes=hashes,
            )
        ]
        if artifact
        else []
    )
    purl = PackageURL(type="pypi", name=canonicalize_name(package.name), version=package.version)
    return Component(
        type=ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        purl=purl,
        bom_ref=purl.to_string(),
        hashes=hashes,
        licenses=licenses,
        external_references=references,
    )


def _generator_tool() -> Component:
    return Component(
        type=ComponentType.APPLICATION,
        name="kaireon tools/generate_sbom.py",
        version=_root_version(),
    )


def _root_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def build_bom(lock_path: Path, *, source_date_epoch: str | None = None) -> Bom:
    lock_bytes = lock_path.read_bytes()
    lock = tomllib.loads(lock_bytes.decode())
    closure = runtime_closure(lock)
    priority = target_tag_priority()
    root = closure.pop(canonicalize_name(ROOT_PACKAGE))

    if source_date_epoch:
        timestamp = datetime.fromtimestamp(int(source_date_epoch), tz=UTC)
        digest = hashlib.sha256(lock_bytes).hexdigest()
        serial = uuid.uuid5(uuid.NAMESPACE_URL, f"kaireon-sbom:{digest}:{source_date_epoch}")
    else:
        timestamp, serial = datetime.now(tz=UTC), uuid.uuid4()

    root_component = Component(
        type=ComponentType.APPLICATION,
        name=root.name,
        version=root.version,
        bom_ref=f"{root.name}@{root.version}",
        licenses=_licenses(root.name, root.version),
    )
    components = {key: _component(pkg, priority) for key, pkg in sorted(closure.items())}
    bom = Bom(
        serial_number=serial,
        components=components.values(),
        metadata=BomMetaData(
            component=root_component,
            timestamp=timestamp,
            tools=ToolRepository(components=[this_component(), _generator_tool()]),
        ),
    )
    bom.register_dependency(root_component, [components[d] for d in root.depends_on])
    for key, package in closure.items():
        bom.register_dependency(components[key], [components[d] for d in package.depends_on])
    return bom


def render(bom: Bom) -> str:
    return JsonV1Dot5(bom).output_as_string(indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path, help="where to write the SBOM")
    parser.add_argument("--lock", type=Path, default=ROOT / "uv.lock", help="uv lock file")
    ns = parser.parse_args(argv)
    bom = build_bom(ns.lock, source_date_epoch=os.environ.get("SOURCE_DATE_EPOCH") or None)
    data = render(bom).encode()
    ns.output.write_bytes(data)
    print(f"wrote {ns.output} ({len(bom.components)} components)", file=sys.stderr)
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
