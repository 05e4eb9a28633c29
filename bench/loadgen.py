"""Driving h2load and nghttp, and reading what they print. Does I/O (subprocesses).

h2load (nghttp2 1.52) counts HTTP status only: a gRPC error travels in trailers
with `:status 200`, so h2load calls it a success. Two checks close that gap:
`nghttp -v` on one request before each case (it prints trailers: `grpc-status: 0`,
and the response DATA length), then every h2load run must have received exactly
that many DATA bytes per completed request (an error answer carries none).

This h2load prints min/max/mean/sd but no percentiles, so p50/p99 come from its
`--log-file` (one line per request: start µs, status, duration µs).
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.grpcwire import ECHO_UNARY_PATH, GRPC_HEADERS, SpotCheck, parse_nghttp_verbose


class LoadError(Exception):
    """h2load or nghttp failed, or the answers were not gRPC successes."""


@dataclass
class H2loadResult:
    """What one h2load run reports, plus latency percentiles from its log file."""

    seconds: float = 0.0
    rps: float = 0.0
    total: int = 0
    started: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    status_2xx: int = 0
    data_bytes: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    log_lines: int = 0
    log_failed: int = 0
    loadgen_cpu_s: float = 0.0  # h2load's own user+sys
    command: list[str] = field(default_factory=list)


_NUM = r"([\d.]+)"
_PATTERNS = {
    "finished": re.compile(rf"finished in {_NUM}(us|ms|s), {_NUM} req/s"),
    "requests": re.compile(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout"
    ),
    "status": re.compile(r"status codes: (\d+) 2xx"),
    "traffic": re.compile(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data"),
}


def parse_h2load(text: str) -> H2loadResult:
    """Parse h2load's summary; raise LoadError when a line is missing."""
    found = {key: pat.search(text) for key, pat in _PATTERNS.items()}
    missing = [key for key, m in found.items() if m is None]
    if missing:
        raise LoadError(f"h2load output lacks {missing}: {text[-500:]!r}")
    r = H2loadResult()
    fin, req, st, tr = (found[k] for k in ("finished", "requests", "status", "traffic"))
    assert fin and req and st and tr
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[fin.group(2)]
    r.seconds, r.rps = float(fin.group(1)) * scale, float(fin.group(3))
    (r.total, r.started, r.done, r.succeeded, r.failed, r.errored, r.timeout) = (
        int(g) for g in req.groups()
    )
    r.status_2xx = int(st.group(1))
    r.data_bytes = int(tr.group(1))
    return r


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100), at least 1
    return float(sorted_values[int(rank) - 1])


def read_log(path: Path) -> tuple[list[int], int]:
    """Durations in µs of the successful requests in an h2load log, and the failed count."""
    durations: list[int] = []
    failed = 0
    with path.open() as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            if parts[1] != "200":
                failed += 1
                continue
            durations.append(int(parts[2]))
    durations.sort()
    return durations, failed


def run_h2load(
    port: int,
    body_file: Path,
    log_file: Path,
    *,
    clients: int,
    streams: int,
    duration_s: float | None = None,
    requests: int | None = None,
    rps_per_client: int | None = None,
    paced_rps: int | None = None,
    timeout_s: float = 60.0,
) -> H2loadResult:
    """One h2load run against 127.0.0.1:port (h2c, prior knowledge).

    `rps_per_client`: h2load's `--rps`, whose timer ticks at most every 10 ms, so each
    client sends its requests in bursts (4 clients at 250/s: ~10 requests at once, every
    10 ms). `paced_rps` (with `duration_s`): one request every 1/paced_rps s from a
    timing script, evenly spaced, per client."""
    cmd = ["h2load", "-d", str(body_file), "-c", str(clients), "-m", str(streams)]
    for header in GRPC_HEADERS:
        cmd += ["-H", header]
    url = f"http://127.0.0.1:{port}{ECHO_UNARY_PATH}"
    if paced_rps is not None:
        assert duration_s is not None
        script = log_file.with_suffix(".script")
        step_ms = 1000.0 / paced_rps
        script.write_text(
            "".join(f"{i * step_ms:.3f}\t{url}\n" for i in range(int(paced_rps * duration_s)))
        )
        cmd.append(f"--timing-script-file={script}")
        duration_s = None  # the script's length is the run's
    if duration_s is not None:
        cmd += ["-D", f"{int(duration_s * 1000)}ms"]
    if requests is not None:
        cmd += ["-n", str(requests)]
    if rps_per_client is not None:
        cmd += ["--rps", str(rps_per_client)]
    cmd.append(f"--log-file={log_file}")
    if paced_rps is None:
        cmd.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"h2load did not finish in {timeout_s:.0f}s: {' '.join(cmd)}") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise LoadError(f"h2load exited {proc.returncode}: {proc.stderr[-500:]}")
    result = parse_h2load(proc.stdout)
    result.command = cmd
    result.loadgen_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    durations, result.log_failed = read_log(log_file)
    result.log_lines = len(durations) + result.log_failed
    if durations:
        result.p50_ms = percentile(durations, 50) / 1000
        result.p99_ms = percentile(durations, 99) / 1000
    log_file.unlink(missing_ok=True)  # saturation logs are tens of MB
    return result


def verify_grpc_ok(result: H2loadResult, response_data_bytes: int) -> None:
    """Raise LoadError unless every completed request was a gRPC success.

    Each success carries exactly `response_data_bytes` of DATA (learned from the
    spot check); a gRPC error (trailers-only) carries none. Requests still in flight
    when a timed run stops may have received their headers and DATA without being
    counted as done, hence the upper bounds of `started`.
    """
    problems = []
    if result.done == 0:
        problems.append("no request completed")
    # A request cut off by the end of a timed run may have its :status 200 counted
    # without being done, so 2xx may exceed done (by at most the in-flight ones).
    if result.succeeded != result.done or not result.done <= result.status_2xx <= result.started:
        problems.append(
            f"{result.done} done but {result.succeeded} succeeded, {result.status_2xx} 2xx"
        )
    if result.errored or result.log_failed:
        problems.append(f"{result.errored} errored, {result.log_failed} failed in the log")
    low, high = result.done * response_data_bytes, result.started * response_data_bytes
    if not low <= result.data_bytes <= high:
        problems.append(
            f"{result.data_bytes} DATA bytes received, expected {low}..{high} "
            f"({response_data_bytes} per gRPC success): some answers were gRPC errors"
        )
    if problems:
        raise LoadError("; ".join(problems))


def spot_check(port: int, body_file: Path, timeout_s: float = 10.0) -> SpotCheck:
    """One request through `nghttp -v`; retried until it is a gRPC success or time runs out.

    Retrying makes this the readiness gate too: a proxy that accepts TCP before its
    upstream connection works answers with an error first.
    """
    cmd = ["nghttp", "-v", "-d", str(body_file)]
    for header in GRPC_HEADERS:
        cmd += ["-H", header]
    cmd.append(f"http://127.0.0.1:{port}{ECHO_UNARY_PATH}")
    deadline = time.monotonic() + timeout_s
    last: SpotCheck | None = None
    detail = ""
    while True:
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=5, check=False)
            last = parse_nghttp_verbose(proc.stdout.decode("utf-8", "replace"))
            detail = proc.stderr.decode("utf-8", "replace")[-300:]
            if last.ok and last.data_bytes > 0:
                return last
        except subprocess.TimeoutExpired:
            detail = "nghttp timed out"
        if time.monotonic() > deadline:
            raise LoadError(f"spot check on port {port} never saw grpc-status 0: {last} {detail}")
        time.sleep(0.2)
