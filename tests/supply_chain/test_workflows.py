"""GitHub workflows: actionlint-clean, pinned actions, least privilege, the release steps."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._support import BIN, ROOT, run

WORKFLOWS = ROOT / ".github" / "workflows"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def _run_scripts(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def _uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"] for step in job["steps"] if "uses" in step]


def test_actionlint_is_clean() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml"}
    result = run([BIN / "actionlint", "-shellcheck", BIN / "shellcheck", *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_and_shellcheck_do_report_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo $HOME ${{ github.no_such_field }}\n"
    )
    result = run([BIN / "actionlint", "-shellcheck", BIN / "shellcheck", bad])
    assert result.returncode == 1
    assert "SC2086" in result.stdout
    assert "no_such_field" in result.stdout


def test_lint_script_passes() -> None:
    result = run(["bash", "tools/dev/lint_supply_chain.sh"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_third_party_actions_are_pinned_by_commit_with_the_version_noted(name: str) -> None:
    lines = (WORKFLOWS / name).read_text().splitlines()
    uses = [line for line in lines if re.match(r"^\s*(-\s+)?uses:", line)]
    assert uses
    for line in uses:
        reference, _, comment = line.split("uses:", 1)[1].partition("#")
        assert PINNED.match(reference.strip()), line
        assert re.match(r"^\s*v\d+\.\d+\.\d+", comment), f"no version comment: {line}"


def test_release_runs_on_version_tags_with_least_privilege() -> None:
    release = _load("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {}
    jobs = release["jobs"]
    assert {name: job["permissions"] for name, job in jobs.items()} == {
        "verify": {"contents": "read"},
        "image": {"contents": "read", "id-token": "write"},
        "release": {"contents": "write"},
    }


def test_release_verify_job_checks_stubs_runs_tests_and_keeps_the_sbom() -> None:
    verify = _load("release.yml")["jobs"]["verify"]
    script = _run_scripts(verify)
    for command in (
        "bash tools/dev/setup.sh",
        "tools/gen_protos.py --check",
        "-m pytest",
        "tools/generate_sbom.py --output sbom.cdx.json",
    ):
        assert command in script
    assert script.index("--check") < script.index("pytest") < script.index("generate_sbom")
    (upload,) = [s for s in verify["steps"] if s.get("uses", "").startswith("actions/upload-")]
    assert upload["with"]["retention-days"] == 365
    assert upload["with"]["path"] == "sbom.cdx.json"


def test_release_image_job_signs_and_attests_only_with_an_aws_role() -> None:
    image = _load("release.yml")["jobs"]["image"]
    assert image["if"] == "vars.AWS_ROLE_ARN != ''"
    assert image["needs"] == "verify"
    actions = [u.split("@")[0] for u in _uses(image)]
    assert "aws-actions/configure-aws-credentials" in actions
    assert "sigstore/cosign-installer" in actions
    script = _run_scripts(image)
    assert 'cosign sign --yes "${IMAGE_REPOSITORY}@${IMAGE_DIGEST}"' in script
    assert "tools/generate_slsa_attestation.py" in script
    assert "cosign attest --yes --type slsaprovenance1 --predicate predicate.json" in script
    assert "docker build" in script and "docker push" in script
    for build_arg in (
        "GIT_SHA",
        "GIT_REPO",
        "IMAGE_NAME",
        "BUILD_STARTED_ON",
        "SBOM_DIGEST_SHA256",
    ):
        assert f"--build-arg {build_arg}" in script
    # The statement is generated after the digest is known, and only then attested.
    assert script.index("IMAGE_DIGEST=") < script.index("generate_slsa_attestation")


def test_release_publishes_the_sbom_with_generated_notes() -> None:
    job = _load("release.yml")["jobs"]["release"]
    assert job["needs"] == ["verify", "image"]
    assert "needs.image.result == 'skipped'" in job["if"]
    downloads = [
        s["with"]["name"] for s in job["steps"] if "download-artifact" in s.get("uses", "")
    ]
    assert downloads == ["sbom", "provenance"]
    script = _run_scripts(job)
    assert "gh release create" in script
    assert "--generate-notes" in script and "dist/*" in script


def test_ci_runs_the_project_gate_with_python_and_node() -> None:
    ci = _load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request", "schedule"}
    # Pushes sample the fault sweeps' round trips; the nightly run sweeps them all.
    gate = next(s for s in ci["jobs"]["ci"]["steps"] if s.get("run") == "bash .ci/run")
    sweep = gate["env"]["KAIREON_FAULT_SWEEP"]
    assert sweep == "${{ github.event_name == 'schedule' && 'all' || 'sample' }}"
    assert ci["permissions"] == {"contents": "read"}
    (job,) = ci["jobs"].values()
    versions = {s["uses"].split("@")[0]: s.get("with", {}) for s in job["steps"] if "uses" in s}
    assert versions["actions/setup-python"]["python-version"] == "3.11"
    assert versions["actions/setup-node"]["node-version"] == "20"
    # The gate, then the vulnerability audit that needs the internet (.ci/run
    # reports it "not run" on machines that cannot reach the service).
    assert _run_scripts(job).split() == ["bash", ".ci/run", "bash", "tools/dev/audit.sh"]
