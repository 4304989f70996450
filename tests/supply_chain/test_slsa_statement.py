"""SLSA v1 provenance: the tool's statement is valid and is the server's buildIdentity one."""

from __future__ import annotations

import ast
import copy
import json
import os
import sys
from pathlib import Path

import pytest

from kaireon_server.platform import build_identity as bi
from kaireon_server.platform.build_identity import BuildEnv, build_identity, slsa_statement

from ._support import ROOT, run, slsa_statement_errors

SHA = "7140e181bd72f54828577aae1ac77e7ab0b78e13"
DIGEST = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
SBOM = "dcae3919aab787ae010fbd460eab921502dfbede9b86ae2dd254e2a2aa63e3b6"

# What release.yml puts in the environment of the image job.
RELEASE_ENV = {
    "GIT_SHA": SHA,
    "GIT_REPO": "https://github.com/kaireon/compliance-plane",
    "GIT_REF": "refs/tags/v0.5.0",
    "IMAGE_NAME": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/compliance-plane:v0.5.0",
    "IMAGE_DIGEST": f"sha256:{DIGEST}",
    "SBOM_DIGEST_SHA256": SBOM,
    "BUILDER_ID": "https://github.com/kaireon/compliance-plane/.github/workflows/release.yml@refs/tags/v0.5.0",
    "BUILDER_VERSION": "ubuntu24-20261101.1",
    "BUILD_STARTED_ON": "2026-11-24T01:00:00Z",
    "BUILD_FINISHED_ON": "2026-11-24T01:04:31Z",
    "GITHUB_RUN_ID": "19123456789",
}
REQUIRED = ("GIT_SHA", "GIT_REPO", "IMAGE_NAME", "IMAGE_DIGEST")
TRACE_TIME = "2026-11-20T08:30:00Z"


def _identity(env: dict[str, str]) -> dict[str, object]:
    return build_identity(env, invocation_default="trace-42", time_default=TRACE_TIME)


def _tool(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, Path, Path]:
    statement, predicate = tmp_path / "statement.json", tmp_path / "predicate.json"
    # Only the given build variables: CI runners set GITHUB_RUN_ID themselves.
    child_env = {k: v for k, v in os.environ.items() if k not in RELEASE_ENV} | env
    result = run(
        [
            sys.executable,
            "tools/generate_slsa_attestation.py",
            "--output",
            statement,
            "--predicate-output",
            predicate,
        ],
        env=child_env,
    )
    return result.returncode, result.stderr, statement, predicate


def test_release_statement_is_valid_in_toto_v1_with_slsa_v1_predicate() -> None:
    statement = _identity(RELEASE_ENV)["slsaAttestation"]
    assert slsa_statement_errors(statement) == []


def test_tool_output_equals_the_servers_build_identity_attestation(tmp_path: Path) -> None:
    code, stderr, statement_file, predicate_file = _tool(tmp_path, RELEASE_ENV)
    assert code == 0, stderr
    from_tool = json.loads(statement_file.read_text())
    assert from_tool == _identity(RELEASE_ENV)["slsaAttestation"]
    assert json.loads(predicate_file.read_text()) == from_tool["predicate"]
    assert slsa_statement_errors(from_tool) == []


def test_statement_carries_the_release_inputs() -> None:
    statement = _identity(RELEASE_ENV)["slsaAttestation"]
    assert isinstance(statement, dict)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [
        {"name": RELEASE_ENV["IMAGE_NAME"], "digest": {"sha256": DIGEST}}
    ]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == bi.BUILD_TYPE
    assert definition["externalParameters"] == {
        "repository": RELEASE_ENV["GIT_REPO"],
        "ref": "refs/tags/v0.5.0",
    }
    assert definition["resolvedDependencies"] == [
        {
            "uri": "git+https://github.com/kaireon/compliance-plane@refs/tags/v0.5.0",
            "digest": {"gitCommit": SHA},
        }
    ]
    details = statement["predicate"]["runDetails"]
    assert details["builder"] == {
        "id": RELEASE_ENV["BUILDER_ID"],
        "version": {"builder": RELEASE_ENV["BUILDER_VERSION"]},
    }
    assert details["metadata"] == {
        "invocationId": "19123456789",
        "startedOn": "2026-11-24T01:00:00Z",
        "finishedOn": "2026-11-24T01:04:31Z",
    }
    assert details["byproducts"] == [
        {"name": "sbom.cdx.json", "digest": {"sha256": SBOM}, "mediaType": bi.SBOM_MEDIA_TYPE}
    ]


def test_build_identity_reports_each_value_and_nulls_when_unset() -> None:
    identity = _identity(RELEASE_ENV)
    assert {k: v for k, v in identity.items() if k != "slsaAttestation"} == {
        "gitSha": SHA,
        "gitRepo": RELEASE_ENV["GIT_REPO"],
        "imageName": RELEASE_ENV["IMAGE_NAME"],
        "imageDigest": f"sha256:{DIGEST}",
        "sbomDigestSha256": SBOM,
    }
    assert _identity({}) == {
        "gitSha": None,
        "gitRepo": None,
        "imageName": None,
        "imageDigest": None,
        "sbomDigestSha256": None,
        "slsaAttestation": None,
    }


@pytest.mark.parametrize("missing", REQUIRED)
def test_no_attestation_unless_all_four_inputs_are_set(missing: str) -> None:
    for absent in ({}, {missing: ""}, {missing: "   "}):  # Docker turns unset ARGs into ""
        env = {k: v for k, v in RELEASE_ENV.items() if k != missing} | absent
        identity = _identity(env)
        assert identity["slsaAttestation"] is None
        assert identity["gitSha"] == (None if missing == "GIT_SHA" else SHA)


def test_documented_defaults_come_from_the_callers_arguments_not_the_clock() -> None:
    env = {k: RELEASE_ENV[k] for k in REQUIRED}
    first = _identity(env)["slsaAttestation"]
    assert isinstance(first, dict)
    details = first["predicate"]["runDetails"]
    assert details["builder"] == {
        "id": "kaireon.platform.runtime",
        "version": {"builder": "unknown"},
    }
    assert details["metadata"] == {
        "invocationId": "trace-42",
        "startedOn": TRACE_TIME,
        "finishedOn": TRACE_TIME,
    }
    assert "byproducts" not in details
    assert "ref" not in first["predicate"]["buildDefinition"]["externalParameters"]
    # Byte-identical on every call: what the provenance bundle digest relies on.
    again = _identity(dict(env))["slsaAttestation"]
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_reference_default_builder_id_is_the_only_deviation_from_the_schema() -> None:
    """The platform contract's BUILDER_ID default is not a TypeURI; release builds set one."""
    env = {k: RELEASE_ENV[k] for k in REQUIRED}
    errors = slsa_statement_errors(_identity(env)["slsaAttestation"])
    assert len(errors) == 2, errors  # format "uri" and the lower-case scheme pattern
    assert all(e.startswith("predicate ['runDetails', 'builder', 'id']") for e in errors)


def test_times_are_normalised_to_rfc3339_utc() -> None:
    env = RELEASE_ENV | {
        "BUILD_STARTED_ON": "2026-11-24T02:00:00+01:00",
        "BUILD_FINISHED_ON": "2026-11-24T01:04:31.250000Z",
    }
    metadata = _identity(env)["slsaAttestation"]["predicate"]["runDetails"]["metadata"]  # type: ignore[index]
    assert metadata["startedOn"] == "2026-11-24T01:00:00Z"
    assert metadata["finishedOn"] == "2026-11-24T01:04:31.250000Z"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GIT_SHA", "7140e18"),
        ("GIT_SHA", "not-a-commit-id-not-a-commit-id-not-a-c"),
        ("IMAGE_DIGEST", "sha256:1234"),
        ("IMAGE_DIGEST", "md5:" + "0" * 64),
        ("SBOM_DIGEST_SHA256", "xyz"),
        ("BUILD_STARTED_ON", "yesterday"),
        ("BUILD_FINISHED_ON", "2026-11-24T01:00:00"),  # no zone: refused, not guessed
    ],
)
def test_malformed_inputs_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        BuildEnv.from_env(RELEASE_ENV | {name: value})


def test_digest_and_repository_spellings() -> None:
    env = RELEASE_ENV | {"IMAGE_DIGEST": DIGEST.upper(), "GIT_REPO": "git+https://x.test/r"}
    statement = _identity(env)["slsaAttestation"]
    assert isinstance(statement, dict)
    assert statement["subject"][0]["digest"] == {"sha256": DIGEST}
    uri = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["uri"]
    assert uri == "git+https://x.test/r@refs/tags/v0.5.0"
    assert bi.source_uri("https://x.test/r", None) == "git+https://x.test/r"


def test_slsa_statement_refuses_an_unattestable_build() -> None:
    with pytest.raises(ValueError, match="must all be set"):
        slsa_statement(BuildEnv(), invocation_default="t", time_default=TRACE_TIME)


def test_tool_fails_without_the_required_inputs(tmp_path: Path) -> None:
    code, stderr, statement_file, _ = _tool(tmp_path, {"GIT_SHA": SHA})
    assert code == 2
    assert "must all be set" in stderr
    assert not statement_file.exists()


def test_schemas_reject_what_the_specs_forbid() -> None:
    good = _identity(RELEASE_ENV)["slsaAttestation"]
    assert slsa_statement_errors(good) == []

    def broken(path: list[str | int], value: object) -> list[str]:
        doc = copy.deepcopy(good)
        target = doc
        for key in path[:-1]:
            target = target[key]  # type: ignore[index]
        if value is KeyError:
            del target[path[-1]]  # type: ignore[arg-type]
        else:
            target[path[-1]] = value  # type: ignore[index]
        return slsa_statement_errors(doc)

    assert broken(["_type"], "https://in-toto.io/Statement/v0.1")
    assert broken(["subject", 0, "digest"], KeyError)
    assert broken(["subject", 0, "digest"], {"sha256": "ABC"})
    assert broken(["predicateType"], "provenance")
    assert broken(["predicate", "buildDefinition", "buildType"], KeyError)
    assert broken(["predicate", "buildDefinition", "externalParameters"], KeyError)
    assert broken(["predicate", "runDetails", "builder", "id"], KeyError)
    assert broken(["predicate", "runDetails", "metadata", "startedOn"], "2026-11-24 01:00")
    assert broken(["predicate", "runDetails", "metadata", "startedOn"], "2026-11-24T01:00:00+01:00")
    assert broken(["predicate", "runDetails", "metadata", "startedon"], "2026-11-24T01:00:00Z")
    assert broken(["predicate", "buildDefinition", "resolvedDependencies", 0], {"name": "x"})
    assert broken(["predicate", "runDetails", "builder", "version"], {"builder": 1})
    # Extension fields in the <vendor>_<field> form stay allowed.
    assert broken(["predicate", "runDetails", "kaireon_note"], "extension") == []


def test_build_identity_module_stays_free_of_grpc_and_the_clock() -> None:
    source = (ROOT / "server/kaireon_server/platform/build_identity.py").read_text()
    tree = ast.parse(source)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"grpc", "grpc_health", "grpc_status", "time"}
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not called & {"now", "utcnow", "today", "time"}
