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
Only the h2relay data plane can share its ports (the grpcio servers bind without
SO_REUSEPORT), and the listen ports must be fixed (port 0 would give each its own).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from sidecar.config import Config
from sidecar.endpoint import parse_hostport

log = logging.getLogger("sidecar.workers")


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


def supervise(config_path: str, workers: int) -> int:
    """Run `workers` worker processes until SIGTERM/SIGINT; 0 when all drained cleanly."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    base = [sys.executable, "-m", "sidecar", "run", "-c", config_path]
    procs = [
        subprocess.Popen([*base, "--workers", str(workers), "--worker-index", str(i)])
        for i in range(workers)
    ]
    log.info("started %d workers: pids %s", workers, " ".join(str(p.pid) for p in procs))
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    while any(p.poll() is None for p in procs):
        died = [p for p in procs if p.poll() not in (None, 0)]
        if died and not stopping:
            log.error("worker %d exited with %s: stopping the others", died[0].pid,
                      died[0].returncode)  # fmt: skip
            failed = True
            forward(signal.SIGTERM, None)
        time.sleep(0.1)
    codes = [p.returncode for p in procs]
    log.info("workers exited: %s", codes)
    return 0 if not failed and all(c == 0 for c in codes) else 1


def in_worker(index: int) -> bool:
    """True in a worker process (set up its listeners to share their ports)."""
    from sidecar.h2relay import plane

    plane.REUSE_PORT = True
    os.environ["SIDECAR_WORKER_INDEX"] = str(index)
    return True
