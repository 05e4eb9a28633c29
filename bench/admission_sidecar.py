"""A stand-in `sidecar run` with inbound admission plugged in. Does I/O.

`python -m bench.admission_sidecar -c FILE` runs the tree's own `Sidecar` with
`sidecar.shedding.Admission` (built from `inbound.admission`) in the pipeline's
admission seam, through a small adapter from the seam's `acquire(deadline) ->
Token | Refusal` to `Admission.acquire(priority, deadline)`. For the overload run
while `sidecar run` does not wire admission yet; once it does, the run uses
`sidecar run` itself. The adapter passes no priority (every call is `default`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from sidecar.app import Sidecar
from sidecar.config import ConfigError, InboundAdmission, load_config
from sidecar.outcome import Outcome
from sidecar.proxy.seams import Policies, Refusal
from sidecar.shedding import Admission, Dropped

_OVERLOAD = {Outcome.UNAVAILABLE, Outcome.TIMEOUT, Outcome.OVERLOADED}


class _Token:
    __slots__ = ("token",)

    def __init__(self, token: Any) -> None:
        self.token = token

    def release(self, outcome: Outcome, now: float) -> None:
        if outcome is Outcome.CANCELLED:
            self.token.ignore()
        elif outcome in _OVERLOAD:
            self.token.dropped()
        else:
            self.token.success()


class SeamAdmission:
    def __init__(self, config: InboundAdmission) -> None:
        self.admission = Admission(config)

    async def acquire(self, deadline: float | None) -> Any:
        try:
            token = await self.admission.acquire(None, deadline)
        except Dropped as drop:
            return Refusal(drop.reason, str(drop), drop.status, drop.pushback_ms)
        return _Token(token)


def _admission(cfg: InboundAdmission) -> Any:
    return SeamAdmission(cfg)


async def serve(path: str) -> int:
    config = load_config(path)
    sidecar = Sidecar(config, Policies(admission=_admission))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sidecar.start()
    await stop.wait()
    with contextlib.suppress(asyncio.CancelledError):
        await sidecar.stop()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.admission_sidecar")
    p.add_argument("-c", "--config", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    try:
        import uvloop

        return uvloop.run(serve(a.config))
    except ConfigError as exc:
        print(f"config refused: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
