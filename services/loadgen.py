"""The load generator: drives the perimeter at a fixed rate with a realistic mix.

Does I/O (gRPC, writes JSON lines). Open loop: request i starts at t0 + i/rate
whatever earlier requests are doing, as real users do (a closed loop would slow down
with the system and hide its latency; see Schroeder et al., "Open versus closed", NSDI
2006). Bounded in count (rate x duration, and `--max-in-flight`: a start that would
exceed it is counted as `CLIENT_OVERLOAD` and skipped) and in time (it stops sending
at `--duration` and gives stragglers one deadline more).

The mix: `--open-ratio` interactive OpenPlaylist (`critical`), `--prefetch-ratio`
prefetch OpenPlaylist (`sheddable`), the rest Search streams read to the end; playlist
ids follow a Zipf-like popularity. Output, one JSON object per line: per second of
start time `{"second", "count", "ok", "status": {...}, "p50_ms", "p99_ms",
"sidecar_errors": {...}, "causes": {...}, "metadata_missing", "kinds": {...}}`, then
`{"summary": true, ...}` with the same fields over the whole run plus `success_ratio`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import grpc

from music.accesspoint.v1 import accesspoint_pb2 as pb
from music.accesspoint.v1 import accesspoint_pb2_grpc as pb_grpc
from services import seed
from services.peers import CAUSE_KEY, CHANNEL_OPTIONS, SIDECAR_ERROR_KEY


@dataclass
class Result:
    kind: str
    status: str
    latency_ms: float
    sidecar_error: str | None = None
    cause: str | None = None
    metadata_missing: bool = False


@dataclass
class Bucket:
    results: list[Result] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        rs = self.results
        status = Counter(r.status for r in rs)
        latencies = sorted(r.latency_ms for r in self.results if r.status != "CLIENT_OVERLOAD")
        return {
            "count": len(self.results),
            "ok": status.get("OK", 0),
            "status": dict(sorted(status.items())),
            "p50_ms": round(percentile(latencies, 0.50), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "sidecar_errors": dict(Counter(r.sidecar_error for r in rs if r.sidecar_error)),
            "causes": dict(Counter(r.cause for r in rs if r.cause)),
            "metadata_missing": sum(r.metadata_missing for r in self.results),
            "kinds": dict(sorted(Counter(r.kind for r in self.results).items())),
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for k, v in error.trailing_metadata() or ():
        if k == key and isinstance(v, str):
            return v
    return None


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.popularity = seed.Popularity(args.playlists)
        self.words = seed.search_words()
        self.metadata = [("authorization", f"Bearer {args.token}")]
        self.buckets: dict[int, Bucket] = {}
        self.in_flight = 0

    def _pick(self) -> str:
        x = self.rng.random()
        if x < self.args.open_ratio:
            return "open"
        if x < self.args.open_ratio + self.args.prefetch_ratio:
            return "prefetch"
        return "search"

    async def _one(self, stub: pb_grpc.AccessPointStub, kind: str, second: int) -> None:
        started = time.perf_counter()
        timeout = self.args.deadline_ms / 1000.0
        result = Result(kind, "OK", 0.0)
        try:
            if kind == "search":
                query = " ".join(self.rng.sample(self.words, self.rng.choice((1, 1, 2))))
                call = stub.Search(
                    pb.SearchRequest(query=query, limit=20), timeout=timeout, metadata=self.metadata
                )
                async for _ in call:
                    pass
            else:
                pid = seed.playlist_id(self.popularity.pick(self.rng))
                view = await stub.OpenPlaylist(
                    pb.OpenPlaylistRequest(playlist_id=pid, prefetch=kind == "prefetch"),
                    timeout=timeout,
                    metadata=self.metadata,
                )
                result.metadata_missing = view.metadata_missing
        except grpc.aio.AioRpcError as exc:
            result.status = exc.code().name
            result.sidecar_error = _trailer(exc, SIDECAR_ERROR_KEY)
            result.cause = _trailer(exc, CAUSE_KEY)
        except asyncio.CancelledError:
            # only the end-of-run sweep cancels, for a server that ignored the deadline
            result.status = "LOADGEN_CANCELLED"
        finally:
            self.in_flight -= 1
        result.latency_ms = (time.perf_counter() - started) * 1000.0
        self.buckets.setdefault(second, Bucket()).results.append(result)

    async def run(self, out: IO[str]) -> dict[str, Any]:
        args = self.args
        total = int(args.rate * args.duration)
        tasks: set[asyncio.Task[None]] = set()
        written = 0
        async with grpc.aio.insecure_channel(args.target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.AccessPointStub(channel)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(total):
                at = t0 + i / args.rate
                delay = at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                second = int(i / args.rate)
                # A second is complete once nothing that started in it can still run.
                while written < second - int(args.deadline_ms / 1000.0) - 1:
                    self._write(out, written)
                    written += 1
                kind = self._pick()
                if self.in_flight >= args.max_in_flight:
                    self.buckets.setdefault(second, Bucket()).results.append(
                        Result(kind, "CLIENT_OVERLOAD", 0.0)
                    )
                    continue
                self.in_flight += 1
                task = asyncio.create_task(self._one(stub, kind, second))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                # Every call carries a deadline, so this wait is bounded; the extra
                # second covers a server that ignores deadlines.
                _, late = await asyncio.wait(list(tasks), timeout=args.deadline_ms / 1000.0 + 1.0)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        seconds = int(args.duration + 0.999999)
        while written < seconds:
            self._write(out, written)
            written += 1
        whole = Bucket([r for b in self.buckets.values() for r in b.results])
        summary = {
            "summary": True,
            "target": args.target,
            "rate": args.rate,
            "duration_s": args.duration,
            **whole.summary(),
        }
        count = summary["count"]
        summary["success_ratio"] = round(summary["ok"] / count, 4) if count else 0.0
        out.write(json.dumps(summary, sort_keys=True) + "\n")
        out.flush()
        return summary

    def _write(self, out: IO[str], second: int) -> None:
        bucket = self.buckets.get(second, Bucket())
        out.write(json.dumps({"second": second, **bucket.summary()}, sort_keys=True) + "\n")
        out.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="services.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="access point (or its sidecar) host:port")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--token", required=True, help="bearer token")
    parser.add_argument("--out", help="JSON lines file (default: stdout)")
    parser.add_argument("--deadline-ms", type=float, default=1000.0, help="per-call deadline")
    parser.add_argument("--open-ratio", type=float, default=0.75)
    parser.add_argument("--prefetch-ratio", type=float, default=0.15)
    parser.add_argument("--playlists", type=int, default=seed.DEFAULT_PLAYLISTS)
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    return parser


async def run(args: argparse.Namespace, out: IO[str]) -> dict[str, Any]:
    if args.rate <= 0 or args.duration <= 0:
        raise SystemExit("--rate and --duration must be positive")
    return await LoadGen(args).run(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out:
        with open(args.out, "w") as out:
            asyncio.run(run(args, out))
    else:
        asyncio.run(run(args, sys.stdout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
