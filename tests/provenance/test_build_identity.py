"""buildIdentity: nulls when unset, slsaAttestation only with all four variables, then valid."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from kaireon_server.app import App
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.provenance.bundle import assemble
from kaireon_server.provenance.emit import read_sources
from tests.provenance.conftest import AFTER_CHANGE, fetch, running_app
from tests.supply_chain._support import slsa_statement_errors
from tests.support.server import base_env

REQUIRED = {
    "GIT_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GIT_REPO": "https://github.com/kaireon/compliance-plane",
    "IMAGE_NAME": "ghcr.io/kaireon/compliance-plane",
    "IMAGE_DIGEST": "sha256:" + "ab" * 32,
}
SBOM = {"SBOM_DIGEST_SHA256": "cd" * 32}


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    "present",
    [combo for r in range(len(REQUIRED)) for combo in itertools.combinations(sorted(REQUIRED), r)],
)
async def test_no_attestation_unless_all_four_are_set(db, seeded, present):
    env = {name: REQUIRED[name] for name in present} | SBOM
    sources = await read_sources(db, seeded, AFTER_CHANGE)
    identity = assemble(sources, BuildEnv.from_env(env))["buildIdentity"]
    assert identity["slsaAttestation"] is None
    assert identity["gitSha"] == env.get("GIT_SHA")
    assert identity["gitRepo"] == env.get("GIT_REPO")
    assert identity["imageName"] == env.get("IMAGE_NAME")
    assert identity["imageDigest"] == env.get("IMAGE_DIGEST")
    assert identity["sbomDigestSha256"] == SBOM["SBOM_DIGEST_SHA256"]


async def test_unset_build_values_are_null(channel, seeded):
    identity = (await fetch(channel, seeded, AFTER_CHANGE)).json["buildIdentity"]
    assert identity == {
        "gitSha": None,
        "gitRepo": None,
        "imageName": None,
        "imageDigest": None,
        "sbomDigestSha256": None,
        "slsaAttestation": None,
    }


@pytest.mark.slow
async def test_attestation_with_all_four_is_a_valid_slsa_v1_statement(database_url, seeded):
    async with running_app(base_env(database_url, **REQUIRED, **SBOM)) as channel:
        first = await fetch(channel, seeded, AFTER_CHANGE)
        second = await fetch(channel, seeded, AFTER_CHANGE)
    assert first.body == second.body  # the defaults below are deterministic
    bundle = first.json
    statement = bundle["buildIdentity"]["slsaAttestation"]
    # The contract's BUILDER_ID default ("kaireon.platform.runtime") is not a TypeURI:
    # the only deviation from the schema (release builds set a URI, see the next test).
    errors = slsa_statement_errors(statement)
    assert errors and all(e.startswith("predicate ['runDetails', 'builder', 'id']") for e in errors)
    assert statement["subject"] == [
        {"name": REQUIRED["IMAGE_NAME"], "digest": {"sha256": "ab" * 32}}
    ]
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dependencies[0]["digest"] == {"gitCommit": REQUIRED["GIT_SHA"]}
    run = statement["predicate"]["runDetails"]
    assert run["builder"] == {"id": "kaireon.platform.runtime", "version": {"builder": "unknown"}}
    # Unset GITHUB_RUN_ID -> the trace id; unset BUILD_*_ON -> generatedAt, never "now".
    assert run["metadata"]["invocationId"] == AFTER_CHANGE
    generated = _moment(bundle["generatedAt"])
    assert _moment(run["metadata"]["startedOn"]) == generated
    assert _moment(run["metadata"]["finishedOn"]) == generated
    assert run["byproducts"][0]["digest"] == {"sha256": SBOM["SBOM_DIGEST_SHA256"]}


async def test_explicit_build_times_and_run_id_are_used(db, seeded):
    env = REQUIRED | {
        "BUILD_STARTED_ON": "2026-02-01T10:00:00Z",
        "BUILD_FINISHED_ON": "2026-02-01T10:05:00Z",
        "GITHUB_RUN_ID": "987654",
        "BUILDER_ID": "https://github.com/actions/runner",
        "BUILDER_VERSION": "2.321.0",
    }
    sources = await read_sources(db, seeded, AFTER_CHANGE)
    statement = assemble(sources, BuildEnv.from_env(env))["buildIdentity"]["slsaAttestation"]
    assert slsa_statement_errors(statement) == []
    run = statement["predicate"]["runDetails"]
    assert run["metadata"] == {
        "invocationId": "987654",
        "startedOn": "2026-02-01T10:00:00Z",
        "finishedOn": "2026-02-01T10:05:00Z",
    }
    assert run["builder"] == {
        "id": "https://github.com/actions/runner",
        "version": {"builder": "2.321.0"},
    }


async def test_a_malformed_build_variable_stops_the_server_at_start(database_url):
    app = App(Settings.from_env(base_env(database_url, GIT_SHA="not-a-sha")))
    with pytest.raises(ConfigurationError, match="GIT_SHA"):
        await app.start()
