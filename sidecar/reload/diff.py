"""What changed between two configs, as key paths, and the running config's version.

Pure (no I/O). A reload (sidecar/reload/reloader.py) compares the running `Config`
with the newly read one leaf by leaf: `changed_paths` gives the dotted key paths
whose values differ (`upstreams.playlist.retries.max_attempts`, `upstreams.canary`
for an upstream added or removed, `outbound.listen`); lists are leaves (a changed
`endpoints` list is one path). Each part that applies config live claims key
patterns (`upstreams`, `upstreams.*.faults`, `inbound.admission`); `covers` tells
whether a pattern claims a path (`*` matches one key), and a changed path that no
part claims is refused, because nothing would apply it until a restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.config import Config
from sidecar.discovery.names import upstream_names

# The keys of an upstream that shape its cluster (sites, balancer, breakers, health
# checks): a change to one of them means a new `Cluster` (seeded with the endpoints the
# old one holds, sidecar/reload/parts.py), where other keys only need a new `Route`.
CLUSTER_KEYS = frozenset(
    {
        "sites",
        "lb",
        "hash_key",
        "overprovisioning_factor",
        "panic_threshold_percent",
        "breaker",
        "health_check",
    }
)
# The keys of an upstream that say where its endpoints come from (discovery.names).
DISCOVERY_KEYS = frozenset({"endpoints", "srv_name", "tag", "port_name", "namespace", "sites"})
# Applied by the fault table, not by the upstream's route.
FAULT_KEYS = frozenset({"faults"})


def _plain(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json")


def changed_paths(old: Config, new: Config) -> list[str]:
    """The dotted key paths whose values differ, sorted; a section present in one config
    only (an upstream added or removed, `inbound` turned on) is one path, its own."""
    return sorted(_diff(_plain(old), _plain(new), ""))


def _diff(old: Any, new: Any, prefix: str) -> Iterable[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in old.keys() | new.keys():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                yield path
            else:
                yield from _diff(old[key], new[key], path)
    elif old != new:
        yield prefix


def covers(pattern: str, path: str) -> bool:
    """`pattern` (dotted, `*` for any one key) claims `path`, or a path under it."""
    want = pattern.split(".")
    have = path.split(".")
    if len(have) < len(want):
        return False
    return all(w in ("*", h) for w, h in zip(want, have, strict=False))


def unclaimed(paths: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The paths no pattern claims."""
    claimed = list(patterns)
    return [p for p in paths if not any(covers(k, p) for k in claimed)]


@dataclass(frozen=True)
class UpstreamChange:
    """How one upstream's section changed (`upstreams.<name>`)."""

    name: str
    keys: frozenset[str]  # the upstream's own top-level keys that changed
    added: bool = False
    removed: bool = False

    @property
    def cluster(self) -> bool:
        """It needs a new cluster (a key that shapes the cluster changed)."""
        return self.added or bool(self.keys & CLUSTER_KEYS)

    @property
    def route(self) -> bool:
        """It needs a new route: a key other than its faults and what it is found by
        changed (a key added later to the upstream's section is applied by a new route,
        built from the section). A new cluster means a new route too (parts.py)."""
        return self.added or bool(self.keys - FAULT_KEYS - DISCOVERY_KEYS)


def upstream_changes(old: Config, new: Config) -> dict[str, UpstreamChange]:
    """Every upstream whose section differs, by name."""
    out: dict[str, UpstreamChange] = {}
    for name in old.upstreams.keys() | new.upstreams.keys():
        if name not in new.upstreams:
            out[name] = UpstreamChange(name, frozenset(), removed=True)
        elif name not in old.upstreams:
            out[name] = UpstreamChange(name, frozenset(), added=True)
        else:
            before = old.upstreams[name].model_dump(mode="json")
            after = new.upstreams[name].model_dump(mode="json")
            keys = frozenset(
                k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
            )
            if keys:
                out[name] = UpstreamChange(name, keys)
    return out


def discovery_changed(old: Config, new: Config) -> bool:
    """Discovery must be rebuilt: its own section changed, or the set of (upstream,
    site, SRV name) it watches did (an upstream came, went, or is looked up by another
    name or in other sites)."""
    return old.discovery != new.discovery or upstream_names(old) != upstream_names(new)


def config_hash(config: Config) -> str:
    """A short stable hash of the config's effective values (not of the file's text:
    comments and key order do not change it)."""
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
