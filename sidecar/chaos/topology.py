"""The mesh a scenario describes, started for real: the embedded DNS registry, every
instance (the user's app and its sidecar, which registers it), and the caller sidecar
the load goes through; and the faults, as verbs on it.

Does I/O (processes, loopback HTTP, DNS, namespaces). Everything binds 127.0.0.1 on
ports the kernel picks; with network namespaces (as root, for partitions) each instance
lives in its own, reached over a bridge (sidecar/chaos/netns.py), and its app still
listens on 127.0.0.1 inside it. A `Topology` owns every process it starts; `close()` kills them all (and
whatever else carries the run's marker, sidecar/chaos/procs.py), whatever happened.

Sidecar configs: a service's `sidecar:` file, or `sidecar init`'s defaults
(sidecar/scaffold.py) when it names none; either way the runner sets the addresses,
the registry and quick TTLs (a chaos run lasts seconds, not hours), then checks the
result as `sidecar check` does before starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidecar.chaos import bind
from sidecar.chaos.load import stub_folders
from sidecar.chaos.netns import Namespace, Network, sweep_stale
from sidecar.chaos.procs import ADMIN_TOKEN, Proc, free_port, http, kill_marked
from sidecar.chaos.spec import Scenario, ScenarioError
from sidecar.config import ConfigError, parse_config
from sidecar.scaffold import InitSpec, checked

# What a chaos run changes in every sidecar's discovery: answers followed within a
# second or two, so a fault's effect is seen inside a short run.
QUICK_DISCOVERY = {
    "ttl_floor_s": 1.0,
    "jitter": 0.1,
    "timeout_s": 0.5,
    "backoff_initial_s": 0.5,
    "backoff_max_s": 2.0,
    "empty_grace_s": 5.0,
}


class StartFailed(RuntimeError):
    """A process of the topology did not come up; the message has its log's tail."""


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Instance:
    name: str
    service: str
    site: str
    index: int
    app_port: int
    inbound_port: int
    admin_port: int
    outbound_port: int | None
    app: Proc | None = None
    sidecar: Proc | None = None
    state: str = "starting"  # starting, up, killed, stopped, draining, gone
    ns: Namespace | None = None  # its network namespace, when the run uses them

    @property
    def host(self) -> str:
        """Where its sidecar's inbound and admin listen: its namespace's address, or loopback."""
        return self.ns.address if self.ns else "127.0.0.1"

    @property
    def address(self) -> str:
        """The inbound listener: what DNS publishes and callers reach."""
        return f"{self.host}:{self.inbound_port}"

    def admin(self, path: str) -> str:
        return f"http://{self.host}:{self.admin_port}{path}"

    def procs(self) -> list[Proc]:
        return [p for p in (self.app, self.sidecar) if p is not None]


@dataclass
class Topology:
    scenario: Scenario
    base: Path  # the scenario file's folder: relative paths start here
    workdir: Path
    run_id: str
    domain: str = ""
    registry_port: int = 0
    registry: Proc | None = None
    instances: list[Instance] = field(default_factory=list)
    caller: Proc | None = None
    caller_admin: int = 0
    caller_outbound: int = 0
    procs: list[Proc] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)  # handed out in this run
    network: Network | None = None  # a bridge and one namespace per instance (as root)
    tsig_secret: str = field(default_factory=bind.new_secret)  # BIND's update key

    def port(self) -> int:
        return free_port(self.ports)

    def __post_init__(self) -> None:
        self.domain = self.scenario.domain
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "configs").mkdir(parents=True, exist_ok=True)

    # -- processes ---------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Proc:
        proc = Proc(name, argv, self.workdir / "logs" / f"{name}.log", self.run_id, cwd, env)
        self.procs.append(proc)
        return proc

    def _sidecar(
        self, name: str, config: dict[str, Any], key: str, prefix: Sequence[str] = ()
    ) -> Proc:
        try:
            parse_config(config)
        except ConfigError as exc:
            raise ScenarioError(key, f"the sidecar config is refused: {exc}") from None
        path = self.workdir / "configs" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [*prefix, sys.executable, "-m", "sidecar", "run", "-c", str(path)]
        return self._spawn(f"{name}-sidecar", argv)

    def open_network(self) -> None:
        """Put every instance in a network namespace of its own (sidecar/chaos/netns.py),
        so a partition is an iptables rule; the registry then listens on the bridge."""
        sweep_stale()
        self.network = Network().open()

    @property
    def registry_host(self) -> str:
        return self.network.gateway if self.network else "127.0.0.1"

    @property
    def nameserver(self) -> str:
        return f"{self.registry_host}:{self.registry_port}"

    def sites(self) -> list[str]:
        return sorted({s for svc in self.scenario.services.values() for s in svc.sites})

    async def start_registry(self) -> None:
        """The DNS server instances register in: the embedded registry (journaling to the
        results folder) or BIND 9 (sidecar/chaos/bind.py); restarted the same way."""
        if not self.registry_port:
            self.registry_port = self.port()
        if self.scenario.discovery == "bind":
            binary = bind.named()
            if binary is None:
                raise ScenarioError("discovery", "bind, but `named` is not installed (bind9)")
            hosts = sorted({"127.0.0.1", self.registry_host})
            conf = bind.prepare(self.workdir / "bind", self.domain, hosts, self.registry_port,
                                self.tsig_secret)  # fmt: skip
            argv = [binary, "-g", "-4", "-n", "1", "-c", str(conf)]
        else:
            journal = self.workdir / "registry.journal"
            argv = [sys.executable, "-m", "sidecar", "registry", "--listen", self.nameserver,
                    "--zone", self.domain, "--journal", str(journal)]  # fmt: skip
        self.registry = self._spawn(
            "bind" if self.scenario.discovery == "bind" else "registry", argv
        )
        await _wait_dns(self.registry, self.registry_host, self.registry_port, self.domain, 20.0)

    def stop_registry(self) -> None:
        if self.registry is not None:
            self.registry.kill()

    # -- instances -----------------------------------------------------------------------

    def _instance_config(self, inst: Instance) -> dict[str, Any]:
        svc = self.scenario.services[inst.service]
        key = f"services.{inst.service}.sidecar"
        if svc.sidecar is not None:
            try:
                base = yaml.safe_load((self.base / svc.sidecar).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ScenarioError(key, f"cannot read {svc.sidecar}: {exc}") from None
            if not isinstance(base, dict):
                raise ScenarioError(key, f"{svc.sidecar} is not a YAML mapping")
        else:
            calls = {p: list(self.scenario.services[p].grpc_services) for p in svc.calls}
            spec = InitSpec(
                inst.service, inst.site, self.domain, list(svc.grpc_services), calls,
                health=svc.health,
            )  # fmt: skip
            base = checked(spec)[1]
        config = merge(
            base,
            {
                "service": inst.service,
                "site": inst.site,
                "domain": self.domain,
                "inbound": {
                    "listen": inst.address,
                    "app": f"127.0.0.1:{inst.app_port}",  # inside its namespace, if any
                    "health": {"interval_s": 0.5, "timeout_s": 0.5},
                },
                # off loopback (in a namespace) the admin needs a token (sidecar/admin)
                "admin": {"listen": f"{inst.host}:{inst.admin_port}"}
                | ({"token": ADMIN_TOKEN} if inst.ns else {}),
                "discovery": {
                    "nameservers": [self.nameserver],
                    "sites": self.sites(),
                    **QUICK_DISCOVERY,
                },
                "registration": {
                    "nameserver": self.nameserver,
                    "ttl_s": 2,
                    "address": inst.host,
                    "target": f"{inst.name}.{inst.site}.{self.domain}",
                }
                | (
                    {"tsig": {"name": bind.KEY_NAME, "secret": self.tsig_secret}}
                    if self.scenario.discovery == "bind"
                    else {}
                ),
                "drain_grace_s": 2.0,
            },
        )
        if inst.outbound_port is not None:
            config["outbound"] = {**config.get("outbound", {}),
                                  "listen": f"127.0.0.1:{inst.outbound_port}"}  # fmt: skip
        else:
            config.pop("outbound", None)
        return config

    def add_instance(self, service: str, site: str) -> Instance:
        """Start one instance (app, then its sidecar); `wait_ready` waits for it."""
        svc = self.scenario.services[service]
        index = sum(1 for i in self.instances if i.service == service and i.site == site)
        name = f"{service}-{site}-{index}"
        has_outbound = bool(svc.calls) or svc.sidecar is not None
        inst = Instance(name, service, site, index, self.port(), self.port(), self.port(),
                        self.port() if has_outbound else None)  # fmt: skip
        self.instances.append(inst)
        if self.network is not None:
            inst.ns = self.network.add()
        prefix = inst.ns.exec_prefix() if inst.ns else []
        values = {
            "port": str(inst.app_port),
            "site": site,
            "name": name,
            "index": str(index),
            "service": service,
            "outbound": f"127.0.0.1:{inst.outbound_port}" if inst.outbound_port else "",
            "python": shlex.quote(sys.executable),  # the interpreter running `sidecar`
            "workdir": shlex.quote(str(self.workdir)),  # the results folder (scratch files)
        }
        command = svc.command.format(**values)
        cwd = self.base / svc.cwd if svc.cwd else self.base
        stubs = ":".join(str(f) for f in stub_folders(list(self.scenario.stubs), self.base))
        env = {**svc.env}
        if stubs:
            env["PYTHONPATH"] = stubs + (":" + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
        argv = [*prefix, "/bin/sh", "-c", f"exec {command}"]
        inst.app = self._spawn(f"{name}-app", argv, cwd, env)
        key = f"services.{service}.sidecar"
        inst.sidecar = self._sidecar(name, self._instance_config(inst), key, prefix)
        return inst

    async def wait_ready(self, inst: Instance) -> None:
        svc = self.scenario.services[inst.service]
        end = time.monotonic() + svc.ready_timeout_s
        while True:
            for proc in inst.procs():
                if not proc.alive:
                    raise StartFailed(f"{proc.name} exited with {proc.popen.returncode}:\n"
                                      f"{proc.tail()}")  # fmt: skip
            status, body = await asyncio.to_thread(http, "GET", inst.admin("/ready"))
            if status == 200:
                inst.state = "up"
                return
            if time.monotonic() > end:
                assert inst.app is not None
                raise StartFailed(
                    f"{inst.name} not ready after {svc.ready_timeout_s}s (/ready: {status} "
                    f"{body[:300]!r}); its app's log:\n{inst.app.tail()}"
                )
            await asyncio.sleep(0.2)

    async def start_instances(self) -> None:
        for name, svc in self.scenario.services.items():
            for site, count in svc.sites.items():
                for _ in range(count):
                    self.add_instance(name, site)
        await asyncio.gather(*(self.wait_ready(i) for i in self.instances))

    # -- the caller ------------------------------------------------------------------------

    def caller_upstream(self) -> dict[str, Any]:
        target = self.scenario.load.service
        services = list(self.scenario.services[target].grpc_services)
        spec = InitSpec(
            "caller", self.scenario.caller_site(), self.domain, calls={target: services}
        )
        defaults: dict[str, Any] = checked(spec)[1]["upstreams"][target]
        defaults["health_check"] = {"interval_s": 0.5, "timeout_s": 0.3, "unhealthy_threshold": 2}
        return merge(defaults, self.scenario.upstream)

    async def start_caller(self) -> None:
        self.caller_admin, self.caller_outbound = self.port(), self.port()
        config = {
            "site": self.scenario.caller_site(),
            "domain": self.domain,
            "outbound": {"listen": f"127.0.0.1:{self.caller_outbound}"},
            "admin": {"listen": f"127.0.0.1:{self.caller_admin}"},
            "discovery": {
                "nameservers": [self.nameserver],
                "sites": self.sites(),
                **QUICK_DISCOVERY,
            },
            "upstreams": {self.scenario.load.service: self.caller_upstream()},
        }
        self.caller = self._sidecar("caller", config, "upstream")
        want = sum(1 for i in self.instances if i.service == self.scenario.load.service)
        end = time.monotonic() + 20.0
        while len(await asyncio.to_thread(self.endpoints)) < want:
            if not self.caller.alive:
                raise StartFailed(f"the caller sidecar exited:\n{self.caller.tail()}")
            if time.monotonic() > end:
                raise StartFailed(
                    f"the caller knows {len(self.endpoints())} of {want} instances of "
                    f"{self.scenario.load.service} after 20s (registry {self.nameserver})"
                )
            await asyncio.sleep(0.2)

    def caller_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.caller_admin}{path}"

    def endpoints(self) -> list[dict[str, Any]]:
        status, body = http("GET", self.caller_url("/clusters"))
        if status != 200:
            return []
        data = json.loads(body)
        return list((data.get(self.scenario.load.service) or {}).get("endpoints", []))

    # -- faults ------------------------------------------------------------------------------

    def find(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        known = ", ".join(i.name for i in self.instances)
        raise ScenarioError("target", f"no instance {name!r}; instances: {known}")

    async def busiest(self, service: str) -> Instance:
        """The live instance of `service` the caller sent the most attempts to over the
        last half second (a fault on an idle instance would show nothing)."""

        def counts() -> dict[str, int]:
            return {e["address"]: int(e.get("requests", 0)) for e in self.endpoints()}

        first = await asyncio.to_thread(counts)
        await asyncio.sleep(0.5)
        second = await asyncio.to_thread(counts)
        live = [i for i in self.instances if i.service == service and i.state == "up"]
        if not live:
            raise RuntimeError(f"no live instance of {service} to target")
        return max(live, key=lambda i: second.get(i.address, 0) - first.get(i.address, 0))

    @staticmethod
    def kill(inst: Instance) -> None:
        """SIGKILL app and sidecar: a crash (no deregistration)."""
        for proc in inst.procs():
            proc.signal(signal.SIGKILL)
        inst.state = "killed"

    @staticmethod
    def freeze(inst: Instance, sidecar_only: bool = False) -> None:
        procs = [inst.sidecar] if sidecar_only and inst.sidecar else inst.procs()
        for proc in procs:
            proc.signal(signal.SIGSTOP)
        inst.state = "stopped"

    @staticmethod
    def thaw(inst: Instance) -> None:
        for proc in inst.procs():
            proc.signal(signal.SIGCONT)
        if inst.state == "stopped":
            inst.state = "up"

    @staticmethod
    async def set_fault(inst: Instance, body: dict[str, Any]) -> None:
        """The instance's sidecar delays or aborts calls to its app (admin /faults)."""
        data = json.dumps({"upstream": "app", **body}).encode()
        status, reply = await asyncio.to_thread(http, "POST", inst.admin("/faults"), data)
        if status != 200:
            raise RuntimeError(f"{inst.name}: POST /faults answered {status} {reply[:200]!r}")

    @staticmethod
    async def clear_fault(inst: Instance) -> None:
        await asyncio.to_thread(http, "DELETE", inst.admin("/faults"))

    async def scale_in(self, inst: Instance) -> None:
        """Drain (deregisters, refuses new calls after the grace), then SIGTERM."""
        inst.state = "draining"
        await asyncio.to_thread(http, "POST", inst.admin("/drain"))
        await asyncio.sleep(2.5)  # drain_grace_s (set above) and a little
        for proc in inst.procs():
            proc.signal(signal.SIGTERM)
        inst.state = "gone"

    @staticmethod
    def partition(inst: Instance) -> None:
        """An iptables DROP both ways on the instance's veth (namespaces only)."""
        assert inst.ns is not None
        inst.ns.partition()

    @staticmethod
    def heal(inst: Instance) -> None:
        if inst.ns is not None:
            inst.ns.heal()

    def close(self) -> list[str]:
        """Kill every process, remove the namespaces; what of them is left (none)."""
        for proc in self.procs:
            proc.kill()
        kill_marked(self.run_id)
        if self.network is None:
            return []
        self.network.close()
        return self.network.leftovers()


async def _wait_dns(proc: Proc, host: str, port: int, zone: str, within_s: float) -> None:
    import dns.asyncquery
    import dns.exception
    import dns.message

    end = time.monotonic() + within_s
    query = dns.message.make_query(zone, "SOA")
    while True:
        if not proc.alive:
            raise StartFailed(f"the registry exited:\n{proc.tail()}")
        with contextlib.suppress(dns.exception.DNSException, OSError):
            await dns.asyncquery.udp(query, host, port=port, timeout=0.5)
            return
        if time.monotonic() > end:
            raise StartFailed(f"the registry does not answer on {host}:{port}")
        await asyncio.sleep(0.1)
