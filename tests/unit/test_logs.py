"""The sidecar's log lines: JSON or text with a call's ids, and repeated events folded."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sidecar.config import LogConfig
from sidecar.logs import Folding, JsonFormatter, TextFormatter, configure


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger("test.folding")
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


def test_a_repeated_event_logs_once_per_interval_with_the_count(
    captured: tuple[logging.Logger, Lines],
) -> None:
    """First line at once; repeats within the interval are counted, not logged; the next
    line says how many were folded. Another key is not held back."""
    logger, lines = captured
    fold = Folding(logger)
    fold.interval_s = 10.0
    assert fold.log(0.0, logging.WARNING, ("shed", "overloaded"), "dropped (%s)", "overloaded")
    for i in range(37):
        assert not fold.log(1.0 + i * 0.1, logging.WARNING, ("shed", "overloaded"), "dropped")
    assert fold.log(5.0, logging.WARNING, ("shed", "deadline"), "dropped (%s)", "deadline")
    assert fold.log(10.5, logging.WARNING, ("shed", "overloaded"), "dropped (%s)", "overloaded")
    assert [r.getMessage() for r in lines.records] == [
        "dropped (overloaded)",
        "dropped (deadline)",
        "dropped (overloaded) (37 more since last)",
    ]
    assert [r.__dict__["folded"] for r in lines.records] == [0, 0, 37]
    # the count starts again after a line
    assert not fold.log(11.0, logging.WARNING, ("shed", "overloaded"), "dropped")
    assert fold.log(21.0, logging.WARNING, ("shed", "overloaded"), "dropped")
    assert lines.records[-1].getMessage() == "dropped (1 more since last)"


def test_a_disabled_level_is_not_counted_as_a_line(captured: tuple[logging.Logger, Lines]) -> None:
    logger, lines = captured
    fold = Folding(logger)
    assert not fold.log(0.0, logging.DEBUG, "k", "quiet")
    assert lines.records == []


def _record(**extra: object) -> logging.LogRecord:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "sidecar.h2relay.call", logging.ERROR, __file__, 1, "call %s failed", ("/a/B",),
            sys.exc_info(),
        )  # fmt: skip
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_call_ids_and_the_traceback() -> None:
    """One JSON object: time, level, logger, message, the call's ids, the exception."""
    out = json.loads(JsonFormatter().format(_record(request_id="r-1", trace_id="ab" * 16)))
    assert out["level"] == "ERROR" and out["logger"] == "sidecar.h2relay.call"
    assert out["message"] == "call /a/B failed"
    assert out["request_id"] == "r-1" and out["trace_id"] == "ab" * 16
    assert "ValueError: boom" in out["exception"]
    assert "upstream" not in out  # absent fields are left out, not null
    assert out["time"].endswith("+00:00")


def test_text_lines_put_the_ids_after_the_message() -> None:
    text = TextFormatter().format(_record(request_id="r-1", upstream="echo"))
    first, _, rest = text.partition("\n")
    assert first.endswith("call /a/B failed request_id=r-1 upstream=echo")
    assert "ValueError: boom" in rest


def test_configure_installs_one_handler_at_the_level() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, Folding.interval_s)
    stream = io.StringIO()
    try:
        configure(LogConfig(format="json", level="WARNING", repeat_interval_s=3), stream)
        logging.getLogger("sidecar.x").info("hidden")
        logging.getLogger("sidecar.x").warning("shown %d", 1)
        assert Folding.interval_s == 3
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        Folding.interval_s = saved[2]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "shown 1"
