"""Outbound routes from the config's `routes` list: match by method and request headers,
first match wins; a route sends to one upstream or splits by weight.

Pure (no I/O). `RuleRouter.resolve(method, authority)` is what the relay's `resolve`
seam calls once per distinct request header block (the result is cached on the block,
sidecar/h2relay/request.py). Rules that read no header are decided there and then;
where a rule for the method reads headers, it answers a `HeaderRoutes` that
`request.prepare` asks with the block's headers, so a header-matched route costs a
call no more than a method-matched one on a repeated header block. A call falls back
to `grpc_services` / `:authority` routing (sidecar/route.py's `Router`) when no rule
matches, so adding a rule never unroutes a call that routed before.

Header matching follows Envoy's `HeaderMatcher` and gRPC's xDS (A28): several values of
one header are joined with "," before matching; `regex` is RE2 (google-re2: linear
time, no backtracking blow-ups on a hostile header) and must match the whole value;
`present` asks only whether the header came; `invert` turns the answer round; a rule
matches when all of its headers do.

A weighted split (`WeightedSplit`) decides per call, not per header block, because one
header block is shared by every call that repeats it. Two ways, both deterministic:
- smooth weighted round robin (nginx's, as in its ngx_http_upstream_round_robin.c): each
  pick adds every backend's weight to its score, takes the highest, and takes the total
  off the winner; over any run of calls each backend's share is within one call of
  `weight / total`, and picks interleave (95/5 sends one call in twenty to the canary,
  not five in a row);
- `hash_on: HEADER`: a call carrying HEADER goes where the hash of its value points
  (blake2b into [0, total), then the cumulative weights), so one request id always
  lands on one backend; calls without the header take the round robin.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sidecar.config import HeaderMatch, RouteConfig, RouteMatch, _compile_regex

Headers = Sequence[tuple[bytes, bytes]]


class HeaderMatcher:
    """One request header condition (config `routes[].match.headers[]`)."""

    __slots__ = ("exact", "invert", "name", "prefix", "present", "regex")

    def __init__(self, spec: HeaderMatch) -> None:
        self.name = spec.name.encode("latin-1")
        self.exact = None if spec.exact is None else spec.exact.encode("latin-1")
        self.prefix = None if spec.prefix is None else spec.prefix.encode("latin-1")
        self.regex: Any = None if spec.regex is None else _compile_regex(spec.regex)
        self.present = spec.present
        self.invert = spec.invert

    def matches(self, headers: Headers) -> bool:
        values = [v for n, v in headers if n == self.name]
        if self.present is not None:
            found = bool(values) == self.present
        elif not values:
            found = False  # absent: no value matches (an inverted matcher then does)
        else:
            value = b",".join(values)
            if self.exact is not None:
                found = value == self.exact
            elif self.prefix is not None:
                found = value.startswith(self.prefix)
            else:
                found = self.regex.fullmatch(value.decode("latin-1")) is not None
        return found != self.invert

    def __repr__(self) -> str:
        how = next(
            f"{k}={getattr(self, k)!r}"
            for k in ("exact", "prefix", "present")
            if getattr(self, k) is not None
        ) if self.regex is None else f"regex={self.regex.pattern!r}"  # fmt: skip
        return f"Header({self.name.decode()} {how}{' inverted' if self.invert else ''})"


class WeightedSplit:
    """Per-call choice among a route's backends in proportion to their weights."""

    __slots__ = ("backends", "cumulative", "hash_on", "scores", "total", "weights")

    def __init__(
        self, backends: Sequence[Any], weights: Sequence[int], hash_on: str | None = None
    ) -> None:
        assert len(backends) == len(weights) and sum(weights) > 0
        self.backends = list(backends)
        self.weights = list(weights)
        self.total = sum(weights)
        self.scores = [0] * len(weights)
        self.cumulative: list[int] = []
        running = 0
        for w in weights:
            running += w
            self.cumulative.append(running)
        self.hash_on = hash_on

    def pick(self, key: bytes | None = None) -> Any:
        """The backend for one call; `key` is its `hash_on` header value, if any."""
        if key is not None and self.hash_on is not None:
            digest = hashlib.blake2b(key, digest_size=8).digest()
            point = int.from_bytes(digest, "big") % self.total
            for i, edge in enumerate(self.cumulative):
                if point < edge:
                    return self.backends[i]
        scores = self.scores
        best = 0
        for i, w in enumerate(self.weights):
            scores[i] += w
            if scores[i] > scores[best]:
                best = i
        scores[best] -= self.total
        return self.backends[best]

    def choose(self, req: Any) -> Any:
        """A call's prepared request (request.Prepared, shared by every call with its
        header block) with this call's backend as its route."""
        return dataclasses.replace(req, route=self.pick(req.split_key))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{getattr(b, 'name', b)}={w}" for b, w in zip(self.backends, self.weights, strict=True)
        )
        return f"WeightedSplit({parts}{f' hash_on={self.hash_on}' if self.hash_on else ''})"


class Rule:
    """One `routes[]` entry: its match and what a matching call gets (a Route)."""

    __slots__ = ("headers", "method", "service", "target")

    def __init__(self, match: RouteMatch, target: Any) -> None:
        self.service = match.service
        self.method = match.method
        self.headers = [HeaderMatcher(h) for h in match.headers]
        self.target = target

    def takes_method(self, method: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.service is not None:
            service, sep, _ = method.lstrip("/").partition("/")
            return bool(sep) and service == self.service
        return True

    def takes_headers(self, headers: Headers) -> bool:
        return all(m.matches(headers) for m in self.headers)

    def __repr__(self) -> str:
        what = self.method or (f"/{self.service}/*" if self.service else "*")
        return f"Rule({what} {self.headers} -> {getattr(self.target, 'name', self.target)})"


class HeaderRoutes:
    """The rules for one method that read headers, in order, and what follows them:
    `select(headers)` is the first that matches, else `fallback` (a Route or None)."""

    __slots__ = ("fallback", "reads", "rules")

    def __init__(self, rules: Sequence[Rule], fallback: Any) -> None:
        self.rules = list(rules)
        self.fallback = fallback
        # header names some rule reads (request.prepare_split re-prepares a block whose
        # per-call tail holds one of them)
        self.reads = frozenset(m.name for r in rules for m in r.headers)

    def select(self, headers: Headers) -> Any:
        for rule in self.rules:
            if rule.takes_headers(headers):
                return rule.target
        return self.fallback

    def __repr__(self) -> str:
        return f"HeaderRoutes({self.rules} else {getattr(self.fallback, 'name', None)})"


class RuleRouter:
    """`routes` in front of the service/authority fallback; answers per method: a Route,
    a HeaderRoutes (its rules read headers), or None (no route)."""

    def __init__(self, rules: Sequence[Rule], fallback: Callable[[str, str | None], Any]) -> None:
        self.rules = list(rules)
        self.fallback = fallback

    def resolve(self, method: str, authority: str | None = None) -> Any:
        candidates: list[Rule] = []
        for rule in self.rules:
            if not rule.takes_method(method):
                continue
            if not rule.headers:
                if not candidates:
                    return rule.target  # first match, no header to read
                return HeaderRoutes(candidates, rule.target)
            candidates.append(rule)
        fallback = self.fallback(method, authority)
        return HeaderRoutes(candidates, fallback) if candidates else fallback

    def __repr__(self) -> str:
        return f"RuleRouter({self.rules})"


def build_rules(
    routes: Sequence[RouteConfig], make_target: Callable[[int, RouteConfig], Any]
) -> list[Rule]:
    """One Rule per `routes[]` entry; `make_target(index, spec)` builds its Route (the
    host's: it knows the clusters and policies)."""
    return [Rule(spec.match, make_target(i, spec)) for i, spec in enumerate(routes)]


def split_weights(spec: RouteConfig, routes: Mapping[str, Any]) -> tuple[list[Any], list[int]]:
    """A split route's backends (Routes, by upstream name) and weights, in config order."""
    parts = spec.split or []
    return [routes[p.upstream] for p in parts], [p.weight for p in parts]
