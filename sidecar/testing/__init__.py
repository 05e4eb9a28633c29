"""Test fakes for the relay, shipped with the package for users' own tests.

Does I/O only on the event loop it provides: no socket, no real sleep (clock.py).
trio's `trio.testing` (`MockClock`, `memory_stream_pair`) and httpcore's mock backend
are the model:

- `FakeClock`: time you advance (`await clock.advance(s)`), and the asyncio loop that
  keeps it (`clock.run(main())`); a `Plane(..., clock=clock)` and its `Pool` read it;
- `h2_pair(plane)`: an in-memory pair of HTTP/2 connections, a gRPC caller on one end
  and the plane's caller connection on the other (h2.py);
- `FakeUpstream(*steps)`: an HTTP/2 server answering each stream (each attempt) as
  scripted: `Reply`, `Reset`, `GoAway`, `Hang`, served on the clock's network
  (upstream.py).

README's "Test fakes" section has an example that runs as written (a test runs it);
tests/unit/h2relay/call_rig.py builds a plane with the real policies on them.
"""

from __future__ import annotations

from sidecar.testing.clock import (
    FakeClock,
    FakeLoop,
    FakeNetwork,
    IOForbidden,
    Stalled,
    UnhandledError,
    no_io,
)
from sidecar.testing.h2 import H2Pair, h2_pair
from sidecar.testing.upstream import FakeUpstream, GoAway, Hang, Reply, Reset, SeenStream, Step

__all__ = [
    "FakeClock",
    "FakeLoop",
    "FakeNetwork",
    "FakeUpstream",
    "GoAway",
    "H2Pair",
    "Hang",
    "IOForbidden",
    "Reply",
    "Reset",
    "SeenStream",
    "Stalled",
    "Step",
    "UnhandledError",
    "h2_pair",
    "no_io",
]
