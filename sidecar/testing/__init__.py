"""Test fakes for the relay, shipped with the package for users' own tests.

Does no I/O of its own (no socket, no real sleep: see clock.py). trio's `trio.testing`
(`MockClock`, `memory_stream_pair`) and httpcore's mock backend are the model:

- `FakeClock`: time you advance (`await clock.advance(s)`), and the asyncio loop that
  keeps it (`clock.run(main())`); a `Plane(..., clock=clock)` and its `Pool` read it;
- `h2_pair(plane)`: an in-memory pair of HTTP/2 connections, a gRPC caller on one end
  and the plane's caller connection on the other;
- `FakeUpstream(*steps)`: an HTTP/2 server answering each stream (each attempt) as
  scripted: `Reply`, `Reset`, `GoAway`, `Hang`, served on the clock's network.

```python
clock = FakeClock()

async def main() -> None:
    upstream = FakeUpstream(Reply("UNAVAILABLE"), Reply(messages=[b"hi"]))
    upstream.serve(clock.network, "10.0.0.1:50051", "10.0.0.2:50051")
    plane = Plane("outbound", resolve, Pool(clock=clock), new_call=Call, clock=clock,
                  max_message_bytes=1 << 20)
    answer = await h2_pair(plane).call("/pkg.S/M", b"req", timeout_s=1.0).ended

clock.run(main())
```
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
