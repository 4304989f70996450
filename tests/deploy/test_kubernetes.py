"""deploy/kubernetes/ renders with the real kustomize (kubectl's built-in or the
standalone binary), every rendered object passes the Kubernetes OpenAPI schemas
strictly (kubernetes-validate, which vendors them), and the objects keep the
promises docs/SCALING.md and the README make: probes on the gRPC health
service, a drain shorter than the termination grace, non-root and read-only,
settings the server knows, secrets referenced and never committed."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kaireon_server.platform.health import LIVENESS_SERVICE

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
TARGETS = ["base", "overlays/production"]
# The oldest release the manifests support (preStop `sleep` is beta, on by
# default, from 1.30) and the newest kubernetes-validate knows.
VERSIONS = ["1.30.0", "1.37.0"]


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise AssertionError(
        "rendering deploy/kubernetes needs `kustomize` or `kubectl` on PATH (docs/SCALING.md)"
    )


def render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*kustomize_command(), str(KUBE / target)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=TARGETS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["server"]
    return dict(containers[0])


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_passes_the_kubernetes_schema_strictly(objects, version) -> None:
    kinds = set()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        kinds.add(obj["kind"])
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ConfigMap",
        "ServiceAccount",
    } <= kinds


def test_the_validator_refuses_an_unknown_or_mistyped_field(objects) -> None:
    # The check above could not pass on a broken manifest.
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_probes_use_the_grpc_health_service(objects) -> None:
    server = container(objects)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["grpc"]["port"] == ports["grpc"], probe
    # Readiness follows the database (overall status); liveness and start-up do
    # not, so a PostgreSQL outage never restarts the replicas.
    assert server["readinessProbe"]["grpc"]["service"] == ""
    assert server["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert server["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return dict(one(objects, "ConfigMap")["data"])


def test_ports_and_service_match_the_server_settings(objects) -> None:
    data = config(objects)
    server = container(objects)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": int(data["KAIREON_GRPC_PORT"]), "http": int(data["KAIREON_HTTP_PORT"])}
    service = one(objects, "Service")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert by_name["grpc"]["targetPort"] == "grpc"
    assert service["spec"]["selector"].items() <= (
        one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_graceful_termination_outlasts_the_drain(objects) -> None:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    server = container(objects)
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(config(objects)["KAIREON_SHUTDOWN_GRACE"])
    # Ten seconds at least for stopping the DSAR and flow workers after the drain.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10


def test_runs_non_root_read_only_and_without_privileges(objects) -> None:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    server = container(objects)
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert uid is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    sc = server["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The REST adapter's Unix socket needs a writable TMPDIR.
    assert "/tmp" in {m["mountPath"] for m in server["volumeMounts"]}
    assert "memory" in server["resources"]["limits"]
    assert {"cpu", "memory"} <= server["resources"]["requests"].keys()


def test_availability_objects_agree(objects) -> None:
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    pdb = one(objects, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for obj in (pdb, one(objects, "NetworkPolicy")):
        selector = obj["spec"].get("selector") or obj["spec"]["podSelector"]
        assert selector["matchLabels"].items() <= labels.items()
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


def documented_settings() -> tuple[set[str], list[str]]:
    """Exact names and `PREFIX_*` families from the README's configuration table."""
    readme = (ROOT / "README.md").read_text()
    names: set[str] = set()
    families: list[str] = []
    for line in readme.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for name in re.findall(r"`([A-Z][A-Z0-9_]*\*?)`", first_cell):
            if name.endswith("*"):
                families.append(name[:-1])
            else:
                names.add(name)
        # `KAIREON_PUBLIC_MAX_INFLIGHT` / `_PER_PEER`: a suffix of the first name.
        base = re.search(r"`([A-Z][A-Z0-9_]*)` / `(_[A-Z0-9_]+)`", first_cell)
        if base:
            stem = base.group(1).rsplit("_", 1)[0]
            names.add(base.group(1) + base.group(2))
            names.add(stem + base.group(2))
    return names, families


def test_every_setting_is_one_the_server_documents(objects) -> None:
    names, families = documented_settings()
    server = container(objects)
    used = set(config(objects)) | {e["name"] for e in server["env"]}
    unknown = {n for n in used if n not in names and not any(n.startswith(f) for f in families)}
    assert not unknown, f"not in README.md's configuration table: {sorted(unknown)}"


def test_secrets_are_referenced_never_committed(objects) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"]
    data = config(objects)
    for key in (
        "DATABASE_URL",
        "KAIREON_ENCRYPTION_KEYS",
        "COSIGN_KEY",
        "KAIREON_JWT_HS256_SECRET",
    ):
        assert key not in data
    env = {e["name"]: e for e in container(objects)["env"]}
    for key in ("DATABASE_URL", "KAIREON_APP_DATABASE_URL", "KAIREON_ENCRYPTION_KEYS"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "kaireon-secrets"
    # The signing key is a file from a Secret volume, never an env value.
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["signing"]["secret"]["secretName"] == "kaireon-signing"
    mount = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert env["COSIGN_KEY"]["value"].startswith(mount["signing"] + "/")
    assert data["KAIREON_JWT_PUBLIC_KEY"].startswith(mount["jwt"] + "/")


def test_identity_headers_are_not_trusted_from_the_pod_network(objects) -> None:
    # Identity comes from JWTs here; trusting headers from every pod would let
    # any pod in the cluster choose its tenant.
    data = config(objects)
    assert data["KAIREON_TRUST_HEADERS"] == "false"
    assert "KAIREON_JWT_PUBLIC_KEY" in data
