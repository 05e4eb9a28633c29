"""The container image, built and run: an echo app and its sidecar in two containers, and a
second sidecar container calling through them (`make test-image`; building takes minutes,
so `make test` leaves it out).

podman or docker, whichever runs here (skipped, with the reason, where neither can run
containers). Host networking, loopback addresses only. The config comes from a mounted
file at /etc/sidecar/sidecar.yaml, as in a pod.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.procs import ECHO, free_port, http, wait_until

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "grpc-sidecar:0.1.0"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


DEFAULT_ADMIN = 9901


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def engine() -> str:
    for candidate in ("podman", "docker"):
        if (
            shutil.which(candidate)
            and subprocess.run([candidate, "info"], capture_output=True, timeout=60).returncode == 0
        ):
            return candidate
    pytest.skip("neither podman nor docker can run containers here")


def run_flags(eng: str) -> list[str]:
    if eng == "podman":
        # crun cannot start containers on these kernels; runc can, with explicit rlimits.
        return ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
    return []


@pytest.fixture(scope="module")
def image() -> str:
    eng = engine()
    done = subprocess.run(
        ["scripts/build-image", IMAGE], cwd=ROOT, capture_output=True, text=True, timeout=1700
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return eng


@contextlib.contextmanager
def container(eng: str, args: list[str], name: str) -> Iterator[str]:
    cmd = [eng, "run", "-d", "--rm", "--name", name, "--network", "host", *run_flags(eng), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    try:
        yield name
    finally:
        logs = subprocess.run([eng, "logs", name], capture_output=True, text=True, timeout=30)
        print(f"--- {name}\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        subprocess.run([eng, "rm", "-f", name], capture_output=True, timeout=60)


def healthcheck(eng: str, name: str) -> int:
    """`podman healthcheck run`: the image's HEALTHCHECK, once; 0 when healthy."""
    return subprocess.run(
        [eng, "healthcheck", "run", name], capture_output=True, timeout=60
    ).returncode


def mounted(tmp: Path, name: str, config: dict[str, Any]) -> list[str]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)  # the image runs as uid 10001
    return ["-v", f"{path}:/etc/sidecar/sidecar.yaml:ro"]


async def test_two_sidecar_containers_carry_all_four_kinds(image: str, tmp_path: Path) -> None:
    eng = image
    tag = uuid.uuid4().hex[:8]
    app, inbound = free_port(), free_port()
    # The image's HEALTHCHECK asks the default admin address (127.0.0.1:9901): the inbound
    # sidecar listens there when it is free on this machine.
    in_admin = DEFAULT_ADMIN if port_free(DEFAULT_ADMIN) else free_port()
    outbound, out_admin = free_port(), free_port()
    inbound_cfg = {
        "service": "echo",
        "inbound": {"listen": f"127.0.0.1:{inbound}", "app": f"127.0.0.1:{app}"},
        "admin": {"listen": f"127.0.0.1:{in_admin}"},
    }
    caller_cfg = {
        "outbound": {"listen": f"127.0.0.1:{outbound}"},
        "admin": {"listen": f"127.0.0.1:{out_admin}"},
        "upstreams": {"echo": {"grpc_services": [ECHO], "endpoints": [f"127.0.0.1:{inbound}"]}},
    }
    echo_args = ["--entrypoint", "python", IMAGE, "-m", "services.echo", "--port", str(app)]
    with (
        container(eng, [*echo_args, "--name", "in-a-container"], f"sidecar-test-echo-{tag}"),
        container(eng, [*mounted(tmp_path, "in", inbound_cfg), IMAGE], f"sidecar-test-in-{tag}"),
        container(eng, [*mounted(tmp_path, "out", caller_cfg), IMAGE], f"sidecar-test-out-{tag}"),
    ):
        for admin in (in_admin, out_admin):
            wait_until(lambda a=admin: http("GET", f"http://127.0.0.1:{a}/ready")[0] == 200, 60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{outbound}") as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            req = echo_pb2.EchoRequest(payload=b"p", count=3)
            unary = await stub.Unary(req, timeout=10)
            server = [r async for r in stub.ServerStream(req, timeout=10)]

            async def requests() -> Any:
                for _ in range(3):
                    yield echo_pb2.EchoRequest(payload=b"c")

            client = await stub.ClientStream(requests(), timeout=10)
            bidi = [r async for r in stub.Bidi(requests(), timeout=10)]
        served = {unary.served_by, client.served_by, *(r.served_by for r in server + bidi)}
        assert served == {"in-a-container"}
        assert len(server) == 3 and client.received == 3 and len(bidi) == 3
        if eng == "podman":  # the image's HEALTHCHECK, run once by hand
            health = healthcheck(eng, f"sidecar-test-in-{tag}")
            # Healthy when admin listens where the check asks; unhealthy otherwise.
            assert (health == 0) == (in_admin == DEFAULT_ADMIN), health
