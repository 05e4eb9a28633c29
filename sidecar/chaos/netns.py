"""Network namespaces for chaos runs: one namespace per instance, a bridge, partitions.

Does I/O (runs `ip` and `iptables` as root). Layout, and why:

- A bridge with a unique name in the root namespace holds the first address of a
  /24 taken from 198.18.0.0/15 (RFC 2544's benchmarking range, never routed on the
  Internet). The caller's sidecar, the DNS server and the test process stay in the
  root namespace and reach every instance through it.
- Each instance gets its own namespace, joined to the bridge by a veth pair, with
  one address in that /24 and *no default route*: nothing in a test namespace can
  reach anything but the bridge's /24 and its own loopback.
- A partition is an iptables DROP rule inside the instance's namespace (both ways
  on its veth), so the instance keeps running and only the network fails; healing
  deletes the rule. `tc netem` is not available on these kernels (FACTS.md).

Every name carries the run id, and `Network.close()` deletes the namespaces (which
deletes their veth ends and so the bridge ports) and the bridge, also after a failed
test. `sweep_stale()` removes leftovers of runs whose process is gone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field

PREFIX = "chaos"  # every namespace and link this module creates starts with it
RANGE = ipaddress.ip_network("198.18.0.0/15")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def available() -> tuple[bool, str]:
    """Whether namespaces can be used here, and if not, why (for pytest.skip)."""
    if os.geteuid() != 0:
        return False, "network-namespace chaos cases need root (ip netns, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        add = _ip("netns", "add", probe, check=False)
        if add.returncode != 0:
            return False, f"`ip netns add` failed: {add.stderr.strip()}"
        ipt = subprocess.run(
            ["ip", "netns", "exec", probe, "iptables", "-L", "-n"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if ipt.returncode != 0:
            return False, f"iptables inside a namespace failed: {ipt.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return True, ""


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-4", "route", "show", "table", "all", check=False).stdout
    nets: list[ipaddress.IPv4Network] = []
    for word in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", out):
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.IPv4Network(word, strict=False))
    return nets


def _pick_subnet(seed: int) -> ipaddress.IPv4Network:
    used = _used_networks()
    subnets = list(ipaddress.IPv4Network(RANGE).subnets(new_prefix=24))
    for i in range(len(subnets)):
        net = subnets[(seed + i) % len(subnets)]
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 198.18.0.0/15")


def sweep_stale() -> list[str]:
    """Delete namespaces and bridges of earlier runs whose process is gone."""
    removed = []
    names = _ip("netns", "list", check=False).stdout.split()
    links = re.findall(r"^\d+: ([^:@ ]+)", _ip("-o", "link", check=False).stdout, re.M)
    for name in [*names, *links]:
        m = re.fullmatch(rf"{PREFIX}(\d+)[a-z][bnvi]\d*", name)
        if not m or os.path.exists(f"/proc/{m.group(1)}"):
            continue
        if name in names:
            _ip("netns", "del", name, check=False)
        else:
            _ip("link", "del", name, check=False)
        removed.append(name)
    return removed


_counter = iter("abcdefghijklmnopqrstuvwxyz" * 4)


def _next_letter() -> str:
    return next(_counter)


@dataclass
class Namespace:
    name: str
    address: str  # the instance's address on the bridge
    veth: str  # the interface inside the namespace
    partitioned: bool = False

    def exec_prefix(self) -> list[str]:
        """Argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def _iptables(self, *args: str) -> None:
        subprocess.run(
            [*self.exec_prefix(), "iptables", *args], check=True, capture_output=True, timeout=10
        )

    def partition(self) -> None:
        """Drop every packet in and out of the namespace's veth (loopback keeps working)."""
        if not self.partitioned:
            self._iptables("-I", "INPUT", "-i", self.veth, "-j", "DROP")
            self._iptables("-I", "OUTPUT", "-o", self.veth, "-j", "DROP")
            self.partitioned = True

    def heal_quietly(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.heal()

    def heal(self) -> None:
        if self.partitioned:
            self._iptables("-D", "INPUT", "-i", self.veth, "-j", "DROP")
            self._iptables("-D", "OUTPUT", "-o", self.veth, "-j", "DROP")
            self.partitioned = False


@dataclass
class Network:
    """A bridge plus namespaces, all named `chaos<pid><letter>...` (15 characters at most)."""

    run: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}{_next_letter()}")
    subnet: ipaddress.IPv4Network | None = None
    bridge: str = ""
    gateway: str = ""  # the bridge's address: where instances reach the root namespace
    namespaces: list[Namespace] = field(default_factory=list)
    _hosts: list[str] = field(default_factory=list)

    def open(self) -> Network:
        self.subnet = _pick_subnet(os.getpid())
        hosts = [str(h) for h in self.subnet.hosts()]
        self.gateway, self._hosts = hosts[0], hosts[1:]
        self.bridge = f"{self.run}b"
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            # A bridge takes the lowest MAC of its ports unless one is set: adding an
            # instance could then change the gateway's MAC under the ARP caches of the
            # instances already running, cutting them off from DNS until the entry
            # expires (seen: one instance's registration timing out for 15 s).
            _ip("link", "set", self.bridge, "address", _local_mac())
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def add(self) -> Namespace:
        """A new namespace with one address on the bridge, loopback up, no default route."""
        i = len(self.namespaces)
        name = f"{self.run}n{i}"
        outer, inner = f"{self.run}v{i}", f"{self.run}i{i}"
        address = self._hosts[i]
        ns = Namespace(name, address, inner)
        self.namespaces.append(ns)  # recorded first, so close() removes a half-built one
        _ip("netns", "add", name)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("link", "set", inner, "netns", name)
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        return ns

    def close(self) -> None:
        """Remove every namespace (their veths go with them) and the bridge."""
        for i, ns in enumerate(self.namespaces):
            ns.heal_quietly()
            _ip("netns", "del", ns.name, check=False)
            _ip("link", "del", f"{self.run}v{i}", check=False)
        self.namespaces.clear()
        if self.bridge:
            _ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Names of this run's namespaces and links that still exist (should be none)."""
        names = _ip("netns", "list", check=False).stdout.split()
        links = re.findall(r"^\d+: ([^:@ ]+)", _ip("-o", "link", check=False).stdout, re.M)
        return [n for n in [*names, *links] if n.startswith(self.run)]


def _local_mac() -> str:
    """A random locally administered unicast MAC address."""
    octets = [0x02, *(random.randrange(256) for _ in range(5))]
    return ":".join(f"{o:02x}" for o in octets)
