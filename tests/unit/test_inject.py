"""`sidecar inject` (sidecar/inject.py and the CLI verb): the sidecar goes into every pod
spec as a native sidecar with its config volume and probes; the app is untouched;
injecting twice changes nothing; other kinds are refused; the output is valid under the
pinned Kubernetes schema (tests/k8s_schema.py)."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.cli import main
from sidecar.inject import InjectError, Options, inject
from tests.k8s_schema import validate

ROOT = Path(__file__).resolve().parents[2]


def app_container(ports: list[int] = [8080]) -> dict[str, Any]:  # noqa: B006 (never mutated)
    return {
        "name": "app",
        "image": "example/app:1",
        "ports": [{"name": f"p{p}", "containerPort": p} for p in ports],
        "readinessProbe": {"grpc": {"port": ports[0]}} if ports else None,
    }


def pod_spec(**extra: Any) -> dict[str, Any]:
    container = {k: v for k, v in app_container().items() if v is not None}
    return {"containers": [container], **extra}


def workload(kind: str, name: str = "web") -> dict[str, Any]:
    labels = {"app": name}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec()}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec()},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def spec_of(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Pod"])
def test_injected_workload_is_valid_and_keeps_the_app(kind: str) -> None:
    doc = workload(kind)
    [out] = inject([doc])
    validate(doc)
    validate(out)
    spec = spec_of(out)
    assert spec["containers"] == spec_of(doc)["containers"], "app containers untouched"
    [sidecar] = spec["initContainers"]
    assert sidecar["name"] == "sidecar" and sidecar["restartPolicy"] == "Always"
    assert sidecar["readinessProbe"]["grpc"] == {"port": 8181}
    assert sidecar["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert {"name": "sidecar-config", "configMap": {"name": "web-sidecar"}} in spec["volumes"]
    assert doc == workload(kind), "the input is not modified"


def test_injecting_twice_changes_nothing() -> None:
    docs = [workload(k) for k in ("Deployment", "StatefulSet", "DaemonSet", "Pod")]
    once = inject(docs)
    assert inject(once) == once


def test_the_sidecar_comes_first_among_init_containers() -> None:
    """The app's own init containers may call through the mesh: the sidecar runs first."""
    doc = workload("Deployment")
    spec_of(doc)["initContainers"] = [{"name": "migrate", "image": "example/migrate:1"}]
    spec_of(doc)["volumes"] = [{"name": "data", "emptyDir": {}}]
    [out] = inject([doc])
    assert [c["name"] for c in spec_of(out)["initContainers"]] == ["sidecar", "migrate"]
    assert [v["name"] for v in spec_of(out)["volumes"]] == ["data", "sidecar-config"]
    validate(out)
    assert inject([out]) == [out]


def test_lists_are_injected_item_by_item() -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [workload("Deployment"), workload("Pod", "job")],
    }
    [out] = inject([listed])
    assert [spec_of(i)["initContainers"][0]["name"] for i in out["items"]] == ["sidecar"] * 2
    assert spec_of(out["items"][1])["volumes"][0]["configMap"]["name"] == "job-sidecar"
    for item in out["items"]:
        validate(item)


def test_other_kinds_are_refused_with_the_document_and_kind() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}}
    with pytest.raises(InjectError, match=r"document 1 \(Service web\): kind Service runs no pods"):
        inject([workload("Deployment"), service])
    assert inject([service], Options(pass_others=True)) == [service]


def test_a_port_the_app_already_uses_is_refused() -> None:
    doc = workload("Deployment")
    spec_of(doc)["containers"][0]["ports"] = [{"containerPort": 9901}]
    with pytest.raises(InjectError, match=r"uses port 9901.*--admin-port"):
        inject([doc])
    [out] = inject([doc], Options(admin_port=9902))
    assert spec_of(out)["containers"][0]["ports"] == [{"containerPort": 9901}]
    validate(out)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["Deployment", "StatefulSet", "DaemonSet", "Pod"]),
    ports=st.lists(
        st.integers(1, 65535).filter(lambda p: p not in (8181, 9901)), max_size=4, unique=True
    ),
    inits=st.integers(0, 3),
    with_volume=st.booleans(),
)
def test_any_pod_keeps_its_app_and_injection_is_idempotent(
    kind: str, ports: list[int], inits: int, with_volume: bool
) -> None:
    doc = workload(kind)
    spec = spec_of(doc)
    spec["containers"] = [{k: v for k, v in app_container(ports).items() if v is not None}]
    spec["initContainers"] = [{"name": f"init{i}", "image": "busybox"} for i in range(inits)]
    if with_volume:
        spec["volumes"] = [{"name": "sidecar-config", "configMap": {"name": "old"}}]
    before = copy.deepcopy(doc)
    [once] = inject([doc])
    assert inject([once]) == [once]
    assert spec_of(once)["containers"] == spec_of(before)["containers"]
    assert [c["name"] for c in spec_of(once)["initContainers"]][1:] == [
        f"init{i}" for i in range(inits)
    ]
    assert [v["configMap"]["name"] for v in spec_of(once)["volumes"]] == ["web-sidecar"]
    validate(once)


def test_cli_reads_a_stream_from_stdin_and_refuses_a_service(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = yaml.safe_dump_all([workload("Deployment"), workload("DaemonSet", "agent")])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stream))
    assert main(["inject", "-", "--image", "registry.local/sidecar:1"]) == 0
    out = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [spec_of(d)["initContainers"][0]["image"] for d in out] == [
        "registry.local/sidecar:1"
    ] * 2
    for doc in out:
        validate(doc)
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(yaml.safe_dump({"kind": "ConfigMap", "metadata": {"name": "x"}}))
    )
    assert main(["inject", "-"]) == 1
    assert "kind ConfigMap runs no pods" in capsys.readouterr().err


def test_cli_on_the_deploy_manifests_is_idempotent(tmp_path: Path) -> None:
    """On the demo's manifests (a Deployment that carries a sidecar already, a Service and
    a PDB passed through): a second run gives the first run's output, valid."""
    docs = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/base/playlist.yaml").read_text())
        if d
    ]
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cmd = [
        sys.executable,
        "-m",
        "sidecar",
        "inject",
        str(path),
        "--pass-others",
        "--config-map",
        "playlist-sidecar",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    path.write_text(first)
    second = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    assert first == second
    for doc in yaml.safe_load_all(first):
        validate(doc)
