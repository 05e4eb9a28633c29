"""`python -m bench --scale`: one upstream with 1,000 SRV endpoints.

Does I/O. 1,000 real endpoints: one nginx (echo module) listening on 1,000 loopback
ports. One SRV name with 1,000 records (and one with 10) in the embedded registry
(`python -m sidecar registry`) and in BIND 9, loaded by RFC 2136 updates
(tests/dns_servers.py). Measured:

1. Discovery time: the sidecar's own `Discovery` + `Cluster` in a probe process
   (bench/discovery_probe.py), from `start()` to all endpoints in the cluster; and
   that probe's RSS growth per discovered endpoint (no channels).
2. A `sidecar run` with 1,000 idle endpoints vs 10: RSS difference per endpoint
   (target: <= 50 KB). The upstream is configured with `discovery:` when
   `sidecar run` fills clusters from DNS; while it does not, with the same 1,000
   addresses as static `endpoints:` (the table says which).
3. Lazy channels: a few calls through the 1,000-endpoint sidecar, then
   `sidecar_channels_open` from /metrics (and the endpoints that got attempts).
4. Pick cost at 10 vs 1,000 endpoints per balancer (bench/pick_cost.py).
"""

# ruff: noqa: RUF001  (the markdown tables use typographic dashes and signs on purpose)

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import Managed, StartFailed, Unavailable, free_port, rss_kib, start
from bench.sections import (
    Log,
    admin_get,
    admin_get_any,
    header,
    meta,
    metric,
    run_client,
    start_echo_sidecar,
    table,
    write,
)
from bench.targets import ECHO_MODULE, NGINX_CONF, REPO, _python_env, require_tools

ZONE = "example.net."
BIG = f"_echo._grpc.local.{ZONE}"
SMALL = f"_echo10._grpc.local.{ZONE}"
CHUNK = 200  # SRV records per RFC 2136 UPDATE (each message stays well under 64 KiB)


@dataclass
class ScaleSettings:
    endpoints: int = 1000
    small: int = 10
    calls: int = 20  # calls made to count lazily opened channels
    dns: tuple[str, ...] = ("registry", "bind")
    picks: bool = True
    smoke: bool = False

    @classmethod
    def quick(cls) -> ScaleSettings:
        return cls(dns=("registry",))

    @classmethod
    def tiny(cls) -> ScaleSettings:
        return cls(endpoints=50, small=5, calls=5, dns=("registry",), picks=False, smoke=True)


def start_nginx_ports(workdir: Path, n: int) -> tuple[Managed, list[int]]:
    """One nginx echo process listening on n loopback ports (n real endpoints)."""
    require_tools("nginx")
    if not ECHO_MODULE.exists():
        raise Unavailable(f"{ECHO_MODULE} missing")
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    plist = sorted(ports)
    d = workdir / "nginx-many"
    d.mkdir(exist_ok=True)
    conf = NGINX_CONF.format(module=ECHO_MODULE, dir=d, port=plist[0])
    extra = "".join(f"    listen 127.0.0.1:{p} http2;\n" for p in plist[1:])
    conf = conf.replace(f"    listen 127.0.0.1:{plist[0]} http2;\n",
                        f"    listen 127.0.0.1:{plist[0]} http2;\n{extra}")  # fmt: skip
    path = d / "nginx.conf"
    path.write_text(conf)
    cmd = ["nginx", "-p", str(d), "-e", str(d / "nginx-error.log"), "-c", str(path)]
    return start("nginx-many", cmd, [plist[0], plist[-1]], workdir), plist


def _load_records(server: Any, name: str, ports: list[int]) -> float:
    """Put one SRV record per port at `name` (target eN-name, A 127.0.0.1); seconds taken."""
    from tests.dns_servers import Srv

    tag = name.split(".")[0].strip("_")
    recs = [Srv(10, 100, p, f"{tag}-{i}.{ZONE}") for i, p in enumerate(ports)]
    t0 = time.monotonic()
    server.set_srv(name, recs[:CHUNK], ttl=3600)
    for i in range(CHUNK, len(recs), CHUNK):
        msg = server.update()
        for r in recs[i : i + CHUNK]:
            msg.add(name, 3600, "SRV", f"{r.priority} {r.weight} {r.port} {r.target}")
            msg.replace(r.target, 3600, "A", "127.0.0.1")
        rcode = server.send(msg)
        if rcode != 0:
            raise StartFailed(f"UPDATE of {name} refused: rcode {rcode}")
    got = len(server.srv_set(name))
    if got != len(ports):
        raise StartFailed(f"{server.kind}: {name} has {got} SRV records, wanted {len(ports)}")
    return time.monotonic() - t0


def _probe(nameserver: str, name: str, expect: int, tree: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.discovery_probe", "--nameserver", nameserver,
           "--name", name, "--expect", str(expect)]  # fmt: skip
    env = _python_env(tree)
    env["PYTHONPATH"] = f"{tree}{os.pathsep}{REPO}{os.pathsep}{env['PYTHONPATH']}"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
                          check=False)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"discovery probe failed: {proc.stderr[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _hosts(admin: int) -> int:
    clusters = json.loads(admin_get(admin, "/clusters"))
    return sum(len(c.get("endpoints", [])) for c in clusters.values())


def _sidecar(
    wd: Path, name: str, tree: Path, ports: list[int], nameserver: str, srv: str, discover: bool
) -> tuple[Managed, int, int]:
    if discover:
        extra = {
            "discovery": {"nameservers": [nameserver]},
            "upstreams": {"echo": {"endpoints": None, "srv_name": srv}},
        }
        proc, port, admin = start_echo_sidecar(wd, name, tree, endpoints=[], extra=extra)
    else:
        eps = [f"127.0.0.1:{p}" for p in ports]
        proc, port, admin = start_echo_sidecar(wd, name, tree, endpoints=eps)
    return proc, port, admin


def _settle(admin: int, expect: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    n = _hosts(admin)
    while n < expect and time.monotonic() < deadline:
        time.sleep(0.1)
        n = _hosts(admin)
    return n


def run_scale(s: ScaleSettings, tree: Path, log: Log, argv: list[str], out: Path) -> int:
    m = meta(argv)
    data: dict[str, Any] = {"meta": m, "settings": s.__dict__, "dns": {}, "notes": []}
    from tests.dns_servers import BindServer, RegistryProcess

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        wd = Path(tmp)
        procs: list[Any] = []
        try:
            try:
                nginx, ports = start_nginx_ports(wd, s.endpoints)
            except (Unavailable, StartFailed) as exc:
                log(f"scale: cannot run: {exc}")
                return 1
            procs.append(nginx)
            log(f"nginx on {len(ports)} ports")
            servers: dict[str, Any] = {}
            for kind in s.dns:
                if kind == "bind" and not Path("/usr/sbin/named").exists():
                    data["notes"].append("BIND skipped: named not installed")
                    continue
                cls = BindServer if kind == "bind" else RegistryProcess
                server = cls(wd / kind)
                server.start()
                procs.append(server)
                servers[kind] = server
                big_s = _load_records(server, BIG, ports)
                _load_records(server, SMALL, ports[: s.small])
                log(f"{kind}: {s.endpoints} + {s.small} SRV records loaded in {big_s:.1f} s")
                rows = {}
                for label, name, n in (("big", BIG, s.endpoints), ("small", SMALL, s.small)):
                    rows[label] = _probe(server.nameserver, name, n, tree)
                    log(f"  probe {label}: {rows[label]}")
                rows["load_s"] = big_s  # type: ignore[assignment]
                data["dns"][kind] = rows

            # The sidecar process: discovery in `sidecar run` if the tree has it.
            ns = next(iter(servers.values())).nameserver
            discover = False
            try:
                proc, _, admin = _sidecar(wd, "sidecar-probe", tree, ports, ns, BIG, True)
                procs.append(proc)
                discover = _settle(admin, s.endpoints, 15) >= s.endpoints
                proc.stop()
            except StartFailed as exc:
                data["notes"].append(f"sidecar with discovery config refused: {exc}")
            data["sidecar_mode"] = "discovery" if discover else "static endpoints"
            if not discover:
                data["notes"].append(
                    "`sidecar run` did not fill the cluster from DNS in this tree: the sidecar "
                    "rows use the same addresses as static `endpoints:`."
                )
            log(f"sidecar endpoints from: {data['sidecar_mode']}")
            side: dict[str, Any] = {}
            for label, n, name in (("small", s.small, SMALL), ("big", s.endpoints, BIG)):
                proc, port, admin = _sidecar(wd, f"sidecar-{label}", tree, ports[:n], ns, name,
                                             discover)  # fmt: skip
                procs.append(proc)
                hosts = _settle(admin, n, 15)
                admin_get_any(admin, "/ready")
                time.sleep(1.0)
                row: dict[str, Any] = {"endpoints": n, "hosts": hosts,
                                       "rss_kib_idle": rss_kib(proc.pid),
                                       "rss_kib_start": proc.idle_rss_kib}  # fmt: skip
                res = run_client("big", f"127.0.0.1:{port}", "--size", "100",
                                 "--calls", str(s.calls), "--concurrency", "1")  # fmt: skip
                admin_get_any(admin, "/ready")  # /ready refreshes the channels gauge
                text = admin_get(admin, "/metrics")
                row["calls"] = res["calls"] + 1  # the client's warm-up call too
                row["statuses"] = res["statuses"]
                row["channels_open"] = metric(text, "sidecar_channels_open")
                row["endpoints_attempted"] = len(
                    {ln.split('endpoint="')[1].split('"')[0] for ln in text.splitlines()
                     if ln.startswith("sidecar_attempts_total{") and 'endpoint="' in ln}
                )  # fmt: skip
                row["rss_kib_after_calls"] = rss_kib(proc.pid)
                side[label] = row
                log(f"  sidecar {label}: {row}")
                proc.stop()
            data["sidecar"] = side
        finally:
            for p in procs:
                p.stop()
    if s.picks:
        log("pick cost (bench/pick_cost.py)")
        data["picks"] = _picks(tree, s)
    m["loadavg_end"] = os.getloadavg()
    md = header(f"Scale: one upstream with {s.endpoints:,} SRV endpoints", m) + _markdown(data, s)
    write(out, "scale-smoke" if s.smoke else "scale", md, data)
    ok = all(r["big"]["all_endpoints_s"] is not None for r in data["dns"].values())
    ok &= all(set(r["statuses"]) == {"OK"} for r in data["sidecar"].values())
    return 0 if ok else 1


def _picks(tree: Path, s: ScaleSettings) -> list[dict[str, Any]]:
    code = (
        "import json,sys; sys.argv=['x']; from bench import pick_cost as p\n"
        f"sizes=({s.small},{s.endpoints})\nREPEATS={3 if not s.smoke else 1}\n"
        "out=[]\n"
        "import statistics as st\n"
        "for lb in p.LBS:\n"
        "    runs={n:[] for n in sizes}\n"
        "    for _ in range(REPEATS):\n"
        "        for n in sizes: runs[n].append(p.picks_per_s(lb,n))\n"
        "    r=[st.median(runs[n]) for n in sizes]\n"
        "    out.append({'lb':lb,'picks_per_s':dict(zip(map(str,sizes),r)),"
        "'bytes_per_endpoint':p.bytes_per_endpoint(lb,sizes[1])})\n"
        "print(json.dumps(out))\n"
    )
    env = _python_env(tree)
    env["PYTHONPATH"] = f"{tree}{os.pathsep}{REPO}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300, check=False)  # fmt: skip
    if proc.returncode != 0:
        return [{"error": proc.stderr[-500:]}]
    result: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _markdown(data: dict[str, Any], s: ScaleSettings) -> list[str]:
    n, k = s.endpoints, s.small
    md = ["## Discovery (the sidecar's `Discovery` + `Cluster`, in a probe process)", ""]
    rows = []
    for kind, r in data["dns"].items():
        big, small = r["big"], r["small"]
        per = (big["rss_kib_after"] - small["rss_kib_after"]) / max(1, n - k)
        rows.append([
            kind, f"{r['load_s']:.1f}",
            f"{big['first_update_s']:.3f}" if big["first_update_s"] is not None else "–",
            f"{big['all_endpoints_s']:.3f}" if big["all_endpoints_s"] is not None else "timeout",
            big["hosts"],
            f"{big['cpu_s']:.2f}" if big.get("cpu_s") is not None else "–",
            f"{small['all_endpoints_s']:.3f}" if small["all_endpoints_s"] is not None else "timeout",
            f"{small['rss_kib_after'] / 1024:.1f} / {big['rss_kib_after'] / 1024:.1f}",
            f"{per:.1f}",
        ])  # fmt: skip
    md += table(
        ["DNS server", f"load {n:,} records s", "first update s", f"all {n:,} in cluster s",
         "hosts", "probe CPU s", f"{k} endpoints s", f"probe RSS MiB ({k} / {n:,})", "KiB per endpoint"],
        rows,
    )  # fmt: skip
    md += ["", "Discovery time = `Discovery.start()` to the last endpoint in the `Cluster` (one "
           "SRV lookup over TCP: the answer does not fit UDP). KiB per endpoint = probe RSS "
           f"difference between {n:,} and {k} discovered endpoints (no channels).", ""]  # fmt: skip

    sc = data.get("sidecar", {})
    if sc:
        md += [f"## A sidecar process with {n:,} vs {k} idle endpoints "
               f"(endpoints from: {data['sidecar_mode']})", ""]  # fmt: skip
        rows = []
        for label in ("small", "big"):
            r = sc[label]
            rows.append([
                r["endpoints"], r["hosts"], f"{r['rss_kib_idle'] / 1024:.1f}",
                r["calls"], ", ".join(f"{a} {b}" for a, b in r["statuses"].items()),
                int(r["channels_open"]), r["endpoints_attempted"],
                f"{r['rss_kib_after_calls'] / 1024:.1f}",
            ])  # fmt: skip
        md += table(
            ["endpoints", "in cluster", "RSS MiB idle", "calls made (1 warm-up)", "statuses of the rest",
             "sidecar_channels_open", "endpoints attempted", "RSS MiB after calls"],
            rows,
        )  # fmt: skip
        per = (sc["big"]["rss_kib_idle"] - sc["small"]["rss_kib_idle"]) / max(1, n - k)
        data["sidecar_kib_per_idle_endpoint"] = per
        md += ["", f"**RSS per idle endpoint: {per:.1f} KiB** ((RSS with {n:,} − RSS with {k}) / "
               f"{n - k:,}; target ≤ 50 KB). Channels are opened lazily when "
               "`sidecar_channels_open` ≤ calls made ≪ endpoints.", ""]  # fmt: skip
    if data.get("picks") and "error" not in data["picks"][0]:
        md += [
            f"## Pick cost at {k} vs {n:,} endpoints (pick + start + finish, fake clock; "
            "median of 3 alternating runs)",
            "",
        ]
        rows = []
        for r in data["picks"]:
            a, b = r["picks_per_s"][str(k)], r["picks_per_s"][str(n)]
            rows.append([r["lb"], a, b, f"{b / a:.2f}", f"{1e6 / b:.1f}",
                         r["bytes_per_endpoint"]])  # fmt: skip
        md += table(
            ["lb", f"picks/s @{k}", f"picks/s @{n:,}", "ratio", f"µs per pick @{n:,}",
             f"cluster bytes per endpoint @{n:,} (tracemalloc)"],
            rows,
        )  # fmt: skip
        md += [""]
    elif data.get("picks"):
        md += ["Pick cost: failed: " + data["picks"][0]["error"], ""]
    md += [f"- {note}" for note in data["notes"]]
    return md
