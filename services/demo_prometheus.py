"""A real Prometheus for the demo: scrapes every sidecar's /metrics, found through a
generated file-based service discovery list, with the shipped alert rules loaded.

Does I/O (files; the process itself is started by the demo's Supervisor, so it dies with
the demo). Optional: without a `prometheus` binary (Debian's `prometheus` package) the
demo runs as before and says how to get one. The terminal dashboard stays the default
view; Prometheus is for looking closer (its URL is printed), and for trying
deploy/grafana/sidecar.json against live data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PACKAGE = "prometheus"  # Debian's package with the binary


def binary() -> str | None:
    return shutil.which("prometheus")


def targets(instances: Iterable[Any]) -> list[dict[str, Any]]:
    """One file_sd entry per sidecar: its admin address, labelled with service, site and
    the demo's instance name."""
    return [
        {
            "targets": [f"127.0.0.1:{inst.admin_port}"],
            "labels": {"service": inst.service, "site": inst.site, "demo_instance": inst.name},
        }
        for inst in instances
    ]


def write_config(workdir: Path, instances: Iterable[Any], scrape_s: float = 2.0) -> Path:
    """prometheus.yml and its targets file in `workdir`; the config's path."""
    workdir.mkdir(parents=True, exist_ok=True)
    sd = workdir / "sidecars.json"
    sd.write_text(json.dumps(targets(instances), indent=1))
    interval = f"{round(scrape_s * 1000)}ms"  # Prometheus durations take whole units
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "sidecar",
                "file_sd_configs": [{"files": [str(sd)], "refresh_interval": "5s"}],
            }
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def argv(exe: str, config: Path, workdir: Path, port: int) -> list[str]:
    return [
        exe,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]
