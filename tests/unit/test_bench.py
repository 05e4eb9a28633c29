"""The benchmark harness's pure parts: request bytes, h2load/nghttp parsing, checks, ratios."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bench.grpcwire import echo_request, grpc_frame, parse_nghttp_verbose
from bench.loadgen import H2loadResult, LoadError, parse_h2load, percentile, verify_grpc_ok
from bench.report import add_ratios, markdown_table, summarize
from bench.runner import Case, Run, Settings
from bench.targets import sidecar_config
from meshtest.echo.v1 import echo_pb2
from sidecar.config import parse_config

H2LOAD_OUT = """\
finished in 3.00s, 36725.67 req/s, 7.77MB/s
requests: 110177 total, 110305 started, 110177 done, 110177 succeeded, \
0 failed, 0 errored, 0 timeout
status codes: 110177 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 23.32MB (24448456) total, 6.72MB (7051328) headers (space savings 28.09%), \
10.72MB (11238054) data
                     min         max         mean         sd        +/- sd
time for request:      821us     12.39ms      3.37ms      1.05ms    74.21%
"""

NGHTTP_OK = """\
[  0.000] recv (stream_id=13) :status: 200
[  0.000] recv (stream_id=13) content-type: application/grpc
xxxxxxx[  0.000] recv DATA frame <length=102, flags=0x00, stream_id=13>
[  0.000] recv (stream_id=13) grpc-status: 0
"""

NGHTTP_TRAILERS_ONLY = """\
[  0.001] recv (stream_id=13) :status: 200
[  0.001] recv (stream_id=13) content-type: application/grpc
[  0.001] recv (stream_id=13) grpc-status: 14
[  0.001] recv (stream_id=13) grpc-message: no healthy upstream
"""


def test_request_body_is_a_107_byte_grpc_frame_the_stubs_decode() -> None:
    """The default body is 107 bytes: a 5-byte header whose length matches, then an EchoRequest."""
    frame = grpc_frame(echo_request(100))
    assert len(frame) == 107
    assert frame[0] == 0 and int.from_bytes(frame[1:5], "big") == len(frame) - 5
    assert len(echo_pb2.EchoRequest.FromString(frame[5:]).payload) == 100


@given(st.integers(0, 20000), st.integers(0, 2**32 - 1))
def test_hand_encoding_matches_protobuf(size: int, delay: int) -> None:
    """Any payload size and delay encode exactly as protobuf would."""
    msg = echo_pb2.EchoRequest.FromString(echo_request(size, delay))
    assert len(msg.payload) == size and msg.delay_ms == delay
    assert echo_request(size, delay) == msg.SerializeToString()


def test_parse_h2load_summary() -> None:
    """Counts, rate and DATA bytes come out of h2load's summary; 'ms' durations scale."""
    r = parse_h2load(H2LOAD_OUT)
    assert (r.done, r.started, r.status_2xx, r.data_bytes) == (110177, 110305, 110177, 11238054)
    assert r.rps == pytest.approx(36725.67) and r.seconds == pytest.approx(3.0)
    assert parse_h2load(H2LOAD_OUT.replace("3.00s", "10.24ms")).seconds == pytest.approx(0.01024)
    with pytest.raises(LoadError):
        parse_h2load("connect failed\n")


def test_percentile_nearest_rank() -> None:
    """Nearest rank: p50 of 1..100 is 50, p99 is 99, p100 the max; one value is every percentile."""
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50,
        99,
        100,
    )
    assert percentile([7], 99) == 7


def test_grpc_errors_with_http_200_are_caught_by_byte_count() -> None:
    """h2load calls a trailers-only gRPC error a success; the DATA byte count does not."""
    ok = H2loadResult(done=10, started=10, succeeded=10, status_2xx=10, data_bytes=1020)
    verify_grpc_ok(ok, 102)
    cut_off = H2loadResult(done=10, started=12, succeeded=10, status_2xx=11, data_bytes=1122)
    verify_grpc_ok(cut_off, 102)  # one response had arrived when the timed run stopped
    bad = H2loadResult(done=10, started=10, succeeded=10, status_2xx=10, data_bytes=918)
    with pytest.raises(LoadError, match="gRPC errors"):
        verify_grpc_ok(bad, 102)
    with pytest.raises(LoadError, match="no request"):
        verify_grpc_ok(H2loadResult(), 102)


def test_nghttp_spot_check_reads_trailers() -> None:
    """grpc-status 0 with DATA is ok; a trailers-only UNAVAILABLE is not."""
    ok = parse_nghttp_verbose(NGHTTP_OK)
    assert ok.ok and ok.data_bytes == 102
    err = parse_nghttp_verbose(NGHTTP_TRAILERS_ONLY)
    assert not err.ok and err.grpc_status == 14 and err.data_bytes == 0
    assert err.grpc_message == "no healthy upstream"


def test_generated_sidecar_configs_fit_the_schema(tmp_path: Path) -> None:
    """The outbound-only and inbound-only configs the harness writes pass sidecar/config.py."""
    out = sidecar_config(outbound="127.0.0.1:1", endpoints=["127.0.0.1:2"], admin="127.0.0.1:3")
    inb = sidecar_config(inbound="127.0.0.1:4", app="127.0.0.1:5", admin="127.0.0.1:6")
    for cfg in (out, inb):
        parse_config(yaml.safe_load(yaml.safe_dump(cfg)))
    assert parse_config(out).upstreams["echo"].grpc_services == ["meshtest.echo.v1.Echo"]


def test_ratios_compare_with_direct_and_haproxy_of_the_same_backend() -> None:
    """req/s against direct; CPU and added p50 (bursts and paced, each on its own) against
    HAProxy; other backends not mixed in."""
    rows = [
        {"path": "direct", "backend": "nginx", "sat_rps": 40000.0, "rate_p50_ms": 0.3,
         "paced_p50_ms": 0.1},
        {"path": "haproxy", "backend": "nginx", "sat_rps": 20000.0, "rate_p50_ms": 0.7,
         "paced_p50_ms": 0.2, "proxy_cpu_us_total": 20.0},
        {"path": "sidecar1", "backend": "nginx", "sat_rps": 4000.0, "rate_p50_ms": 1.1,
         "paced_p50_ms": 0.25, "proxy_cpu_us_total": 200.0},
        {"path": "sidecar1", "backend": "pyecho", "sat_rps": 1000.0, "rate_p50_ms": 2.0,
         "proxy_cpu_us_total": 300.0},
    ]  # fmt: skip
    add_ratios(rows)
    side = rows[2]
    assert side["rps_vs_direct"] == pytest.approx(0.1)
    assert side["cpu_vs_haproxy"] == pytest.approx(10.0)
    assert side["rate_added_p50_ms"] == pytest.approx(0.8)
    assert side["rate_added_p50_vs_haproxy"] == pytest.approx(2.0)
    assert side["paced_added_p50_ms"] == pytest.approx(0.15)
    assert side["paced_added_p50_vs_haproxy"] == pytest.approx(1.5)
    assert "rps_vs_direct" not in rows[3] and "cpu_vs_haproxy" not in rows[3]


def _run(kind: str, rps: float, cpu: dict[str, float]) -> Run:
    res = H2loadResult(rps=rps, done=1000, p50_ms=0.5, p99_ms=2.0)
    return Run(kind, 0, res, 1.0, cpu, dict.fromkeys(cpu, 20480), 10.0, 0.3, 0.2, 0.4)


def test_markdown_rows_have_every_column() -> None:
    """A measured pair, a skipped case: each table line has the header's number of cells."""
    pair = Case("sidecar2", "nginx")
    pair.runs = [
        _run(k, 1000.0, {"s-out": 300.0, "s-in": 200.0}) for k in ("saturation", "rate", "paced")
    ]
    skipped = Case("sidecar1", "pyecho", status="skipped", reason="services.echo missing")
    rows = [summarize(c) for c in (pair, skipped)]
    add_ratios(rows)
    assert rows[0]["proxy_cpu_us_total"] == pytest.approx(500.0)
    lines = markdown_table(rows, Settings()).splitlines()
    assert len({line.count("|") for line in lines}) == 1, lines
    assert "out 300.0 + in 200.0" in lines[2] and "skipped: services.echo missing" in lines[3]
