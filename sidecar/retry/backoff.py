"""Retry delays: full-jitter exponential backoff and server pushback.

Pure (randomness is passed in).

- Full jitter (Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture
  Blog, 2015): sleep = uniform(0, min(cap, base * 2**(n-1))) before retry n.
  Spreading retries over the whole interval de-synchronises callers that failed
  together, which plain or "equal" jitter does less well.
- `grpc-retry-pushback-ms` (gRPC proposal A6, "gRPC Retry Design"): a server may
  say how long to wait before a retry. A non-negative integer is that delay, and
  replaces the backoff; a negative or unparseable value means "do not retry".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PUSHBACK_KEY = "grpc-retry-pushback-ms"


def full_jitter_s(retry: int, base_ms: float, cap_ms: float, rng: random.Random) -> float:
    """Delay in seconds before retry number `retry` (1 = first retry)."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    # Cap the exponent too: 2**1000 is a float overflow waiting to happen.
    ceiling_ms = min(cap_ms, base_ms * 2.0 ** min(retry - 1, 62))
    return rng.uniform(0.0, ceiling_ms) / 1000.0


@dataclass(frozen=True, slots=True)
class Pushback:
    """What the peer said about retrying: `stop`, or a delay (None: it said nothing)."""

    stop: bool = False
    delay_s: float | None = None


NO_PUSHBACK = Pushback()
STOP = Pushback(stop=True)


def parse_pushback(value: str | bytes | None) -> Pushback:
    """Read a `grpc-retry-pushback-ms` metadata value (None when absent)."""
    if value is None:
        return NO_PUSHBACK
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return STOP
    text = value.strip()
    # A6 says an integer; "+5", "5.0", "1e3" and "" are not, and mean stop.
    if not text.isdigit() or not text.isascii():
        return STOP
    return Pushback(delay_s=int(text) / 1000.0)
