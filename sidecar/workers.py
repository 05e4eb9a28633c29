"""`sidecar run --workers N`: N sidecar processes sharing the listeners (SO_REUSEPORT).

Does I/O (processes, signals). One Python process is one core at most, so the relay
scales across cores the way nginx and HAProxy's `nbproc` did: N worker processes bind
the same inbound/outbound ports with SO_REUSEPORT and the kernel spreads new
connections among them. A connection (and so every stream on it) stays with one
worker, so a single caller connection does not get faster; many callers do.

The supervisor (the process started as `sidecar run`) starts the workers, forwards
SIGTERM/SIGINT to all of them, and exits 0 once every worker drained and exited 0. A
worker that dies on its own takes the others down (exit 1): a crash-only design that
leaves restarting to the process manager, as a sidecar with one process would.

Per worker:
- admin: worker i listens on the configured admin port + i (worker 0 on the port in
  the config, so health checks and scripts reading /ready, /metrics see worker 0; each
  worker's own numbers are at its own port); admin port 0 stays 0 (each picks one);
- registration (RFC 2136) only in worker 0: one instance, one SRV record, removed once;
- everything else (discovery, health checks, pools, breakers) per worker: workers share
  no memory, so breakers and budgets are per worker.

Reload (SIGHUP to the supervisor): each worker has a control channel to the supervisor
(a socket pair, `--control-fd`). The supervisor writes `reload` to every worker; each
reads the config file again, checks and applies it as a single sidecar does
(sidecar/reload/), and answers one JSON line with its result; the supervisor logs one
line per worker (`config reload: worker 1 (pid 4242): applied version 3f2a... #2`) and
one with the count. A worker that does not answer within `RELOAD_TIMEOUT_S` is
reported as such. `POST /reload` on any worker's admin port asks the supervisor (a
`reload-all` line) for the same fan-out and answers every worker's result.

Only the h2relay data plane can share its ports (the grpcio servers bind without
SO_REUSEPORT), and the listen ports must be fixed (port 0 would give each its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from sidecar.config import Config, ConfigError, load_config
from sidecar.endpoint import parse_hostport

log = logging.getLogger("sidecar.workers")
RELOAD_TIMEOUT_S = 30.0  # a worker's answer to `reload` (its listeners may need binding)


def refusal(config: Config, workers: int) -> str | None:
    """Why this config cannot run with `workers` processes, or None."""
    if workers <= 1:
        return None
    for name in ("inbound", "outbound"):
        listener = getattr(config, name)
        if listener is not None and parse_hostport(listener.listen)[1] == 0:
            return f"--workers needs a fixed port in {name}.listen (port 0 differs per worker)"
    return None


def worker_config(config: Config, index: int) -> Config:
    """Worker `index`'s view of the config: admin port + index; registration in worker 0."""
    update: dict[str, object] = {}
    if index > 0:
        host, port = parse_hostport(config.admin.listen)
        if port:
            host = f"[{host}]" if ":" in host else host
            update["admin"] = config.admin.model_copy(update={"listen": f"{host}:{port + index}"})
        update["registration"] = None
    return config.model_copy(update=update)


def loader(config_path: str, workers: int, index: int | None) -> Callable[[], Config]:
    """How a (worker) process reads its config again on reload: checked whole, refused
    as at start when it cannot run with `workers` processes, then this worker's view."""

    def load() -> Config:
        config = load_config(config_path)
        why = refusal(config, workers)
        if why is not None:
            raise ConfigError("", why)
        return config if index is None else worker_config(config, index)

    return load


def control(fd: int) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """A worker's side of its control channel. The supervisor writes `reload`: the
    worker answers the result of `sidecar.reload()` as one JSON line. The worker's own
    `POST /reload` writes `reload-all` and waits for the supervisor's `all <JSON list>`:
    every worker's result, its own included (the same fan-out as SIGHUP's). Runs until
    the supervisor goes."""

    async def serve(sidecar: Any) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        waiting: list[asyncio.Future[list[dict[str, Any]]]] = []
        lock = asyncio.Lock()

        async def reload_all() -> list[dict[str, Any]]:
            async with lock:  # one request in flight: answers come back in order
                done = asyncio.get_running_loop().create_future()
                waiting.append(done)
                writer.write(b"reload-all\n")
                await writer.drain()
                return await asyncio.wait_for(done, RELOAD_TIMEOUT_S * 2)

        sidecar.reload_all = reload_all
        try:
            while line := await reader.readline():
                if line.strip() == b"reload":
                    result = await sidecar.reload()
                    writer.write(json.dumps(result.as_dict()).encode() + b"\n")
                    await writer.drain()
                elif line.startswith(b"all ") and waiting:
                    found = waiting.pop(0)
                    if not found.done():
                        found.set_result(json.loads(line[4:]))
        finally:
            sidecar.reload_all = None

    return serve


class _Channel:
    """The supervisor's end of one worker's control channel, read by lines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.requests = 0  # `reload-all` lines not yet served
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_ready(self) -> None:
        """Take what arrived (the socket is readable), counting `reload-all` lines."""
        self.sock.settimeout(0)
        try:
            chunk = self.sock.recv(65536)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            self.closed = True  # the worker is gone: no longer watched
        self.buffer += chunk
        self._count_requests()

    def _count_requests(self) -> None:
        lines = self.buffer.split(b"\n")
        kept = [line for line in lines[:-1] if line.strip() != b"reload-all"]
        self.requests += len(lines) - 1 - len(kept)
        self.buffer = b"".join(line + b"\n" for line in kept) + lines[-1]

    def answer(self, end: float) -> bytes:
        """The next line that is not a request, waiting until `end` (OSError then)."""
        while b"\n" not in self.buffer:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("the worker closed its control channel")
            self.buffer += chunk
            self._count_requests()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a worker gone: reported as no answer
            self.sock.sendall(data)


def fan_out_reload(channels: list[_Channel], pids: list[int]) -> list[dict[str, Any]]:
    """Tell every worker to reload; each one's answer (or why there is none), logged."""
    for channel in channels:
        channel.send(b"reload\n")
    results: list[dict[str, Any]] = []
    end = time.monotonic() + RELOAD_TIMEOUT_S
    for i, channel in enumerate(channels):
        answer: dict[str, Any]
        try:
            answer = json.loads(channel.answer(end))
        except (OSError, ValueError) as exc:
            answer = {"result": "no_answer", "reason": str(exc) or type(exc).__name__}
        answer["worker"] = i
        results.append(answer)
        version = answer.get("version", {})
        what = answer["result"]
        if "reason" in answer:
            what += f": {answer.get('key') or 'config'}: {answer['reason']}"
        log.log(
            logging.INFO if what.startswith(("applied", "unchanged")) else logging.ERROR,
            "config reload: worker %d (pid %d): %s (running version %s #%s)",
            i, pids[i], what, version.get("hash", "?"), version.get("counter", "?"),
        )  # fmt: skip
    applied = sum(r["result"] in ("applied", "unchanged") for r in results)
    log.info("config reload: %d of %d workers run the new config", applied, len(results))
    return results


def supervise(config_path: str, workers: int) -> int:
    """Run `workers` worker processes until SIGTERM/SIGINT; 0 when all drained cleanly.
    SIGHUP reloads every worker (`fan_out_reload`)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    base = [sys.executable, "-m", "sidecar", "run", "-c", config_path]
    procs = []
    channels: list[_Channel] = []
    for i in range(workers):
        ours, theirs = socket.socketpair()
        argv = [*base, "--workers", str(workers), "--worker-index", str(i)]
        fd = theirs.fileno()
        procs.append(subprocess.Popen([*argv, "--control-fd", str(fd)], pass_fds=(fd,)))
        theirs.close()
        channels.append(_Channel(ours))
    log.info("started %d workers: pids %s", workers, " ".join(str(p.pid) for p in procs))
    stopping = False
    reloads = 0

    def hangup(signum: int, _frame: FrameType | None) -> None:
        nonlocal reloads
        reloads += 1  # done by the loop below, not inside the signal handler

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, hangup)
    failed = False
    while any(p.poll() is None for p in procs):
        asking = [c for c in channels if c.requests]  # a worker's POST /reload
        if (reloads or asking) and not stopping:
            reloads = 0
            for c in asking:
                c.requests -= 1
            results = json.dumps(fan_out_reload(channels, [p.pid for p in procs]))
            for c in asking:
                c.send(b"all " + results.encode() + b"\n")
        died = [p for p in procs if p.poll() not in (None, 0)]
        if died and not stopping:
            log.error("worker %d exited with %s: stopping the others", died[0].pid,
                      died[0].returncode)  # fmt: skip
            failed = True
            forward(signal.SIGTERM, None)
        with contextlib.suppress(InterruptedError, OSError, ValueError):
            watched = [c for c in channels if not c.closed]
            for ready in select.select(watched, [], [], 0.1)[0]:
                ready.read_ready()
    codes = [p.returncode for p in procs]
    log.info("workers exited: %s", codes)
    return 0 if not failed and all(c == 0 for c in codes) else 1


def in_worker(index: int) -> bool:
    """True in a worker process (set up its listeners to share their ports)."""
    from sidecar.h2relay import plane

    plane.REUSE_PORT = True
    os.environ["SIDECAR_WORKER_INDEX"] = str(index)
    return True
