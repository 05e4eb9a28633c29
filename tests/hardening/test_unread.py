"""A caller that floods PING and never reads the ACKs (CVE-2019-9512's other half): the
control frames queued for it are bounded (`max_outbound_control_frames`), then GOAWAY
(ENHANCE_YOUR_CALM) and the socket dropped, with the sidecar's memory bounded.

A sidecar of its own: the per-second control-frame budget is lifted so that the
outbound queue's bound is the one that trips."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sidecar.h2relay import frames as F
from tests.hardening.harness import LISTENERS, GoodCaller, MiB, abuse_count, measured, sidecar
from tests.hardening.peer import RawPeer
from tests.integration.procs import Proc, Sidecar, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory, echo_app: tuple[Proc, int]) -> Iterator[Sidecar]:
    http2 = {"max_inbound_control_frames_per_s": 10**7}
    with sidecar(tmp_path_factory.mktemp("unread"), echo_app[1], http2) as proc:
        yield proc


@pytest.mark.parametrize("listener", LISTENERS)
def test_ping_flood_not_read(sc: Sidecar, listener: str) -> None:
    port = sc.port(listener)
    before = abuse_count(sc, listener, "control_flood")
    batch = F.ping(b"12345678") * 1000
    sent = 0
    with (
        GoodCaller(port) as good,
        measured(sc.proc.pid, f"unread pings {listener}") as usage,
        RawPeer(port, rcvbuf=4096, timeout=2.0) as peer,
    ):
        peer.start()
        for _ in range(300):  # at most 300,000 PINGs (5 MB)
            if not peer.send(batch):
                break
            sent += 1000
            if sent % 20_000 == 0 and abuse_count(sc, listener, "control_flood") > before:
                break
        wait_until(
            lambda: abuse_count(sc, listener, "control_flood") > before,
            timeout=10,
            what="the control flood counted",
        )
        # now read: the ACKs queued so far, then the GOAWAY, then the end
        assert peer.closed_within(15)
        time.sleep(1.0)  # and the good caller still served afterwards
    print(usage.report(1, "connection") + f" ({sent} PINGs unread), " + good.check(minimum=3))
    assert abuse_count(sc, listener, "control_flood") - before == 1
    goaways = [p for t, _, _, p in peer.frames if t == F.GOAWAY]
    if goaways:  # read in time (else the socket was dropped after the grace, as designed)
        assert F.unpack_u32x2(goaways[0], 0)[1] == F.ENHANCE_YOUR_CALM
    acks = sum(1 for t, *_ in peer.frames if t == F.PING)
    print(f"PING ACKs read back: {acks} of {sent}; GOAWAY read: {bool(goaways)}")
    assert acks < sent  # the rest were never queued: the connection ended first
    assert usage.rss_growth < 48 * MiB
    assert usage.cores < 0.95
