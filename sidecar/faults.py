"""Fault injection, like Envoy's fault filter: delay or abort a share of calls.

Pure: the decision takes an injected `random.Random`; the data plane sleeps or
aborts. Faults are set per upstream in config and replaced at runtime through
the admin API (`POST /faults`, `DELETE /faults`); they are off by default.
Aborted calls carry `x-sidecar-error: fault` so a test can tell them apart.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sidecar.config import ConfigError, Faults


@dataclass(frozen=True, slots=True)
class FaultAction:
    """What to do to one call: wait `delay_s` first, then fail with `abort_status` if set."""

    delay_s: float = 0.0
    abort_status: str | None = None


NO_FAULT = FaultAction()


def decide(faults: Faults | None, rng: random.Random) -> FaultAction:
    """Draw the fault for one call; delay and abort are drawn independently."""
    if faults is None:
        return NO_FAULT
    delay = 0.0
    if faults.delay is not None and rng.random() * 100 < faults.delay.percent:
        delay = faults.delay.ms / 1000
    abort = None
    if faults.abort is not None and rng.random() * 100 < faults.abort.percent:
        abort = faults.abort.status
    if delay == 0.0 and abort is None:
        return NO_FAULT
    return FaultAction(delay, abort)


class FaultTable:
    """The faults in force, per upstream: config first, runtime changes on top."""

    def __init__(self, initial: Mapping[str, Faults | None]) -> None:
        self._faults: dict[str, Faults] = {k: v for k, v in initial.items() if v is not None}

    def get(self, upstream: str) -> Faults | None:
        return self._faults.get(upstream)

    def set(self, upstream: str, data: Mapping[str, Any]) -> Faults:
        """Replace one upstream's faults from plain data; ConfigError names the bad key."""
        try:
            faults = Faults.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(["faults", upstream, *(str(p) for p in first["loc"])])
            raise ConfigError(key, first["msg"].removeprefix("Value error, ")) from None
        self._faults[upstream] = faults
        return faults

    def replace(self, upstream: str, faults: Faults | None) -> None:
        """A config reload: `upstream`'s configured faults are now `faults` (None: none)."""
        if faults is None:
            self._faults.pop(upstream, None)
        else:
            self._faults[upstream] = faults

    def clear(self, upstream: str | None = None) -> None:
        if upstream is None:
            self._faults.clear()
        else:
            self._faults.pop(upstream, None)

    def dump(self) -> dict[str, Any]:
        return {name: f.model_dump(mode="json") for name, f in self._faults.items()}
