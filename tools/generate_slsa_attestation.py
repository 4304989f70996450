"""SLSA v1 provenance of the release image as an in-toto Statement v1.

    python tools/generate_slsa_attestation.py --output statement.json \
        [--predicate-output predicate.json]

Reads the same environment variables as the server's buildIdentity (GIT_SHA,
GIT_REPO, GIT_REF, IMAGE_NAME, IMAGE_DIGEST, SBOM_DIGEST_SHA256, BUILDER_ID,
BUILDER_VERSION, BUILD_STARTED_ON, BUILD_FINISHED_ON, GITHUB_RUN_ID) through
the one implementation in kaireon_server.platform.build_identity, so the
statement equals ``buildIdentity.slsaAttestation`` for the same environment.

``cosign attest --predicate`` wants the predicate alone (cosign writes the
statement and its subject itself): ``--predicate-output`` writes that part.

Unlike the server, this tool may read the clock: an unset BUILD_STARTED_ON /
BUILD_FINISHED_ON becomes the time it runs, an unset GITHUB_RUN_ID a fresh
``urn:uuid:``. Pass the variables to get a reproducible statement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kaireon_server.platform.build_identity import BuildEnv, slsa_statement


def _dump(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path, help="statement JSON file")
    parser.add_argument("--predicate-output", type=Path, help="also write the predicate alone")
    ns = parser.parse_args(argv)
    try:
        build = BuildEnv.from_env(os.environ)
        statement = slsa_statement(
            build,
            invocation_default=uuid.uuid4().urn,
            time_default=datetime.now(tz=UTC).replace(microsecond=0),
        )
    except ValueError as exc:
        print(f"generate_slsa_attestation: {exc}", file=sys.stderr)
        return 2
    ns.output.write_bytes(_dump(statement))
    if ns.predicate_output is not None:
        ns.predicate_output.write_bytes(_dump(statement["predicate"]))
    print(f"wrote {ns.output} for {build.image_name}@{build.image_digest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
