"""The access log through real sidecar processes: one JSON line per logical call, for OK,
retried, shed (admission) and deadline-dropped calls; a full buffer drops and counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.observed import Observed, observed_mesh, traffic, unary
from tests.integration.procs import free_port, http, sidecar_process, wait_until

pytestmark = pytest.mark.timeout(90)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
KEYS = {
    "start_time", "duration_ms", "direction", "method", "caller", "upstream", "endpoint",
    "site", "attempts", "status", "sidecar_error", "request_id", "trace_id", "bytes_in",
    "bytes_out", "retried", "shed", "dropped",
}  # fmt: skip


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Observed, Path, Path]]:
    tmp = tmp_path_factory.mktemp("access")
    server_log, caller_log = tmp / "server-access.log", tmp / "caller-access.log"
    with observed_mesh(
        tmp,
        server_extra={"access_log": {"path": str(server_log)}},
        caller_extra={"access_log": {"path": str(caller_log), "format": "json"}},
    ) as mesh:
        yield mesh, server_log, caller_log


def lines(path: Path, at_least: int) -> list[dict[str, Any]]:
    """The log's lines once it holds `at_least` (the writer drains every 0.2 s)."""

    def enough() -> list[str] | None:
        text = path.read_text() if path.exists() else ""
        found = text.splitlines()
        return found if len(found) >= at_least else None

    return [json.loads(s) for s in wait_until(enough, 10, f"{at_least} lines in {path.name}")]


async def test_one_line_per_call_with_its_story(logged: tuple[Observed, Path, Path]) -> None:
    """OK, retried, shed and deadline-dropped calls each give one line per sidecar hop,
    with the fields that tell them apart; the request id joins the two hops."""
    mesh, server_log, caller_log = logged
    meta = (("x-request-id", "req-observed-1"), ("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01"))
    first = await unary(mesh.caller_addr, "echo", metadata=meta, payload=b"x" * 100)
    assert first[0] == "OK"
    results = await traffic(mesh)
    calls = 1 + sum(len(r) for r in results.values())
    caller = lines(caller_log, calls)
    assert len(caller) == calls  # one line per logical call, retries included in it
    for entry in caller:
        assert set(entry) == KEYS, entry
        assert entry["direction"] == "outbound"
        assert entry["caller"].startswith("127.0.0.1:")
        assert entry["duration_ms"] >= 0
        assert entry["start_time"].endswith("+00:00")

    ok = next(e for e in caller if e["request_id"] == "req-observed-1")
    assert ok["status"] == "OK" and ok["sidecar_error"] is None
    assert ok["trace_id"] == TRACE
    assert ok["upstream"] == "echo" and ok["site"] == "lon3"
    assert ok["endpoint"] == f"127.0.0.1:{mesh.server.port('inbound')}"
    assert ok["attempts"] == 1 and not (ok["retried"] or ok["shed"] or ok["dropped"])
    assert ok["bytes_in"] >= 105 and ok["bytes_out"] >= 105  # 5-byte prefix + the message
    assert ok["method"] == "/meshtest.echo.v1.Echo/Unary"

    retried = [e for e in caller if e["upstream"] == "flaky" and e["retried"]]
    assert retried, [e for e in caller if e["upstream"] == "flaky"]
    assert all(e["attempts"] == 2 and e["status"] == "OK" for e in retried)
    assert all(e["endpoint"] == ok["endpoint"] for e in retried)  # the retry's endpoint

    dead = [e for e in caller if e["upstream"] == "dead"]
    assert {e["status"] for e in dead} == {"UNAVAILABLE"}
    assert any(e["sidecar_error"] == "throttled" and e["shed"] for e in dead)
    unrouted = next(e for e in caller if e["upstream"] == "-")
    assert unrouted["status"] == "UNIMPLEMENTED" and unrouted["sidecar_error"] == "no_route"

    server = lines(server_log, 1 + len(results["ok"]))
    hop = next(e for e in server if e["request_id"] == "req-observed-1")
    assert hop["direction"] == "inbound" and hop["upstream"] == "app"
    assert hop["trace_id"] == TRACE and hop["status"] == "OK"
    assert hop["caller"].startswith("127.0.0.1:")
    shed = [e for e in server if e["shed"]]
    assert shed and all(
        e["status"] == "UNAVAILABLE" and e["sidecar_error"] == "overloaded" and e["attempts"] == 0
        for e in shed
    )
    dropped = [e for e in server if e["dropped"]]
    assert len(dropped) == len(results["short"]), server
    assert all(e["sidecar_error"] == "deadline" for e in dropped)
    # the caller's line for a call its peer shed: the peer's status, no reason of its own
    shed_ids = {e["request_id"] for e in shed}
    assert {e["status"] for e in caller if e["request_id"] in shed_ids} == {"UNAVAILABLE"}


async def test_a_full_buffer_drops_lines_and_counts_them(tmp_path: Path) -> None:
    """A buffer of one line and a burst of calls: lines are dropped, never a call; the
    dropped ones are counted, and lines + drops = calls."""
    path = tmp_path / "access.log"
    cfg = {
        "outbound": {"listen": f"127.0.0.1:{free_port()}"},
        "access_log": {"path": str(path), "buffer_lines": 1},
    }
    with sidecar_process(tmp_path, "tiny", cfg, wait="/live") as side:
        addr = f"127.0.0.1:{side.port('outbound')}"
        results = await asyncio.gather(*(unary(addr, "nowhere") for _ in range(60)))
        assert {code for code, _ in results} == {"UNIMPLEMENTED"}

        def counted() -> tuple[int, float] | None:
            _, body = http("GET", side.url("/metrics"))
            dropped = sum(
                float(s.rpartition(" ")[2])
                for s in body.decode().splitlines()
                if s.startswith("sidecar_access_log_dropped_total ")
            )
            written = len(path.read_text().splitlines()) if path.exists() else 0
            return (written, dropped) if written + dropped >= 60 else None

        written, dropped = wait_until(counted, 10, "every call written or counted")
    assert dropped > 0
    assert written >= 1
    assert written + dropped == 60
