"""Build identity of the running image and its SLSA v1 provenance statement.

One implementation serves two callers: the provenance bundle
(``buildIdentity`` of every decision bundle) and
``tools/generate_slsa_attestation.py`` (the statement the release workflow
attests with ``cosign attest --type slsaprovenance1``). Both read the same
environment variables, so for the same environment they produce the same
statement.

Environment (unset and empty values are treated alike, because a Docker
``ARG`` that was not passed becomes an empty ``ENV``):

=====================  ==================================  ==========================
variable               default when unset                  used for
=====================  ==================================  ==========================
GIT_SHA                None                                resolvedDependencies digest
GIT_REPO               None                                source repository URL
GIT_REF                None (optional ``@ref`` in the URI)  e.g. ``refs/tags/v0.5.0``
IMAGE_NAME             None                                subject name
IMAGE_DIGEST           None                                subject digest (sha256:...)
SBOM_DIGEST_SHA256     None                                byproduct: the CycloneDX SBOM
BUILDER_ID             ``kaireon.platform.runtime``        runDetails.builder.id
BUILDER_VERSION        ``unknown``                         runDetails.builder.version
BUILD_STARTED_ON       the caller's ``time_default``       metadata.startedOn
BUILD_FINISHED_ON      the caller's ``time_default``       metadata.finishedOn
GITHUB_RUN_ID          the caller's ``invocation_default``  metadata.invocationId
=====================  ==================================  ==========================

Nothing here reads the clock: the provenance service needs byte-identical
bundles across replicas and over time, so every time that is not in the
environment comes from an explicit ``time_default`` argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kaireon_server.platform.env import EnvReader

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# Our own build type; its specification is the "Build type" section of docs/RELEASE.md.
BUILD_TYPE = "https://docs.kaireonai.com/slsa/buildtypes/container-image/v1"
SBOM_BYPRODUCT_NAME = "sbom.cdx.json"
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"

DEFAULT_BUILDER_ID = "kaireon.platform.runtime"
DEFAULT_BUILDER_VERSION = "unknown"

_GIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

JsonObject = dict[str, Any]


def _git_sha(value: str | None) -> str | None:
    if value is None:
        return None
    sha = value.lower()
    if not _GIT_SHA.fullmatch(sha):
        raise ValueError(f"GIT_SHA must be a full 40 or 64 hex digit commit id, got {value!r}")
    return sha


def _sha256_hex(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    hex_digest = value.lower().removeprefix("sha256:")
    if not _SHA256_HEX.fullmatch(hex_digest):
        raise ValueError(f"{name} must be a sha256 digest (64 hex digits), got {value!r}")
    return hex_digest


def normalize_timestamp(value: str | datetime, *, name: str = "timestamp") -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, as in-toto Timestamps require.

    Naive datetimes are refused rather than guessed: a wrong zone would make the
    attested time silently wrong.
    """
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"{name} is not an RFC 3339 timestamp: {value!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone (use a trailing Z): {value!r}")
    moment = moment.astimezone(UTC)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return moment.strftime(pattern)


@dataclass(frozen=True, slots=True)
class BuildEnv:
    """The build inputs, validated and normalised once (call at start-up to fail fast)."""

    git_sha: str | None = None
    git_repo: str | None = None
    git_ref: str | None = None
    image_name: str | None = None
    image_digest: str | None = None
    sbom_digest_sha256: str | None = None
    builder_id: str = DEFAULT_BUILDER_ID
    builder_version: str = DEFAULT_BUILDER_VERSION
    build_started_on: str | None = None
    build_finished_on: str | None = None
    invocation_id: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BuildEnv:
        """Read the variables listed in the module docstring; raise ValueError on bad values."""
        # Unset, empty and blank are alike (an ARG not passed is an empty ENV).
        setting = EnvReader(env).optional_text
        started = setting("BUILD_STARTED_ON")
        finished = setting("BUILD_FINISHED_ON")
        image_digest = setting("IMAGE_DIGEST")
        _sha256_hex("IMAGE_DIGEST", image_digest)  # validate only: imageDigest echoes the env
        sbom = _sha256_hex("SBOM_DIGEST_SHA256", setting("SBOM_DIGEST_SHA256"))
        return cls(
            git_sha=_git_sha(setting("GIT_SHA")),
            git_repo=setting("GIT_REPO"),
            git_ref=setting("GIT_REF"),
            image_name=setting("IMAGE_NAME"),
            image_digest=image_digest,
            sbom_digest_sha256=sbom,
            builder_id=setting("BUILDER_ID") or DEFAULT_BUILDER_ID,
            builder_version=setting("BUILDER_VERSION") or DEFAULT_BUILDER_VERSION,
            build_started_on=(
                normalize_timestamp(started, name="BUILD_STARTED_ON") if started else None
            ),
            build_finished_on=(
                normalize_timestamp(finished, name="BUILD_FINISHED_ON") if finished else None
            ),
            invocation_id=setting("GITHUB_RUN_ID"),
        )

    @property
    def attestable(self) -> bool:
        """True when the statement can name both its subject and its source."""
        return None not in (self.git_sha, self.git_repo, self.image_name, self.image_digest)


def source_uri(git_repo: str, git_ref: str | None) -> str:
    """SPDX-style download location: ``git+<repo>[@<ref>]``."""
    base = git_repo if git_repo.startswith("git+") else f"git+{git_repo}"
    return f"{base}@{git_ref}" if git_ref else base


def slsa_statement(
    build: BuildEnv, *, invocation_default: str, time_default: str | datetime
) -> JsonObject:
    """The in-toto Statement v1 with a SLSA provenance v1 predicate.

    ``invocation_default`` stands in for an unset GITHUB_RUN_ID (the provenance
    service passes the trace id); ``time_default`` for unset BUILD_STARTED_ON /
    BUILD_FINISHED_ON. Raises ValueError when ``build`` is not attestable.
    """
    repo, sha, image = build.git_repo, build.git_sha, build.image_name
    digest = _sha256_hex("IMAGE_DIGEST", build.image_digest)
    if repo is None or sha is None or image is None or digest is None:
        raise ValueError("GIT_SHA, GIT_REPO, IMAGE_NAME and IMAGE_DIGEST must all be set")
    default_time = normalize_timestamp(time_default, name="time_default")

    external: JsonObject = {"repository": repo}
    if build.git_ref:
        external["ref"] = build.git_ref
    run_details: JsonObject = {
        "builder": {"id": build.builder_id, "version": {"builder": build.builder_version}},
        "metadata": {
            "invocationId": build.invocation_id or invocation_default,
            "startedOn": build.build_started_on or default_time,
            "finishedOn": build.build_finished_on or default_time,
        },
    }
    if build.sbom_digest_sha256:
        run_details["byproducts"] = [
            {
                "name": SBOM_BYPRODUCT_NAME,
                "digest": {"sha256": build.sbom_digest_sha256},
                "mediaType": SBOM_MEDIA_TYPE,
            }
        ]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": image,
                "digest": {"sha256": digest},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": [
                    {
                        "uri": source_uri(repo, build.git_ref),
                        "digest": {"gitCommit": sha},
                    }
                ],
            },
            "runDetails": run_details,
        },
    }


def build_identity(
    env: Mapping[str, str] | BuildEnv,
    *,
    invocation_default: str,
    time_default: str | datetime,
) -> JsonObject:
    """The ``buildIdentity`` object of a provenance bundle.

    Unset values are None; ``slsaAttestation`` is None unless GIT_SHA, GIT_REPO,
    IMAGE_NAME and IMAGE_DIGEST are all set. See :func:`slsa_statement` for the
    two defaults.
    """
    build = env if isinstance(env, BuildEnv) else BuildEnv.from_env(env)
    attestation = (
        slsa_statement(build, invocation_default=invocation_default, time_default=time_default)
        if build.attestable
        else None
    )
    return {
        "gitSha": build.git_sha,
        "gitRepo": build.git_repo,
        "imageName": build.image_name,
        "imageDigest": build.image_digest,
        "sbomDigestSha256": build.sbom_digest_sha256,
        "slsaAttestation": attestation,
    }
