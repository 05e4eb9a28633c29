"""Hot reload: read the config file again, check it whole, apply what changed, live.

Does I/O only through its parts and the loader it is handed. The flow of one reload,
and why in this order:

1. Load and check the file in full (`load_config`: the same checks as `sidecar check`).
   A bad file is refused with its key and reason; nothing was touched.
2. Diff it with the running config (sidecar/reload/diff.py). Nothing changed: done.
3. Every changed key path must be claimed by a part. One that no part claims is
   refused ("takes effect only on restart"): applying the rest would run a config that
   is neither the old nor the new one.
4. `prepare` each part whose keys changed: it builds what the new config needs (new
   clusters, routes, policies, a listener bound but not yet accepting) and touches
   nothing running, so any part may still refuse (ConfigError, e.g. a port in use)
   and the others `abandon` what they built.
5. `commit` every prepared change, in the parts' order, synchronously: no `await`
   between the first commit and the last, so no call on this event loop ever sees
   half of the new config. A call reads its route (and so its cluster and policies)
   once, when it starts; calls in flight finish on the config they started with.
6. `settle` each change: start what is new (discovery, health checks, the new
   listener's accepting), stop what is old (the old listener drains in the
   background for `drain_grace_s`).

The contract a config section follows to be reloadable, in three sentences: a `Part`
names the key patterns it applies (`keys`, see diff.covers) and, given the running and
the new config, `prepare`s a `Change` or refuses with a ConfigError. A `Change`'s
`commit` swaps the new objects in without awaiting and without failing (everything
that can fail happens in `prepare`); `settle` then starts and stops what needs I/O;
`abandon` closes what `prepare` opened when the reload is refused after all. A section
no part claims is refused at reload, never half-applied, until a part claims it.

Making a new section reloadable, then, is one of two things:
- a key inside `upstreams.<name>` that the upstream's `Route` is built from
  (`Route.from_config`, `Policies.calls`) needs nothing: `UpstreamsPart` rebuilds the
  route of an upstream whose section changed (sidecar/reload/parts.py);
- any other section adds a part to the host's list (`Sidecar.reloader` in
  sidecar/app.py; the in-process client's in sidecar/client/channel.py): e.g. for a
  top-level `rate_limits`, `keys = ("rate_limits",)`, a `prepare` that builds the new
  limiter from `new.rate_limits`, and a `commit` that assigns it where calls read it
  when they start (an attribute of the plane or of the route, not a copy held
  elsewhere); sidecar/reload/parts.py's `AdmissionPart` is such a part in ten lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.config import Config, ConfigError
from sidecar.reload.diff import changed_paths, config_hash, covers, unclaimed
from sidecar.reload.metrics import ReloadMetrics

log = logging.getLogger("sidecar.reload")


class Change(Protocol):
    """What a part will do for one reload, prepared and not yet visible."""

    def commit(self) -> None:
        """Swap the new objects in; no await, no failure (calls started after see them)."""

    async def settle(self) -> None:
        """After every commit: start what is new, stop or drain what is old."""

    async def abandon(self) -> None:
        """The reload was refused after `prepare`: close whatever it opened."""


class Part(Protocol):
    """One piece of the running process that applies some config keys live."""

    keys: tuple[str, ...]  # key patterns it applies (`upstreams`, `inbound.admission`)

    async def prepare(self, old: Config, new: Config) -> Change:
        """Build what `new` needs without touching what runs; ConfigError refuses."""
        ...


@dataclass(frozen=True)
class ConfigVersion:
    """The running config: its hash, how many configs this process has run, and when it
    was loaded (Unix time)."""

    hash: str
    counter: int
    loaded_at: float

    def as_dict(self) -> dict[str, Any]:
        loaded = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))
        return {"hash": self.hash, "counter": self.counter, "loaded_at": loaded}

    def next(self, config: Config) -> ConfigVersion:
        return ConfigVersion(config_hash(config), self.counter + 1, time.time())


def first_version(config: Config) -> ConfigVersion:
    return ConfigVersion(config_hash(config), 1, time.time())


@dataclass
class ReloadResult:
    """What one reload did: `applied`, `unchanged` or `refused` (with key and reason)."""

    result: str
    version: ConfigVersion
    changed: list[str] = field(default_factory=list)
    key: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.result != "refused"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result, "version": self.version.as_dict()}
        if self.changed:
            out["changed"] = self.changed
        if self.key is not None or self.reason is not None:
            out["key"] = self.key or ""
            out["reason"] = self.reason or ""
        return out


class Reloader:
    """Runs reloads one at a time over the parts of one process."""

    def __init__(
        self,
        config: Config,
        parts: Sequence[Part],
        load: Callable[[], Config] | None,
        metrics: ReloadMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or ReloadMetrics()
        self.parts = list(parts)
        self.version = first_version(config)
        self._load = load
        self._lock = asyncio.Lock()
        self.on_applied: list[Callable[[Config], None]] = []  # told the new running config

    async def reload(self, config: Config | None = None) -> ReloadResult:
        """Read the file again (or take `config`, already checked) and apply it."""
        async with self._lock:
            if config is None:
                if self._load is None:
                    return self._refused("", "this process has no config file to read again")
                try:
                    config = self._load()
                except ConfigError as exc:
                    return self._refused(exc.key, exc.reason)
            return await self._apply(config)

    async def refuse(self, exc: ConfigError) -> ReloadResult:
        """A config that failed its checks before it reached `reload` (counted, logged)."""
        async with self._lock:
            return self._refused(exc.key, exc.reason)

    def _refused(self, key: str, reason: str, changed: list[str] | None = None) -> ReloadResult:
        self.metrics.reloads.labels("refused").inc()
        log.error(
            "config reload refused: %s: %s (still running version %s #%d)",
            key or "config",
            reason,
            self.version.hash,
            self.version.counter,
        )
        return ReloadResult("refused", self.version, changed or [], key, reason)

    async def _apply(self, new: Config) -> ReloadResult:
        old = self.config
        paths = changed_paths(old, new)
        if not paths:
            self.metrics.reloads.labels("unchanged").inc()
            log.info("config reload: unchanged (version %s #%d)", self.version.hash,
                     self.version.counter)  # fmt: skip
            return ReloadResult("unchanged", self.version)
        stuck = unclaimed(paths, (k for part in self.parts for k in part.keys))
        if stuck:
            return self._refused(stuck[0], "takes effect only on restart (not reloadable)", paths)
        changes: list[Change] = []
        try:
            for part in self.parts:
                if any(covers(k, p) for k in part.keys for p in paths):
                    changes.append(await part.prepare(old, new))
        except ConfigError as exc:
            for change in changes:
                await _quietly(change.abandon())
            return self._refused(exc.key, exc.reason, paths)
        # from here to the last commit: no await (see step 5 above)
        for change in changes:
            try:
                change.commit()
            except Exception:  # a bug: say so loudly, commit the rest
                log.exception("config reload: a part failed to commit")
        self.config = new
        self.version = self.version.next(new)
        for listener in self.on_applied:
            listener(new)
        for change in changes:
            await _quietly(change.settle())
        self.metrics.reloads.labels("applied").inc()
        log.info(
            "config reloaded: version %s #%d; changed %s",
            self.version.hash,
            self.version.counter,
            ", ".join(paths),
        )
        return ReloadResult("applied", self.version, paths)


async def _quietly(step: Any) -> None:
    try:
        await step
    except Exception:
        log.exception("config reload: a part failed to start or stop its pieces")
