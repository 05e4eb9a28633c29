"""The chaos topology: BIND 9, instances (app + inbound sidecar), callers, and faults.

Does I/O (processes, namespaces, HTTP). A `Mesh` owns everything it starts and takes
it all down in `close()`, also after a failed test:

    mesh = Mesh(workdir, netns=network_or_None)       # starts BIND 9 (real SRV zone)
    a1 = mesh.add_instance("a")                       # app + inbound sidecar, registers
    caller = mesh.add_caller("a", upstream=...)       # outbound-only sidecar, discovers
    mesh.wait_endpoints(caller, "echo", 3)            # or fail naming what is missing
    a1.kill() / a1.freeze() / a1.thaw() / a1.partition() / a1.heal() / a1.drain()
    mesh.close(); mesh.leaked()                        # no process of this run is left

Every process runs in its own session with `CHAOS_RUN=<id>` in its environment, so
`leaked()` finds any survivor by scanning /proc, whoever started it. With a
`Network` (tests/chaos/netns.py), every instance lives in its own namespace and is
reached over the bridge; without one, everything binds 127.0.0.1.

Discovery: by default (`CHAOS_DISCOVERY=dns`) instance sidecars register themselves
in BIND (RFC 2136, TSIG) and callers find them by SRV, as in production. With
`CHAOS_DISCOVERY=static` callers get the instances' addresses as static endpoints:
a way to look at the data plane alone; scenarios about DNS then fail, as they should.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.chaos.netns import Namespace, Network
from tests.dns_servers import KEY_NAME, KEY_SECRET, BindServer, free_port
from tests.integration import procs
from tests.integration.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "example.net"
ECHO = "meshtest.echo.v1.Echo"
RUN_ENV = "CHAOS_RUN"
RUN_ID = f"{os.getpid()}-{int(time.time())}"


def discovery_mode() -> str:
    mode = os.environ.get("CHAOS_DISCOVERY", "dns")
    if mode not in ("dns", "static"):
        raise ValueError(f"CHAOS_DISCOVERY must be dns or static, not {mode!r}")
    return mode


# -- processes -------------------------------------------------------------------------


class Proc:
    """A Python module run as a process (optionally inside a namespace), in its own session."""

    def __init__(self, name: str, argv: list[str], log: Path, prefix: list[str] = ()) -> None:  # type: ignore[assignment]
        self.name = name
        self.log = log
        self._out = log.open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT), RUN_ENV: RUN_ID}
        self.popen = subprocess.Popen(
            [*prefix, sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: signals reach only it
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def terminate(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
        if self.alive:
            self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        if self.alive:
            self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._out.close()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def leaked() -> list[str]:
    """Processes of this run still alive anywhere (found by their CHAOS_RUN marker)."""
    marker = f"{RUN_ENV}={RUN_ID}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            if marker in env.split(b"\0"):
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


# admin binds the instance's address, inside a namespace off loopback: mutating endpoints
# then need the token (sidecar/admin/server.py)
ADMIN_TOKEN = "chaos-admin-token-0123456789"


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return procs.http(method, url, body, timeout=3, headers=headers)  # short: pollers: 100 ms


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- sidecars ----------------------------------------------------------------------------


@dataclass
class SidecarProc:
    name: str
    proc: Proc
    config: dict[str, Any]
    admin: str  # host:port

    def url(self, path: str) -> str:
        return f"http://{self.admin}{path}"

    def get_json(self, path: str) -> Any:
        status, body = http("GET", self.url(path))
        if status != 200:
            raise RuntimeError(f"{self.name} {path}: HTTP {status} {body[:200]!r}")
        return json.loads(body)

    def endpoints(self, upstream: str) -> list[dict[str, Any]]:
        """The upstream's endpoints as /clusters shows them ([] when unreachable)."""
        status, body = http("GET", self.url("/clusters"))
        if status != 200:
            return []
        data = json.loads(body)
        cluster = data.get(upstream) or {}
        return list(cluster.get("endpoints", []))

    def listen(self, listener: str) -> str:
        return str(self.config[listener]["listen"])


def _write_config(workdir: Path, name: str, config: dict[str, Any]) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# -- instances ---------------------------------------------------------------------------


@dataclass
class Instance:
    """One instance of a service: its app and its inbound sidecar, maybe in a namespace."""

    name: str
    service: str
    site: str
    host: str  # where the sidecar's inbound listener and admin bind
    app_port: int
    inbound_port: int
    ns: Namespace | None
    app: Proc | None = None
    sidecar: SidecarProc | None = None
    extra: list[Proc] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The inbound listener: what callers reach and DNS publishes."""
        return f"{self.host}:{self.inbound_port}"

    @property
    def app_address(self) -> str:
        return f"{self.host if self.ns else '127.0.0.1'}:{self.app_port}"

    def procs(self) -> list[Proc]:
        return [p for p in (self.app, self.sidecar.proc if self.sidecar else None) if p]

    def kill(self) -> None:
        """SIGKILL the app and its sidecar: the instance dies as in a crash (no deregistration)."""
        for p in self.procs():
            p.signal(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP the app and its sidecar: a hung machine (connections open, no answers)."""
        for p in self.procs():
            p.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for p in self.procs():
            p.signal(signal.SIGCONT)

    def partition(self) -> None:
        if self.ns is None:
            raise RuntimeError("a partition needs network namespaces")
        self.ns.partition()

    def heal(self) -> None:
        if self.ns is not None:
            self.ns.heal()

    def drain(self) -> int:
        """POST /drain to the sidecar; the HTTP status."""
        assert self.sidecar is not None
        return http("POST", self.sidecar.url("/drain"))[0]

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM both (the sidecar first, so it drains while the app still answers)."""
        if self.sidecar is not None:
            self.sidecar.proc.terminate(grace)
        if self.app is not None:
            self.app.terminate(grace)

    async def set_knobs(self, **changes: Any) -> dict[str, Any]:
        from services.knobs import set_knobs

        return await set_knobs(self.app_address, **changes)


# -- the mesh ------------------------------------------------------------------------------


class Mesh:
    """BIND 9 plus the instances and callers a scenario adds; `close()` removes all."""

    def __init__(self, workdir: Path, network: Network | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.network = network
        self.mode = discovery_mode()
        self.instances: list[Instance] = []
        self.callers: list[SidecarProc] = []
        self.procs: list[Proc] = []
        self.dns = _Bind(workdir / "bind", network.gateway if network else None)
        self.dns.start()

    @property
    def nameserver_for_instances(self) -> str:
        host = self.network.gateway if self.network else "127.0.0.1"
        return f"{host}:{self.dns.port}"

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.dns.port}"

    def srv_name(self, service: str, site: str) -> str:
        return f"_{service}._grpc.{site}.{DOMAIN}."

    def _spawn(self, name: str, argv: list[str], prefix: list[str] = ()) -> Proc:  # type: ignore[assignment]
        proc = Proc(name, argv, self.workdir / f"{name}.log", list(prefix))
        self.procs.append(proc)
        return proc

    def _start_sidecar(
        self, name: str, config: dict[str, Any], prefix: list[str] = ()
    ) -> SidecarProc:  # type: ignore[assignment]
        path = _write_config(self.workdir, name, config)
        proc = self._spawn(name, ["-m", "sidecar", "run", "-c", str(path)], prefix)
        return SidecarProc(name, proc, config, config["admin"]["listen"])

    def _wait_live(self, sidecar: SidecarProc, path: str = "/live", timeout: float = 20) -> None:
        proc = sidecar.proc
        wait_until(
            lambda: not proc.alive or http("GET", sidecar.url(path))[0] == 200,
            timeout,
            f"sidecar {sidecar.name} {path}",
        )
        if not proc.alive:
            raise RuntimeError(f"sidecar {sidecar.name} exited:\n{proc.tail()}")

    def add_instance(
        self,
        site: str,
        service: str = "echo",
        *,
        latency_ms: float = 0.0,
        capacity: int = 0,
        app_argv: list[str] | None = None,
        sidecar: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> Instance:
        """Start an app and its inbound sidecar (registering in DNS); wait until /ready.

        `app_argv`: another app (a module and its flags, without --port/--host/--name);
        default: the chaos echo app (tests/chaos/app.py)."""
        index = sum(1 for i in self.instances if i.service == service and i.site == site)
        name = f"{service}-{site}-{index}"
        ns = self.network.add() if self.network else None
        host = ns.address if ns else "127.0.0.1"
        prefix = ns.exec_prefix() if ns else []
        app_port, inbound_port, admin_port = free_port(), free_port(), free_port()
        inst = Instance(name, service, site, host, app_port, inbound_port, ns)
        self.instances.append(inst)
        app_host = host if ns else "127.0.0.1"  # in a namespace: reachable for knobs
        argv = app_argv or ["-m", "tests.chaos.app"]
        argv = [*argv, "--port", str(app_port), "--host", app_host, "--name", name]
        if app_argv is None:
            argv += ["--latency-ms", str(latency_ms), "--capacity", str(capacity)]
        inst.app = self._spawn(f"{name}-app", argv, prefix)
        config: dict[str, Any] = {
            "service": service,
            "site": site,
            "domain": DOMAIN,
            "inbound": {
                "listen": inst.address,
                "app": f"{app_host}:{app_port}",
                "health": {"mode": "grpc", "interval_s": 0.5, "timeout_s": 0.5},
            },
            "admin": {"listen": f"{host}:{admin_port}", "token": ADMIN_TOKEN},
            "drain_grace_s": 3.0,
        }
        if self.mode == "dns":
            config["registration"] = {
                "nameserver": self.nameserver_for_instances,
                "zone": DOMAIN,
                "tsig": {"name": KEY_NAME, "secret": KEY_SECRET},
                "ttl_s": 2,
                "address": host,
                "target": f"{name}.{site}.{DOMAIN}",
            }
        config = _merge(config, sidecar or {})
        if self.mode == "static":
            for peer, up in config.get("upstreams", {}).items():
                up["endpoints"] = [i.address for i in self.instances if i.service == peer]
        inst.sidecar = self._start_sidecar(name, config, prefix)
        if wait:
            self.wait_instance(inst)
        return inst

    def wait_instance(self, inst: Instance, timeout: float = 20) -> None:
        assert inst.app is not None and inst.sidecar is not None
        app = inst.app
        host, port = inst.app_address.rsplit(":", 1)
        wait_until(
            lambda: not app.alive or self._reachable(inst, host, int(port)),
            timeout,
            f"app {inst.name}",
        )
        if not app.alive:
            raise RuntimeError(f"app {inst.name} exited:\n{app.tail()}")
        self._wait_live(inst.sidecar, "/ready", timeout)

    def _reachable(self, inst: Instance, host: str, port: int) -> bool:
        if inst.ns is None:
            return port_open(host, port)
        return port_open(host, port)  # the app binds the namespace address

    def add_caller(
        self,
        site: str,
        upstreams: dict[str, dict[str, Any]],
        *,
        name: str | None = None,
        sites: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> SidecarProc:
        """An outbound-only sidecar in the root namespace (a view-like caller's)."""
        name = name or f"caller-{site}-{len(self.callers)}"
        ups = {}
        for upstream, cfg in upstreams.items():
            cfg = dict(cfg)
            if self.mode == "static":
                cfg["endpoints"] = [i.address for i in self.instances if i.service == upstream]
            ups[upstream] = cfg
        config: dict[str, Any] = {
            "site": site,
            "domain": DOMAIN,
            "outbound": {"listen": f"127.0.0.1:{free_port()}"},
            "admin": {"listen": f"127.0.0.1:{free_port()}"},
            "discovery": {
                "nameservers": [self.nameserver],
                "sites": sites or sorted({i.site for i in self.instances} | {site}),
                "ttl_floor_s": 1.0,
                "jitter": 0.1,
                "timeout_s": 0.5,
                "backoff_initial_s": 0.5,
                "backoff_max_s": 2.0,
                "empty_grace_s": 5.0,
            },
            "upstreams": ups,
        }
        config = _merge(config, extra or {})
        caller = self._start_sidecar(name, config)
        self.callers.append(caller)
        self._wait_live(caller)
        return caller

    def wait_endpoints(
        self, caller: SidecarProc, upstream: str, count: int, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Wait until `caller` knows `count` endpoints of `upstream`, or fail saying why."""
        try:
            return wait_until(  # type: ignore[no-any-return]
                lambda: (eps := caller.endpoints(upstream)) and len(eps) == count and eps,
                timeout,
                f"{caller.name} to know {count} endpoints of {upstream}",
            )
        except TimeoutError:
            seen = caller.endpoints(upstream)
            published = {
                site: self.dns.srv_set(self.srv_name(upstream, site))
                for site in sorted({i.site for i in self.instances})
            }
            raise AssertionError(
                f"{caller.name} knows {len(seen)} endpoints of {upstream!r} after {timeout:.0f}s, "
                f"expected {count}. DNS holds {published}. "
                + (
                    "Nothing registered: `registration:` is not wired into `sidecar run` yet?"
                    if not any(published.values())
                    else "Registered but not discovered: `discovery:` is not wired into "
                    "`sidecar run` yet?"
                    if not seen
                    else ""
                )
                + f" (mode {self.mode}; set CHAOS_DISCOVERY=static to test the data plane alone)"
            ) from None

    def close(self) -> None:
        """Stop every process (thawed first, killed if it will not stop) and BIND."""
        for proc in self.procs:
            proc.signal(signal.SIGCONT)
            proc.signal(signal.SIGKILL)
        for proc in self.procs:
            proc.reap()
        self.dns.stop()


class _Bind(BindServer):
    """BIND 9 listening on loopback and, with namespaces, on the bridge's address."""

    def __init__(self, workdir: Path, also: str | None) -> None:
        super().__init__(workdir)
        self.also = also

    def _conf(self) -> str:
        conf = super()._conf()
        if self.also:
            conf = conf.replace("{ 127.0.0.1; }", "{ 127.0.0.1; " + self.also + "; }", 1)
        return conf
