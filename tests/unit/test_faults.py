"""Fault injection decisions: shares within tolerance, runtime changes validated."""

import random

import pytest

from sidecar.config import ConfigError, Faults
from sidecar.faults import NO_FAULT, FaultTable, decide


def test_no_faults_means_no_action() -> None:
    """Without faults configured, every call passes untouched."""
    assert decide(None, random.Random(1)) is NO_FAULT


def test_shares_match_percentages() -> None:
    """25% delayed and 10% aborted over 10,000 calls, within 2 points."""
    faults = Faults.model_validate(
        {"delay": {"percent": 25, "ms": 40}, "abort": {"percent": 10, "status": "INTERNAL"}}
    )
    rng = random.Random(7)
    actions = [decide(faults, rng) for _ in range(10_000)]
    delayed = sum(a.delay_s == 0.04 for a in actions) / 100
    aborted = sum(a.abort_status == "INTERNAL" for a in actions) / 100
    assert 23 <= delayed <= 27
    assert 8 <= aborted <= 12


def test_table_set_validates_and_clears() -> None:
    """Runtime faults replace config ones; bad input names the key and changes nothing."""
    table = FaultTable({"a": Faults.model_validate({"abort": {"percent": 100}}), "b": None})
    assert table.get("b") is None
    assert table.get("a") is not None
    with pytest.raises(ConfigError) as err:
        table.set("a", {"abort": {"percent": 150}})
    assert err.value.key == "faults.a.abort.percent"
    assert table.dump()["a"]["abort"]["percent"] == 100
    table.set("b", {"delay": {"percent": 50, "ms": 5}})
    assert set(table.dump()) == {"a", "b"}
    table.clear("a")
    assert set(table.dump()) == {"b"}
    table.clear()
    assert table.dump() == {}
