"""deploy/kubernetes/: every manifest and both overlays' kustomize output valid under the
pinned Kubernetes schema (strict), and the pods shaped as the README says: a native
sidecar with probes on its inbound listener, a stop budget that covers the drain, non-root
and read-only, a headless Service with a named gRPC port and a PDB per Deployment, and
sidecar configs that `sidecar check` accepts, one site each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import parse_config
from tests.k8s_schema import kustomize, validate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
SITES = ["lon3", "sto3"]
SERVICES = ["accesspoint", "playlistview", "playlist", "metadata", "search"]
APP_GRACE_S = 2  # the apps' --grace in the manifests


def base_resources() -> list[Path]:
    """The base's resource files (not its kustomization, not the sidecar configs)."""
    return sorted(p for p in (DEPLOY / "base").glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", base_resources(), ids=lambda p: p.name)
def test_every_base_manifest_is_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate(doc)


@pytest.fixture(scope="module", params=SITES)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(DEPLOY / "overlays" / request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_overlay_output_is_valid(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    site, docs = rendered
    for doc in docs:
        validate(doc)
        assert doc["metadata"].get("namespace") == "music", doc["metadata"]
        assert doc["metadata"]["labels"]["mesh.example/site"] == site
    assert set(by_kind(docs, "Deployment")) == set(SERVICES)
    assert set(by_kind(docs, "Service")) == set(SERVICES)
    assert set(by_kind(docs, "PodDisruptionBudget")) == set(SERVICES)


def test_a_strict_schema_refuses_an_unknown_field(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The check can fail: a misspelt field in a pod spec is refused."""
    import kubernetes_validate

    deployment = dict(by_kind(rendered[1], "Deployment")["playlist"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def sidecar_config(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "sidecar-config"]
    config_map = by_kind(docs, "ConfigMap")[volume["configMap"]["name"]]
    data: dict[str, Any] = yaml.safe_load(config_map["data"]["sidecar.yaml"])
    return data


def test_pods_run_a_native_sidecar_that_drains_within_the_grace_period(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    site, docs = rendered
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        [sidecar] = pod["initContainers"]
        [app] = pod["containers"]
        assert sidecar["restartPolicy"] == "Always", name
        assert sidecar["readinessProbe"]["grpc"] == {"port": 8181}  # the sidecar's own health
        assert sidecar["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
        assert sidecar["resources"]["requests"] and sidecar["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in (sidecar, app):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False

        config = parse_config(sidecar_config(docs, deployment))  # what `sidecar check` does
        assert config.site == site and config.service == name
        assert config.registration is None and config.discovery.naming == "kubernetes"
        assert config.admin.listen.startswith("127.0.0.1:"), "admin stays on loopback"
        # The stop: the app's preStop (callers' DNS lets go), its drain, then the sidecar's.
        linger = app["lifecycle"]["preStop"]["sleep"]["seconds"]
        ttl = max(5.0, config.discovery.ttl_floor_s)  # CoreDNS answers TTL 5
        assert linger >= ttl * (1 + config.discovery.jitter) + 1
        budget = linger + APP_GRACE_S + config.drain_grace_s
        assert pod["terminationGracePeriodSeconds"] >= budget, (name, budget)
        assert app["args"][app["args"].index("--grace") + 1] == str(APP_GRACE_S)


def test_headless_services_name_their_grpc_port(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """`_grpc._tcp.SERVICE.music.svc...`: the name the kubernetes preset looks up."""
    for name, service in by_kind(rendered[1], "Service").items():
        assert service["spec"]["clusterIP"] == "None"
        assert [p["name"] for p in service["spec"]["ports"]] == ["grpc"]
        deployment = by_kind(rendered[1], "Deployment")[name]
        [sidecar] = deployment["spec"]["template"]["spec"]["initContainers"]
        inbound = parse_config(sidecar_config(rendered[1], deployment)).inbound
        assert inbound is not None
        assert service["spec"]["ports"][0]["targetPort"] == int(inbound.listen.rsplit(":")[1])
        assert {"name": "grpc", "containerPort": 8181, "protocol": "TCP"} in sidecar["ports"]


def test_sto3_configs_differ_from_the_base_in_the_site_only() -> None:
    for name in SERVICES:
        base = yaml.safe_load((DEPLOY / "base" / "sidecar" / f"{name}.yaml").read_text())
        sto3 = yaml.safe_load(
            (DEPLOY / "overlays" / "sto3" / "sidecar" / f"{name}.yaml").read_text()
        )
        assert base["site"] == "lon3" and sto3["site"] == "sto3"
        assert {**base, "site": "sto3"} == sto3, name
