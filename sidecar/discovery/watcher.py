"""Discovery: watch every upstream's SRV names and hand whole endpoint sets over.

Does I/O (asyncio tasks, one per (upstream, site) name). The decisions (when to
look again, what to believe, what to publish) are `state.NameState`'s; this
module only runs lookups on time and reports. `on_update(upstream, site,
endpoints, stale)` receives whole sets; the cluster diffs them, so unchanged
endpoints keep their channels, breakers and latency history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.config import Config
from sidecar.discovery.answer import LookupFailure, SrvAnswer, build_endpoints
from sidecar.discovery.metrics import DiscoveryMetrics
from sidecar.discovery.names import upstream_names
from sidecar.discovery.resolver import DnsClient, parse_nameservers
from sidecar.discovery.state import NameState, Publish, Timing
from sidecar.endpoint import Endpoint

log = logging.getLogger(__name__)

OnUpdate = Callable[[str, str, list[Endpoint], bool], None]


@dataclass
class _Watch:
    upstream: str
    site: str
    name: str
    state: NameState
    client: DnsClient


def apply_lookup(
    state: NameState,
    site: str,
    result: SrvAnswer | LookupFailure,
    now: float,
    rng: random.Random,
) -> Publish | None:
    """Feed one lookup result to the state machine (pure; shared with the CLI)."""
    if isinstance(result, LookupFailure):
        return state.on_failure(str(result), now, rng)
    if result.kind == "records":
        endpoints = tuple(build_endpoints(result.records, result.addresses, site))
        return state.on_answer(endpoints, result.ttl, now, rng)
    if result.kind == "unavailable":
        return state.on_empty("target '.'", result.ttl, now, rng, explicit=True)
    return state.on_empty(result.kind, result.ttl, now, rng)


class Discovery:
    """SRV discovery for every upstream of `config` that has no static endpoints."""

    def __init__(
        self,
        config: Config,
        on_update: OnUpdate,
        *,
        rng: random.Random | None = None,
        client: DnsClient | None = None,
        metrics: DiscoveryMetrics | None = None,
    ) -> None:
        dcfg = config.discovery
        self.metrics = metrics = metrics or DiscoveryMetrics()
        self._on_update = on_update
        self._rng = rng or random.Random()
        # One client per set of nameservers: a site may have its own (its cluster's DNS).
        clients: dict[tuple[str, ...], DnsClient] = {}

        def client_for(site: str) -> DnsClient:
            if client is not None:
                return client
            servers = tuple(dcfg.nameservers_for(site))
            if servers not in clients:
                clients[servers] = DnsClient(parse_nameservers(servers), dcfg.timeout_s, metrics)
            return clients[servers]

        timing = Timing.from_config(dcfg)
        self._watches = [
            _Watch(upstream, site, name, NameState(timing), client_for(site))
            for upstream, site, name in upstream_names(config)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._first_round: asyncio.Event = asyncio.Event()
        self._first_pending = len(self._watches)
        if not self._watches:
            self._first_round.set()

    async def start(self) -> None:
        """Start one watch task per name; returns at once (see `wait_ready`)."""
        if self._tasks:
            return
        for watch in self._watches:
            task = asyncio.create_task(self._run(watch), name=f"dns {watch.name}")
            self._tasks.append(task)

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until every name had its first lookup (answer or failure)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._first_round.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def snapshot(self) -> list[dict[str, Any]]:
        """Per (upstream, site): name, endpoints, stale flag, last refresh, last error."""
        loop_now = _loop_time()
        wall_now = time.time()
        out = []
        for w in self._watches:
            snap = w.state.snapshot()
            for key in ("last_refresh", "next_refresh"):
                if snap[key] is not None and loop_now is not None:
                    snap[key] = wall_now - (loop_now - snap[key])
            out.append({"upstream": w.upstream, "site": w.site, "name": w.name, **snap})
        return out

    async def _run(self, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            try:
                result: SrvAnswer | LookupFailure = await watch.client.lookup_srv(watch.name)
            except LookupFailure as exc:
                result = exc
            except Exception as exc:  # a bug must not end discovery for this name
                log.exception("lookup of %s failed unexpectedly", watch.name)
                result = LookupFailure("error", repr(exc))
            now = loop.time()
            publish = apply_lookup(watch.state, watch.site, result, now, self._rng)
            if isinstance(result, LookupFailure):
                log.warning("DNS lookup of %s failed: %s", watch.name, result)
            self._report(watch, publish)
            if first:
                first = False
                self._first_pending -= 1
                if self._first_pending <= 0:
                    self._first_round.set()
            await asyncio.sleep(max(0.0, watch.state.next_at - loop.time()))

    def _report(self, watch: _Watch, publish: Publish | None) -> None:
        labels = (watch.upstream, watch.site)
        state = watch.state
        self.metrics.stale.labels(*labels).set(1 if state.stale else 0)
        self.metrics.endpoints.labels(*labels).set(len(state.endpoints or ()))
        if state.last_refresh is not None:
            loop_now = _loop_time() or state.last_refresh
            self.metrics.last_refresh.labels(*labels).set(
                time.time() - (loop_now - state.last_refresh)
            )
        if publish is None:
            return
        try:
            self._on_update(watch.upstream, watch.site, list(publish.endpoints), publish.stale)
        except Exception:
            log.exception("on_update for %s/%s raised", watch.upstream, watch.site)


def _loop_time() -> float | None:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return None
