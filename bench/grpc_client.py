"""A grpcio client for the streaming, large-message and overload runs. Does I/O.

Run as its own process (`python -m bench.grpc_client MODE ...`) so its CPU is not
counted as the proxy's; it prints one JSON object on stdout at the end. Every mode
is bounded in count and time.

Modes:
- `streams N`: N concurrent Bidi streams on one connection. Each sends one message
  and waits for its echo (so the stream exists end to end), then the client prints
  `OPEN <n>` and waits for a line on stdin before half-closing them all and reading
  each to its status. The parent measures the proxy's RSS while they are open.
- `big`: unary calls with a `--size`-byte payload echoed back, `--concurrency` at a time.
- `bidi`: one Bidi stream for `--seconds`, `--window` messages in flight (`--target
  inprocess:FILE` as for `closed`).
- `openloop`: unary calls started at a fixed `--rate` for `--seconds` (call i at
  t0 + i/rate, whatever earlier calls are doing), each with a `--deadline-ms`; per-call
  status and latency, summarized (Schroeder et al., "Open versus closed", NSDI 2006).
- `closed`: `--concurrency` callers back to back for `--seconds`: the capacity run.
  `--target inprocess:FILE` calls through the in-process client (sidecar.client) with
  the sidecar config FILE; `--target xds:///echo` through grpcio's xDS client (its
  bootstrap from GRPC_XDS_BOOTSTRAP).
- `alternate`: `closed` blocks of `--seconds` against `--target` and each `--also`
  target in turn, `--blocks` rounds, in this one process (side by side without the
  noise between processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import grpc

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc

OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
]
SIDECAR_ERROR_KEY = "x-sidecar-error"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, -(-len(s) * q // 100))  # ceil(n*q/100), as bench.loadgen.percentile
    return s[int(rank) - 1]


def _channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=OPTIONS)


async def streams(target: str, n: int, batch: int, timeout_s: float) -> dict[str, Any]:
    """Open n Bidi streams, report, wait for stdin, close them, count the OK ones."""
    async with _channel(target) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        await ch.channel_ready()
        req = echo_pb2.EchoRequest(payload=b"x" * 16)
        calls: list[Any] = []
        errors: Counter[str] = Counter()
        t0 = time.monotonic()

        async def open_one() -> Any:
            call = stub.Bidi(timeout=timeout_s)
            await call.write(req)
            await call.read()
            return call

        for start in range(0, n, batch):
            got = await asyncio.gather(
                *(open_one() for _ in range(min(batch, n - start))), return_exceptions=True
            )
            for item in got:
                if isinstance(item, BaseException):
                    errors[_status_of(item)] += 1
                else:
                    calls.append(item)
        open_s = time.monotonic() - t0
        print(f"OPEN {len(calls)}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        t1 = time.monotonic()

        async def close_one(call: Any) -> str:
            try:
                await call.done_writing()
                while await call.read() is not grpc.aio.EOF:
                    pass
                return str((await call.code()).name)
            except grpc.aio.AioRpcError as exc:
                return str(exc.code().name)

        statuses = Counter(await asyncio.gather(*(close_one(c) for c in calls)))
        return {
            "requested": n,
            "opened": len(calls),
            "open_errors": dict(errors),
            "open_s": open_s,
            "close_s": time.monotonic() - t1,
            "statuses": dict(statuses),
            "completed_ok": statuses.get("OK", 0),
        }


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code().name)
    return type(exc).__name__


async def big(target: str, size: int, calls: int, concurrency: int) -> dict[str, Any]:
    async with _channel(target) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        await ch.channel_ready()
        req = echo_pb2.EchoRequest(payload=b"m" * size)
        await stub.Unary(req, timeout=30)  # warm-up, not counted
        todo = list(range(calls))
        lat: list[float] = []
        statuses: Counter[str] = Counter()
        bad_size = 0

        async def worker() -> None:
            nonlocal bad_size
            while todo:
                todo.pop()
                t = time.monotonic()
                try:
                    resp = await stub.Unary(req, timeout=30)
                    statuses["OK"] += 1
                    lat.append(time.monotonic() - t)
                    bad_size += len(resp.payload) != size
                except grpc.aio.AioRpcError as exc:
                    statuses[exc.code().name] += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.monotonic() - t0
        return {
            "calls": calls,
            "size": size,
            "wall_s": wall,
            "statuses": dict(statuses),
            "wrong_size": bad_size,
            "calls_per_s": statuses["OK"] / wall,
            "mib_per_s_each_way": statuses["OK"] * size / wall / 2**20,
            "p50_ms": _ms(percentile(lat, 50)),
            "p99_ms": _ms(percentile(lat, 99)),
        }


async def bidi(target: str, seconds: float, window: int, size: int) -> dict[str, Any]:
    async with await _closed_channel(target) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        await ch.channel_ready()
        call = stub.Bidi(timeout=seconds + 30)
        req = echo_pb2.EchoRequest(payload=b"b" * size)
        credits = asyncio.Semaphore(window)
        stop_at = time.monotonic() + seconds
        sent = 0

        async def writer() -> None:
            nonlocal sent
            while time.monotonic() < stop_at:
                await credits.acquire()
                await call.write(req)
                sent += 1
            await call.done_writing()

        received = 0
        t0, cpu0 = time.monotonic(), time.process_time()
        wtask = asyncio.create_task(writer())
        try:
            async for _ in call:
                received += 1
                credits.release()
            status = (await call.code()).name
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
        await wtask
        wall = time.monotonic() - t0
        return {
            "seconds": seconds,
            "window": window,
            "loop_cpu_s": time.process_time() - cpu0,  # the stream only: no connect
            "sent": sent,
            "received": received,
            "status": status,
            "wall_s": wall,
            "messages_per_s": received / wall,
        }


async def openloop(
    target: str, rate: float, seconds: float, deadline_ms: float, delay_ms: int, max_in_flight: int
) -> dict[str, Any]:
    async with _channel(target) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        await ch.channel_ready()
        req = echo_pb2.EchoRequest(payload=b"o" * 100, delay_ms=delay_ms)
        ok_lat: list[float] = []
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        in_flight = 0
        skipped = 0
        late_starts = 0

        async def one() -> None:
            nonlocal in_flight
            t = time.monotonic()
            try:
                call = stub.Unary(req, timeout=deadline_ms / 1000)
                await call
                ok_lat.append(time.monotonic() - t)
                statuses["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                statuses[exc.code().name] += 1
                reason = dict(exc.trailing_metadata() or ()).get(SIDECAR_ERROR_KEY)
                errors[f"{exc.code().name}/{reason or '-'}"] += 1
            finally:
                in_flight -= 1

        total = int(rate * seconds)
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        for i in range(total):
            at = t0 + i / rate
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.05:
                late_starts += 1  # the client itself fell behind the schedule
            if in_flight >= max_in_flight:
                skipped += 1
                continue
            in_flight += 1
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_s = time.monotonic() - t0
        if tasks:
            await asyncio.wait(tasks, timeout=deadline_ms / 1000 + 5)
        # Goodput over the whole time the calls took (sending + the last ones' wait), so
        # a backlog served after the sending stopped does not count as extra capacity.
        wall_s = time.monotonic() - t0
        return {
            "rate": rate,
            "seconds": seconds,
            "deadline_ms": deadline_ms,
            "offered": total,
            "sent_s": sent_s,
            "skipped_client_in_flight": skipped,
            "late_starts": late_starts,
            "statuses": dict(statuses),
            "errors": dict(errors),
            "ok": statuses["OK"],
            "wall_s": wall_s,
            "goodput": statuses["OK"] / wall_s,
            "p50_ms": _ms(percentile(ok_lat, 50)),
            "p99_ms": _ms(percentile(ok_lat, 99)),
        }


async def _closed_channel(target: str) -> Any:
    """`inprocess:FILE`: the in-process client (sidecar.client) to upstream `echo` of the
    sidecar config FILE; anything else (host:port, `xds:///echo`) a grpcio channel."""
    if target.startswith("inprocess:"):
        import sidecar.client

        return await sidecar.client.connect("echo", target.removeprefix("inprocess:"))
    return _channel(target)


async def _closed_block(
    stub: Any, req: Any, concurrency: int, seconds: float, deadline_ms: float
) -> dict[str, Any]:
    """`concurrency` callers back to back for `seconds`: statuses, latencies, CPU."""
    lat: list[float] = []
    statuses: Counter[str] = Counter()
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop_at:
            t = time.monotonic()
            try:
                await stub.Unary(req, timeout=deadline_ms / 1000)
                lat.append(time.monotonic() - t)
                statuses["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                statuses[exc.code().name] += 1

    t0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.monotonic() - t0
    return {
        "concurrency": concurrency,
        "wall_s": wall,
        "loop_cpu_s": time.process_time() - cpu0,  # the calls only: no imports, no connect
        "statuses": dict(statuses),
        "ok_per_s": statuses["OK"] / wall,
        "p50_ms": _ms(percentile(lat, 50)),
        "p99_ms": _ms(percentile(lat, 99)),
    }


async def closed(
    target: str, concurrency: int, seconds: float, delay_ms: int, deadline_ms: float
) -> dict[str, Any]:
    async with await _closed_channel(target) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        await ch.channel_ready()
        req = echo_pb2.EchoRequest(payload=b"c" * 100, delay_ms=delay_ms)
        return await _closed_block(stub, req, concurrency, seconds, deadline_ms)


async def alternate(
    targets: list[str], concurrency: int, seconds: float, blocks: int, deadline_ms: float
) -> dict[str, Any]:
    """`closed` blocks of `seconds` against each target in turn (rotating the order),
    `blocks` times, all in this one process: the paths share the process, its warm-up
    and its CPU, so their ratio is not the noise between processes."""
    channels = [await _closed_channel(t) for t in targets]
    try:
        stubs = [echo_pb2_grpc.EchoStub(ch) for ch in channels]
        for ch in channels:
            await ch.channel_ready()
        req = echo_pb2.EchoRequest(payload=b"c" * 100)
        for stub in stubs:  # warm-up, thrown away
            await _closed_block(stub, req, concurrency, min(seconds, 0.5), deadline_ms)
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        for b in range(blocks):
            order = list(range(len(targets)))
            order = order[b % len(order) :] + order[: b % len(order)]
            for i in order:
                runs[targets[i]].append(
                    await _closed_block(stubs[i], req, concurrency, seconds, deadline_ms)
                )
        return {"targets": targets, "runs": runs}
    finally:
        for ch in channels:
            await ch.close()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grpc_client")
    p.add_argument("mode", choices=("streams", "big", "bidi", "openloop", "closed", "alternate"))
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--also", action="append", default=[], help="alternate: more targets")
    p.add_argument("--blocks", type=int, default=5, help="alternate: blocks per target")
    p.add_argument("-n", type=int, default=1000, help="streams: how many")
    p.add_argument("--batch", type=int, default=500, help="streams: opened at a time")
    p.add_argument("--size", type=int, default=1 << 20, help="big/bidi: payload bytes")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--deadline-ms", type=float, default=1000.0)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--max-in-flight", type=int, default=5000)
    a = p.parse_args(argv)
    t0 = time.process_time()
    coro: Any
    if a.mode == "streams":
        coro = streams(a.target, a.n, a.batch, timeout_s=600)
    elif a.mode == "big":
        coro = big(a.target, a.size, a.calls, a.concurrency)
    elif a.mode == "bidi":
        coro = bidi(a.target, a.seconds, a.window, a.size)
    elif a.mode == "openloop":
        coro = openloop(a.target, a.rate, a.seconds, a.deadline_ms, a.delay_ms, a.max_in_flight)
    elif a.mode == "alternate":
        coro = alternate([a.target, *a.also], a.concurrency, a.seconds, a.blocks, a.deadline_ms)
    else:
        coro = closed(a.target, a.concurrency, a.seconds, a.delay_ms, a.deadline_ms)
    try:
        import uvloop

        out = uvloop.run(coro)
    except ImportError:  # pragma: no cover
        out = asyncio.run(coro)
    out["client_cpu_s"] = time.process_time() - t0
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
