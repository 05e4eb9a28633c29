"""Pick cost and memory per endpoint of the cluster, per balancer, at 10/100/1,000 endpoints.

Plain script: `python bench/pick_cost.py` from the repository root. It measures
`pick()` followed by `start()`/`finish()` (what the data plane does per attempt),
on a fake clock, in one process, and tracemalloc's view of the memory a cluster
holds per endpoint (host state, breaker, metric series, balancer structures).
"""

from __future__ import annotations

import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar.cluster import Cluster
from sidecar.endpoint import Endpoint
from sidecar.outcome import Outcome

SIZES = (10, 100, 1000)
LBS = ("peak_ewma", "least_request", "round_robin", "random", "ring_hash")
PICKS = 50_000


def endpoints(n: int) -> list[Endpoint]:
    rng = random.Random(n)
    return [
        Endpoint(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 8000, "a", 10, rng.randint(1, 100))
        for i in range(n)
    ]


def build(lb: str, n: int, tag: str) -> Cluster:
    c = Cluster(f"bench-{tag}-{lb}-{n}", ("a",), random.Random(1), lb=lb)
    c.update("a", endpoints(n), 0.0)
    return c


def picks_per_s(lb: str, n: int) -> float:
    c = build(lb, n, "speed")
    keys = [str(i).encode() for i in range(1024)] if lb == "ring_hash" else None
    c.pick(0.0)  # build the plan once, as the first real pick would
    t0 = time.perf_counter()
    now = 0.0
    for i in range(PICKS):
        now += 0.0001
        h = c.pick(now, hash_key=keys[i & 1023] if keys else None)
        assert h is not None
        h.start(now)
        h.finish(Outcome.SUCCESS, 0.005, now)
    return PICKS / (time.perf_counter() - t0)


def bytes_per_endpoint(lb: str, n: int) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    c = build(lb, n, "mem")
    c.pick(0.0)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del c
    return used / n


def main() -> None:
    print(
        f"{'lb':<14}"
        + "".join(f"{f'picks/s @{n}':>16}" for n in SIZES)
        + f"{'B/endpoint @1000':>18}"
    )
    for lb in LBS:
        rates = [picks_per_s(lb, n) for n in SIZES]
        mem = bytes_per_endpoint(lb, 1000)
        print(f"{lb:<14}" + "".join(f"{r:>16,.0f}" for r in rates) + f"{mem:>18,.0f}")


if __name__ == "__main__":
    main()
