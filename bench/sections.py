"""What the scale, streams and overload sections share: processes, the client, output.

Does I/O: starts sidecars and the grpcio client (bench/grpc_client.py, its own
process), reads the admin port, writes `bench/out/<stem>.md` and `.json`.
"""

# ruff: noqa: RUF001  (the markdown tables use typographic dashes and signs on purpose)

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.procs import Managed, StartFailed, free_port, wait_port
from bench.targets import REPO, _python_env, sidecar_config, start_sidecar

Log = Callable[[str], None]


def meta(argv: Sequence[str]) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(argv),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "build": build(),
    }


def build() -> str:
    """Which sidecar the runs measure: its per-request modules compiled or not."""
    from sidecar import native

    return native.describe()


def header(title: str, m: dict[str, Any]) -> list[str]:
    la0 = m["loadavg_start"][0]
    la1 = m.get("loadavg_end", os.getloadavg())[0]
    return [
        f"# {title}, {m['date']}",
        "",
        f"Host {m['host']}, {m['cpus']} CPUs, load average {la0:.2f} at start, {la1:.2f} at "
        "end (the machine is shared: numbers are noisy).",
        f"Command: `{m['command']}`; Python {m['python']}; sidecar: {m['build']}.",
        "",
    ]


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write(out: Path, stem: str, md: list[str], data: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    print("\n".join(md))
    print(f"wrote {out / stem}.md and .json")


def client_cmd(mode: str, target: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench.grpc_client", mode, "--target", target, *args]


def client_env() -> dict[str, str]:
    """The client runs from this checkout (its stubs), whatever --tree the sidecar uses."""
    return _python_env(REPO)


def run_client(
    mode: str, target: str, *args: str, timeout_s: float = 120, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run the grpcio client to completion (`env`: client_env()'s unless given); its JSON
    result (RuntimeError if it failed)."""
    proc = subprocess.run(
        client_cmd(mode, target, *args), capture_output=True, text=True, cwd=REPO,
        env=env or client_env(), timeout=timeout_s, check=False,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"client {mode} exited {proc.returncode}: {proc.stderr[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def start_echo_sidecar(
    workdir: Path,
    name: str,
    tree: Path,
    *,
    endpoints: list[str] | None = None,
    inbound_app: str | None = None,
    extra: dict[str, Any] | None = None,
    runner: list[str] | None = None,
) -> tuple[Managed, int, int]:
    """A sidecar whose outbound routes meshtest Echo to `endpoints` (or whose inbound
    fronts `inbound_app`); returns it, its listener port and its admin port."""
    port, admin = free_port(), free_port()
    if inbound_app is not None:
        cfg = sidecar_config(
            inbound=f"127.0.0.1:{port}", app=inbound_app, admin=f"127.0.0.1:{admin}"
        )
    else:
        cfg = sidecar_config(
            outbound=f"127.0.0.1:{port}", endpoints=endpoints, admin=f"127.0.0.1:{admin}"
        )
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            _deep_merge(cfg[key], value)  # type: ignore[arg-type]
        else:
            cfg[key] = value
    proc = start_sidecar(workdir, name, cfg, port, tree, runner=runner)
    try:
        wait_port(admin, proc.proc, 20)  # the admin server starts after the listeners
    except StartFailed as exc:
        proc.stop()
        raise StartFailed(f"{name} admin: {exc}; log: {proc.log_tail()}") from None
    return proc, port, admin


def _deep_merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


def admin_get(admin_port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=10) as r:
        body: bytes = r.read()
    return body.decode()


def admin_get_any(admin_port: int, path: str) -> str:
    """Like admin_get, but a 503 body (e.g. /ready not ready) is returned too."""
    try:
        return admin_get(admin_port, path)
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, rest = head.partition("{")
        if sample != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total
