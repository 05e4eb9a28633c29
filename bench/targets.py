"""The things a request goes through: backends and proxies, each started on loopback.

Does I/O: writes configs into a work directory and starts processes (bench.procs).
Every builder either returns a running process listening on a fresh port or raises
`Unavailable` (skip the case, say why) or `StartFailed` (a real failure).

Paths (what h2load connects to, in order of hops):
- direct:   h2load -> backend
- haproxy:  h2load -> HAProxy (h2 both sides, 1 thread) -> backend
- haproxy-srv: the same, the backend found by SRV through HAProxy's `resolvers`
  (a BIND `named` on loopback serves the record)
- sidecar1: h2load -> sidecar (outbound listener only) -> backend
- sidecar2: h2load -> sidecar A (outbound) -> sidecar B (inbound) -> backend
- sidecar1-w2: sidecar1 as `sidecar run --workers 2` (SO_REUSEPORT processes)
- sidecar2-mtls: sidecar2 with `tls:` on both (mTLS between them, certificates from
  `sidecar ca`), the app-facing hops plaintext
- haproxy2-tls: h2load -> HAProxy A -> (TLS, client certificate, verified both ways)
  -> HAProxy B -> backend: HAProxy doing TLS on both sides of the middle hop
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bench.procs import Managed, StartFailed, Unavailable, free_port, start

REPO = Path(__file__).resolve().parents[1]
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

# nginx with the echo module answers a gRPC unary call by sending the request
# message back with a `grpc-status: 0` trailer (~23 µs of CPU per call here), so it
# is never the bottleneck. One process (master_process off) so its CPU is one pid.
# keepalive_requests also caps HTTP/2 requests per connection (nginx >= 1.19.7):
# raised so no connection is closed mid-benchmark.
NGINX_CONF = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 3600s;
  client_max_body_size 0;
  client_body_buffer_size 1m;
  http2_max_concurrent_streams 1024;
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{
      default_type application/grpc;
      echo_read_request_body;
      echo_request_body;
      add_trailer grpc-status 0 always;
    }}
  }}
}}
"""

# HAProxy needs `proto h2` on both bind and server lines for gRPC (h2c both sides),
# and long timeouts so idle benchmark connections are not cut. One thread, to
# compare with one sidecar process.
_HAPROXY_HEAD = """\
global
  nbthread 1
  maxconn 2000
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout http-keep-alive 1h
  timeout tunnel 1h
"""
HAPROXY_CONF = (
    _HAPROXY_HEAD
    + """\
frontend fe
  bind 127.0.0.1:{port} proto h2
  default_backend be
backend be
{servers}
"""
)
HAPROXY_STATIC = "  server s1 127.0.0.1:{backend_port} proto h2\n"
# SRV discovery: a server-template filled from the SRV answer (target and port;
# HAProxy 2.6 reads weight too but ignores priority). `init-addr none` starts the
# slots in maintenance until the first answer, so the spot check waits for it.
HAPROXY_SRV = """\
  server-template s 1-4 {srv_name} resolvers bench resolve-prefer ipv4 init-addr none proto h2
resolvers bench
  nameserver ns1 127.0.0.1:{dns_port}
  accepted_payload_size 8192
  resolve_retries 3
  timeout resolve 1s
  timeout retry 1s
  hold valid 10s
"""

NAMED_CONF = """\
options {{
  directory "{dir}";
  pid-file "{dir}/named.pid";
  session-keyfile "{dir}/session.key";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
}};
controls {{ }};
zone "{zone}" {{ type primary; file "{dir}/zone.db"; }};
"""
ZONE = """\
$TTL 30
@ IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 30
@ IN NS ns.{zone}.
ns IN A 127.0.0.1
echo-1 IN A 127.0.0.1
_echo._grpc.local IN SRV 10 100 {backend_port} echo-1.{zone}.
"""
SRV_ZONE = "bench.test"
SRV_NAME = f"_echo._grpc.local.{SRV_ZONE}"


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed")


def start_nginx(workdir: Path) -> tuple[Managed, int]:
    require_tools("nginx")
    if not ECHO_MODULE.exists():
        raise Unavailable(f"{ECHO_MODULE} missing (apt-get install libnginx-mod-http-echo)")
    port = free_port()
    d = workdir / "nginx"
    d.mkdir(exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(module=ECHO_MODULE, dir=d, port=port))
    cmd = ["nginx", "-p", str(d), "-e", str(d / "nginx-error.log"), "-c", str(conf)]
    return start("nginx", cmd, [port], workdir), port


def _python_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if tree != REPO:  # someone else's checkout: leave no __pycache__ behind in it
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_pyecho(workdir: Path, tree: Path = REPO) -> tuple[Managed, int]:
    """The project's Python echo service: `python -m services.echo --port N`."""
    svc = tree / "services"
    if not ((svc / "echo.py").exists() or (svc / "echo" / "__main__.py").exists()):
        raise Unavailable("services.echo not present in this tree yet")
    port = free_port()
    cmd = [sys.executable, "-m", "services.echo", "--port", str(port)]
    return start("pyecho", cmd, [port], workdir, cwd=tree, env=_python_env(tree)), port


def start_named(workdir: Path, name: str, backend_port: int) -> tuple[Managed, int]:
    """BIND on loopback, authoritative for SRV_ZONE with one SRV record to the backend."""
    require_tools("named")
    port = free_port()
    d = workdir / name
    d.mkdir(exist_ok=True)
    (d / "zone.db").write_text(ZONE.format(zone=SRV_ZONE, backend_port=backend_port))
    conf = d / "named.conf"
    conf.write_text(NAMED_CONF.format(dir=d, port=port, zone=SRV_ZONE))
    return start(name, ["named", "-g", "-c", str(conf)], [port], workdir), port


def start_haproxy(
    workdir: Path, name: str, backend_port: int, dns_port: int | None = None
) -> tuple[Managed, int]:
    """HAProxy in front of the backend: a static server line, or SRV via `dns_port`."""
    require_tools("haproxy")
    port = free_port()
    conf = workdir / f"{name}.cfg"
    if dns_port is None:
        servers = HAPROXY_STATIC.format(backend_port=backend_port)
    else:
        servers = HAPROXY_SRV.format(srv_name=SRV_NAME, dns_port=dns_port)
    conf.write_text(HAPROXY_CONF.format(port=port, servers=servers))
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True, timeout=10, check=False
    )
    if check.returncode != 0:
        raise StartFailed(f"{name}: haproxy -c refused {conf}: {check.stdout}{check.stderr}")
    return start(name, ["haproxy", "-db", "-f", str(conf)], [port], workdir), port


def sidecar_config(
    *,
    outbound: str | None = None,
    endpoints: list[str] | None = None,
    inbound: str | None = None,
    app: str | None = None,
    admin: str,
) -> dict[str, object]:
    """A sidecar config in the schema of sidecar/config.py, checked by it before use."""
    cfg: dict[str, object] = {"service": "bench", "admin": {"listen": admin}}
    if outbound is not None:
        cfg["outbound"] = {"listen": outbound}
        cfg["upstreams"] = {
            "echo": {"grpc_services": ["meshtest.echo.v1.Echo"], "endpoints": endpoints or []}
        }
    if inbound is not None:
        # nginx does not speak grpc.health.v1; a TCP check is what it can pass.
        cfg["inbound"] = {"listen": inbound, "app": app, "health": {"mode": "tcp"}}
    return cfg


def start_sidecar(
    workdir: Path,
    name: str,
    cfg: dict[str, object],
    port: int,
    tree: Path,
    *,
    runner: list[str] | None = None,
) -> Managed:
    """`python -m sidecar run -c FILE` from `tree`; Unavailable while `run` is not implemented.

    The file is first checked by the same tree's `sidecar check`, so a schema change
    shows up as the sidecar's own "config refused: key: reason". `runner` replaces
    `python -m sidecar run` (it gets `-c FILE` appended).
    """
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    base = [sys.executable, "-m", "sidecar"]
    env = _python_env(tree)
    if runner is not None:  # a runner module from bench/ (this checkout), the sidecar from tree
        env["PYTHONPATH"] += os.pathsep + str(REPO)
    check = subprocess.run(
        [*base, "check", "-c", str(path)],
        capture_output=True, text=True, cwd=tree, env=env, timeout=30, check=False,
    )  # fmt: skip
    if check.returncode != 0:
        raise StartFailed(f"{name}: `sidecar check` refused {path.name}: {check.stderr.strip()}")
    try:
        cmd = [*(runner or [*base, "run"]), "-c", str(path)]
        return start(name, cmd, [port], workdir,
                     cwd=tree, env=env, timeout_s=20)  # fmt: skip
    except StartFailed as exc:
        if "not implemented" in str(exc):
            raise Unavailable("`sidecar run` is not implemented in this tree yet") from None
        raise


def start_sidecar_outbound(
    workdir: Path,
    name: str,
    endpoint_port: int,
    tree: Path = REPO,
    *,
    workers: int = 1,
) -> tuple[Managed, int]:
    """One outbound hop; `workers` > 1 runs `sidecar run --workers N` (a supervisor and N processes)."""
    port = free_port()
    cfg = sidecar_config(
        outbound=f"127.0.0.1:{port}",
        endpoints=[f"127.0.0.1:{endpoint_port}"],
        admin=f"127.0.0.1:{free_port()}",
    )
    runner = None
    if workers > 1:
        runner = [sys.executable, "-m", "sidecar", "run", "--workers", str(workers)]
    return start_sidecar(workdir, name, cfg, port, tree, runner=runner), port


def _bench_pki(workdir: Path, name: str) -> Path:
    """A CA and one `bench` leaf (the sidecar configs' service) from `sidecar ca`: the
    folder holds cert.pem, key.pem, ca.pem, and both.pem (cert and key, for HAProxy)."""
    import datetime

    from sidecar.tls import ca

    day = datetime.timedelta(days=1)
    ca.init_ca(workdir / f"{name}-ca", "example.net", day)
    out = workdir / f"{name}-tls"
    ca.issue(workdir / f"{name}-ca", "bench", "local", out, day)
    (out / "both.pem").write_bytes((out / "cert.pem").read_bytes() + (out / "key.pem").read_bytes())
    return out


def _tls_block(folder: Path) -> dict[str, str]:
    return {
        "cert_file": str(folder / "cert.pem"),
        "key_file": str(folder / "key.pem"),
        "ca_file": str(folder / "ca.pem"),
    }


def start_sidecar_pair_mtls(
    workdir: Path, name: str, backend_port: int, tree: Path = REPO
) -> tuple[list[Managed], int]:
    """sidecar2 with mTLS between the two: (outbound, inbound) processes, outbound port."""
    folder = _bench_pki(workdir, name)
    in_port = free_port()
    inbound_cfg = sidecar_config(
        inbound=f"127.0.0.1:{in_port}",
        app=f"127.0.0.1:{backend_port}",
        admin=f"127.0.0.1:{free_port()}",
    )
    inbound_cfg["tls"] = _tls_block(folder)
    inbound = start_sidecar(workdir, f"{name}-in", inbound_cfg, in_port, tree)
    out_port = free_port()
    outbound_cfg = sidecar_config(
        outbound=f"127.0.0.1:{out_port}",
        endpoints=[f"127.0.0.1:{in_port}"],
        admin=f"127.0.0.1:{free_port()}",
    )
    outbound_cfg["tls"] = _tls_block(folder)
    # both sides are `bench`: the upstream `echo` accepts that identity
    upstreams = outbound_cfg["upstreams"]
    assert isinstance(upstreams, dict)
    upstreams["echo"]["identities"] = ["bench"]
    try:
        outbound = start_sidecar(workdir, f"{name}-out", outbound_cfg, out_port, tree)
    except BaseException:
        inbound.stop()
        raise
    return [outbound, inbound], out_port


HAPROXY_TLS_SERVER = (
    "  server s1 127.0.0.1:{port} proto h2 ssl alpn h2 crt {pem} ca-file {ca} verify required\n"
)
HAPROXY_TLS_FRONT = (
    _HAPROXY_HEAD
    + """\
frontend fe
  bind 127.0.0.1:{port} ssl crt {pem} ca-file {ca} verify required alpn h2
  default_backend be
backend be
{servers}
"""
)


def start_haproxy_tls_pair(
    workdir: Path, name: str, backend_port: int
) -> tuple[list[Managed], int]:
    """Two HAProxies, TLS with client certificates between them: (A, B), A's port."""
    require_tools("haproxy")
    folder = _bench_pki(workdir, name)
    pem, ca_file = folder / "both.pem", folder / "ca.pem"
    b_port, a_port = free_port(), free_port()
    b_conf = workdir / f"{name}-b.cfg"
    b_conf.write_text(
        HAPROXY_TLS_FRONT.format(
            port=b_port,
            pem=pem,
            ca=ca_file,
            servers=HAPROXY_STATIC.format(backend_port=backend_port),
        )
    )
    a_conf = workdir / f"{name}-a.cfg"
    a_conf.write_text(
        HAPROXY_CONF.format(
            port=a_port, servers=HAPROXY_TLS_SERVER.format(port=b_port, pem=pem, ca=ca_file)
        )
    )
    for conf in (b_conf, a_conf):
        check = subprocess.run(
            ["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True, timeout=10,
            check=False,
        )  # fmt: skip
        if check.returncode != 0:
            raise StartFailed(f"{name}: haproxy -c refused {conf}: {check.stdout}{check.stderr}")
    b = start(f"{name}-b", ["haproxy", "-db", "-f", str(b_conf)], [b_port], workdir)
    try:
        a = start(f"{name}-a", ["haproxy", "-db", "-f", str(a_conf)], [a_port], workdir)
    except BaseException:
        b.stop()
        raise
    return [a, b], a_port


def start_sidecar_inbound(
    workdir: Path, name: str, app_port: int, tree: Path = REPO
) -> tuple[Managed, int]:
    port = free_port()
    cfg = sidecar_config(
        inbound=f"127.0.0.1:{port}", app=f"127.0.0.1:{app_port}", admin=f"127.0.0.1:{free_port()}"
    )
    return start_sidecar(workdir, name, cfg, port, tree), port
