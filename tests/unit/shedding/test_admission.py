"""The asyncio admission layer: bursts end in admission or a drop, never a hang."""

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry

from sidecar.config import InboundAdmission
from sidecar.shedding import Admission, AdmissionToken, Dropped
from sidecar.shedding.metrics import SheddingMetrics

pytestmark = pytest.mark.timeout(20)


@asynccontextmanager
async def admitted(
    adm: Admission, priority: str | None = None, deadline: float | None = None
) -> AsyncIterator[AdmissionToken]:
    """A slot for the block, as the relay holds one for a call: released as success when the
    block ends, as ignored when it raises (an exception says nothing of the app's capacity)."""
    token = await adm.acquire(priority, deadline)
    try:
        yield token
    except BaseException:
        token.ignore()
        raise
    token.success()


REGISTRY = CollectorRegistry()  # the burst test's admission counts its drops here
METRICS = SheddingMetrics(REGISTRY)


def dropped_total(reason: str) -> float:
    return REGISTRY.get_sample_value("sidecar_dropped_requests_total", {"reason": reason}) or 0.0


async def test_burst_every_request_admitted_or_dropped_within_its_deadline() -> None:
    """A burst 50x capacity: each call ends admitted or dropped by its deadline; the app never
    sees an expired or too-short request, and never more than the limit at once."""
    adm = Admission(
        InboundAdmission(max_concurrency=4, queue_size=16, min_deadline_ms=5, pushback_ms=30),
        METRICS,
    )
    rng = random.Random(5)
    in_app = 0
    peak = 0
    outcomes: dict[str, int] = {"ok": 0, "overloaded": 0, "deadline": 0}
    late: list[float] = []
    before = dropped_total("overloaded") + dropped_total("deadline")

    async def call(delay: float, budget_s: float, priority: str) -> None:
        nonlocal in_app, peak
        await asyncio.sleep(delay)
        deadline = time.monotonic() + budget_s
        try:
            async with admitted(adm, priority, deadline):
                # the queue admits only with min_deadline_ms (5 ms) left; the waiter then
                # resumes a loop turn later, which a busy 2-core machine can stretch: allow 3 ms
                assert deadline - time.monotonic() >= 0.002, "app got a request with no time left"
                in_app += 1
                peak = max(peak, in_app)
                await asyncio.sleep(0.004)
                in_app -= 1
            outcomes["ok"] += 1
        except Dropped as drop:
            assert drop.status == "UNAVAILABLE" and drop.pushback_ms == 30
            assert dict(drop.trailers)["x-sidecar-error"] == drop.reason
            outcomes[drop.reason] += 1
        late.append(time.monotonic() - deadline)

    # 400 calls within 100 ms (4x what the app can serve), timeouts up to 300 ms.
    tasks = [
        call(
            rng.uniform(0.0, 0.1),
            rng.uniform(0.0, 0.3),
            rng.choice(["critical", "default", "sheddable"]),
        )
        for _ in range(400)
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert sum(outcomes.values()) == 400
    assert outcomes["ok"] > 40 and outcomes["overloaded"] > 0 and outcomes["deadline"] > 0
    assert peak <= 4
    # Dropped ones end by their deadline (generous slack for a busy machine); admitted ones
    # may finish their 4 ms of work after it.
    assert max(late) < 0.25
    assert adm.queue.in_flight == 0 and adm.queue.queued == 0
    after = dropped_total("overloaded") + dropped_total("deadline")
    assert after - before == outcomes["overloaded"] + outcomes["deadline"]


async def test_waiters_without_deadline_do_not_hang() -> None:
    """With the app stuck, queued calls without a deadline are dropped within the interval."""
    adm = Admission(InboundAdmission(max_concurrency=1, queue_size=8, codel_interval_ms=50))
    stuck = asyncio.Event()

    async def hog() -> None:
        async with admitted(adm):
            await stuck.wait()

    hog_task = asyncio.create_task(hog())
    await asyncio.sleep(0)

    async def waiter() -> str:
        try:
            async with admitted(adm):
                return "admitted"
        except Dropped as drop:
            return drop.reason

    t0 = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(waiter() for _ in range(5))), timeout=3)
    assert results == ["overloaded"] * 5
    assert time.monotonic() - t0 < 1.0
    stuck.set()
    await hog_task
    assert adm.queue.in_flight == 0


async def test_token_released_exactly_once() -> None:
    """success(), dropped() and the block's end together free one slot, once."""
    adm = Admission(InboundAdmission(max_concurrency=2))
    async with admitted(adm) as tok:
        assert adm.queue.in_flight == 1
        tok.success()
        tok.dropped()
        tok.finish("OK")
        assert adm.queue.in_flight == 0
    assert adm.queue.in_flight == 0


async def test_exception_in_block_releases_as_ignored() -> None:
    """An exception inside the block frees the slot without shrinking an adaptive limit."""
    adm = Admission(InboundAdmission(adaptive="aimd", max_concurrency=10, min_concurrency=1))
    with pytest.raises(RuntimeError):
        async with admitted(adm):
            raise RuntimeError("boom")
    assert adm.queue.in_flight == 0 and adm.queue.limit == 10
    async with admitted(adm) as tok:
        tok.finish("RESOURCE_EXHAUSTED")
    assert adm.queue.limit == 9  # AIMD backed off on the app's overload status


async def test_cancelled_waiter_does_not_leak_its_slot() -> None:
    """A caller cancelled while queued leaves; the next caller still gets the slot."""
    adm = Admission(InboundAdmission(max_concurrency=1, queue_size=4))
    release = asyncio.Event()

    async def hold() -> None:
        async with admitted(adm):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(adm.acquire(None, time.monotonic() + 2))
    await asyncio.sleep(0)
    assert adm.queue.queued == 1
    waiting.cancel()
    release.set()  # the slot frees in the same loop turn as the cancel lands
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert adm.queue.in_flight == 0 and adm.queue.queued == 0
    async with admitted(adm, None, time.monotonic() + 1):
        assert adm.queue.in_flight == 1


async def test_expired_deadline_dropped_immediately() -> None:
    """A request whose deadline already passed is dropped as `deadline`, with pushback."""
    adm = Admission(InboundAdmission(max_concurrency=1, pushback_ms=50))
    with pytest.raises(Dropped) as err:
        async with admitted(adm, "critical", time.monotonic() - 0.001):
            pytest.fail("the app must not see an expired request")
    assert err.value.reason == "deadline"
    assert err.value.trailers == (("x-sidecar-error", "deadline"), ("grpc-retry-pushback-ms", "50"))
