"""An Attempt says what happened to it, reports to its endpoint once, and keeps its own
stream state: no socket (a relay connection that never connects), no sleep."""

from __future__ import annotations

from sidecar.cluster.cluster import Host
from sidecar.endpoint import Endpoint
from sidecar.h2relay import frames as F
from sidecar.h2relay.attempt import Attempt
from sidecar.h2relay.pool import Pool, UpstreamConnection
from sidecar.h2relay.request import PreparedResponse
from sidecar.outcome import Outcome

ENDPOINT = Endpoint("10.0.0.1", 50051)
TARGET = "upstream t"


class FakeStream:
    """The call side of a stream, as a connection sees it (pool.UpstreamStream)."""

    down = None
    up_pending: list[bytes] = []


def frames(out: list[bytes | memoryview]) -> list[tuple[int, int, int]]:
    """(type, flags, stream id) of each frame queued, after the client preface."""
    data = b"".join(bytes(x) for x in out)
    if data.startswith(F.PREFACE):
        data = data[len(F.PREFACE) :]
    found = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        found.append((data[3], data[4], sid))
        data = data[9 + length :]
    return found


def test_a_connect_failure_is_local_and_names_the_endpoint() -> None:
    """connect_failed: UNAVAILABLE for the caller, CONNECT_FAILED for the breaker."""
    failure = Attempt(1, Host(ENDPOINT), 0.0).lost(TARGET, "refused", connect=True)
    assert (failure.status, failure.outcome, failure.reason) == (
        "UNAVAILABLE",
        Outcome.CONNECT_FAILED,
        "connect_failed",
    )
    assert failure.message == "sidecar could not connect to upstream t at 10.0.0.1:50051: refused"
    assert failure.block is None


def test_a_lost_connection_and_a_refused_stream_are_connection_lost() -> None:
    """Both say the endpoint did not answer; GOAWAY/REFUSED_STREAM also mean unprocessed."""
    attempt = Attempt(1, Host(ENDPOINT), 0.0)
    lost = attempt.lost(TARGET, "reset by peer", connect=False)
    refused = attempt.refused(TARGET, "peer went away")
    for failure in (lost, refused):
        assert (failure.status, failure.outcome, failure.reason) == (
            "UNAVAILABLE",
            Outcome.UNAVAILABLE,
            "connection_lost",
        )
    assert refused.message.endswith("at 10.0.0.1:50051: peer went away")


def test_a_timeout_is_deadline_exceeded_for_the_caller_and_a_timeout_for_the_breaker() -> None:
    failure = Attempt(2, Host(ENDPOINT), 0.0).timed_out(TARGET)
    assert (failure.status, failure.outcome, failure.reason) == (
        "DEADLINE_EXCEEDED",
        Outcome.TIMEOUT,
        "timeout",
    )
    assert failure.message == (
        "deadline expired while the sidecar waited on upstream t at 10.0.0.1:50051"
    )


def test_an_upstream_error_answer_is_kept_whole_for_the_caller() -> None:
    """A trailers-only error: its block goes to the caller as it came if no retry follows;
    the peer sidecar's reason and pushback go to the retry policy."""
    resp = PreparedResponse(b"<block>", "UNAVAILABLE", "overloaded", b"25")
    failure = Attempt(1, Host(ENDPOINT), 0.0).rejected(resp)
    assert failure.block == b"<block>"
    assert (failure.status, failure.outcome, failure.reason, failure.pushback) == (
        "UNAVAILABLE",
        Outcome.OVERLOADED,
        "overloaded",
        b"25",
    )
    no_status = Attempt(1, Host(ENDPOINT), 0.0).rejected(PreparedResponse(b"", None, None, None))
    assert no_status.status == "UNKNOWN"


def test_an_attempt_reports_to_its_endpoint_exactly_once() -> None:
    """In flight on its host from creation; the first end() reports, later ones do not."""
    host = Host(ENDPOINT)
    attempt = Attempt(1, host, 10.0)
    assert host.in_flight == 1 and host.requests == 1
    assert attempt.end(Outcome.UNAVAILABLE, 10.25)
    assert not attempt.end(Outcome.SUCCESS, 11.0)
    assert host.in_flight == 0
    assert host.failures == 1


async def test_its_stream_opens_sends_within_the_window_and_resets_on_detach() -> None:
    """Headers and DATA queue on the connection; DATA past the peer's window waits, its
    caller credit returned only when flushed; detach resets the stream, once."""
    pool = Pool()
    up = UpstreamConnection(pool, ENDPOINT)  # never connected: frames only queue
    stream = FakeStream()
    attempt = Attempt(1, Host(ENDPOINT), 0.0)
    attempt.open_stream(up, stream, b"", end_stream=False)  # type: ignore[arg-type]
    sid = attempt.sid
    assert up.calls == {sid: stream}
    assert (F.HEADERS, 0x4, sid) in frames(up.conn.out)  # END_HEADERS, no END_STREAM
    assert attempt.send(stream, b"x" * 10, False, 10) == 10  # type: ignore[arg-type]
    window = 65_535 - 10  # RFC 9113 §6.9.2: the initial window
    assert attempt.send(stream, b"y" * (window + 5), True, 7) == 0  # type: ignore[arg-type]
    assert attempt.queued == [(b"y" * 5, True, 7)]
    assert stream in up.blocked
    assert attempt.flush(stream) == 0  # type: ignore[arg-type]  # the window has not grown
    up.conn.out.clear()
    attempt.detach(stream, reset=True)  # type: ignore[arg-type]
    assert up.calls == {} and stream not in up.blocked
    assert frames(up.conn.out) == [(F.RST_STREAM, 0, sid)]
    attempt.detach(stream, reset=True)  # type: ignore[arg-type]
    assert frames(up.conn.out) == [(F.RST_STREAM, 0, sid)]


async def test_a_waiting_attempt_leaves_the_queue_on_detach() -> None:
    """While it waits for a connection or a slot it holds no stream; detach dequeues it."""
    up = UpstreamConnection(Pool(), ENDPOINT)
    stream = FakeStream()
    attempt = Attempt(1, Host(ENDPOINT), 0.0)
    attempt.wait(up, stream)  # type: ignore[arg-type]
    assert up.waiting == [stream] and attempt.sid == 0
    attempt.detach(stream, reset=True)  # type: ignore[arg-type]
    assert up.waiting == []
