"""The PromQL name reader finds the metric names and only them."""

from __future__ import annotations

import pytest

from tests.deploy.promql import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'sum by (upstream, code) (rate(a_total{code!="OK",x=~"$i"}[$__rate_interval]))',
            {"a_total"},
        ),
        (
            "sum by (u) (rate(a[5m])) / ignoring (code) group_left sum by (u) (rate(b[5m]))",
            {"a", "b"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))", {"h_bucket"}),
        ("time() - max by (s) (last_ts) > 900", {"last_ts"}),
        ("x == 2 and on (instance) y offset 5m", {"x", "y"}),
        ('{__name__="by_name", job="j"}', {"by_name"}),
        ("max_over_time(m[10m:1m]) # a comment naming not_a_metric", {"m"}),
        ("count without (instance) (sidecar:info:sum) > bool 1e3", {"sidecar:info:sum"}),
        ('label_replace(src, "dst", "$1", "src_label", "(.*)")', {"src"}),
    ],
)
def test_names(expr: str, names: set[str]) -> None:
    """Each expression yields exactly its metric names."""
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr", ["rate(a[5m]", "a{b=}", "sum by (a b) ? c", "$x + a", "a{b='c'"])
def test_unreadable_is_an_error(expr: str) -> None:
    """What the reader cannot place raises, rather than passing silently."""
    with pytest.raises(ValueError):
        metric_names(expr)
