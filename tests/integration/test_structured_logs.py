"""`log: {format: json}` through a real sidecar process: every line it logs is one JSON
object, and calls shed under overload log one line per interval with what was folded."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from tests.integration.observed import unary
from tests.integration.procs import echo_process, free_port, http, sidecar_process, wait_until

pytestmark = pytest.mark.timeout(90)
SHED = "inbound admission dropped a call for the app (overloaded)"


def dropped(side: object) -> float:
    _, body = http("GET", side.url("/metrics"))  # type: ignore[attr-defined]
    return sum(
        float(line.rpartition(" ")[2])
        for line in body.decode().splitlines()
        if line.startswith('sidecar_dropped_requests_total{reason="overloaded"}')
    )


async def test_json_lines_and_folded_sheds(tmp_path: Path) -> None:
    """Two bursts of calls shed by admission, over a second apart: JSON lines only; the
    second burst's line counts the sheds folded since the first; lines and their folded
    counts never add up to more sheds than happened."""
    with echo_process(tmp_path) as (_, echo_port):
        cfg = {
            "service": "echo",
            "inbound": {
                "listen": f"127.0.0.1:{free_port()}",
                "app": f"127.0.0.1:{echo_port}",
                "admission": {"max_concurrency": 1, "queue_size": 0},
            },
            "log": {"format": "json", "level": "INFO", "repeat_interval_s": 1.0},
        }
        with sidecar_process(tmp_path, "server", cfg) as side:
            addr = f"127.0.0.1:{side.port('inbound')}"
            for burst in range(2):
                if burst:
                    await asyncio.sleep(1.2)  # past the interval: the next shed logs again
                results = await asyncio.gather(
                    *(unary(addr, "app", 2.0, delay_ms=200) for _ in range(15))
                )
                assert any(t.get("x-sidecar-error") == "overloaded" for _, t in results)
            total = dropped(side)

            def shed_lines() -> list[dict[str, object]] | None:
                found = [
                    json.loads(line)
                    for line in side.proc.logs().splitlines()
                    if line.startswith("{") and SHED in line
                ]
                return found if len(found) >= 2 else None

            sheds = wait_until(shed_lines, 10, "two shed lines")
            text = side.proc.logs()
    lines = [line for line in text.splitlines() if line.strip()]
    # what is printed before the config is read (a stale build's notice at import) cannot
    # follow it; from the first configured line on, every line is JSON
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("{")) :]
    assert lines
    for line in lines:
        entry = json.loads(line)  # a line that is not JSON fails here
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    assert any(e["message"].startswith("sidecar listening") for e in map(json.loads, lines))
    first, later = sheds[0], sheds[-1]
    assert first["level"] == "WARNING" and "more since last" not in first["message"]
    folded = later.get("folded")
    assert isinstance(folded, int) and folded >= 1
    assert re.search(rf"\({folded} more since last\)$", str(later["message"]))
    assert len(sheds) + sum(int(e.get("folded") or 0) for e in sheds) <= total
    assert len(sheds) < total  # folded, not one line per shed call
