"""The metric names a PromQL expression selects, read by a small tokenizer.

Enough of PromQL's grammar for names (https://prometheus.io/docs/prometheus/latest/querying/basics/):
strings, comments, numbers and durations are skipped; identifiers inside `{...}` are
label names (but `__name__="x"` names metric x); inside `[...]` a range or subquery
(Grafana's `$__rate_interval` included); the list after `by`, `without`, `on`,
`ignoring`, `group_left`, `group_right` holds label names; an identifier followed by
`(` is a function, an aggregation operator is one even before its `by (...)`. Every
other identifier is a metric name. A character the grammar has no place for raises
ValueError, so an expression this cannot read fails its test instead of passing.
"""

from __future__ import annotations

import re

AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
KEYWORDS = frozenset(
    ["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"]
)
LABEL_LISTS = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|>=|<=|[-+*/%^<>=,(){}\[\]@:])
  | (?P<var>\$\{?\w+\}?)
    """,
    re.VERBOSE,
)


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read PromQL at {pos}: {expr[pos : pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects."""
    toks = tokens(expr)
    depth = 0
    for _, text in toks:
        depth += {"(": 1, ")": -1}.get(text, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    names: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        if text == "{":
            i = _matchers(toks, i + 1, names)
            continue
        if text == "[":
            while i < len(toks) and toks[i][1] != "]":
                i += 1
            if i == len(toks):
                raise ValueError(f"unclosed [ in {expr!r}")
            i += 1
            continue
        if kind == "var":
            raise ValueError(f"a variable outside a range or a string: {text} in {expr!r}")
        if kind == "ident":
            nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
            if text in LABEL_LISTS:
                if nxt == "(":
                    i = _skip_list(toks, i + 2, expr)
                    continue
            elif text in AGGREGATIONS or text in KEYWORDS or nxt == "(":
                pass
            else:
                names.add(text)
        i += 1
    return names


def _matchers(toks: list[tuple[str, str]], i: int, names: set[str]) -> int:
    """Read `label op "value", ...}` from `i`; the index after the closing brace."""
    while i < len(toks) and toks[i][1] != "}":
        window = toks[i : i + 3]
        if (
            len(window) < 3
            or window[0][0] != "ident"
            or window[1][1] not in ("=", "!=", "=~", "!~")
            or window[2][0] != "string"
        ):
            raise ValueError(f"not a label matcher: {' '.join(t for _, t in window)!r}")
        if window[0][1] == "__name__" and window[1][1] == "=":
            names.add(window[2][1][1:-1])
        i += 3
        if i < len(toks) and toks[i][1] == ",":
            i += 1
    if i == len(toks):
        raise ValueError("unclosed {")
    return i + 1


def _skip_list(toks: list[tuple[str, str]], i: int, expr: str) -> int:
    while i < len(toks) and toks[i][1] != ")":
        if toks[i][0] != "ident" and toks[i][1] != ",":
            raise ValueError(f"unexpected {toks[i][1]!r} in a label list of {expr!r}")
        i += 1
    if i == len(toks):
        raise ValueError(f"unclosed label list in {expr!r}")
    return i + 1
