"""Helpers shared by the supply chain tests: paths, the pinned tools, the schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
BIN = Path(sys.executable).parent
STATEMENT_SCHEMA = "in-toto-statement-v1.schema.json"
PROVENANCE_SCHEMA = "slsa-provenance-v1.schema.json"


def _registry() -> Registry:
    resources = []
    for name in (STATEMENT_SCHEMA, PROVENANCE_SCHEMA):
        document = json.loads((SCHEMAS / name).read_text())
        resource = Resource.from_contents(document)
        # Both the $id and the bare file name resolve, as the relative $refs use the latter.
        resources += [(document["$id"], resource), (name, resource)]
    return Registry().with_resources(resources)


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry(), format_checker=FormatChecker())


def slsa_statement_errors(statement: Any) -> list[str]:
    """Schema errors of an in-toto Statement v1 carrying a SLSA provenance v1 predicate."""
    errors = [
        f"statement {list(e.absolute_path)}: {e.message}"
        for e in _validator(STATEMENT_SCHEMA).iter_errors(statement)
    ]
    if isinstance(statement, dict):
        if statement.get("predicateType") != "https://slsa.dev/provenance/v1":
            errors.append("predicateType is not https://slsa.dev/provenance/v1")
        errors += [
            f"predicate {list(e.absolute_path)}: {e.message}"
            for e in _validator(PROVENANCE_SCHEMA).iter_errors(statement.get("predicate"))
        ]
    return errors


def run(
    args: list[str | Path], *, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root and capture its output as text."""
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def uv_binary() -> Path:
    """The pinned uv that tools/dev/setup.sh installs."""
    uv = ROOT / ".tools" / "bootstrap" / "bin" / "uv"
    assert uv.exists(), f"{uv} is missing: run bash tools/dev/setup.sh"
    return uv
