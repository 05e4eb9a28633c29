"""The cluster: one upstream's endpoints across sites and priorities, and the pick.

Pure (no I/O). Discovery hands whole endpoint sets per site to `update()`, which
applies them as a diff so unchanged endpoints keep their state (in-flight count,
latency EWMA, breaker, health-check streak). The data plane asks `pick()` for a
host, calls `host.start(now)` before the attempt and `host.finish(outcome,
latency, now)` after it, exactly once. An active health checker, when
configured, reports through `record_health_check()`.

A pick, in order, and why:
1. A breaker whose open time is up gets the request as its single probe
   (half-open), whatever tier it is in: otherwise a tier that spilled away
   could never learn its hosts recovered.
2. A tier (site, SRV priority) is drawn by the current tier loads (see
   `sidecar.balancer.tiers`); a request with a hash key draws it from the key's
   hash so ring-hash affinity survives a spill. In panic every host is one tier.
3. That tier's balancer picks among its healthy hosts (healthy = breaker closed
   and health check passing; discovery only hands over live records).
4. If `exclude` (a retry) empties the tier, the other tiers are tried in
   failover order, so a retry goes to another site once the local one is used up.

Everything that depends on health (tiers, loads, the balancers) is a cached
plan, rebuilt only when the endpoint set or some host's health changes, or when
an open breaker's time is up; so a pick over 1,000 endpoints costs what one over
10 does.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.balancer import DEFAULT, Balancer, make_balancer
from sidecar.balancer.ewma import PeakEwma
from sidecar.balancer.ring_hash import key_hash
from sidecar.balancer.tiers import tier_loads
from sidecar.breaker import BreakerGroup, BreakerState, EndpointBreaker
from sidecar.breaker.metrics import BreakerMetrics
from sidecar.config import Breaker as BreakerConfig
from sidecar.config import HealthCheck as HealthCheckConfig
from sidecar.config import UpstreamConfig
from sidecar.endpoint import Endpoint
from sidecar.health import HealthCheckState
from sidecar.outcome import Outcome

Key = tuple[str, int]
_NO_EXCLUDE: frozenset[Key] = frozenset()


class Host:
    """An endpoint with the state the policies keep for it."""

    __slots__ = (
        "breaker",
        "endpoint",
        "ewma",
        "failures",
        "health",
        "in_flight",
        "last_used",
        "requests",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        breaker: EndpointBreaker | None = None,
        health: HealthCheckState | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.breaker = breaker
        self.health = health
        self.ewma = PeakEwma()
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.last_used = 0.0

    def start(self, now: float) -> None:
        self.in_flight += 1
        self.requests += 1
        self.last_used = now

    def finish(self, outcome: Outcome, latency_s: float, now: float) -> None:
        self.in_flight = max(self.in_flight - 1, 0)
        self.last_used = now
        if outcome is Outcome.CANCELLED:
            return  # the caller gave up: says nothing about this endpoint
        failed = outcome.is_failure
        if failed:
            self.failures += 1
        self.ewma.observe(latency_s, now, failed=failed, overloaded=outcome is Outcome.OVERLOADED)
        if self.breaker is not None:
            self.breaker.record(outcome, now)

    @property
    def breaker_state(self) -> BreakerState:
        return BreakerState.CLOSED if self.breaker is None else self.breaker.state

    @property
    def healthy(self) -> bool:
        """May take ordinary traffic: breaker closed and health check passing."""
        return self.breaker_state is BreakerState.CLOSED and (
            self.health is None or self.health.healthy
        )

    @property
    def available(self) -> bool:
        return self.healthy

    @property
    def tier(self) -> str:
        return f"{self.endpoint.site}/p{self.endpoint.priority}"

    def snapshot(self, now: float) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "address": ep.address,
            "site": ep.site,
            "priority": ep.priority,
            "weight": ep.weight,
            "target": ep.target,
            "tier": self.tier,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "ewma_ms": round(self.ewma.value(now) * 1000.0, 3),
            "breaker": self.breaker_state.value,
            "breaker_trips": 0 if self.breaker is None else self.breaker.trips,
            "health_check": None if self.health is None else self.health.healthy,
            "healthy": self.healthy,
        }

    def __repr__(self) -> str:
        return f"<Host {self.endpoint.address} {self.tier} w={self.endpoint.weight}>"


@dataclass(slots=True)
class _Tier:
    site: str
    priority: int
    hosts: list[Host]
    healthy: list[Host]
    balancer: Balancer | None = None
    load: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.site}/p{self.priority}"


@dataclass(slots=True)
class _Plan:
    tiers: list[_Tier]
    panic: bool
    normalized_health: float
    valid_until: float
    probes: list[Host]
    cum_loads: list[float] = field(default_factory=list)  # running sum over `tiers`
    panic_balancer: Balancer | None = None


@dataclass(eq=False)
class Cluster:
    name: str
    sites: Sequence[str] = ("",)
    rng: random.Random = field(default_factory=random.Random)
    lb: str = DEFAULT
    hash_key_name: str = "x-hash-key"  # request metadata the data plane passes as hash_key
    overprovisioning_factor: float = 1.4
    panic_threshold_percent: float = 50.0
    breaker: BreakerConfig | None = field(default_factory=BreakerConfig)  # None: no breakers
    health_check: HealthCheckConfig | None = None
    breaker_metrics: BreakerMetrics | None = field(default=None, repr=False)  # None: nowhere
    _hosts: dict[Key, Host] = field(default_factory=dict, repr=False)
    _by_site: dict[str, set[Key]] = field(default_factory=dict, repr=False)
    _plan: _Plan | None = field(default=None, repr=False)
    _breakers: BreakerGroup = field(init=False, repr=False)

    def __post_init__(self) -> None:
        make_balancer(self.lb, [], self.rng)  # refuse an unknown name now, not at first pick
        self._breakers = BreakerGroup(self.name, self.breaker, self.breaker_metrics)

    @classmethod
    def from_config(
        cls,
        name: str,
        upstream: UpstreamConfig,
        sites_in_order: Sequence[str],
        rng: random.Random | None = None,
        breaker_metrics: BreakerMetrics | None = None,
    ) -> Cluster:
        """Build from `upstreams.<name>` of the config; sites local first."""
        return cls(
            name,
            tuple(sites_in_order),
            rng or random.Random(),
            lb=upstream.lb,
            hash_key_name=upstream.hash_key,
            overprovisioning_factor=upstream.overprovisioning_factor,
            panic_threshold_percent=upstream.panic_threshold_percent,
            breaker=upstream.breaker,
            health_check=upstream.health_check,
            breaker_metrics=breaker_metrics,
        )

    # -- endpoint set -------------------------------------------------------------

    def update(self, site: str, endpoints: Iterable[Endpoint], now: float) -> None:
        """Replace `site`'s endpoint set; unchanged endpoints keep their Host."""
        new = {ep.key: ep for ep in endpoints}
        old = self._by_site.get(site, set())
        for key in old - new.keys():
            host = self._hosts.pop(key, None)
            if host is not None and host.breaker is not None:
                host.breaker.discard()
        for key, ep in new.items():
            host = self._hosts.get(key)
            if host is None:
                self._hosts[key] = self._new_host(ep)
            elif host.endpoint != ep:
                host.endpoint = ep  # weight/priority changed: same state, new fields
        self._by_site[site] = set(new)
        self._breakers.size = len(self._hosts)
        self._invalidate()

    def _new_host(self, ep: Endpoint) -> Host:
        breaker = None
        if self.breaker is not None:
            breaker = self._breakers.new(ep.address, self._invalidate)
        health = None
        if self.health_check is not None:
            hc = self.health_check
            health = HealthCheckState(hc.unhealthy_threshold, hc.healthy_threshold)
        return Host(ep, breaker=breaker, health=health)

    @property
    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def host(self, key: Key) -> Host | None:
        return self._hosts.get(key)

    def record_health_check(self, key: Key, ok: bool, now: float) -> None:
        """An active health check of endpoint `key` passed (`ok`) or failed."""
        host = self._hosts.get(key)
        if host is None or host.health is None:
            return
        if host.health.record(ok, now):
            self._invalidate()

    # -- the pick -----------------------------------------------------------------

    def pick(
        self,
        now: float,
        *,
        hash_key: bytes | None = None,
        exclude: Collection[Key] = _NO_EXCLUDE,
    ) -> Host | None:
        """Choose a host for one attempt, or None when nothing can take it."""
        plan = self._plan
        if plan is None or now >= plan.valid_until:
            plan = self._build(now)
        for host in plan.probes:
            if host.endpoint.key not in exclude and host.breaker and host.breaker.probe_due(now):
                host.breaker.begin_probe(now)
                self._invalidate()
                return host
        if plan.panic:
            assert plan.panic_balancer is not None
            return self._as_host(plan.panic_balancer.pick(now, hash_key, exclude))
        if not plan.cum_loads or plan.cum_loads[-1] <= 0.0:
            return None
        if hash_key is not None:
            u = (key_hash(hash_key) % 1_000_000) / 1_000_000 * plan.cum_loads[-1]
        else:
            u = self.rng.random() * plan.cum_loads[-1]
        first = min(bisect.bisect_right(plan.cum_loads, u), len(plan.tiers) - 1)
        while plan.tiers[first].load <= 0.0 and first > 0:  # u landed on a zero-width tier
            first -= 1
        tier = plan.tiers[first]
        if tier.balancer is not None:
            found = tier.balancer.pick(now, hash_key, exclude)
            if found is not None:
                return self._as_host(found)
        for i, other in enumerate(plan.tiers):
            if i != first and other.balancer is not None:
                found = other.balancer.pick(now, hash_key, exclude)
                if found is not None:
                    return self._as_host(found)
        return None

    @staticmethod
    def _as_host(candidate: object) -> Host | None:
        assert candidate is None or isinstance(candidate, Host)
        return candidate

    def _invalidate(self) -> None:
        self._plan = None

    def _tier_order(self, site: str, priority: int) -> tuple[int, str, int]:
        try:
            rank = list(self.sites).index(site)
        except ValueError:
            rank = len(self.sites)  # sites not configured go last, by name
        return (rank, site, priority)

    def _build(self, now: float) -> _Plan:
        groups: dict[tuple[int, str, int], list[Host]] = {}
        probes: list[Host] = []
        valid_until = float("inf")
        for host in self._hosts.values():
            ep = host.endpoint
            groups.setdefault(self._tier_order(ep.site, ep.priority), []).append(host)
            if host.breaker is not None:
                due = host.breaker.reopen_at()
                if due is not None:
                    if now >= due:
                        probes.append(host)
                    else:
                        valid_until = min(valid_until, due)
        tiers = []
        for order in sorted(groups):
            hosts = groups[order]
            healthy = [h for h in hosts if h.healthy]
            tiers.append(_Tier(order[1], order[2], hosts, healthy))
        loads = tier_loads(
            [(len(t.healthy), len(t.hosts)) for t in tiers],
            self.overprovisioning_factor,
            self.panic_threshold_percent,
        )
        plan = _Plan(tiers, loads.panic, loads.normalized_health, valid_until, probes)
        if loads.panic:
            plan.panic_balancer = make_balancer(self.lb, list(self._hosts.values()), self.rng)
        else:
            total = 0.0
            for tier, load in zip(tiers, loads.loads, strict=True):
                tier.load = load
                total += load
                plan.cum_loads.append(total)
                if tier.healthy:
                    tier.balancer = make_balancer(self.lb, tier.healthy, self.rng)
        self._plan = plan
        return plan

    # -- what /clusters shows -------------------------------------------------------

    def tier_shares(self, now: float) -> dict[str, float]:
        """Percent of new requests each tier gets now (panic: by host count)."""
        plan = self._plan if self._plan is not None and now < self._plan.valid_until else None
        plan = plan or self._build(now)
        if plan.panic:
            total = len(self._hosts) or 1
            return {t.label: 100.0 * len(t.hosts) / total for t in plan.tiers}
        return {t.label: t.load for t in plan.tiers}

    def snapshot(self, now: float) -> dict[str, Any]:
        """What `/clusters` shows for this upstream."""
        shares = self.tier_shares(now)
        plan = self._plan
        assert plan is not None
        return {
            "name": self.name,
            "lb": self.lb,
            "sites": list(self.sites),
            "panic": plan.panic,
            "healthy_percent": round(plan.normalized_health, 2),
            "ejected": self._breakers.ejected,
            "max_ejected": self._breakers.max_ejected,
            "tiers": [
                {
                    "tier": t.label,
                    "site": t.site,
                    "priority": t.priority,
                    "endpoints": len(t.hosts),
                    "healthy": len(t.healthy),
                    "share_percent": round(shares[t.label], 2),
                }
                for t in plan.tiers
            ],
            "endpoints": [h.snapshot(now) for h in self._hosts.values()],
        }

    def __repr__(self) -> str:
        plan = self._plan
        parts = []
        if plan is None:
            hosts = ", ".join(_host_repr(h) for h in self._hosts.values())
            parts.append(hosts)
        else:
            for t in plan.tiers:
                share = "panic" if plan.panic else f"{t.load:.0f}%"
                hosts = ", ".join(_host_repr(h) for h in t.hosts)
                parts.append(f"{t.label} {share}: {hosts}")
        return f"<Cluster {self.name} {self.lb} [{'; '.join(parts)}]>"


def _host_repr(host: Host) -> str:
    state = host.breaker_state.value
    if host.health is not None and not host.health.healthy:
        state += ",hc-fail"
    return f"{host.endpoint.address} w={host.endpoint.weight} {state}"
