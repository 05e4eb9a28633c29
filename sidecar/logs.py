"""The sidecar's own log lines: text or JSON (`log.format`), and repeated events folded.

Does I/O only through the handler it installs (stderr). `configure(config.log)` is
called once by `sidecar run`. A JSON line has `time`, `level`, `logger`, `message`, and,
where the line concerns a call, `request_id`, `trace_id`, `method`, `direction`,
`upstream` (passed as `extra=`); `exception` holds a traceback. A text line shows those
as `key=value` after the message.

`Folding`: an event that can repeat many times a second (a breaker flapping, calls shed
under overload) logs its first line, then at most one line per key every
`log.repeat_interval_s`, which says how many it folded: `... (37 more since last)`. A
folded event costs a dict lookup, not a log record. Time is passed in (`now`), so the
pure core can fold its own lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

from sidecar.config import LogConfig

# what a line about a call may carry (extra=...), in this order
CALL_FIELDS = ("request_id", "trace_id", "method", "direction", "upstream", "endpoint")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in (*CALL_FIELDS, "folded"):
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """The usual text line, with a call's ids after the message."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [
            f"{k}={record.__dict__[k]}" for k in CALL_FIELDS if record.__dict__.get(k) is not None
        ]
        if not ids:
            return text
        head, sep, tail = text.partition("\n")  # after the message, before a traceback
        return f"{head} {' '.join(ids)}{sep}{tail}"


def configure(config: LogConfig, stream: Any = None) -> None:
    """Install the one handler of the root logger, as `log` says."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level)
    Folding.interval_s = config.repeat_interval_s


class Folding:
    """Rate-limited lines of one repeated event, per key (see the module docstring)."""

    interval_s = 10.0  # set by configure(); one for the process
    max_keys = 10_000  # a bound on the keys remembered (endpoints come and go)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._keys: dict[Hashable, list[float]] = {}  # key -> [last line at, folded since]

    def log(
        self,
        now: float,
        level: int,
        key: Hashable,
        msg: str,
        *args: Any,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Log the line unless one with this key went out under `interval_s` ago (then
        count it); True when a line was written."""
        state = self._keys.get(key)
        if state is not None and now - state[0] < self.interval_s:
            state[1] += 1
            return False
        if not self.logger.isEnabledFor(level):
            return False
        folded = int(state[1]) if state is not None else 0
        if state is None and len(self._keys) >= self.max_keys:
            self._keys.clear()
        self._keys[key] = [now, 0]
        if folded:
            msg += " (%d more since last)"
            args = (*args, folded)
        self.logger.log(level, msg, *args, extra={**(extra or {}), "folded": folded})
        return True


def monotonic() -> float:
    return time.monotonic()
