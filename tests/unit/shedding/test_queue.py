"""The admission queue discipline with a fake clock: CoDel, adaptive LIFO, priorities, deadlines."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.shedding import AdmissionQueue, CoDel, FixedLimit, Priority, parse_priority
from sidecar.shedding.queue import ADMIT, DEADLINE, OVERLOADED, QUEUED

D = Priority.DEFAULT


def make(limit: int = 1, **kw: float) -> AdmissionQueue[str]:
    return AdmissionQueue(FixedLimit(limit), **kw)  # type: ignore[arg-type]


def test_codel_overload_only_after_target_exceeded_for_an_interval() -> None:
    """Sojourns above target flip CoDel to overloaded only once a whole interval has passed."""
    c = CoDel(target_s=0.005, interval_s=0.1)
    c.tick(0.0, queue_empty=False)
    for i in range(1, 100):
        c.sample(0.007)
        c.tick(i / 1000, queue_empty=False)
        assert not c.overloaded
    c.sample(0.007)
    c.tick(0.1, queue_empty=False)
    assert c.overloaded and c.max_sojourn_s == 0.010
    # One sojourn under target in the next interval ends it.
    c.sample(0.001)
    c.tick(0.2, queue_empty=False)
    assert not c.overloaded and c.max_sojourn_s == 0.1


def test_codel_idle_empty_queue_is_not_overloaded() -> None:
    """An interval without samples is overloaded only if the queue never emptied."""
    c = CoDel()
    c.tick(0.0, True)
    c.tick(0.5, True)
    assert not c.overloaded
    c.tick(1.0, False)
    assert c.overloaded


def test_no_drops_while_sojourn_stays_under_target() -> None:
    """A queue that serves each request within target never drops, however long it runs."""
    q = make(limit=1)
    now = 0.0
    assert q.offer(now, "r0", D, None)[0] == ADMIT
    for i in range(1, 2000):
        assert q.offer(now, f"r{i}", D, None)[0] == QUEUED
        now += 0.004  # served 4 ms later: below the 5 ms target
        events = q.release(now, 0.004)
        assert events == [(f"r{i}", ADMIT)]
    assert not q.codel.overloaded


def test_standing_queue_drops_after_an_interval_and_switches_to_lifo() -> None:
    """Sojourn above target for an interval: overloaded, old requests dropped, newest served."""
    q = make(limit=1, queue_size=1000)
    q.offer(0.0, "first", D, None)
    arrivals = 0
    served: list[tuple[float, str]] = []
    dropped: list[tuple[float, str]] = []
    enqueued: dict[str, float] = {}
    # Arrivals twice as fast as service: at +2 ms and +7 ms of every 10 ms step.
    for step in range(100):
        base = step * 0.010
        for offset in (0.002, 0.007):
            name = f"r{arrivals}"
            q.offer(base + offset, name, D, None)
            enqueued[name] = base + offset
            arrivals += 1
        now = base + 0.010
        for item, fate in q.release(now, 0.010):
            (served if fate == ADMIT else dropped).append((now, item))
        if now < 0.1:
            assert not dropped  # nothing dropped before a whole interval
    assert dropped and q.codel.overloaded and q.lifo
    # Once overloaded (it stays so), the newest arrival is served and nobody admitted
    # waited more than 2 x target.
    late = [(t, item) for t, item in served if t > 0.3]
    assert len(late) >= 60
    assert all(t - enqueued[item] <= 0.010 for t, item in late)
    assert all(t - enqueued[item] <= 0.0031 for t, item in late[-10:])  # the +7 ms arrival
    assert q.queued <= 3


def test_queued_requests_never_wait_longer_than_the_interval() -> None:
    """Even without a deadline, a request queued behind a stuck app is dropped by poll."""
    q = make(limit=1)
    q.offer(0.0, "busy", D, None)
    assert q.offer(0.0, "w", D, None)[0] == QUEUED
    wake = q.next_wakeup()
    assert wake is not None and wake <= 0.1
    assert q.poll(0.05) == []
    assert q.poll(0.1001) == [("w", OVERLOADED)]
    assert q.queued == 0


def test_expired_deadline_dropped_without_reaching_the_app() -> None:
    """Expired on arrival, expired while queued, or below min_deadline: dropped as deadline."""
    q = make(limit=1, min_deadline_s=0.010)
    assert q.offer(1.0, "late", D, 0.5)[0] == DEADLINE
    assert q.offer(1.0, "short", D, 1.005)[0] == DEADLINE
    assert q.offer(1.0, "ok", D, 2.0)[0] == ADMIT
    assert q.offer(1.0, "queued", D, 1.03)[0] == QUEUED
    assert q.next_wakeup() == 1.03 - 0.010
    assert q.poll(1.025) == [("queued", DEADLINE)]
    # and when a slot frees after the deadline passed, it is dropped, not admitted
    assert q.offer(1.03, "q2", D, 1.05)[0] == QUEUED
    assert q.release(1.045, 0.04) == [("q2", DEADLINE)]
    assert q.in_flight == 0


def test_priorities_critical_first_sheddable_evicted_first() -> None:
    """Dequeue order follows priority; a full queue evicts the oldest lowest-priority request."""
    q = make(limit=1, queue_size=3)
    q.offer(0.0, "busy", D, None)
    assert q.offer(0.0, "s1", Priority.SHEDDABLE, None)[0] == QUEUED
    assert q.offer(0.0, "d1", D, None)[0] == QUEUED
    assert q.offer(0.0, "s2", Priority.SHEDDABLE, None)[0] == QUEUED
    fate, evicted = q.offer(0.0, "c1", Priority.CRITICAL, None)
    assert fate == QUEUED and evicted == [("s1", OVERLOADED)]
    assert q.offer(0.0, "s3", Priority.SHEDDABLE, None) == (OVERLOADED, [])
    assert q.release(0.001, 0.001) == [("c1", ADMIT)]
    assert q.release(0.002, 0.001) == [("d1", ADMIT)]
    assert q.release(0.003, 0.001) == [("s2", ADMIT)]


def test_sheddable_not_queued_while_overloaded() -> None:
    """Once CoDel says overloaded, sheddable arrivals are dropped instead of queued."""
    q = make(limit=1)
    q.offer(0.0, "busy", D, None)
    q.offer(0.0, "w", D, None)
    q.poll(0.2)  # w dropped after the interval; the queue never emptied
    q.offer(0.2, "w2", D, None)
    q.poll(0.31)
    assert q.codel.overloaded
    assert q.offer(0.31, "s", Priority.SHEDDABLE, None)[0] == OVERLOADED
    assert q.offer(0.31, "c", Priority.CRITICAL, None)[0] == QUEUED


def test_parse_priority() -> None:
    """Known values map to classes; anything else is default."""
    assert parse_priority("critical") is Priority.CRITICAL
    assert parse_priority(" Sheddable ") is Priority.SHEDDABLE
    assert parse_priority(None) is Priority.DEFAULT
    assert parse_priority("urgent!!") is Priority.DEFAULT


def test_cancel_removes_a_waiter() -> None:
    """A cancelled waiter is never admitted and frees its queue place."""
    q = make(limit=1)
    q.offer(0.0, "busy", D, None)
    q.offer(0.0, "a", D, None)
    q.offer(0.0, "b", D, None)
    assert q.cancel("a") and not q.cancel("a")
    assert q.release(0.001, 0.001) == [("b", ADMIT)]


@settings(max_examples=200)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["offer", "release", "poll", "cancel"]),
            st.floats(min_value=0, max_value=0.05),
            st.sampled_from(list(Priority)),
            st.one_of(st.none(), st.floats(min_value=-0.1, max_value=0.5)),
        ),
        max_size=150,
    ),
    limit=st.integers(1, 4),
    size=st.integers(0, 5),
)
def test_accounting_holds_for_any_sequence(
    ops: list[tuple[str, float, Priority, float | None]], limit: int, size: int
) -> None:
    """Every request ends admitted or dropped exactly once; in-flight never exceeds the limit."""
    q: AdmissionQueue[int] = AdmissionQueue(FixedLimit(limit), queue_size=size, min_deadline_s=0.01)
    rng = random.Random(0)
    now = 0.0
    fates: dict[int, list[str]] = {}
    admitted: list[int] = []
    queued: set[int] = set()
    n = 0

    def record(events: list[tuple[int, str]]) -> None:
        for item, fate in events:
            fates.setdefault(item, []).append(fate)
            queued.discard(item)
            if fate == ADMIT:
                admitted.append(item)

    for op, dt, prio, rel_deadline in ops:
        now += dt
        if op == "offer":
            n += 1
            fate, evicted = q.offer(
                now, n, prio, None if rel_deadline is None else now + rel_deadline
            )
            record(evicted)
            if fate == QUEUED:
                queued.add(n)
            else:
                record([(n, fate)])
        elif op == "release" and admitted:
            admitted.pop(rng.randrange(len(admitted)))
            record(q.release(now, dt))
        elif op == "poll":
            record(q.poll(now))
        elif op == "cancel" and queued:
            item = sorted(queued)[0]
            assert q.cancel(item)
            queued.discard(item)
        assert 0 <= q.in_flight <= limit
        assert q.in_flight == len(admitted)
        assert q.queued == len(queued) <= size
    assert all(len(f) == 1 for f in fates.values())
    # Draining: everything still queued ends within the interval.
    record(q.poll(now + 1.0))
    for _ in range(limit):
        if admitted:
            admitted.pop()
            record(q.release(now + 1.0, 0.001))
    assert not queued or q.queued == len(queued)
