"""The scenario file of `sidecar chaos run` (sidecar/chaos/spec.py): a good one parses,
a bad one is refused naming the key and the reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.chaos.spec import ScenarioError, load_scenario, parse_scenario

GOOD: dict[str, Any] = {
    "name": "cart-kill",
    "stubs": ["stubs"],
    "services": {
        "cart": {"command": "python app.py --port {port} --name {name}", "sites": {"lon3": 3}}
    },
    "load": {
        "service": "cart",
        "method": "/shop.v1.Cart/Add",
        "request": {"json": {"item": "apple"}},
        "rate": 50,
        "duration_s": 10,
    },
    "faults": [{"at_s": 3, "action": "kill", "expect": {"traffic_moved_within_s": 2}}],
}


def test_a_good_scenario_parses() -> None:
    sc = parse_scenario(GOOD)
    assert sc.caller_site() == "lon3"
    assert sc.faults[0].target == "busiest"
    assert sc.load.request.json_ == {"item": "apple"}


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    *head, last = path.split(".")
    node: Any = data
    for part in head:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "key", "reason"),
    [
        ("load.rate", _DELETE, "load", "give one of rate"),
        ("load.concurrency", 4, "load", "give one of rate"),
        ("load.service", "nope", "load.service", "no service 'nope'"),
        ("load.method", "Add", "load.method", "pattern"),
        ("services.cart.command", "app --port 1", "services.cart.command", "needs {port}"),
        ("services.cart.command", "app {port} {host}", "services.cart.command", "{host}"),
        ("services.cart.sites", {"Lon 3": 1}, "services.cart.sites.Lon 3", "site name"),
        ("services.cart.colour", "red", "services.cart.colour", "unknown key"),
        ("faults.0.action", "explode", "faults.0.action", "Input should be"),
        ("faults.0.at_s", 30, "faults.0.at_s", "after the load ends"),
        ("faults.0.target", "other-lon3-0", "faults.0.target", "not an instance of cart"),
        ("stubs", [], "load.request.json", "needs `stubs`"),
        ("name", _DELETE, "name", "required"),
    ],
)
def test_bad_scenarios_name_key_and_reason(path: str, value: Any, key: str, reason: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(_with(path, value))
    assert err.value.key == key, str(err.value)
    assert reason in err.value.reason, str(err.value)


def test_a_fault_without_an_instance_cannot_move_traffic() -> None:
    data = _with("faults.0.action", "dns_down")
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    assert err.value.key == "faults.0.expect.traffic_moved_within_s"


def test_faults_in_time_order() -> None:
    data = copy.deepcopy(GOOD)
    data["faults"] = [{"at_s": 5, "action": "kill"}, {"at_s": 2, "action": "dns_down"}]
    with pytest.raises(ScenarioError, match=r"faults\.1\.at_s: before the fault above"):
        parse_scenario(data)


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "tests/chaos/scenarios").glob("*.yaml")), ROOT / "examples/chaos/demo.yaml"],
    ids=lambda p: p.name,
)
def test_shipped_scenarios_parse(path: Path) -> None:
    assert load_scenario(path).faults


def test_the_example_workflow_runs_the_example_scenario() -> None:
    flow = yaml.safe_load((ROOT / "examples/chaos/github-workflow.yml").read_text())
    runs = [step.get("run", "") for step in flow["jobs"]["chaos"]["steps"]]
    assert any("sidecar chaos run examples/chaos/demo.yaml --junit" in r for r in runs)
