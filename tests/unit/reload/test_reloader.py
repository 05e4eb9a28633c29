"""The reload flow (sidecar/reload/reloader.py) over fake parts: checked whole, refused
without touching anything, committed all at once, settled after, versioned."""

from __future__ import annotations

from typing import Any

from sidecar.config import Config, ConfigError, parse_config
from sidecar.reload import Reloader


def cfg(timeout_ms: float = 1000, grace: float = 10) -> Config:
    return parse_config(
        {
            "outbound": {},
            "drain_grace_s": grace,
            "upstreams": {"a": {"endpoints": ["127.0.0.1:1"], "timeout_ms": timeout_ms}},
        }
    )


class FakePart:
    def __init__(self, keys: tuple[str, ...], log: list[str], refuse: bool = False) -> None:
        self.keys = keys
        self.log = log
        self.refuse = refuse

    async def prepare(self, old: Config, new: Config) -> Any:
        name = self.keys[0]
        self.log.append(f"prepare {name}")
        if self.refuse:
            raise ConfigError(f"{name}.x", "cannot")
        part = self

        class Change:
            def commit(self) -> None:
                part.log.append(f"commit {name}")

            async def settle(self) -> None:
                part.log.append(f"settle {name}")

            async def abandon(self) -> None:
                part.log.append(f"abandon {name}")

        return Change()


async def test_applies_in_order_commits_before_any_settle_and_counts() -> None:
    log: list[str] = []
    seen: list[Config] = []
    new = cfg(timeout_ms=5, grace=1)
    reloader = Reloader(
        cfg(), [FakePart(("upstreams",), log), FakePart(("drain_grace_s",), log)], lambda: new
    )
    reloader.on_applied.append(seen.append)
    first = reloader.version
    result = await reloader.reload()
    assert result.result == "applied" and result.ok
    assert result.changed == ["drain_grace_s", "upstreams.a.timeout_ms"]
    assert log == [
        "prepare upstreams",
        "prepare drain_grace_s",
        "commit upstreams",
        "commit drain_grace_s",
        "settle upstreams",
        "settle drain_grace_s",
    ]
    assert reloader.config is new and seen == [new]
    assert reloader.version.counter == first.counter + 1
    assert reloader.version.hash != first.hash
    assert (await reloader.reload()).result == "unchanged"
    assert reloader.version.counter == first.counter + 1


async def test_a_bad_file_is_refused_with_its_key_and_nothing_is_prepared() -> None:
    log: list[str] = []

    def bad() -> Config:
        raise ConfigError("upstreams.a.timeout_ms", "Input should be greater than 0")

    old = cfg()
    reloader = Reloader(old, [FakePart(("upstreams",), log)], bad)
    result = await reloader.reload()
    assert (result.result, result.key) == ("refused", "upstreams.a.timeout_ms")
    assert result.as_dict()["reason"] == "Input should be greater than 0"
    assert log == [] and reloader.config is old and reloader.version.counter == 1


async def test_a_key_no_part_claims_is_refused_as_restart_only() -> None:
    log: list[str] = []
    reloader = Reloader(cfg(), [FakePart(("upstreams",), log)], lambda: cfg(grace=1))
    result = await reloader.reload()
    assert result.result == "refused" and result.key == "drain_grace_s"
    assert "restart" in (result.reason or "")
    assert log == []


async def test_a_part_refusing_abandons_what_the_others_prepared() -> None:
    log: list[str] = []
    parts = [FakePart(("upstreams",), log), FakePart(("drain_grace_s",), log, refuse=True)]
    old = cfg()
    reloader = Reloader(old, parts, lambda: cfg(timeout_ms=5, grace=1))
    result = await reloader.reload()
    assert (result.result, result.key) == ("refused", "drain_grace_s.x")
    assert log == ["prepare upstreams", "prepare drain_grace_s", "abandon upstreams"]
    assert reloader.config is old


async def test_without_a_file_a_reload_needs_a_config_handed_to_it() -> None:
    reloader = Reloader(cfg(), [FakePart(("upstreams",), [])], None)
    assert (await reloader.reload()).result == "refused"
    assert (await reloader.reload(cfg(timeout_ms=5))).result == "applied"
