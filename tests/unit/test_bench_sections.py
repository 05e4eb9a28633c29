"""The scale, streams and overload sections' pure parts: metrics parsing, percentiles, tables."""
# ruff: noqa: RUF001  (the tables use typographic dashes and signs on purpose)

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.grpc_client import percentile
from bench.overload import OverloadSettings, _markdown
from bench.sections import metric, table
from bench.targets import sidecar_config
from sidecar.config import parse_config

METRICS = """\
# HELP sidecar_dropped_requests_total Requests dropped
# TYPE sidecar_dropped_requests_total counter
sidecar_dropped_requests_total{reason="overloaded"} 12.0
sidecar_dropped_requests_total{reason="deadline"} 3.0
sidecar_dropped_requests_created{reason="deadline"} 1.7e+09
sidecar_channels_open 7.0
sidecar_channels_open_extra 100.0
"""


def test_metric_sums_matching_samples_only() -> None:
    """Label filters narrow the sum; `_created` and longer names are not counted."""
    assert metric(METRICS, "sidecar_dropped_requests_total") == 15
    assert metric(METRICS, "sidecar_dropped_requests_total", reason="deadline") == 3
    assert metric(METRICS, "sidecar_channels_open") == 7
    assert metric(METRICS, "sidecar_absent") == 0


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200))
def test_percentile_is_an_element_and_ordered(values: list[float]) -> None:
    """Nearest rank: p50 and p99 are values of the list, p50 <= p99 <= max."""
    p50, p99 = percentile(values, 50), percentile(values, 99)
    assert p50 in values and p99 in values
    assert p50 is not None and p99 is not None and p50 <= p99 <= max(values)
    assert percentile([], 50) is None


def test_table_has_a_separator_and_one_row_per_item() -> None:
    """A markdown table: header, separator, rows, with None shown as a dash."""
    lines = table(["a", "b"], [[1, None], [2.5, "x"]])
    assert lines[1] == "|---|---|"
    assert len(lines) == 4 and "–" in lines[2]


def test_admission_config_fits_the_schema() -> None:
    """The overload run's inbound admission section is valid sidecar config."""
    cfg = sidecar_config(inbound="127.0.0.1:1", app="127.0.0.1:2", admin="127.0.0.1:3")
    cfg["inbound"]["admission"] = {  # type: ignore[index]
        "max_concurrency": 2,
        "queue_size": 16,
        "codel_target_ms": 5.0,
        "codel_interval_ms": 100.0,
    }
    assert parse_config(cfg).inbound.admission.max_concurrency == 2  # type: ignore[union-attr]


def _run(path: str, load: str, factor: float, goodput: float, p99: float) -> dict[str, object]:
    return {
        "path": path, "load": load, "factor": factor, "offered_per_s": 100 * factor,
        "goodput": goodput, "p50_ms": p99 / 2, "p99_ms": p99, "drop_ratio": 0.0,
        "errors": {}, "sidecar_cpu_us_per_call": None,
    }  # fmt: skip


def test_overload_verdicts() -> None:
    """Goodput >= 90% of 1x and p99 under 2x unloaded + target are judged per path."""
    s = OverloadSettings(loads=(1.0, 4.0))
    data = {
        "capacity": {"concurrency": 8, "ok_per_s": 100.0, "p50_ms": 20.0},
        "admission": {},
        "runs": [
            _run("shedding", "unloaded", 0.25, 25, 20),
            _run("shedding", "1x", 1, 100, 30),
            _run("shedding", "4x", 4, 95, 40),
            _run("direct", "unloaded", 0.25, 25, 20),
            _run("direct", "1x", 1, 100, 30),
            _run("direct", "4x", 4, 50, 900),
        ],
    }
    text = "\n".join(_markdown(data, s))
    assert "- shedding: goodput at 4× = 95% of 1× (met" in text
    assert "worst OK p99 40.0 ms vs limit 45.0 ms (met)" in text
    assert "- direct: goodput at 4× = 50% of 1× (not met" in text
