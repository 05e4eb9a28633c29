"""Micro-benchmark: CPU cost of one inbound drop (dropping must be cheap).

Run: `python -m bench.drop_cost [N]`. Measures process CPU time per drop for
(1) the pure queue decision alone, (2) the whole asyncio admission path
(`admission.acquire(...)` raising `Dropped`, metric counted, exception
caught), for a full queue (`overloaded`) and an expired deadline (`deadline`).
It does not include gRPC's own cost of sending the error status back.
"""

from __future__ import annotations

import asyncio
import sys
import time

from sidecar.config import InboundAdmission
from sidecar.shedding import Admission, AdmissionQueue, Dropped, FixedLimit, Priority


def pure_drop(n: int) -> float:
    q: AdmissionQueue[int] = AdmissionQueue(FixedLimit(1), queue_size=0)
    q.offer(0.0, -1, Priority.DEFAULT, None)  # the one slot is taken: every offer drops
    t0 = time.process_time()
    for i in range(n):
        q.offer(0.0, i, Priority.DEFAULT, None)
    return (time.process_time() - t0) / n


async def _admission_drop(n: int, expired: bool) -> float:
    adm = Admission(InboundAdmission(max_concurrency=1, queue_size=0))
    hold = await adm.acquire(None, None)  # the one slot is taken
    deadline = time.monotonic() - 1 if expired else None
    t0 = time.process_time()
    for _ in range(n):
        try:
            await adm.acquire("default", deadline)
            raise AssertionError("admitted")
        except Dropped:
            pass
    cost = (time.process_time() - t0) / n
    hold.success()
    return cost


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 200_000
    pure_drop(1000)
    print(f"pure queue decision (overloaded): {pure_drop(n) * 1e6:6.2f} us CPU per drop")
    for expired in (False, True):
        asyncio.run(_admission_drop(1000, expired))
        cost = asyncio.run(_admission_drop(n, expired))
        reason = "deadline" if expired else "overloaded"
        print(f"asyncio admit() -> Dropped ({reason}): {cost * 1e6:6.2f} us CPU per drop")


if __name__ == "__main__":
    main(sys.argv[1:])
