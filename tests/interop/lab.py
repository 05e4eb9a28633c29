"""The interop tier's processes: interop servers (grpcio, grpc-js, grpc-go), one
outbound + inbound sidecar pair in front of each (real `sidecar run` processes, static
endpoints), and the clients, one process per (path, client, server) running every case.

Paths: `direct` (client → server, the control), `pair` (client → outbound sidecar →
inbound sidecar → server), `inprocess` (the in-process client, `sidecar.client.connect`,
→ inbound sidecar → server) and `inprocess_direct` (the in-process client straight to the
server, as when an app calls an upstream that runs no sidecar). Everything starts on first use and stops at the end of the
session; ports are free loopback ports. Does I/O."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.procs import (
    ROOT,
    Sidecar,
    free_port,
    port_open,
    sidecar_process,
    wait_until,
)

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
# grpc-go's own interop client and server, built by `make interop-deps` from the module
# google.golang.org/grpc at this version, named as `go install` names them.
GRPC_GO_VERSION = (HERE / "grpc-go.version").read_text().strip()
GO_BIN = ROOT / ".cache" / "interop" / f"grpc-go-{GRPC_GO_VERSION}"
SERVICES = ["grpc.testing.TestService", "grpc.testing.UnimplementedService"]
CLIENT_TIMEOUT_S = 60.0
INSTALL = (
    "run `make interop-deps` (it needs node + npm and Go on PATH: Debian `nodejs npm`, go.dev)"
)


class Missing(Exception):
    """A tool the tier needs is not there: the test fails with what to install."""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def need_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise Missing(f"`node` is not on PATH: {INSTALL}")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        raise Missing(f"tests/interop/node/node_modules is missing: {INSTALL}")
    return node


def need_go(name: str) -> str:
    path = GO_BIN / name
    if not os.access(path, os.X_OK):
        raise Missing(f"grpc-go's interop {name} is not built at {path}: {INSTALL}")
    return str(path)


class Process:
    """A child process with its output in a log file, killed on stop."""

    def __init__(self, args: list[str], log: Path, cwd: Path = ROOT) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(args, cwd=cwd, env=_env(), stdout=self._out, stderr=self._out)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._out.close()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Lab:
    tmp: Path
    stubs: Path
    stack: ExitStack = field(default_factory=ExitStack)
    servers: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, tuple[Sidecar, Sidecar]] = field(default_factory=dict)
    results: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)

    def close(self) -> None:
        self.stack.close()

    # -- servers ---------------------------------------------------------------------

    def server(self, kind: str) -> int:
        """The port of a running interop server of this kind (started on first use)."""
        if kind not in self.servers:
            self.servers[kind] = self._start_server(kind)
        return self.servers[kind]

    def _start_server(self, kind: str) -> int:
        log = self.tmp / f"server-{kind}.log"
        if kind == "grpcgo":
            port = free_port()  # its --port only; it listens on every interface
            args = [need_go("server"), f"--port={port}", "--use_tls=false"]
        elif kind == "grpcjs":
            port, args = 0, [need_node(), str(NODE_DIR / "server.js")]
        else:
            port = 0
            args = [sys.executable, "-m", "tests.interop.grpcio_server", "--stubs", str(self.stubs)]
        proc = Process(args, log)
        self.stack.callback(proc.stop)
        if port:
            wait_until(lambda: port_open(port) or proc.popen.poll() is not None, what=kind)
        else:  # the grpcio and grpc-js servers print {"port": N} once they listen
            wait_until(lambda: '"port"' in proc.logs() or proc.popen.poll() is not None, what=kind)
            port = next(
                json.loads(line)["port"] for line in proc.logs().splitlines() if '"port"' in line
            )
        assert proc.popen.poll() is None, proc.logs()
        return port

    def pair(self, kind: str) -> tuple[Sidecar, Sidecar]:
        """(outbound, inbound) sidecars in front of this server, shared by all clients."""
        if kind not in self.pairs:
            app = self.server(kind)
            inbound_port = free_port()
            inbound_cfg = {
                "service": "interop",
                "inbound": {
                    "listen": f"127.0.0.1:{inbound_port}",
                    "app": f"127.0.0.1:{app}",
                    # the interop servers have no grpc.health.v1: a TCP connect is health
                    "health": {"mode": "tcp", "interval_s": 0.2},
                },
            }
            outbound_cfg = {
                "outbound": {"listen": f"127.0.0.1:{free_port()}"},
                "upstreams": {
                    "interop": {
                        # both services go to the server, so unimplemented_service is
                        # answered by the server (not by the sidecar's no_route)
                        "grpc_services": SERVICES,
                        "endpoints": [f"127.0.0.1:{inbound_port}"],
                        "timeout_ms": 10000,
                    }
                },
            }
            tmp = self.tmp / f"pair-{kind}"
            tmp.mkdir()
            inbound = self.stack.enter_context(sidecar_process(tmp, "inbound", inbound_cfg))
            outbound = self.stack.enter_context(sidecar_process(tmp, "outbound", outbound_cfg))
            self.pairs[kind] = (outbound, inbound)
        return self.pairs[kind]

    # -- clients ---------------------------------------------------------------------

    def result(self, path: str, client: str, server: str, case: str) -> dict[str, Any]:
        """One case's report from the client process of (path, client, server), which
        runs every case once, on first use."""
        key = (path, client, server)
        if key not in self.results:
            self.results[key] = self._run(path, client, server)
        got = self.results[key].get(case)
        assert got is not None, f"{client} client reported nothing for {case}"
        return got

    def target(self, path: str, server: str) -> str:
        if path == "direct":
            return f"127.0.0.1:{self.server(server)}"
        outbound, _ = self.pair(server)
        return f"127.0.0.1:{outbound.port('outbound')}"

    def _run(self, path: str, client: str, server: str) -> dict[str, dict[str, Any]]:
        from tests.interop.spec import CASES

        cases = list(CASES)
        name = f"{path}-{client}-{server}"
        if client == "grpcgo":
            return self._run_go(name, self.target(path, server), cases)
        if path.startswith("inprocess"):
            if path == "inprocess":
                endpoint = f"127.0.0.1:{self.pair(server)[1].port('inbound')}"
            else:
                endpoint = f"127.0.0.1:{self.server(server)}"
            config = {
                "upstreams": {
                    "interop": {
                        "grpc_services": SERVICES,
                        "endpoints": [endpoint],
                        "timeout_ms": 10000,
                    }
                }
            }
            cfg = self.tmp / f"{name}.json"
            cfg.write_text(json.dumps(config))
            where = ["--inprocess", str(cfg)]
        else:
            where = ["--target", self.target(path, server)]
        if client == "grpcjs":
            args = [need_node(), str(NODE_DIR / "client.js"), where[1], *cases]
        else:
            module = ["-m", "tests.interop.grpcio_client", "--stubs", str(self.stubs)]
            args = [sys.executable, *module, *where, *cases]
        out = subprocess.run(
            args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S
        )
        (self.tmp / f"client-{name}.log").write_text(out.stdout + out.stderr)
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise AssertionError(
                f"{name}: the client reported nothing (rc {out.returncode}):\n{out.stderr[-3000:]}"
            )
        return {line["case"]: line for line in lines}

    def _run_go(self, name: str, target: str, cases: list[str]) -> dict[str, dict[str, Any]]:
        """grpc-go's client runs one case per process and judges it itself (exit 0 = pass)."""
        binary = need_go("client")
        host, _, port = target.rpartition(":")
        got: dict[str, dict[str, Any]] = {}
        for case in cases:
            out = subprocess.run(
                [binary, f"--server_host={host}", f"--server_port={port}",
                 f"--test_case={case}", "--use_tls=false"],
                capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S,
            )  # fmt: skip
            got[case] = {"case": case, "passed": out.returncode == 0,
                         "log": (out.stdout + out.stderr)[-3000:]}  # fmt: skip
        return got
