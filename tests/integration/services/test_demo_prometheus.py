"""The demo's Prometheus, for real: from the generated file-based discovery list it
scrapes a running sidecar, with the list's labels, and loads the shipped alert rules."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from services import demo_prometheus
from services.demo_plan import Instance
from tests.integration.procs import free_port, http, sidecar_process, wait_until

pytestmark = pytest.mark.timeout(90)


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    status, body = http("GET", url)
    if status != 200:
        return []
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


def test_prometheus_scrapes_the_sidecars_it_is_given(tmp_path: Path) -> None:
    exe = demo_prometheus.binary()
    if exe is None:
        pytest.fail(f"prometheus is not installed: apt-get install {demo_prometheus.PACKAGE}")
    cfg = {"site": "lon3", "outbound": {"listen": f"127.0.0.1:{free_port()}"}}
    with sidecar_process(tmp_path, "side", cfg, wait="/live") as side:
        inst = Instance("playlist", "lon3", 0, app_port=0, inbound_port=0, admin_port=side.admin)
        config = demo_prometheus.write_config(tmp_path / "prom", [inst], scrape_s=0.5)
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            demo_prometheus.argv(exe, config, tmp_path / "prom", port), stdout=log, stderr=log
        )
        try:

            def scraped() -> list[dict[str, Any]] | None:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                return query(port, "sidecar_info") or None

            found = wait_until(scraped, 40, "Prometheus scraping the sidecar")
            labels = found[0]["metric"]
            assert labels["instance"] == f"127.0.0.1:{side.admin}"
            assert (labels["site"], labels["service"], labels["demo_instance"]) == (
                "lon3",
                "playlist",
                "playlist-lon3-0",
            )
            assert query(port, 'up{job="sidecar"}')[0]["value"][1] == "1"
            _, body = http("GET", f"http://127.0.0.1:{port}/api/v1/rules")
            rules = json.loads(body)["data"]["groups"]
            assert {r["name"] for g in rules for r in g["rules"]} >= {
                "SidecarBreakerOpen",
                "SidecarShedRatioHigh",
            }
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()
