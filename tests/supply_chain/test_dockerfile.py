"""Dockerfile: hadolint-clean, the image contract, the builder's install, a real build."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kaireon_server.healthcheck import DEADLINE_SECONDS

from ._support import BIN, ROOT, run, uv_binary

DOCKERFILE = ROOT / "Dockerfile"
IDENTITY_ARGS = ("GIT_SHA", "GIT_REPO", "IMAGE_NAME", "BUILD_STARTED_ON", "SBOM_DIGEST_SHA256")


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    parsed = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        parsed.append((keyword.upper(), " ".join(args.split())))
    return parsed


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, args))
    return result


def test_hadolint_is_clean() -> None:
    result = run([BIN / "hadolint", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_report_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install uv\nUSER root\n")
    result = run([BIN / "hadolint", bad])
    assert result.returncode == 1
    assert {"DL3007", "DL3013", "DL3002"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_image_contract() -> None:
    text = DOCKERFILE.read_text()
    builder, runtime = stages(text)
    for stage in (builder, runtime):
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), image
    runtime_args = dict(runtime)
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    assert set(runtime_args["EXPOSE"].split()) == {"50051", "8080"}
    assert runtime_args["ENTRYPOINT"] == '["kaireon-server"]'
    healthcheck = runtime_args["HEALTHCHECK"]
    assert healthcheck.endswith('CMD ["kaireon-healthcheck"]')
    timeout = re.search(r"--timeout=(\d+)s", healthcheck)
    assert timeout and int(timeout.group(1)) > DEADLINE_SECONDS
    envs = " ".join(args for keyword, args in runtime if keyword == "ENV")
    for name in IDENTITY_ARGS:
        assert f"{name}=${{{name}}}" in envs
        assert any(k == "ARG" and args.startswith(f"{name}=") for k, args in runtime)
    assert "KAIREON_DATA_DIR=/var/lib/kaireon" in envs
    assert "install -d -o kaireon -g kaireon" in runtime_args["RUN"]
    assert "-m pip" not in text  # nothing installed outside the lock but uv itself


def test_builder_installs_from_the_lock_with_a_hash_pinned_uv() -> None:
    builder = stages(DOCKERFILE.read_text())[0]
    runs = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert "--require-hashes" in runs
    setup = (ROOT / "tools/dev/setup.sh").read_text()
    uv_version = re.search(r"^UV_VERSION=(\S+)$", setup, re.M)
    assert uv_version and f"uv=={uv_version.group(1)}" in runs
    commands = [c.strip() for k, args in builder if k == "RUN" for c in args.split("&&")]
    syncs = [c for c in commands if c.startswith("uv sync")]
    assert len(syncs) == 2
    assert all("--locked" in s and "--no-dev" in s and "--no-editable" in s for s in syncs)


def test_dockerignore_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    # The dev-only workspace members' manifests: uv checks the lock against them.
    members = {"tests/testkit/pyproject.toml", "perf/pyproject.toml"}
    assert (
        allowed
        == {"pyproject.toml", "uv.lock", "README.md", "server/", "clients/python/"} | members
    )
    assert {"**/*.pem", "**/*.key", "**/.env"} <= set(lines)


def _copy(source: Path, destination: Path, *, into_dir: bool) -> None:
    """Docker's COPY: a directory's contents go into the destination directory."""
    if source.is_dir():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)
        return
    target = destination / source.name if into_dir else destination
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_builder_stage_install_runs_without_docker(tmp_path: Path) -> None:
    """Replays the builder stage's COPY and `uv sync` steps into a scratch venv.

    Not an image build (see test_image_builds): it checks that the lock installs
    with exactly these flags, that no dev tool gets in, and that the installed
    wheels carry the entry points and data files the image relies on.
    """
    context, venv = tmp_path / "src", tmp_path / "venv"
    context.mkdir()
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    for keyword, args in stages(DOCKERFILE.read_text())[0]:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
        elif keyword == "COPY":
            *sources, destination = args.split()
            into_dir = len(sources) > 1 or destination.endswith("/")
            for source in sources:
                _copy(ROOT / source, context / destination, into_dir=into_dir)
        elif keyword == "RUN":
            for command in (c.strip() for c in args.split("&&")):
                if command.startswith(("uv sync", "/opt/venv/bin/python")):
                    argv = shlex.split(command.replace("/opt/venv", str(venv)))
                    if argv[0] == "uv":
                        argv[0] = str(uv_binary())
                    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": sys.executable}
                    result = subprocess.run(
                        argv, cwd=context, env=env, capture_output=True, text=True, check=False
                    )
                    assert result.returncode == 0, f"{command}\n{result.stderr}"
    scripts = {p.name for p in (venv / "bin").iterdir()}
    assert {"kaireon-server", "kaireon-healthcheck", "kaireon"} <= scripts
    assert not {"pytest", "mypy", "ruff", "actionlint", "hadolint"} & scripts
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert list(site.glob("kaireon_server/platform/db/migrations/*.sql"))
    # A real install, not an editable one pointing back at the build context.
    assert not any(str(context) in pth.read_text() for pth in site.glob("*.pth"))
    probe = run([venv / "bin" / "kaireon-healthcheck"], env=env | {"KAIREON_GRPC_PORT": "9"})
    assert probe.returncode == 1
    assert probe.stdout.startswith("unhealthy:")


def _docker_engine() -> str | None:
    """None when a Docker engine answers, else why not."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    info = run([docker, "info", "--format", "{{.ServerVersion}}"])
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine runs here (docker info failed: {detail})"
    return None


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_image_builds() -> None:
    reason = _docker_engine()
    if reason:
        pytest.skip(reason)
    tag = f"kaireon-test:{uuid.uuid4().hex[:12]}"
    sha = run(["git", "rev-parse", "HEAD"]).stdout.strip()
    build_args = {
        "GIT_SHA": sha,
        "GIT_REPO": "https://github.com/kaireon/compliance-plane",
        "IMAGE_NAME": tag,
        "BUILD_STARTED_ON": "2026-11-24T01:00:00Z",
        "SBOM_DIGEST_SHA256": "0" * 64,
    }
    argv = ["docker", "build", "--tag", tag]
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    build = run([*argv, "."])
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    try:
        inspect = run(["docker", "image", "inspect", "--format", "{{json .Config}}", tag])
        assert inspect.returncode == 0, inspect.stderr
        config = inspect.stdout
        assert '"User":"10001:10001"' in config
        assert '"50051/tcp"' in config and '"8080/tcp"' in config
        assert "kaireon-healthcheck" in config
        for name, value in build_args.items():
            assert f"{name}={value}" in config
        probe = run(["docker", "run", "--rm", "--entrypoint", "kaireon-healthcheck", tag])
        assert probe.returncode == 1 and "UNAVAILABLE" in probe.stdout
    finally:
        run(["docker", "image", "rm", "--force", tag])
