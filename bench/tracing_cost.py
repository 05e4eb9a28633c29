"""What tracing costs a sidecar hop: `tracing: off`, ratio 0.01 and ratio 1.0 side by side.

`python -m bench.tracing_cost [--repeats 3] [--seconds 3]`: starts nginx (echo module), a
real OTLP/gRPC receiver in this process (opentelemetry-proto's TraceService, counting
the spans it is sent), and three outbound-only sidecars in front of nginx that differ
only in `tracing`. Per round, in rotating order, each path gets a saturation run
(`h2load -c 8 -m 16`: CPU per request, utime+stime of the sidecar over the requests
done) and a paced run (one connection, one request every 1 ms: p50 latency, and the p50
added over direct). No request carries a traceparent, so the sidecar starts every trace
and samples it by its ratio; every answer must be a gRPC success (DATA bytes checked).
The spans columns are read from each sidecar's /metrics at the end: ratio 1.0 at
saturation makes more spans than one exporter thread sends, and the bounded queue drops
(and counts) the rest instead of slowing calls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.grpcwire import echo_request, grpc_frame
from bench.loadgen import run_h2load, verify_grpc_ok
from bench.procs import Managed, cpu_seconds, free_port
from bench.targets import REPO, sidecar_config, start_nginx, start_sidecar

TRACING: dict[str, Any] = {"tracing off": "off", "ratio 0.01": 0.01, "ratio 1.0": 1.0}


class _Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


def _metric(admin: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(float(s.rpartition(" ")[2]) for s in text.splitlines() if s.startswith(name + " "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=1000, help="paced run, requests/s")
    args = parser.parse_args()
    wd = Path(tempfile.mkdtemp(prefix="tracing-cost-"))
    body = wd / "body.bin"
    body.write_bytes(grpc_frame(echo_request(100)))
    sink = _Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    procs: list[Managed] = []
    try:
        nginx, nginx_port = start_nginx(wd)
        procs.append(nginx)
        paths: dict[str, tuple[int, Managed | None, int]] = {"direct": (nginx_port, None, 0)}
        for i, (name, tracing) in enumerate(TRACING.items()):
            port, admin = free_port(), free_port()
            cfg = sidecar_config(
                admin=f"127.0.0.1:{admin}",
                outbound=f"127.0.0.1:{port}",
                endpoints=[f"127.0.0.1:{nginx_port}"],
            )
            if tracing == "off":
                cfg["tracing"] = "off"
            else:
                cfg["tracing"] = {
                    "sample_ratio": tracing,
                    "endpoint": f"http://127.0.0.1:{otlp_port}",
                }
            proc = start_sidecar(wd, f"side{i}", cfg, port, REPO)
            procs.append(proc)
            paths[name] = (port, proc, admin)
        names = list(paths)
        cpu: dict[str, list[float]] = {n: [] for n in names}
        p50: dict[str, list[float]] = {n: [] for n in names}
        log = wd / "h2load.log"
        # DATA bytes of one answer: from a counted run on direct (every one finished)
        spot = run_h2load(nginx_port, body, log, clients=1, streams=1, requests=100)
        expected = spot.data_bytes // max(spot.done, 1)
        for name in names:  # warm-up (connections, caches), not recorded
            run_h2load(paths[name][0], body, log, clients=8, streams=16, duration_s=1.0)
        for round_ in range(args.repeats):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                port, proc, _ = paths[name]
                before = cpu_seconds(proc.pid) if proc else 0.0
                sat = run_h2load(port, body, log, clients=8, streams=16,
                                 duration_s=args.seconds, timeout_s=args.seconds + 60)  # fmt: skip
                after = cpu_seconds(proc.pid) if proc else 0.0
                verify_grpc_ok(sat, expected)
                cpu[name].append((after - before) / max(sat.done, 1) * 1e6)
                paced = run_h2load(port, body, log, clients=1, streams=16,
                                   duration_s=args.seconds, paced_rps=args.rate,
                                   timeout_s=args.seconds + 60)  # fmt: skip
                verify_grpc_ok(paced, expected)
                if paced.p50_ms is not None:
                    p50[name].append(paced.p50_ms)
        direct_p50 = statistics.median(p50["direct"])
        off_cpu = statistics.median(cpu["tracing off"])
        print(
            f"h2load -c 8 -m 16 {args.seconds:g} s (CPU), paced {args.rate} req/s on one "
            f"connection {args.seconds:g} s (p50); medians of {args.repeats} rounds"
        )
        print(
            "| path | CPU µs/request | vs off | p50 ms | added p50 ms | spans exported | calls dropped |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in names:
            port, proc, admin = paths[name]
            m50 = statistics.median(p50[name])
            if proc is None:
                print(f"| {name} | - | - | {m50:.3f} | - | - | - |")
                continue
            c = statistics.median(cpu[name])
            exported = _metric(admin, "sidecar_tracing_spans_exported_total")
            dropped = _metric(admin, "sidecar_tracing_dropped_calls_total")
            print(
                f"| {name} | {c:.1f} | {100 * (c / off_cpu - 1):+.1f}% | {m50:.3f} | "
                f"{m50 - direct_p50:+.3f} | {exported:,.0f} | {dropped:,.0f} |"
            )
        print(f"(the receiver got {sink.spans:,} spans)")
    finally:
        for p in reversed(procs):
            p.stop()
        server.stop(0)


if __name__ == "__main__":
    main()
