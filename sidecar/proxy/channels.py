"""Per-endpoint HTTP/2 channels: opened lazily, reused by every call, closed when idle.

Does I/O (grpc.aio channels). The decision of which channels to close is a pure
function (`idle_keys`) so it can be tested without sockets; `ChannelPool.sweep`
then does the closing. A channel with calls in flight is never closed. Times are
`time.monotonic()` seconds, like every `now` in the data plane.

Options set on every channel, and why:
- `grpc.enable_retries: 0`: grpcio's transparent retries would hide real outcomes
  from the breaker, the EWMA and the retry budget; the sidecar retries itself.
- message limits both ways from `max_message_bytes` (grpcio defaults to 4 MiB receive).
- `grpc.use_local_subchannel_pool: 1`: one connection per endpoint channel, so closing
  an idle channel really closes its connection (the global pool would share it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc


@dataclass(slots=True)
class PooledChannel:
    """One endpoint's channel and its cached multi-callables (building one per call
    costs measurable CPU: FACTS.md)."""

    channel: grpc.aio.Channel
    wire: Any = None  # unary attempts go over this instead, when set (sidecar/client/wire.py)
    leases: int = 0
    last_used: float = 0.0
    stubs: dict[tuple[str, str], Any] = field(default_factory=dict)

    def stub(self, method: str, kind: str) -> Any:
        """The raw-bytes multi-callable for `method` as `kind` (no (de)serialisers)."""
        key = (method, kind)
        found = self.stubs.get(key)
        if found is None:
            make = {
                "unary": self.channel.unary_unary,
                "server_stream": self.channel.unary_stream,
                "client_stream": self.channel.stream_unary,
                "bidi": self.channel.stream_stream,
            }[kind]
            found = make(method)
            if len(self.stubs) < 10_000:
                self.stubs[key] = found
        return found


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.enable_retries", 0),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.use_local_subchannel_pool", 1),
    ]


def idle_keys(entries: Mapping[str, tuple[int, float]], now: float, idle_s: float) -> list[str]:
    """Pure plan: addresses (leases, last_used) whose channel should close now."""
    return [k for k, (leases, last) in entries.items() if leases == 0 and now - last >= idle_s]


class ChannelPool:
    def __init__(
        self,
        max_message_bytes: int,
        idle_timeout_s: float = 300.0,
        wire: Callable[[str], Any] | None = None,
    ) -> None:
        self._options = channel_options(max_message_bytes)
        self._wire = wire  # address -> the endpoint's wire for unary attempts
        self._idle_s = idle_timeout_s
        self._entries: dict[str, PooledChannel] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def acquire(self, address: str, now: float) -> PooledChannel:
        """The channel to `address` (opened on first use), held open until `release`."""
        entry = self._entries.get(address)
        if entry is None:
            channel = grpc.aio.insecure_channel(address, options=self._options)
            entry = PooledChannel(channel, None if self._wire is None else self._wire(address))
            self._entries[address] = entry
        entry.leases += 1
        entry.last_used = now
        return entry

    def release(self, entry: PooledChannel, now: float) -> None:
        entry.leases -= 1
        entry.last_used = now

    @contextlib.contextmanager
    def lease(self, address: str, now: float) -> Iterator[PooledChannel]:
        """`acquire` and `release` around a block."""
        entry = self.acquire(address, now)
        try:
            yield entry
        finally:
            self.release(entry, time.monotonic())

    async def sweep(self, now: float) -> int:
        """Close channels idle for longer than the idle timeout; return how many."""
        plan = idle_keys(
            {k: (e.leases, e.last_used) for k, e in self._entries.items()}, now, self._idle_s
        )
        for key in plan:
            entry = self._entries.pop(key)
            await entry.channel.close()
        return len(plan)

    def start(self) -> None:
        """Sweep periodically in the background."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(max(1.0, self._idle_s / 4))
                await self.sweep(time.monotonic())

        self._sweeper = asyncio.get_running_loop().create_task(loop())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        entries, self._entries = self._entries, {}
        for entry in entries.values():
            await entry.channel.close()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} leases={e.leases}" for k, e in self._entries.items())
        return f"<ChannelPool [{parts}]>"
