"""Hot reload of a real sidecar process (POST /reload, SIGHUP) under grpcio load: new
calls follow the new config at once, calls in flight finish where they started, no
call fails and no connection is reset; a bad config is refused with its key and
reason (HTTP answer and log) and the old one keeps serving; a moved listener is
rebound and the old one drained; `--workers 2` reloads every worker."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.procs import (
    ECHO,
    Proc,
    echo_process,
    free_port,
    http,
    port_open,
    sidecar_process,
    wait_until,
)
from tests.integration.reload_load import Tally, long_stream, unary_load, watch_connection
from tests.integration.test_workers import two_free_ports

pytestmark = pytest.mark.timeout(120)


def base_config(outbound: int, endpoints: list[int], **upstream: Any) -> dict[str, Any]:
    return {
        "outbound": {"listen": f"127.0.0.1:{outbound}"},
        "drain_grace_s": 5,
        "upstreams": {
            "echo": {
                "grpc_services": [ECHO],
                "endpoints": [f"127.0.0.1:{p}" for p in endpoints],
                **upstream,
            }
        },
    }


def rewrite(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config))


def reload(admin: int) -> tuple[int, dict[str, Any]]:
    status, body = http("POST", f"http://127.0.0.1:{admin}/reload", b"")
    return status, json.loads(body)


def reloads_total(admin: int, result: str) -> float:
    _, body = http("GET", f"http://127.0.0.1:{admin}/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f'sidecar_config_reloads_total{{result="{result}"}}'):
            return float(line.rpartition(" ")[2])
    return 0.0


def version(admin: int) -> dict[str, Any]:
    _, body = http("GET", f"http://127.0.0.1:{admin}/config_dump")
    return dict(json.loads(body)["version"])


async def test_reload_under_load_moves_endpoints_policy_and_faults(tmp_path: Path) -> None:
    """Endpoints A -> B, retries on, a fault block, under unary load and a long bidi
    stream on one channel: no call fails, the stream ends OK on A, new calls go to B."""
    with echo_process(tmp_path, "a") as (_, a), echo_process(tmp_path, "b") as (_, b):
        port = free_port()
        cfg = base_config(port, [a])
        with sidecar_process(tmp_path, "sc", cfg) as sc:
            path = tmp_path / "sc.yaml"
            first = version(sc.admin)
            assert first["counter"] == 1
            tally = Tally()
            stop = asyncio.Event()
            changes: list[str] = []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)  # connected: READY
                watch = asyncio.create_task(watch_connection(channel, stop, changes))
                stream = asyncio.create_task(long_stream(stub, 40, 0.05, tally))
                load = asyncio.create_task(unary_load(stub, stop, tally, max_s=60))
                await asyncio.sleep(0.5)
                new = base_config(
                    port,
                    [b],
                    lb="round_robin",  # a new cluster: cached route lookups must go
                    retries={"max_attempts": 2},
                    limits={"max_requests": 500},
                    faults={"delay": {"percent": 10, "ms": 1}},
                )
                new["admin"] = sc.config["admin"]
                rewrite(path, new)
                status, answer = await asyncio.to_thread(reload, sc.admin)
                assert status == 200 and answer["result"] == "applied", answer
                assert "upstreams.echo.endpoints" in answer["changed"], answer
                before = tally.served_by["b"]
                after_reload = await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                assert after_reload.served_by == "b"  # new calls: the new endpoints at once
                await asyncio.sleep(0.5)
                stop.set()
                served = await stream
                await load
                await watch
            assert tally.failed == [], tally.failed[:5]
            assert changes == [], changes  # the one connection was never reset
            assert set(served) == {"a"}, served  # the stream stayed where it started
            assert tally.served_by["a"] > 0 and tally.served_by["b"] > before
            now = version(sc.admin)
            assert now["counter"] == 2 and now["hash"] != first["hash"]
            assert reloads_total(sc.admin, "applied") == 1
            dump = sc.get_json("/config_dump")
            assert dump["upstreams"]["echo"]["retries"]["max_attempts"] == 2
            assert "config reloaded: version" in sc.proc.logs()


async def test_bad_config_refused_with_key_and_old_one_serving(tmp_path: Path) -> None:
    """A bad value: HTTP 400 naming the key and reason, logged, version unchanged, calls
    still served; a restart-only key is refused the same way; SIGHUP applies a good one."""
    with echo_process(tmp_path, "a") as (_, a), echo_process(tmp_path, "b") as (_, b):
        port = free_port()
        with sidecar_process(tmp_path, "sc", base_config(port, [a])) as sc:
            path = tmp_path / "sc.yaml"
            bad = base_config(port, [b], retries={"max_attempts": 0})
            bad["admin"] = sc.config["admin"]
            rewrite(path, bad)
            status, answer = reload(sc.admin)
            assert status == 400, answer
            assert answer["result"] == "refused"
            assert answer["key"] == "upstreams.echo.retries.max_attempts"
            assert "greater than or equal to 1" in answer["reason"]
            logs = sc.proc.logs()
            assert "config reload refused: upstreams.echo.retries.max_attempts" in logs
            assert version(sc.admin)["counter"] == 1
            assert reloads_total(sc.admin, "refused") == 1

            restart_only = base_config(port, [b])
            restart_only["admin"] = sc.config["admin"]
            restart_only["log"] = {"format": "json"}
            rewrite(path, restart_only)
            status, answer = reload(sc.admin)
            assert status == 400 and answer["key"] == "log.format", answer
            assert "restart" in answer["reason"]

            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                assert reply.served_by == "a"  # the old config still serves
                good = base_config(port, [b])
                good["admin"] = sc.config["admin"]
                rewrite(path, good)
                sc.proc.popen.send_signal(signal.SIGHUP)
                await asyncio.to_thread(
                    wait_until, lambda: version(sc.admin)["counter"] == 2, 15, "SIGHUP reload"
                )
                reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                assert reply.served_by == "b"
            status, answer = reload(sc.admin)  # the same file again: nothing to do
            assert status == 200 and answer["result"] == "unchanged", answer


async def test_listener_rebind_drains_the_old_one(tmp_path: Path) -> None:
    """outbound.listen moves: the new port serves at once, a stream open on the old
    port ends OK, the old port stops accepting."""
    with echo_process(tmp_path, "a") as (_, a):
        old_port, new_port = free_port(), free_port()
        with sidecar_process(tmp_path, "sc", base_config(old_port, [a])) as sc:
            path = tmp_path / "sc.yaml"
            tally = Tally()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{old_port}") as old_channel:
                old_stub = echo_pb2_grpc.EchoStub(old_channel)
                stream = asyncio.create_task(long_stream(old_stub, 20, 0.05, tally))
                await asyncio.sleep(0.3)
                moved = base_config(new_port, [a])
                moved["admin"] = sc.config["admin"]
                rewrite(path, moved)
                status, answer = await asyncio.to_thread(reload, sc.admin)
                assert status == 200 and answer["changed"] == ["outbound.listen"], answer
                async with grpc.aio.insecure_channel(f"127.0.0.1:{new_port}") as channel:
                    reply = await echo_pb2_grpc.EchoStub(channel).Unary(
                        echo_pb2.EchoRequest(), timeout=5
                    )
                    assert reply.served_by == "a"
                assert await stream == ["a"] * 20
            assert tally.failed == [], tally.failed
            assert not port_open(old_port)

            taken = base_config(sc.admin, [a])  # the admin port: in use
            taken["admin"] = sc.config["admin"]
            rewrite(path, taken)
            status, answer = reload(sc.admin)
            assert status == 400 and answer["key"] == "outbound.listen", answer
            assert port_open(new_port)


async def test_workers_each_reload_and_report(tmp_path: Path) -> None:
    """`--workers 2`: SIGHUP to the supervisor reloads both workers, one log line each;
    a bad config is refused by each, reported per worker; POST /reload on either
    worker's admin port reloads both and answers both results."""
    with echo_process(tmp_path, "a") as (_, a), echo_process(tmp_path, "b") as (_, b):
        port, admin = free_port(), two_free_ports()
        cfg = base_config(port, [a])
        cfg["admin"] = {"listen": f"127.0.0.1:{admin}"}
        path = tmp_path / "workers.yaml"
        rewrite(path, cfg)
        proc = Proc(["-m", "sidecar", "run", "-c", str(path), "--workers", "2"],
                    tmp_path / "workers.log")  # fmt: skip
        try:
            for a_port in (admin, admin + 1):
                wait_until(lambda p=a_port: http("GET", f"http://127.0.0.1:{p}/ready")[0] == 200,
                           what=f"worker admin {a_port}")  # fmt: skip
            rewrite(path, {**base_config(port, [b]), "admin": cfg["admin"]})
            proc.popen.send_signal(signal.SIGHUP)
            wait_until(lambda: "2 of 2 workers run the new config" in proc.logs(), what="fan-out")
            logs = proc.logs()
            assert "config reload: worker 0 (pid" in logs and "config reload: worker 1" in logs
            assert version(admin)["counter"] == 2 and version(admin + 1)["counter"] == 2
            for _ in range(6):  # new connections land on either worker: all go to b
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    reply = await echo_pb2_grpc.EchoStub(channel).Unary(
                        echo_pb2.EchoRequest(), timeout=5
                    )
                    assert reply.served_by == "b"
            rewrite(path, {**base_config(port, [a], limits={"max_requests": 0}),
                           "admin": cfg["admin"]})  # fmt: skip
            proc.popen.send_signal(signal.SIGHUP)
            wait_until(lambda: "0 of 2 workers run the new config" in proc.logs(), what="refusal")
            assert proc.logs().count("refused: upstreams.echo.limits.max_requests") >= 2
            assert version(admin)["counter"] == 2

            # POST /reload on one worker's admin port reloads every worker
            rewrite(path, {**base_config(port, [a]), "admin": cfg["admin"]})
            status, answer = reload(admin + 1)
            assert status == 200, answer
            assert [(w["worker"], w["result"]) for w in answer["workers"]] == [
                (0, "applied"),
                (1, "applied"),
            ], answer
            assert version(admin)["counter"] == 3 and version(admin + 1)["counter"] == 3
            rewrite(path, {**base_config(port, [b], retries={"max_attempts": 0}),
                           "admin": cfg["admin"]})  # fmt: skip
            status, answer = reload(admin)
            assert status == 400, answer
            assert {w["key"] for w in answer["workers"]} == {"upstreams.echo.retries.max_attempts"}
        finally:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(20)
            finally:
                proc.stop()


async def test_discovery_reload_against_bind(tmp_path: Path) -> None:
    """An upstream found by SRV in BIND 9 is looked up by another name after a reload
    (and gets a new cluster: `lb` changed): it keeps its endpoints while the new lookup
    runs, then follows the new name; no call fails on the way."""
    from tests.dns_servers import Srv, make_server

    dns = make_server("bind", tmp_path / "bind")
    try:
        with echo_process(tmp_path, "a") as (_, a), echo_process(tmp_path, "b") as (_, b):
            dns.set_srv("_echo._grpc.local.example.net.", [Srv(0, 1, a, "a.example.net.")])
            dns.set_srv("_canary._grpc.local.example.net.", [Srv(0, 1, b, "b.example.net.")])
            port = free_port()

            def config(**upstream: Any) -> dict[str, Any]:
                return {
                    "outbound": {"listen": f"127.0.0.1:{port}"},
                    "discovery": {"nameservers": [dns.nameserver]},
                    "upstreams": {"echo": {"grpc_services": [ECHO], **upstream}},
                }

            with sidecar_process(tmp_path, "sc", config()) as sc:
                tally = Tally()
                stop = asyncio.Event()
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = echo_pb2_grpc.EchoStub(channel)
                    load = asyncio.create_task(unary_load(stub, stop, tally, max_s=60))
                    await asyncio.sleep(0.3)
                    new = config(srv_name="_canary._grpc.{site}.{domain}", lb="round_robin")
                    rewrite(tmp_path / "sc.yaml", {**new, "admin": sc.config["admin"]})
                    status, answer = await asyncio.to_thread(reload, sc.admin)
                    assert status == 200 and answer["result"] == "applied", answer

                    async def on_b() -> bool:
                        reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                        return reply.served_by == "b"

                    for _ in range(100):  # the new lookup answers within its timeout
                        if await on_b():
                            break
                        await asyncio.sleep(0.1)
                    assert await on_b()
                    stop.set()
                    await load
                assert tally.failed == [], tally.failed[:5]
                assert tally.served_by["a"] > 0
                clusters = sc.get_json("/clusters")["echo"]
                assert [s["name"] for s in clusters["discovery"]] == [
                    "_canary._grpc.local.example.net."
                ], clusters["discovery"]
    finally:
        dns.stop()
