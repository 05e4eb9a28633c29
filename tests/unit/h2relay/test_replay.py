"""The ReplayBuffer: what a call keeps of its request for a replay, and the caller's credit."""

from __future__ import annotations

from sidecar.h2relay.replay import ReplayBuffer


def test_sent_bytes_are_kept_for_every_replay_within_the_limit() -> None:
    """Kept copies come back on each replay (a call may be retried more than once)."""
    buf = ReplayBuffer(limit=10)
    buf.keep(b"abc")
    buf.keep(b"defg")
    assert buf.replay() == [b"abc", b"defg"]
    assert buf.replay() == [b"abc", b"defg"]
    assert buf.replayable
    assert buf.release_credit() == 0  # kept copies were credited when they were sent


def test_passing_the_limit_ends_replay_and_drops_the_copy() -> None:
    """One byte over the limit: no replay any more, and no memory held for one."""
    buf = ReplayBuffer(limit=5)
    buf.keep(b"abc")
    buf.keep(b"def")
    assert not buf.replayable
    assert buf.replay() == []
    buf.keep(b"x")  # nothing is kept once replay is off
    assert buf.chunks == []


def test_held_bytes_wait_for_a_stream_with_their_credit() -> None:
    """Bytes that came before any upstream stream are held with their window credit,
    which is owed to the caller once, when they are sent."""
    buf = ReplayBuffer(limit=100)
    buf.hold(b"ab", 2)
    buf.hold(b"cd", 7)  # flow may exceed the bytes (padding counts against the window)
    assert buf.replay() == [b"ab", b"cd"]
    assert buf.release_credit() == 9
    assert buf.release_credit() == 0


def test_held_bytes_over_the_limit_are_sent_once_and_not_replayed() -> None:
    """Unsent bytes are held whatever their size (they must still go), but past the limit
    the request is no longer replayable: the first stream gets them, then they go."""
    buf = ReplayBuffer(limit=3)
    buf.hold(b"abcd", 4)
    assert not buf.replayable
    assert buf.replay() == [b"abcd"]
    assert buf.replay() == []
    assert buf.release_credit() == 4


def test_give_up_when_the_response_begins() -> None:
    """Once response headers reached the caller no replay can happen: the copy goes."""
    buf = ReplayBuffer(limit=100)
    buf.keep(b"abc")
    buf.give_up()
    assert not buf.replayable
    assert buf.replay() == []


def test_body_is_the_request_as_held() -> None:
    buf = ReplayBuffer(limit=100)
    buf.hold(b"\0\0\0\0\2", 5)
    buf.hold(b"hi", 2)
    assert buf.body() == b"\0\0\0\0\2hi"
