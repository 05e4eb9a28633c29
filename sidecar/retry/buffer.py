"""The replay buffer of a client-streaming or bidi call's request messages.

Pure. A stream can be retried only if every message the caller has sent so far
can be sent again to another endpoint, so the data plane keeps them here. Past
`cap_bytes` the buffer gives up (frees its messages and reports `replayable`
False for good): memory per call stays bounded, and the call simply loses its
right to a retry. A unary call's one message is the same case with one append.
"""

from __future__ import annotations


class ReplayBuffer:
    __slots__ = ("_messages", "cap_bytes", "nbytes", "replayable")

    def __init__(self, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes
        self._messages: list[bytes] = []
        self.nbytes = 0
        self.replayable = True

    def append(self, message: bytes) -> None:
        """Record one request message as it is forwarded."""
        if not self.replayable:
            return
        self.nbytes += len(message)
        if self.nbytes > self.cap_bytes:
            self.replayable = False
            self._messages = []
            return
        self._messages.append(message)

    @property
    def messages(self) -> list[bytes]:
        """What to send first on a retry (then continue with the caller's stream)."""
        if not self.replayable:
            raise RuntimeError("the request stream outgrew the replay buffer")
        return list(self._messages)
