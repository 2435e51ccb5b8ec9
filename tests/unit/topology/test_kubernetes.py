"""The topology as the Messaging Topology Operator's resources, and deploy/k8s: valid against
the operator's, KEDA's and Kubernetes' published schemas (vendored), the same objects `apply`
declares when read back, nothing that deletes messages, no password written, one replica at
most per shard."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common.cli import package_version
from operations.cli import main
from tests.support import topologies
from tests.support.kubernetes import documents, problems
from topology import kubernetes, workloads
from topology.access import desired_users
from topology.compile import compile_topology
from topology.spec import DEFAULT_TOPOLOGY_FILE, load_spec

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy" / "k8s"
SPEC = load_spec(DEFAULT_TOPOLOGY_FILE)


def _resources(vhost: str = "orders") -> list[dict[str, object]]:
    return kubernetes.resources(
        SPEC, compile_topology(SPEC), vhost, desired_users(SPEC), cluster="bus", namespace="shop"
    )


def test_the_resources_validate_against_the_operators_schemas() -> None:
    resources = _resources()
    kinds = {r["kind"] for r in resources}
    assert kinds == {"Vhost", "Policy", "Exchange", "Queue", "Binding", "User", "Permission"}
    for resource in resources:
        assert not problems(resource), (resource["kind"], problems(resource))


def test_the_resources_are_the_objects_apply_declares() -> None:
    objects, users = kubernetes.from_resources(_resources())
    assert objects == compile_topology(SPEC)
    expected = [
        u.__class__(u.name, "", u.tags, u.configure, u.write, u.read) for u in desired_users(SPEC)
    ]
    assert sorted(users, key=lambda u: u.name) == sorted(expected, key=lambda u: u.name)


def test_no_resource_deletes_messages_or_holds_a_password() -> None:
    resources = _resources()
    for r in resources:
        spec = r["spec"]
        assert isinstance(spec, dict)
        if r["kind"] in ("Queue", "Vhost"):
            assert spec["deletionPolicy"] == "retain", r["metadata"]
        assert "password" not in str(spec).lower() or r["kind"] == "Permission", r
    users = [r for r in resources if r["kind"] == "User"]
    assert {r["spec"]["importCredentialsSecret"]["name"] for r in users} == {  # type: ignore[index]
        kubernetes.secret_name(u) for u in desired_users(SPEC)
    }


def test_the_hash_exchanges_and_their_weighted_bindings_come_through() -> None:
    resources = _resources()
    for d, ds in SPEC.downstreams.items():
        [exchange] = [r for r in resources if r["kind"] == "Exchange" and r["spec"]["name"] == d]  # type: ignore[index]
        assert exchange["spec"]["type"] == "x-consistent-hash"  # type: ignore[index]
        assert exchange["spec"]["arguments"] == {"hash-header": "order_id"}  # type: ignore[index]
        shards = [
            r["spec"]
            for r in resources
            if r["kind"] == "Binding" and r["spec"]["source"] == d  # type: ignore[index]
        ]
        assert sorted(s["destination"] for s in shards) == [f"{d}.{i}" for i in range(ds.shards)]  # type: ignore[index]
        assert {s["routingKey"] for s in shards} == {"1"}  # type: ignore[index]


def test_export_prints_the_resources(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@localhost:5672/shop")
    assert main(["export", "--format", "k8s", "--cluster", "bus", "--namespace", "shop"]) == 0
    printed = documents(capsys.readouterr().out)
    assert printed == _resources("shop")


def test_a_sixth_downstream_needs_no_edit_to_deploy_k8s_but_a_regeneration(tmp_path: Path) -> None:
    data = topologies.fast_data()
    data["downstreams"]["shipping_notifier"] = {"shards": 2}
    spec = topologies.spec_of(data)
    scalers = workloads.scalers(spec, "ns", "/")
    assert {s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"] for s in scalers} == {  # type: ignore[index]
        f"workers-{d.replace('_', '-')}": ds.shards for d, ds in spec.downstreams.items()
    }


def test_deploy_k8s_is_what_the_file_generates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("AMQP_URL", raising=False)
    assert main(["k8s", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in DEPLOY.iterdir() if p.suffix == ".yaml")
    for name in written:
        assert (tmp_path / name).read_text() == (DEPLOY / name).read_text(), (
            f"deploy/k8s/{name} is stale: run python -m topology k8s"
        )


def _deployed() -> list[dict[str, object]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name != "kustomization.yaml":  # kustomize's own file, not an API object
            docs += documents(path.read_text())
    return docs


def test_every_manifest_validates_against_the_vendored_schemas() -> None:
    docs = _deployed()
    assert {d["kind"] for d in docs} >= {
        "Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "ServiceMonitor",
        "ConfigMap", "Job", "Queue", "Exchange", "Binding", "Policy", "User", "Permission",
    }  # fmt: skip
    for doc in docs:
        assert not problems(doc), (doc["kind"], doc["metadata"], problems(doc))  # type: ignore[index]


def test_each_downstream_scales_from_one_to_its_shard_count_on_its_messages() -> None:
    docs = _deployed()
    scalers = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in docs if d["kind"] == "ScaledObject"
    }  # type: ignore[index]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}  # type: ignore[index]
    for d, ds in SPEC.downstreams.items():
        name = f"workers-{d.replace('_', '-')}"
        scaler = scalers[name]
        assert (scaler["minReplicaCount"], scaler["maxReplicaCount"]) == (1, ds.shards)
        [trigger] = scaler["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["protocol"] == "http"
        assert trigger["metadata"]["value"] == str(ds.scale_out_lag)
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert container["command"][:4] == ["python", "-m", "workers", d]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        env = {e["name"]: e for e in container["env"]}
        for secret in ("AMQP_URL", "WORKERS_DSN", "RABBITMQ_MANAGEMENT_URL"):
            assert "secretKeyRef" in env[secret]["valueFrom"], secret
    assert deployments["relay"]["spec"]["strategy"] == {"type": "Recreate"}  # type: ignore[index]
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret is written in deploy/k8s"


def test_the_manifests_name_the_installed_version_and_the_operator_resources_a_cluster() -> None:
    docs = _deployed()
    images = {
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    }
    assert images == {f"order-event-bus:{package_version()}"}


def test_a_broken_manifest_is_caught() -> None:
    [queue] = [d for d in _resources() if d["kind"] == "Queue"][:1]
    queue["spec"]["durabel"] = True  # type: ignore[index]
    assert any("durabel" in p for p in problems(queue))
    scaler = workloads.scalers(SPEC, "ns", "/")[0]
    scaler["spec"]["minReplicaCount"] = 9  # type: ignore[index]
    assert "minReplicaCount must be at most maxReplicaCount" in problems(scaler)


def test_the_manifests_apply_to_a_cluster_where_one_answers() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl")
    answered = subprocess.run(
        [kubectl, "cluster-info"], capture_output=True, timeout=20, check=False
    )
    if answered.returncode != 0:
        pytest.skip("no Kubernetes cluster answers kubectl here (validated offline instead)")
    done = subprocess.run(
        [kubectl, "apply", "--dry-run=server", "-k", str(DEPLOY)], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
