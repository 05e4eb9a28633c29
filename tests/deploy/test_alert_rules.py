"""The alert rules load in Prometheus's own checker and fire on the series their unit
tests feed them (promtool, from Debian's `prometheus` package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's `prometheus` package "
            "(apt-get install prometheus; .ci/run and `make test` install it as root)"
        )
    return found


def alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts the file, every rule counted."""
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules`: the series in alerts_test.yml give the alerts it expects."""
    out = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_unit_test() -> None:
    """No alert goes untested: each one is expected to fire somewhere in alerts_test.yml."""
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert {str(rule["alert"]) for rule in alerts()} <= fired


def test_every_rule_selects_sidecar_metrics() -> None:
    """Each rule's expression reads sidecar_ series only (the names a live sidecar must
    export, checked in test_dashboard_metrics.py)."""
    for rule in alerts():
        names = metric_names(str(rule["expr"]))
        assert names, rule["alert"]
        assert all(n.startswith("sidecar_") for n in names), (rule["alert"], names)
