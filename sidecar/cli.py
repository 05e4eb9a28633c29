"""The `sidecar` command: a thin layer that parses arguments and hands over.

Each verb builds what it needs and calls into the package; no policy lives here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sidecar import __version__
from sidecar.config import Config, ConfigError, load_config


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    print(f"{args.config}: ok ({len(config.upstreams)} upstreams)")
    return 0


def _load(path: str) -> Config | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"sidecar: config refused: {exc}", file=sys.stderr)
        return None
    if config.tracing is not None:
        from sidecar.tracing.export import otlp_modules_problem

        problem = otlp_modules_problem()
        if problem is not None:
            print(f"sidecar: config refused: tracing: {problem}", file=sys.stderr)
            return None
    if config.tls is not None:
        from sidecar.tls.certs import TlsError
        from sidecar.tls.runtime import check_files

        try:  # the files as `run` loads them: a key not matching, another identity, ...
            check_files(config)
        except TlsError as exc:
            print(f"sidecar: config refused: {exc}", file=sys.stderr)
            return None
    return config


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    from sidecar import workers

    why = workers.refusal(config, args.workers)
    if why is not None:
        print(f"sidecar: {why}", file=sys.stderr)
        return 1
    if args.workers > 1 and args.worker_index is None:
        return workers.supervise(args.config, args.workers)
    control = None
    if args.worker_index is not None:
        workers.in_worker(args.worker_index)
        config = workers.worker_config(config, args.worker_index)
        if args.control_fd is not None:
            control = workers.control(args.control_fd)
    from sidecar.app import run  # grpc and friends load only once the config is good

    return run(config, workers.loader(args.config, args.workers, args.worker_index), control)


def _xds(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from sidecar.xds.cli import serve

    config = _load(args.config)
    if config is None:
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(serve(config, args.listen))


def _demo(demo_args: Sequence[str]) -> int:
    try:
        from services.demo import main as demo_main
    except ImportError as exc:  # the wheel without the example services
        print(f"sidecar demo: the example services are not installed ({exc})", file=sys.stderr)
        return 2
    return demo_main(list(demo_args))


def _resolve(args: argparse.Namespace) -> int:
    from sidecar.discovery.commands import resolve_main  # imported late: keeps --help fast

    return resolve_main(args)


def _registry(args: argparse.Namespace) -> int:
    from sidecar.discovery.commands import registry_main

    return registry_main(args)


def _ca(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sidecar.tls import ca

    try:
        if args.ca_verb == "init":
            path = ca.init_ca(Path(args.dir), args.domain, ca.parse_ttl(args.ttl))
            print(f"sidecar ca: CA for spiffe://{args.domain} in {path}")
        else:
            identity = ca.issue(
                Path(args.dir), args.service, args.site, Path(args.out), ca.parse_ttl(args.ttl)
            )
            print(f"sidecar ca: {identity} -> {args.out}/cert.pem, key.pem, ca.pem")
    except (OSError, ValueError, KeyError) as exc:
        print(f"sidecar ca: {exc}", file=sys.stderr)
        return 1
    return 0


def _inject(args: argparse.Namespace) -> int:
    import yaml

    from sidecar.inject import InjectError, Options, inject

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        docs = list(yaml.safe_load_all(text))
    except (OSError, yaml.YAMLError) as exc:
        print(f"sidecar inject: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    opts = Options(
        image=args.image,
        config_map=args.config_map,
        inbound_port=args.inbound_port,
        admin_port=args.admin_port,
        pass_others=args.pass_others,
    )
    try:
        out = inject(docs, opts)
    except InjectError as exc:
        print(f"sidecar inject: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False, explicit_start=len(out) > 1))
    return 0


def _stubs(args: argparse.Namespace) -> int:
    from sidecar import stubs

    return stubs.cli(args.proto_dirs, args.out)


def _init(args: argparse.Namespace) -> int:
    from sidecar.scaffold import init_main

    return init_main(
        args.proto, args.service, args.site, args.domain, args.calls, args.out, args.force,
        args.health,
    )  # fmt: skip


def _chaos(args: argparse.Namespace) -> int:
    from sidecar.chaos.runner import run_main

    return run_main(args.scenario, junit=args.junit, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="A gRPC service-mesh sidecar with DNS SRV discovery.",
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run the sidecar from a config file")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the listeners (SO_REUSEPORT; h2relay only); "
        "worker i serves admin on the admin port + i",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    run.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)  # the supervisor's channel
    run.set_defaults(func=_run)

    check = verbs.add_parser("check", help="validate a config file; errors name the key")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    check.set_defaults(func=_check)

    resolve = verbs.add_parser("resolve", help="SRV lookup as the balancer sees it")
    resolve.add_argument("name", help="SRV name, e.g. _playlist._grpc.lon3.example.net")
    resolve.add_argument("--nameserver", help="host:port (default: system resolver)")
    resolve.add_argument("--json", action="store_true", help="print JSON")
    resolve.add_argument("--timeout", type=float, default=2.0, help="seconds per query")
    resolve.set_defaults(func=_resolve)

    registry = verbs.add_parser("registry", help="run the embedded DNS registry")
    registry.add_argument("--listen", default="127.0.0.1:5353")
    registry.add_argument("--zone", default="example.net")
    registry.add_argument("--tsig-key", help="name:base64secret (hmac-sha256)")
    registry.add_argument("--journal", help="file keeping registrations across restarts")
    registry.add_argument(
        "--lease-factor", type=float, default=2.0, help="records expire after this many TTLs"
    )
    registry.add_argument(
        "--minimal-responses", action="store_true", help="no addresses in the additional section"
    )
    registry.set_defaults(func=_registry)

    xds = verbs.add_parser("xds", help="serve upstreams over xDS (ADS) to gRPC clients and Envoy")
    xds.add_argument("-c", "--config", required=True, help="YAML config file")
    xds.add_argument(
        "--listen", default=None, help="ADS host:port (default: xds.listen, else 127.0.0.1:18000)"
    )
    xds.set_defaults(func=_xds)

    ca_parser = verbs.add_parser("ca", help="a small CA for mTLS: make one, issue certificates")
    ca_verbs = ca_parser.add_subparsers(dest="ca_verb", required=True, metavar="CA_VERB")
    init = ca_verbs.add_parser("init", help="make a CA for a trust domain")
    init.add_argument("--dir", required=True, help="folder for ca.pem, ca.key, ca.json")
    init.add_argument("--domain", required=True, help="trust domain (the config's domain)")
    init.add_argument("--ttl", default="3650d", help="validity (default 3650d)")
    init.set_defaults(func=_ca)
    issue = ca_verbs.add_parser("issue", help="issue a workload certificate (SPIFFE ID)")
    issue.add_argument("--dir", required=True, help="the CA's folder")
    issue.add_argument("--service", required=True)
    issue.add_argument("--site", required=True)
    issue.add_argument("--out", required=True, help="folder for cert.pem, key.pem, ca.pem")
    issue.add_argument("--ttl", default="24h", help="validity, e.g. 90s, 15m, 24h (default 24h)")
    issue.set_defaults(func=_ca)

    inject = verbs.add_parser(
        "inject",
        help="add the sidecar (a native sidecar container, its config volume and probes) to "
        "Kubernetes workloads; writes the result to stdout",
    )
    inject.add_argument(
        "file", help="YAML file (Deployment, StatefulSet, DaemonSet, Pod, List), or -"
    )
    inject.add_argument("--image", default="grpc-sidecar:0.1.0", help="the sidecar's image")
    inject.add_argument(
        "--config-map", help="ConfigMap holding sidecar.yaml (default: <workload name>-sidecar)"
    )
    inject.add_argument("--inbound-port", type=int, default=8181, help="inbound.listen's port")
    inject.add_argument("--admin-port", type=int, default=9901, help="admin.listen's port")
    inject.add_argument(
        "--pass-others", action="store_true", help="leave other kinds as they are (else refused)"
    )
    inject.set_defaults(func=_inject)

    stubs = verbs.add_parser(
        "stubs",
        help="generate Python stubs (grpcio-tools, mypy-protobuf .pyi) from .proto files; "
        "only what changed",
    )
    stubs.add_argument("proto_dirs", nargs="+", metavar="PROTO_DIR", help="include roots")
    stubs.add_argument("--out", required=True, help="folder the packages are written to")
    stubs.set_defaults(func=_stubs)

    init_cfg = verbs.add_parser(
        "init", help="write a commented sidecar config for a service from its .proto files"
    )
    init_cfg.add_argument("--proto", nargs="+", required=True, metavar="FILE")
    init_cfg.add_argument("--service", required=True, help="this service's name (a DNS label)")
    init_cfg.add_argument("--site", required=True)
    init_cfg.add_argument("--domain", required=True)
    init_cfg.add_argument(
        "--calls",
        nargs="*",
        default=[],
        metavar="SERVICE",
        help="upstreams it calls: NAME, or NAME=pkg.Service,pkg.Other to route by method",
    )
    init_cfg.add_argument(
        "--health", choices=["grpc", "tcp", "none"], default="tcp", help="app health check"
    )
    init_cfg.add_argument("--out", default="sidecar.yaml", help="file to write, or - (stdout)")
    init_cfg.add_argument("--force", action="store_true", help="replace an existing file")
    init_cfg.set_defaults(func=_init)

    chaos = verbs.add_parser("chaos", help="chaos scenarios against your own services")
    chaos_verbs = chaos.add_subparsers(dest="chaos_verb", required=True, metavar="CHAOS_VERB")
    chaos_run = chaos_verbs.add_parser("run", help="run a scenario file; exit 0 if all held")
    chaos_run.add_argument("scenario", metavar="SCENARIO.yaml")
    chaos_run.add_argument("--junit", help="write JUnit XML (one test case per expectation)")
    chaos_run.add_argument("--out", help="results folder (default: chaos-results/<scenario name>)")
    chaos_run.set_defaults(func=_chaos)

    # `demo` hands every argument after it to services.demo (see main()); listed for --help
    verbs.add_parser("demo", help="run the two-site demo mesh (options: sidecar demo --help)")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return _demo(argv[1:])
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)
