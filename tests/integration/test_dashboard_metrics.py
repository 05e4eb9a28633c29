"""Every metric name the Grafana dashboard and the alert rules query is exported by a
running sidecar after traffic (deploy/grafana/sidecar.json, deploy/prometheus/alerts.yml)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import metric_names
from tests.integration.observed import Observed, observed_mesh, traffic
from tests.integration.procs import http

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sidecar.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    with observed_mesh(tmp_path_factory.mktemp("observed")) as mesh:
        yield mesh


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard (panels and variables), by where it is."""
    doc = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            # label_values(SELECTOR, label): the selector is PromQL
            selector = var["definition"].removeprefix("label_values(").rpartition(",")[0]
            found[f"variable {var['name']}"] = selector
    return found


def alert_queries() -> dict[str, str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {
        f"alert {rule['alert']}": rule["expr"] for group in doc["groups"] for rule in group["rules"]
    }


def exported(text: str) -> set[str]:
    """The sample names in a Prometheus text exposition (no HELP/TYPE-only families)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


async def test_every_queried_metric_is_exported(mesh: Observed) -> None:
    """After OK, retried, failing, shed, deadline-dropped and unrouted calls, the two
    sidecars' /metrics hold a sample of every name a panel, variable or alert reads."""
    results = await traffic(mesh)
    assert {code for code, _ in results["ok"]} == {"OK"}
    assert any(t.get("x-sidecar-error") == "overloaded" for _, t in results["burst"])
    names: set[str] = set()
    for side in (mesh.caller, mesh.server):
        status, body = http("GET", side.url("/metrics"))
        assert status == 200
        names |= exported(body.decode())
    queries = {**dashboard_queries(), **alert_queries()}
    assert len(queries) > 30
    missing = {
        where: sorted(metric_names(expr) - names)
        for where, expr in queries.items()
        if metric_names(expr) - names
    }
    assert not missing, missing
    # the per-site view the dashboard is built on: attempts by the endpoint's site
    _, body = http("GET", mesh.caller.url("/metrics"))
    text = body.decode()
    assert 'sidecar_endpoint_attempts_total{endpoint="' in text
    assert 'sidecar_endpoints{site="lon3",state="ejected",upstream="flaky"} 1.0' in text
    assert 'sidecar_info{service="",site="lon3"} 1.0' in text
